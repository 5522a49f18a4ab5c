"""bench/pref_budget.py: the budget rule on hand-worked curves, and a tiny run end to end (resumable): each
method's validation rows are its own training run's, step 0 is the SFT checkpoint evaluated on the same sessions."""

from __future__ import annotations

import json

import pytest

from trainer.evaluate import evaluate
from trainer.model import load_checkpoint

from .conftest import bench_module


@pytest.fixture(scope="module")
def bench():
    with bench_module("pref_budget") as module:
        yield module


def test_budget_is_the_first_best_step(bench):
    curve = [{"step": 100, "m": 0.2}, {"step": 200, "m": 0.3}, {"step": 300, "m": 0.3}, {"step": 400, "m": 0.1}]
    assert bench.budget(curve, {"m": 0.25}, "m") == 200  # ties: the earlier, cheaper step
    assert bench.budget(curve, {"m": 0.3}, "m") == 0  # nothing beat the start: no preference steps
    assert bench.budget(curve, {"m": 0.5}, "m") == 0


def test_tiny_curves_end_to_end(bench, served_path, tiny_dataset, tiny_index, tmp_path, capsys):
    args = ["--init", str(served_path), "--data", str(tiny_dataset.root), "--index", str(tiny_index.root),
            "--out", str(tmp_path / "curve"), "--steps", "2", "--eval-every", "1", "--eval-sessions", "5",
            "--markdown", str(tmp_path / "budget.md"), "--set", "pref.lr=3e-4", "--set", "pref.num_negatives=5"]
    bench.main(args)
    text = (tmp_path / "budget.md").read_text()
    start = evaluate(load_checkpoint(served_path), tiny_index, tiny_dataset, "valid", 128, 16, 5, unconstrained=False)
    assert f"| 0 (SFT) | {start['item']['recall@10']:.4f} | {start['item']['mrr']:.4f} |" in text
    for method in bench.METHODS:
        rows = bench.read_curve(tmp_path / "curve" / method)
        assert [r["step"] for r in rows] == [1, 2]
        meta = json.loads((tmp_path / "curve" / method / "model" / "radgr.json").read_text())
        assert meta["stages"][-1]["stage"] == "pref" and meta["stages"][-1]["steps"] == 2
        trained = json.loads((tmp_path / "curve" / method / "train_config.json").read_text())
        assert (trained["lr"], trained["num_negatives"], trained["batch_size"]) == (3e-4, 5, 8)  # --set over the preset
    assert "| 2 | " in text and "- dpo: item recall@10 at" in text
    before = (tmp_path / "curve" / "dpo" / "validation.csv").read_text()
    bench.main(args)  # a rerun trains nothing and writes the same table
    assert (tmp_path / "curve" / "dpo" / "validation.csv").read_text() == before
    assert (tmp_path / "budget.md").read_text().split("\n")[3:] == text.split("\n")[3:]


def test_metrics_choose_the_columns_and_an_unknown_one_is_refused(bench, tmp_path, capsys):
    start = {"item recall@100": 0.3, "item mrr": 0.05}
    curves = {"dpo": [{"step": 100, "item recall@100": 0.25, "item mrr": 0.06}]}
    text = bench.table(curves, start, ["item recall@100", "item mrr"])
    assert text.splitlines()[0] == "| step | dpo item recall@100 | dpo item mrr |"
    assert "| 0 (SFT) | 0.3000 | 0.0500 |" in text and "| 100 | 0.2500 | 0.0600 |" in text
    assert "- dpo: item recall@100 at 0, item mrr at 100" in text
    with pytest.raises(SystemExit):
        bench.main(["--init", "x", "--data", "x", "--index", "x", "--out", str(tmp_path / "c"),
                    "--metrics", "item recall@100,item hits@3"])
    assert "not a validation column: item hits@3" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()  # refused before anything ran

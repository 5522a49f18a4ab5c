"""bench/sft_curves.py: runs of different batch sizes on one axis of sessions seen, parameters counted from the
safetensors header, clear errors for folders that are not validated SFT runs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from .conftest import bench_module


@pytest.fixture(scope="module")
def bench():
    with bench_module("sft_curves") as module:
        yield module


def fake_run(folder, batch, steps_values, hidden=64, layers=2, train_s=600.0):
    (folder / "model").mkdir(parents=True)
    (folder / "train_config.json").write_text(json.dumps(
        {"batch_size": batch, "lr": 0.002, "scratch": {"hidden_size": hidden, "num_layers": layers}}))
    rows = ["step,sid recall@128,item recall@10"] + [f"{s},0.5,{v}" for s, v in steps_values]
    (folder / "validation.csv").write_text("\n".join(rows) + "\n")
    save_file({"a": torch.zeros(3, 4), "b": torch.zeros(5)}, str(folder / "model" / "model.safetensors"))
    (folder / "model" / "radgr.json").write_text(json.dumps({"stages": [{"stage": "sft", "train_s": train_s}]}))
    return folder


def test_runs_line_up_by_sessions_seen(bench, tmp_path, capsys):
    a = fake_run(tmp_path / "a", 64, [(500, 0.05), (1000, 0.09)])
    b = fake_run(tmp_path / "b", 32, [(1000, 0.07), (2000, 0.08), (3000, 0.06)])
    out, png = tmp_path / "t.md", tmp_path / "t.png"
    bench.main(["--run", f"big batch={a}", "--run", f"small=batch={b}", "--out", str(out), "--png", str(png)])
    lines = out.read_text().splitlines()
    assert "| run | hidden x layers | parameters | lr | batch | 32k | 64k | 96k | best item recall@10 |" in lines[4]
    assert lines[6] == "| big batch | 64 x 2 | 0.0M | 0.002 | 64 | 0.0500 | 0.0900 | - | **0.0900** | 64,000 | 10 |"
    # the name may hold '=': the folder is what follows the last one
    want = "| small=batch | 64 x 2 | 0.0M | 0.002 | 32 | 0.0700 | 0.0800 | 0.0600 | **0.0800** | 64,000 | 10 |"
    assert lines[7] == want
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert out.read_text() in capsys.readouterr().out


def test_parameter_count_reads_only_the_header(bench, tmp_path):
    run = fake_run(tmp_path / "r", 64, [(500, 0.1)])
    assert bench.parameter_count(run / "model") == 3 * 4 + 5
    (run / "model" / "model.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(bench.RadgrError, match="not a safetensors file"):
        bench.parameter_count(run / "model")


def test_bad_runs_are_named(bench, tmp_path, capsys):
    run = fake_run(tmp_path / "r", 64, [(500, 0.1)])
    with pytest.raises(SystemExit):
        bench.main(["--run", f"x={run}", "--metric", "item hits@3", "--out", str(tmp_path / "o.md")])
    assert "no column 'item hits@3'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--run", f"x={tmp_path / 'nothing'}", "--out", str(tmp_path / "o.md")])
    assert "train_config.json: missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--run", str(run), "--out", str(tmp_path / "o.md")])
    assert "expected NAME=FOLDER" in capsys.readouterr().err
    assert not (tmp_path / "o.md").exists()

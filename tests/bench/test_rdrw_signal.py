"""bench/rdrw_signal.py on the tiny synthetic dataset: labels from the truth, similarities equal to a
separate forward pass per candidate, the AUC equal to counting pairs, a table written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sid_index.data.schema import RELEVANT_GRADE
from trainer.data import build_examples
from trainer.model import load_checkpoint

from .conftest import bench_module


@pytest.fixture(scope="module")
def bench():
    with bench_module("rdrw_signal") as module:
        yield module


@pytest.fixture(scope="module")
def setup(bench, tiny_dataset, tiny_index, served_path):
    ckpt = load_checkpoint(served_path)
    ex = build_examples(tiny_dataset, tiny_index, ckpt.prompts, "train")
    sessions = bench.session_negatives(tiny_dataset, tiny_index, ex, num_neg=6, seed=0, max_sessions=40)
    return ckpt, ex, sessions


def test_roc_auc_counts_pairs(bench):
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 55).astype(float)  # many ties
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert bench.roc_auc(pos, neg) == pytest.approx(pairs, abs=1e-12)
    assert bench.roc_auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert np.isnan(bench.roc_auc(np.array([]), neg))


def test_labels_follow_the_truth(setup, tiny_dataset, tiny_index):
    _, ex, sessions = setup
    assert len(sessions) == 40
    table = tiny_dataset.split("train")
    expo_of = dict(zip(table["session_id"].to_pylist(), table["exposure"].to_pylist(), strict=True))
    seen = set()
    for s in sessions:
        assert len(s["neg_codes"]) == len(s["labels"]) == 6
        unclicked: dict[tuple, list[float]] = {}
        for e in expo_of[ex.session_ids[s["row"]]]:
            if not e["clicked"]:
                unclicked.setdefault(tiny_index.sid_of(e["sku_id"]), []).append(e["relevance"])
        for codes, label in zip(s["neg_codes"], s["labels"], strict=True):
            rel = unclicked.get(tuple(int(c) for c in codes))
            want = "random" if rel is None else ("pseudo" if max(rel) >= RELEVANT_GRADE else "true")
            assert label == want
            seen.add(label)
    assert seen == {"pseudo", "true", "random"}  # the fixture exercises every group


def test_model_similarity_equals_separate_forward(bench, setup):
    ckpt, ex, sessions = setup
    sims = bench.model_similarities(ckpt, ex, sessions[:3], batch_size=2)
    for s, got in zip(sessions[:3], sims, strict=True):
        prompt = ex.prompts[s["row"]]
        codes = np.concatenate([ex.pos_codes[s["row"]][:1], s["neg_codes"]])
        eos = []
        for ids in ckpt.vocab.codes_to_ids(codes):
            seq = torch.tensor([list(prompt) + [int(t) for t in ids]])
            with torch.no_grad():
                out = ckpt.model(input_ids=seq, output_hidden_states=True)
            eos.append(out.hidden_states[-1][0, -1])  # the last SID token's state predicts EOS
        eos = torch.stack(eos)
        want = F.cosine_similarity(eos[:1], eos[1:], dim=-1).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_main_writes_table(bench, tiny_dataset, tiny_index, served_path, tmp_path, capsys):
    out = tmp_path / "signal.md"
    res = bench.main(["--model", str(served_path), "--data", str(tiny_dataset.root), "--index", str(tiny_index.root),
                      "--num-negatives", "6", "--max-sessions", "30", "--out", str(out)])
    assert sum(res["counts"].values()) == 30 * 6
    assert [r["signal"].split(":")[0] for r in res["rows"]] == [
        "text cosine (MiniLM, no model)", "shared SID prefix", "SID vector cosine (--rdrw-signal sid)",
        "model EOS cosine"]
    for r in res["rows"]:
        assert 0.0 <= r["auc_pseudo_vs_true"] <= 1.0
        assert 0.5 <= min(r["weight_pseudo"], r["weight_true"], r["weight_random"]) <= 1.0
    md = out.read_text()
    assert md == capsys.readouterr().out
    assert md.count("\n| ") == 5  # header + 4 signals
    assert json.loads(out.with_suffix(".json").read_text())["counts"] == res["counts"]

"""bench/lexical_weight.py on the tiny data: one row per weight beside BM25 and dense, on the same sessions."""

from __future__ import annotations

import sys

import pytest

from tests.bench.conftest import bench_module


def test_the_sweep_prints_the_peers_and_a_floor_per_weight(tiny_index, tiny_dataset, tmp_path, monkeypatch, capsys):
    from trainer.evaluate import evaluate_index_only_items

    out = tmp_path / "sweep.md"
    monkeypatch.setattr(sys, "argv", ["lexical_weight.py", "--index", str(tiny_index.root), "--data",
                                      str(tiny_dataset.root), "--split", "test", "--weights", "0,3",
                                      "--max-sessions", "20", "--out", str(out)])
    with bench_module("lexical_weight") as mod:
        mod.main()
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in out.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| row")}
    assert set(rows) == {"BM25 (bm25s)", "dense MiniLM (exact)", "index only (item text vectors), lexical weight 0",
                         "index only (item text vectors + lexical), lexical weight 3"}
    plain = evaluate_index_only_items(tiny_index, tiny_dataset, "test", max_sessions=20)
    r100 = rows["index only (item text vectors), lexical weight 0"][3]
    assert float(r100.split(" ± ")[0]) == pytest.approx(plain["item"]["recall@100"], abs=5e-5)
    assert rows["BM25 (bm25s)"][-1].strip(" |") == "-" and "[" in rows["dense MiniLM (exact)"][-1]
    assert out.read_text() in capsys.readouterr().out

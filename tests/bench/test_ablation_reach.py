"""bench/ablation_reach.py: its counts against the training loop's own batches, and the table it writes."""

from __future__ import annotations

import pytest

from tests.bench.conftest import bench_module


@pytest.fixture(scope="module")
def bench():
    with bench_module("ablation_reach") as module:
        yield module


def test_counts_match_the_training_loops_batches(bench, tiny_dataset, tiny_index, served_path):
    from trainer.data import build_examples
    from trainer.loop import make_batch
    from trainer.model import load_checkpoint

    got = bench.reach(tiny_dataset.root, tiny_index.root, None, num_neg=6, max_pos=3, seed=0)
    ckpt = load_checkpoint(served_path)
    ex = build_examples(tiny_dataset, tiny_index, ckpt.prompts, "train")
    batch = make_batch(ex, list(range(len(ex))), ckpt, 3, 6, tiny_index.trie.sids(), seed=0, epoch=0)
    lcp, n = batch.neg_lcp.numpy(), len(ex)
    assert got["sessions"] == n
    assert got["positives_per_session"] == pytest.approx(batch.pos_mask.numpy().sum() / n)
    assert got["multi_positive_share"] == pytest.approx((batch.pos_mask.numpy().sum(axis=1) > 1).mean())
    assert got["shared_prefix_share"] == pytest.approx((lcp > 0).mean())
    assert got["shared_token_share"] == pytest.approx(lcp.sum() / (lcp.size * (tiny_index.levels + 1)))
    exposed = sum(min(len(c), 6) for c in ex.neg_codes) / (6 * n)
    assert got["exposed_share"] == pytest.approx(exposed)
    assert 0 < got["multi_positive_share"] < 1 and 0 < got["shared_prefix_share"] < 1  # the case is not trivial


def test_table_has_one_row_per_dataset(bench, tiny_dataset, tiny_index, tmp_path):
    out = tmp_path / "reach.md"
    bench.main(["--dataset", "a", str(tiny_dataset.root), str(tiny_index.root), "--dataset", "b",
                str(tiny_dataset.root), str(tiny_index.root), "--sessions", "50", "--out", str(out)])
    rows = [line for line in out.read_text().splitlines() if line.startswith("| a |") or line.startswith("| b |")]
    assert len(rows) == 2 and rows[0].split(" | ")[1:] == rows[1].split(" | ")[1:]  # same data, same counts
    assert "| 50 |" in rows[0]

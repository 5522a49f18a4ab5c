"""bench/train_throughput.py at a tiny size: every row is there and the layouts agree on the loss.

Runs the script's `main` in this process (tiny Qwen3, batch 2, N = 2, one timed step,
`--in-process` so no configuration pays for a fresh interpreter).
"""

from __future__ import annotations

import json

import pytest
import torch

from .conftest import bench_module


@pytest.fixture(scope="module")
def bench():
    with bench_module("train_throughput") as module:
        yield module


@pytest.fixture()
def keep_threads():
    before = torch.get_num_threads()  # main() sets the intra-op thread count on CPU
    yield
    torch.set_num_threads(before)


def test_tiny_run(bench, keep_threads, tmp_path, capsys):
    out = tmp_path / "res.json"
    res = bench.main(["--model-size", "tiny", "--device", "cpu", "--negatives", "2", "--dpo-negatives", "2",
                      "--batch-size", "2", "--repeats", "1", "--prompt-len", "16", "--in-process",
                      "--json", str(out)])
    printed = capsys.readouterr().out

    # packed, per-candidate and padded give the same float32 loss before timing ...
    check = res["check"]
    assert check["ok"] and check["max_loss_diff"] <= check["atol"] == 1e-4
    assert set(check["loss"]) == set(bench.METHODS)
    assert check["max_logp_diff"] <= 1e-4 and check["max_hidden_diff"] <= 1e-4
    # ... and the same loss on the warm-up step of each timed configuration (same weights, same sessions)
    first = {r["method"]: r["first_loss"] for r in res["runs"]}
    assert set(first) == set(bench.METHODS) and len(res["runs"]) == 3
    assert max(first.values()) - min(first.values()) <= 1e-4
    assert abs(first["packed"] - check["loss"]["packed"]) <= 1e-4

    for r in [*res["runs"], res["dpo"], res["rad_dpo"]]:
        assert r["negatives"] == 2 and r["candidates"] == 2 * (2 + 2)
        assert r["step_ms"] > 0 and r["sessions_per_s"] > 0 and len(r["step_ms_all"]) == 1
        assert set(r["phase_ms"]) == {"forward", "backward", "optim"}
    assert res["dpo"]["method"] == "dpo" and res["rad_dpo"]["method"] == "packed"

    table = printed.splitlines()
    for m in bench.METHODS:
        assert sum(line.startswith(f"| 2 | {m} |") for line in table) == 1, m
    assert sum(line.startswith("| DPO + reference |") for line in table) == 1
    assert sum(line.startswith("| RAD-DPO |") for line in table) == 1
    assert "-> OK" in printed

    saved = json.loads(out.read_text())
    assert saved["table"] == res["table"] and len(saved["runs"]) == 3 and saved["check"]["ok"]

"""Quality tables: the statistics against hand-worked values (seed-paired and session-paired comparisons)."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.quality_report import aggregate, beyond_spread, markdown
from trainer.variants import RAD_DPO


def fake_result(seed: int, variant: str, r128: float, mrr: float) -> dict:
    sid = {"recall@8": r128 / 2, "recall@64": r128 * 0.9, "recall@128": r128, "mrr": mrr}
    item = {"recall@10": 0.1, "recall@100": 0.2, "recall@500": 0.3, "mrr": 0.05}
    curves = {"sid": {"1": mrr, "128": r128}, "item": {"1": 0.01}}
    return {"seed": seed, "variant": variant, "sid": sid, "item": item, "curves": curves,
            "unconstrained": {"invalid_rate": 0.5}, "constrained": {"invalid_rate": 0.0}}


def test_beyond_spread_pairs_seeds():
    # per-seed differences 1, 1.1, 0.9: mean 1, se = 0.1 / sqrt(3) = 0.0577 -> beyond
    assert beyond_spread([1.0, 2.1, 2.9], [0.0, 1.0, 2.0])
    # the same values unpaired would be within the spread; paired they are not: the spread cancels
    # differences 2, -1, 2: mean 1, sd 1.732, se 1.0 -> within
    assert not beyond_spread([2.0, 1.0, 4.0], [0.0, 2.0, 2.0])
    assert not beyond_spread([1.0], [0.0])  # one seed: no spread to compare with
    assert beyond_spread([1.0, 1.0], [0.0, 0.0]) and not beyond_spread([1.0, 1.0], [1.0, 1.0])


def test_aggregate_means_stds_and_comparisons():
    found = {
        "sft": [fake_result(0, "sft", 0.5, 0.1), fake_result(1, "sft", 0.6, 0.1), fake_result(2, "sft", 0.7, 0.1)],
        "rad-dpo-softmax": [fake_result(s, "rad-dpo-softmax", 0.9, m) for s, m in enumerate([0.2, 0.3, 0.4])],
        "dpo": [],
    }
    rows = aggregate(found)
    assert set(rows) == {"sft", "rad-dpo-softmax"}  # a variant without results has no row
    sft, rad = rows["sft"], rows["rad-dpo-softmax"]
    assert sft["mean"]["SID R@128"] == pytest.approx(0.6) and sft["std"]["SID R@128"] == pytest.approx(0.1)
    assert rad["mean"]["SID MRR"] == pytest.approx(0.3) and rad["std"]["SID MRR"] == pytest.approx(0.1)
    assert rad["curves"]["sid"] == {1: pytest.approx(0.3), 128: pytest.approx(0.9)}
    vs = rad["vs"]["sft"]
    # per seed: item R@10 equal -> 0, not beyond; MRR 0.1, 0.2, 0.3 -> mean 0.2, se 0.0577 -> beyond
    assert vs["item R@10"]["diff"] == pytest.approx(0.0) and not vs["item R@10"]["beyond_spread"]
    assert vs["SID MRR"]["diff"] == pytest.approx(0.2) and vs["SID MRR"]["beyond_spread"]
    assert "lo" not in vs["SID MRR"] and rad["ci95"] == {}  # no per-session values kept: no session interval
    assert vs["SID MRR"]["seeds"] == 3
    assert "sft" not in sft["vs"] and sft["vs"]["rad-dpo-softmax"]["SID MRR"]["diff"] == pytest.approx(-0.2)
    table = markdown(rows, "t")
    assert "| rad-dpo-softmax | 3 | 0.4500 ± 0.0000 |" in table and "+0.2000 *" in table and "50.00% ± 0.00%" in table
    assert "rad-dpo-softmax item R@10 0.0000, SID MRR 0.1000" in table  # the seed spread (NDCG: not measured)
    assert [line for line in table.splitlines() if line.startswith("|")][-1].endswith("| – |")  # no train time
    assert "truth" not in table  # no result knows the truth: its columns are left out


def with_sessions(result: dict, values: dict[str, list[float]]) -> dict:
    """`result` with per-session values of some metrics (and those metrics' means to match)."""
    for name, v in values.items():
        level, key = name.split(" ")
        result[level][key] = float(np.mean(v))
    return result | {"per_session": {"session_ids": ["a", "b", "c", "d"], **values}}


def test_aggregate_intervals_over_sessions_of_the_seed_mean():
    """ci95: the bootstrap interval of the per-session values averaged over seeds; vs SFT: the paired interval
    of the seed-averaged per-session differences, * only when it excludes 0 and the seeds agree."""
    from trainer.evaluate import bootstrap_ci, paired_difference

    sft_r10 = {0: [0, 1, 0, 0], 1: [0, 1, 1, 0]}
    rad_r10 = {0: [1, 1, 1, 0], 1: [1, 1, 1, 1]}
    found = {
        "sft": [with_sessions(fake_result(s, "sft", 0.5, 0.1), {"item recall@10": v}) for s, v in sft_r10.items()],
        RAD_DPO: [with_sessions(fake_result(s, RAD_DPO, 0.5, 0.1), {"item recall@10": v}) for s, v in rad_r10.items()],
    }
    rows = aggregate(found)
    sft_mean, rad_mean = np.array([0, 1, 0.5, 0]), np.array([1, 1, 1, 0.5])
    assert rows["sft"]["ci95"]["item R@10"] == bootstrap_ci(sft_mean)
    assert set(rows["sft"]["ci95"]) == {"item R@10"}  # the other columns kept no per-session values
    cmp = rows[RAD_DPO]["vs"]["sft"]["item R@10"]
    want = paired_difference(rad_mean, sft_mean)
    assert (cmp["lo"], cmp["hi"], cmp["clear"]) == (want["lo"], want["hi"], want["clear"])
    table = markdown(rows, "t")
    lo, hi = rows[RAD_DPO]["ci95"]["item R@10"]
    assert f"| {RAD_DPO} | 2 |" in table and f"{rad_mean.mean():.4f} ± {(hi - lo) / 2:.4f}" in table
    assert f"{cmp['diff']:+.4f} [{cmp['lo']:+.4f}, {cmp['hi']:+.4f}]" in table
    # seeds scored on other sessions are not averaged session by session
    found["sft"][1]["per_session"]["session_ids"] = ["a", "b", "c", "e"]
    assert "item R@10" not in aggregate(found)["sft"]["ci95"]

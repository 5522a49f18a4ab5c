"""`radgr eval`: metric functions on hand-made rankings, evaluate() on the tiny fixtures, the CLI end to end."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from sid_index.errors import RadgrError
from sid_index.index import scored_items
from trainer.evaluate import (
    dedupe,
    mean_metrics,
    ndcg_at_k,
    ranked_items,
    ranking_metrics,
    recall_at_k,
    reciprocal_rank,
)
from trainer.model import META_FILE, load_checkpoint, save_checkpoint

# ----------------------------------------------------------------------------- metric functions


def test_recall_and_mrr_by_hand():
    ranked = [(0, 0, 1), (0, 1, 0), (2, 2, 2), (3, 0, 1), (1, 1, 1)]
    targets = {(2, 2, 2), (1, 1, 1), (7, 7, 7)}
    assert recall_at_k(ranked, targets, 1) == 0
    assert recall_at_k(ranked, targets, 3) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, targets, 5) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, targets, 100) == pytest.approx(2 / 3)  # K beyond the list
    assert reciprocal_rank(ranked, targets) == pytest.approx(1 / 3)
    assert reciprocal_rank(ranked, {(9, 9, 9)}) == 0
    assert reciprocal_rank([], targets) == 0 and recall_at_k([], targets, 8) == 0
    assert recall_at_k(ranked, set(), 8) == 0
    assert reciprocal_rank(ranked, [(0, 0, 1), (0, 0, 1)]) == 1.0
    # repeated targets count once
    assert recall_at_k(["a", "b"], ["a", "a", "c"], 2) == 0.5
    m = ranking_metrics(ranked, targets, (1, 3, 5))
    assert m == pytest.approx({"recall@1": 0, "recall@3": 1 / 3, "recall@5": 2 / 3, "mrr": 1 / 3})


def test_ndcg_by_hand():
    # one target at rank 3: 1 / log2(4)
    assert ndcg_at_k(["a", "b", "c"], {"c": 1.0}, 10) == pytest.approx(0.5)
    assert ndcg_at_k(["a", "b", "c"], {"c": 1.0}, 2) == 0.0  # beyond the cut-off
    assert ndcg_at_k(["c"], {"c": 1.0}, 10) == 1.0 and ndcg_at_k(["a"], {}, 10) == 0.0
    # graded: gains 3 (rank 2) and 2 (absent); ideal at k=2 is 3, then 2 at rank 2
    assert ndcg_at_k(["x", "a", "y"], {"a": 3.0, "b": 2.0}, 2) == pytest.approx(
        (3 / np.log2(3)) / (3 + 2 / np.log2(3)))
    m = ranking_metrics(["x", "a"], {"a"}, (1, 2), {"a": 1.0})
    assert m == pytest.approx({"recall@1": 0, "recall@2": 1, "ndcg@10": 1 / np.log2(3), "ndcg@50": 1 / np.log2(3),
                               "mrr": 0.5})


def test_ndcg_and_recall_against_recboles_vectorised_formula():
    """RecBole's evaluator (recbole/evaluator/metrics.py, NDCG and Recall on a 0/1 hit matrix with the number
    of positives per user), rewritten here over numpy arrays, against our per-list functions on random data."""
    rng = np.random.default_rng(0)
    k, users = 20, 200
    rankings = [list(rng.permutation(60)[:k]) for _ in range(users)]
    targets = [set(rng.choice(60, size=rng.integers(1, 6), replace=False).tolist()) for _ in range(users)]
    hits = np.array([[item in t for item in r] for r, t in zip(rankings, targets, strict=True)])
    pos_len = np.array([len(t) for t in targets])
    ranks = np.arange(1, k + 1)
    idcg = np.cumsum(1.0 / np.log2(ranks + 1))[np.minimum(pos_len, k) - 1]
    dcg = np.cumsum(np.where(hits, 1.0 / np.log2(ranks + 1), 0), axis=1)
    recbole_ndcg = dcg[:, k - 1] / idcg
    recbole_recall = np.cumsum(hits, axis=1)[:, 9] / pos_len
    ours_ndcg = [ndcg_at_k(r, dict.fromkeys(t, 1.0), k) for r, t in zip(rankings, targets, strict=True)]
    ours_recall = [recall_at_k(r, t, 10) for r, t in zip(rankings, targets, strict=True)]
    assert np.allclose(ours_ndcg, recbole_ndcg) and np.allclose(ours_recall, recbole_recall)


def test_items_from_sids_by_hand():
    skus = {(0, 0): ["a", "b"], (0, 1): ["c"], (1, 0): ["b", "d"], (9, 9): []}
    ranked = ranked_items([(0, 1), (1, 0), (9, 9), (0, 0)], lambda sid: skus[sid])
    assert ranked == ["c", "b", "d", "a"]  # every SKU of each SID, in order, repeats dropped
    assert dedupe([3, 1, 3, 2, 1]) == [3, 1, 2]
    m = ranking_metrics(ranked, {"a", "d"}, (2, 3, 4))
    assert m == pytest.approx({"recall@2": 0, "recall@3": 0.5, "recall@4": 1.0, "mrr": 1 / 3})


def test_items_from_scored_sids_share_each_sids_probability():
    """A model's beam: each SKU gets log p(SID) - log |SKUs(SID)|. Worked by hand: p = 0.5 on a SID of 4 SKUs
    (0.125 each), 0.3 on a SID of one (0.3), 0.2 on a SID of 2 (0.1 each)."""
    skus = {(0,): ["a", "b", "c", "d"], (1,): ["e"], (2,): ["f", "g"]}
    sids, logp = [(0,), (1,), (2,)], [math.log(0.5), math.log(0.3), math.log(0.2)]
    assert ranked_items(sids, lambda sid: skus[sid], logp) == ["e", "a", "b", "c", "d", "f", "g"]
    assert ranked_items(sids, lambda sid: skus[sid]) == ["a", "b", "c", "d", "e", "f", "g"]  # a fixed ranking
    got = scored_items(sids, logp, lambda sid: skus[sid])
    assert [(s, r) for s, r, _ in got] == [("e", 1), ("a", 0), ("b", 0), ("c", 0), ("d", 0), ("f", 2), ("g", 2)]
    assert [math.exp(x) for *_, x in got] == pytest.approx([0.3, 0.125, 0.125, 0.125, 0.125, 0.1, 0.1])
    assert ranked_items([(0,), (1,)], lambda sid: skus[sid], [math.log(0.5), math.log(0.125)]) == [
        "a", "b", "c", "d", "e"]  # a tie keeps the SID order


def test_mean_over_sessions():
    rows = [{"recall@8": 1.0, "mrr": 0.5}, {"recall@8": 0.0, "mrr": 0.0}, {"recall@8": 0.5, "mrr": 1.0}]
    assert mean_metrics(rows) == pytest.approx({"recall@8": 0.5, "mrr": 0.5})
    assert mean_metrics([]) == {}


# ----------------------------------------------------------------------------- evaluate()


def test_evaluate_tiny(tiny_ckpt, tiny_index, tiny_dataset):
    from trainer.evaluate import evaluate

    res = evaluate(tiny_ckpt, tiny_index, tiny_dataset, split="test", width=32, batch_size=8, max_sessions=12)
    assert res["sessions"] == 12 and res["width"] == 32
    assert res["constrained"]["invalid_rate"] == 0.0 and res["constrained"]["beams"] == 12 * 32
    free = res["unconstrained"]
    assert free["beams"] == 12 * 32 and free["invalid_rate"] > 0  # an untrained model hallucinates
    for level, ks in (("sid", (8, 64, 128)), ("item", (10, 50, 100, 500))):
        vals = [res[level][f"recall@{k}"] for k in ks]
        assert all(0 <= v <= 1 for v in vals) and vals == sorted(vals)
        assert 0 <= res[level]["mrr"] <= 1
    assert res["sessions_per_s"] > 0 and res["wall_s"] >= res["decode_s"]


def test_truth_targets_are_the_truly_relevant_exposed_sids(tiny_index):
    import pyarrow as pa

    from trainer.evaluate import truth_targets

    skus = [tiny_index.skus_of(c)[0] for c in tiny_index.trie.sids()[:4].tolist()]
    sid = [tiny_index.sid_of(s) for s in skus]

    def e(sku, rel, clicked=False):
        return {"sku_id": sku, "position": 1, "relevance": rel, "clicked": clicked, "ordered": False}

    table = pa.table({
        "session_id": ["a", "b", "c"],
        "exposure": [[e(skus[0], 3.0, True), e(skus[1], 2.0), e(skus[2], 1.0), e("NOT-INDEXED", 3.0)],
                     [e(skus[3], None)], None],
    })
    # a: the clicked item and the pseudo-negative (unclicked, relevance 2), not relevance 1 nor unknown SKUs;
    # b: relevance unknown -> no truth; c: no exposure
    assert truth_targets(table, tiny_index) == {"a": {sid[0], sid[1]}}
    assert truth_targets(table.drop(["exposure"]), tiny_index) == {}


def test_evaluate_truth_metrics_on_synthetic_data(tiny_ckpt, tiny_index, tiny_dataset):
    from trainer.evaluate import evaluate, truth_targets

    res = evaluate(tiny_ckpt, tiny_index, tiny_dataset, width=tiny_index.num_sids, batch_size=4, max_sessions=4,
                   unconstrained=False)
    truth = truth_targets(tiny_dataset.split("test"), tiny_index)
    assert res["truth_sessions"] > 0 and len(truth) >= res["truth_sessions"]
    # every SID comes back at this width, so every truly relevant SID is found
    assert res["truth"]["recall@128"] == 1.0 if tiny_index.num_sids <= 128 else res["truth"]["mrr"] > 0


def test_evaluate_exhaustive_width_finds_everything(tiny_ckpt, tiny_index, tiny_dataset):
    """Beams >= SIDs: every SID comes back, so every positive SID and SKU is found (any model)."""
    from trainer.evaluate import evaluate

    width = tiny_index.num_sids
    assert tiny_index.num_skus <= 500
    res = evaluate(tiny_ckpt, tiny_index, tiny_dataset, width=width, batch_size=4, max_sessions=4,
                   unconstrained=False)
    assert res["item"]["recall@500"] == 1.0
    assert res["sid"]["mrr"] > 0 and res["item"]["mrr"] > 0
    assert res["constrained"]["beams"] == 4 * width and res["constrained"]["invalid_rate"] == 0.0
    assert res["unconstrained"] == {}
    if width <= 128:
        assert res["sid"]["recall@128"] == 1.0


def test_popular_baseline_against_a_naive_count(tiny_ckpt, tiny_index, tiny_dataset):
    """The baseline's ranking and scores, recomputed here from the raw sessions by hand."""
    from collections import Counter

    from trainer.evaluate import evaluate_popular, popular_sids

    counts = Counter()
    for row in tiny_dataset.split("train").to_pylist():
        counts.update({tiny_index.sid_of(p["sku_id"]) for p in row["positives"]} - {None})
    ranking = popular_sids(tiny_dataset, tiny_index)
    assert [counts[c] for c in ranking] == sorted(counts.values(), reverse=True) and set(ranking) == set(counts)
    assert all(a < b for a, b in zip(ranking, ranking[1:], strict=False) if counts[a] == counts[b])  # ties by SID

    width = 8
    res = evaluate_popular(tiny_index, tiny_dataset, width=width, max_sessions=10)
    recalls, rrs = [], []
    for row in tiny_dataset.split("test").to_pylist():  # the first 10 sessions with a positive in the index
        pos = {tiny_index.sid_of(p["sku_id"]) for p in row["positives"]} - {None}
        if pos and len(recalls) < 10:
            recalls.append(len(pos & set(ranking[:width])) / len(pos))
            rrs.append(next((1 / r for r, c in enumerate(ranking[:width], 1) if c in pos), 0.0))
    assert res["sessions"] == 10 and res["sid"]["recall@8"] == pytest.approx(sum(recalls) / 10)
    assert res["sid"]["mrr"] == pytest.approx(sum(rrs) / 10)
    assert res["constrained"]["invalid_rate"] == 0.0 and res["unconstrained"] == {}
    assert res["truth_sessions"] > 0  # synthetic data: scored against the truth too


def test_index_only_baseline_against_brute_force(tiny_ckpt, tiny_index, tiny_dataset):
    """Every session's ranking rebuilt here: MiniLM query embedding (or recency-weighted history SID vectors)
    against every SID's centroid sum, by float64 distance."""
    from sid_index.embed import embed_texts
    from sid_index.index import load_centroids
    from sid_index.retrieve import HISTORY_WEIGHTS, sid_table
    from trainer.evaluate import evaluate_index_only

    codes, vectors = sid_table(tiny_index)
    centroids = load_centroids(tiny_index)
    width, n = 16, 12
    res = evaluate_index_only(tiny_index, tiny_dataset, width=width, max_sessions=n)
    recalls, rrs, used = [], [], 0
    for row in tiny_dataset.split("test").to_pylist():
        pos = {tiny_index.sid_of(p["sku_id"]) for p in row["positives"]} - {None}
        if not pos:
            continue
        if (row["query"] or "").strip():
            vec = embed_texts([row["query"].strip()], progress=False)[0][0].astype(np.float64)
        else:
            hist = [tiny_index.sid_of(s) for s in row["history"]][-3:][::-1]
            weights = HISTORY_WEIGHTS[: len(hist)]
            parts = [w * sum(centroids[lv][h[lv]] for lv in range(3)) for w, h in zip(weights, hist, strict=True)]
            vec = sum(parts) / sum(HISTORY_WEIGHTS[: len(hist)])
        dist = ((vectors.astype(np.float64) - vec) ** 2).sum(1)
        ranking = [tuple(codes[i].tolist()) for i in np.argsort(dist)[:width]]
        recalls.append(len(pos & set(ranking)) / len(pos))
        rrs.append(next((1 / r for r, c in enumerate(ranking, 1) if c in pos), 0.0))
        used += 1
        if used == n:
            break
    assert res["sessions"] == n and res["model"] == "index only (quantised text embedding)"
    assert res["sid"]["recall@8"] >= 0 and res["sid"]["mrr"] == pytest.approx(np.mean(rrs), abs=1e-9)
    assert res["per_session"]["sid recall@128"] == pytest.approx(recalls)
    assert res["sid"]["mrr"] > 0  # the index alone finds something


def test_bootstrap_interval_and_paired_difference():
    from trainer.evaluate import bootstrap_ci, paired_difference

    assert bootstrap_ci(np.full(50, 0.3)) == pytest.approx((0.3, 0.3))
    assert bootstrap_ci(np.array([])) == (0.0, 0.0)
    x = np.random.default_rng(1).random(4000)
    lo, hi = bootstrap_ci(x)
    half = 1.96 * x.std() / np.sqrt(len(x))  # the normal approximation agrees for a large sample
    assert lo == pytest.approx(x.mean() - half, abs=half * 0.15)
    assert hi == pytest.approx(x.mean() + half, abs=half * 0.15)
    same = paired_difference(x, x)
    assert same == {"mean": 0.0, "lo": 0.0, "hi": 0.0, "clear": False}
    better = paired_difference(x + 0.01, x)
    assert better["mean"] == pytest.approx(0.01) and better["clear"]
    noisy = paired_difference(x, x[::-1])  # same values, shuffled pairing: no clear difference
    assert not noisy["clear"] and noisy["lo"] < 0 < noisy["hi"]
    with pytest.raises(ValueError, match="same sessions"):
        paired_difference(x, x[:10])


# ----------------------------------------------------------------------------- radgr eval


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from radgr.cli import app

    monkeypatch.setattr(sys, "argv", ["radgr", *map(str, args)])
    capsys.readouterr()  # drop what the test printed before (e.g. checkpoint saving)
    try:
        app()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_two_models(tiny_ckpt, tiny_index, tiny_dataset, tmp_path, monkeypatch, capsys):
    a = save_checkpoint(tiny_ckpt, tmp_path / "a")
    save_checkpoint(tiny_ckpt, tmp_path / "run" / "model")  # a training output folder
    out, md = tmp_path / "res" / "results.json", tmp_path / "res" / "results.md"
    code, stdout, stderr = run_cli(
        monkeypatch, capsys, "eval", "--model", a, "--model", tmp_path / "run", "--index", tiny_index.root,
        "--data", tiny_dataset.root, "--beam-width", 16, "--batch-size", 8, "--max-sessions", 6,
        "--out", out, "--markdown", md,
    )
    assert code == 0, stderr
    results = json.loads(out.read_text())
    names = [m["name"] for m in results["models"]]
    assert names == [str(a), str(tmp_path / "run"), "most popular (train)", "index only (quantised text embedding)"]
    ids = results["models"][0]["per_session"]["session_ids"]
    assert all(m["per_session"]["session_ids"] == ids for m in results["models"])  # the same sessions, same order
    assert results["models"][1]["model"] == str(tmp_path / "run" / "model")
    for m in results["models"]:
        assert m["sessions"] == 6 and m["width"] == 16 and m["constrained"]["invalid_rate"] == 0
        lo, hi = m["ci95"]["sid recall@128"]
        assert lo <= m["sid"]["recall@128"] <= hi
    assert all(m["unconstrained"]["invalid_rate"] > 0 for m in results["models"][:2])
    # the same weights give the same metrics
    assert results["models"][0]["sid"] == results["models"][1]["sid"]
    table = md.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 5 + 3 and "SID R@8" in rows[0] and str(a) in rows[1] and "index only" in rows[4]
    assert "Paired difference to index only" in table and rows[6].startswith(f"| {a} | ")
    assert table in stdout
    code, stdout, stderr = run_cli(
        monkeypatch, capsys, "eval", "--model", a, "--index", tiny_index.root, "--data", tiny_dataset.root,
        "--beam-width", 4, "--max-sessions", 2, "--no-baselines", "--no-unconstrained",
    )
    assert code == 0 and "most popular" not in stdout and "index only" not in stdout


def test_a_model_refit_on_valid_is_not_judged_on_valid(tiny_ckpt, tiny_index, tiny_dataset, tmp_path, monkeypatch,
                                                       capsys):
    tiny_ckpt.meta["stages"] = [{"stage": "sft", "steps": 6, "split": "train+valid"}]
    path = save_checkpoint(tiny_ckpt, tmp_path / "refit")
    args = ("eval", "--model", path, "--index", tiny_index.root, "--data", tiny_dataset.root, "--beam-width", 4,
            "--max-sessions", 2, "--no-baselines", "--no-unconstrained")
    code, _, stderr = run_cli(monkeypatch, capsys, *args, "--split", "valid")
    assert code != 0 and "trained on the 'valid' sessions" in stderr and "Traceback" not in stderr
    code, stdout, stderr = run_cli(monkeypatch, capsys, *args, "--split", "test")
    assert code == 0, stderr


@pytest.mark.parametrize(
    "what, message",
    [
        ("model", "not a radgr checkpoint"),
        ("index", "no such index directory"),
        ("data", "not a dataset directory"),
        ("other-index", "was trained for index"),
        ("width", "--beam-width"),
        ("split", "--split"),
    ],
)
def test_cli_errors_are_one_line(what, message, tiny_ckpt, tiny_index, tiny_dataset, tmp_path, monkeypatch,
                                 capsys):
    ck = save_checkpoint(tiny_ckpt, tmp_path / "ck")
    args = {"--model": ck, "--index": tiny_index.root, "--data": tiny_dataset.root, "--beam-width": 4,
            "--max-sessions": 2}
    if what == "other-index":
        meta = json.loads((ck / META_FILE).read_text())
        meta["index_id"] = "0" * 16
        (ck / META_FILE).write_text(json.dumps(meta))
    elif what == "width":
        args["--beam-width"] = 0
    elif what == "split":
        args["--split"] = "dev"
    else:
        args[f"--{what}"] = tmp_path / "missing"
    argv = [x for kv in args.items() for x in kv]
    code, stdout, stderr = run_cli(monkeypatch, capsys, "eval", *argv, "--out", tmp_path / "r.json")
    assert code == 2
    assert stderr.startswith("error: ") and len(stderr.strip().splitlines()) == 1, stderr
    assert message in stderr and "Traceback" not in stderr
    assert not (tmp_path / "r.json").exists()


def test_index_prior_with_a_huge_weight_is_the_index_only_ranking(tiny_ckpt, tiny_index, tiny_dataset):
    """Exact search (width >= every prefix) with the model's scores drowned by the prior = the floor's ranking."""
    from trainer.evaluate import evaluate, evaluate_index_only

    width = max(tiny_index.trie.nodes(level) for level in range(tiny_index.levels - 1))
    assert width <= 64
    fused = evaluate(tiny_ckpt, tiny_index, tiny_dataset, width=width, batch_size=4, max_sessions=8,
                     unconstrained=False, index_prior=1e4)
    floor = evaluate_index_only(tiny_index, tiny_dataset, width=width, max_sessions=8)
    alone = evaluate(tiny_ckpt, tiny_index, tiny_dataset, width=width, batch_size=4, max_sessions=8,
                     unconstrained=False)
    assert fused["index_prior"] == 1e4 and fused["per_session"]["session_ids"] == floor["per_session"]["session_ids"]
    for key in ("sid mrr", "item recall@10", "item mrr"):
        assert fused["per_session"][key] == pytest.approx(floor["per_session"][key]), key
    assert alone["per_session"]["sid mrr"] != pytest.approx(floor["per_session"]["sid mrr"])


def test_pick_prior_takes_the_surest_margin_over_the_index_not_the_highest_mean():
    """Weight 0 has the best mean but a wide spread; weight 20 a smaller but steady margin: 20 is picked."""
    from trainer.evaluate import INDEX_ONLY, paired_difference, pick_prior

    rng = np.random.default_rng(0)
    floor = rng.random(1000)
    spread = rng.normal(size=1000)
    noisy = floor + 0.03 + (spread - spread.mean())  # margin 0.03, sd 1: interval about +-0.06
    steady = floor + 0.02 + 0.01 * (spread - spread.mean())  # margin 0.02, sd 0.01
    row = lambda name, w, v, dev="cpu": {"model": name, "index_prior": w, "device": dev,  # noqa: E731
                                         "per_session": {"item recall@10": list(v)}}
    results = [row("m", 0.0, noisy), row("m", 20.0, steady), row(INDEX_ONLY, 0.0, floor, None)]
    assert noisy.mean() > steady.mean()
    weight, margins = pick_prior(results, "item recall@10")
    assert weight == (20.0, 0.0)  # (index prior, item prior): rows without an item prior have 0
    assert margins[0.0, 0.0] == paired_difference(noisy, floor)
    assert margins[20.0, 0.0] == paired_difference(steady, floor)
    assert margins[20.0, 0.0]["lo"] > margins[0.0, 0.0]["lo"]
    item_row = row("m", 0.0, floor + 0.05) | {"item_prior": 2.0}
    assert pick_prior([*results, item_row], "item recall@10")[0] == (0.0, 2.0)
    with pytest.raises(RadgrError, match="index-only row"):
        pick_prior(results[:2], "item recall@10")


def test_cli_pick_prior_writes_the_weight_into_the_checkpoint(tiny_ckpt, tiny_index, tiny_dataset, tmp_path,
                                                             monkeypatch, capsys):
    from trainer.evaluate import evaluate, evaluate_index_only, paired_difference

    ck = save_checkpoint(tiny_ckpt, tmp_path / "ck")
    args = ["eval", "--model", ck, "--index", tiny_index.root, "--data", tiny_dataset.root, "--beam-width", 8,
            "--max-sessions", 12, "--no-unconstrained", "--index-prior", 0, "--index-prior", 1e4]
    inode = (ck / "model.safetensors").stat().st_ino
    code, _, stderr = run_cli(monkeypatch, capsys, *args, "--split", "valid", "--pick-prior", "sid mrr")
    assert code == 0, stderr
    assert (ck / "model.safetensors").stat().st_ino == inode  # the metadata changed, the weights were not rewritten
    # the same choice computed from evaluate() directly
    ckpt = load_checkpoint(ck)
    floor = evaluate_index_only(tiny_index, tiny_dataset, "valid", 8, 12)["per_session"]["sid mrr"]
    margin = {w: paired_difference(evaluate(ckpt, tiny_index, tiny_dataset, "valid", 8, 16, 12,
                                            unconstrained=False, index_prior=w)["per_session"]["sid mrr"], floor)
              for w in (0.0, 1e4)}
    want = max(margin, key=lambda w: (margin[w]["lo"], margin[w]["mean"]))
    assert ckpt.index_prior == want and f"picked index prior {want:g}, item prior 0" in stderr
    assert ckpt.item_prior == 0.0
    picked = ckpt.meta["index_prior_picked"]
    assert picked["split"] == "valid" and picked["sessions"] == 12 and picked["weights"] == [[0.0, 0.0], [1e4, 0.0]]
    code, _, stderr = run_cli(monkeypatch, capsys, *args, "--split", "test", "--pick-prior", "sid mrr")
    assert code == 2 and "choose on the sessions it is judged on" in stderr
    code, _, stderr = run_cli(monkeypatch, capsys, *args, "--split", "valid", "--pick-prior", "sid mrr",
                              "--no-baselines")
    assert code == 2 and "index-only row" in stderr


def test_item_prior_rescores_one_beam_exactly(tiny_ckpt, tiny_index, tiny_dataset):
    """Several item-prior weights from one beam search: weight 0 is the plain evaluation; every other row
    ranks the same beam's SKUs by share + weight x (2 q.e - |e|^2), recomputed here by a naive loop over the
    SKUs with the query embedded separately; a huge weight orders the beam's SKUs by cosine alone."""
    from sid_index.decoding import beam_search
    from sid_index.embed import embed_texts
    from sid_index.retrieve import embedding_model_of
    from trainer.data import build_examples, embed_prompt_texts
    from trainer.evaluate import evaluate, evaluate_item_priors, ranking_metrics

    width, n = 8, 10
    rows = evaluate_item_priors(tiny_ckpt, tiny_index, tiny_dataset, width=width, batch_size=4, max_sessions=n,
                                unconstrained=False, item_priors=(0.0, 0.5, 1e6))
    plain = evaluate(tiny_ckpt, tiny_index, tiny_dataset, width=width, batch_size=4, max_sessions=n,
                     unconstrained=False)
    assert [r["item_prior"] for r in rows] == [0.0, 0.5, 1e6]
    assert rows[0]["per_session"] == plain["per_session"]

    ex = build_examples(tiny_dataset, tiny_index, tiny_ckpt.prompts, "test")
    embed_prompt_texts(ex, tiny_ckpt.text_model)
    table = tiny_dataset.split("test")
    query_of = dict(zip(table["session_id"].to_pylist(), table["query"].to_pylist(), strict=True))
    model = embedding_model_of(tiny_index)
    expect = {0.5: [], 1e6: []}
    for i in range(n):
        res = beam_search(tiny_ckpt.decoder.eval(), [ex.prompts[i]], tiny_ckpt.vocab, tiny_ckpt.eos_id, width,
                          tiny_index.constraint("cpu"), pad_id=tiny_ckpt.pad_id)
        keep = res.valid[0].numpy()
        sids = [tuple(c) for c in res.codes[0].numpy()[keep].tolist()]
        scores = res.scores[0].float().numpy()[keep].tolist()
        q = embed_texts([query_of[ex.session_ids[i]].strip()], model, progress=False)[0][0]
        gains = dict(zip(ex.pos_skus[i], ex.pos_sku_grades[i], strict=True))
        for w in expect:
            cands = []
            for rank, (sid, score) in enumerate(zip(sids, scores, strict=True)):
                skus = tiny_index.skus_of(sid)
                for sku in skus:
                    e = tiny_index.vectors_of([sku])[0].astype(np.float64)
                    cands.append((score - np.log(len(skus)) + w * (2 * e @ q - e @ e), rank, sku))
            ranked = list(dict.fromkeys(sku for _, _, sku in sorted(cands, key=lambda t: (-t[0], t[1]))))
            expect[w].append(ranking_metrics(ranked, ex.pos_skus[i], (10,), gains)["mrr"])
    for row, w in zip(rows[1:], expect, strict=True):
        assert row["per_session"]["item mrr"] == pytest.approx(expect[w], abs=1e-12)
    assert rows[2]["per_session"]["item mrr"] != rows[0]["per_session"]["item mrr"]  # the prior moved something


@pytest.mark.parametrize("lexical", [0.0, 3.0])
def test_index_only_at_item_resolution_against_brute_force(tiny_index, tiny_dataset, lexical):
    """Every session's SID ranking rebuilt here: the query embedding (or the last history items' own vectors,
    recency-weighted) against every SKU's own vector, plus `lexical` x the query's normalised BM25 score of
    the SKU (looked up by SKU, one query at a time), each SID ranked by its best SKU, in float64."""
    from sid_index.embed import embed_texts
    from sid_index.retrieve import HISTORY_WEIGHTS
    from trainer.evaluate import INDEX_ONLY_HYBRID, INDEX_ONLY_ITEMS, evaluate_index_only_items

    skus = [tiny_index.rows.restore_key(r) for r in range(len(tiny_index.rows))]
    vectors = tiny_index.vectors_of(skus).astype(np.float64)
    width, n = 16, 12
    res = evaluate_index_only_items(tiny_index, tiny_dataset, width=width, max_sessions=n, lexical_prior=lexical)
    rrs, item_rrs, moved = [], [], 0
    for row in tiny_dataset.split("test").to_pylist():
        pos = {tiny_index.sid_of(p["sku_id"]) for p in row["positives"]} - {None}
        if not pos:
            continue
        if (row["query"] or "").strip():
            q = embed_texts([row["query"].strip()], progress=False)[0][0].astype(np.float64)
        else:
            last = [s for s in row["history"] if tiny_index.sid_of(s) is not None][-3:][::-1]
            w = HISTORY_WEIGHTS[: len(last)]
            q = sum(a * tiny_index.vectors_of([s])[0] for a, s in zip(w, last, strict=True)) / sum(w)
        lex = tiny_index.lexical().scores([(row["query"] or "").strip()])[0]
        best: dict[tuple, float] = {}
        for sku, e in zip(skus, vectors, strict=True):
            sid = tiny_index.sid_of(sku)
            best[sid] = max(best.get(sid, -np.inf), 2 * e @ q - e @ e + lexical * lex[tiny_index.rows[sku]])
        ranking = sorted(best, key=best.get, reverse=True)[:width]
        rrs.append(next((1 / r for r, c in enumerate(ranking, 1) if c in pos), 0.0))
        own = {sku: 2 * e @ q - e @ e + lexical * lex[tiny_index.rows[sku]]
               for sku, e in zip(skus, vectors, strict=True)}
        items = sorted((k for sid in ranking for k in tiny_index.skus_of(sid)), key=own.get, reverse=True)
        targets = {p["sku_id"] for p in row["positives"] if tiny_index.sid_of(p["sku_id"]) is not None}
        item_rrs.append(next((1 / r for r, k in enumerate(items, 1) if k in targets), 0.0))
        moved += bool(lexical * lex.max())
        if len(rrs) == n:
            break
    assert res["model"] == (INDEX_ONLY_HYBRID if lexical else INDEX_ONLY_ITEMS) and res["sessions"] == n
    assert res["per_session"]["sid mrr"] == pytest.approx(rrs, abs=1e-6)
    assert res["per_session"]["item mrr"] == pytest.approx(item_rrs, abs=1e-6)  # its SKUs by their own score
    assert moved if lexical else not moved  # the lexical term was live for some sessions


@pytest.mark.parametrize("width", [4, 16])
def test_item_form_prior_with_a_huge_weight_is_the_item_floor_at_any_width(tiny_ckpt, tiny_index, tiny_dataset,
                                                                          width):
    """The item-form prior's lookahead is exact: with the model drowned, even a narrow search returns the item
    floor's SID ranking (with the lexical term: the hybrid floor's); radgr eval then judges models against the
    strongest floor present."""
    from trainer.evaluate import (
        INDEX_ONLY_HYBRID,
        INDEX_ONLY_ITEMS,
        evaluate_index_only_items,
        evaluate_item_priors,
        floor_and_models,
    )

    floors = {}
    for lexical in (0.0, 5.0):
        fused = evaluate_item_priors(tiny_ckpt, tiny_index, tiny_dataset, width=width, batch_size=4, max_sessions=8,
                                     unconstrained=False, index_prior=1e4, prior_form="item", item_priors=(1e4,),
                                     lexical_prior=lexical)[0]
        floor = floors[lexical] = evaluate_index_only_items(tiny_index, tiny_dataset, width=width, max_sessions=8,
                                                            lexical_prior=lexical)
        assert fused["index_prior_form"] == "item" and fused["lexical_prior"] == lexical
        assert fused["per_session"]["session_ids"] == floor["per_session"]["session_ids"]
        for key in ("sid mrr", "sid recall@128", "item mrr", "item recall@10"):  # SKUs by their own score, both
            assert fused["per_session"][key] == pytest.approx(floor["per_session"][key]), key
    assert floors[0.0]["per_session"]["sid mrr"] != floors[5.0]["per_session"]["sid mrr"]  # BM25 moved rankings
    sid_floor = {"model": "index only (quantised text embedding)", "per_session": {"x": [0]}}
    assert floor_and_models([sid_floor, floors[0.0], fused])[0]["model"] == INDEX_ONLY_ITEMS
    assert floor_and_models([sid_floor, floors[0.0], floors[5.0], fused])[0]["model"] == INDEX_ONLY_HYBRID


def test_the_lexical_prior_needs_the_item_form(tiny_ckpt, tiny_index, tiny_dataset, tmp_path, monkeypatch, capsys):
    """--lexical-prior is a term of the item-form prior: with the SID form radgr eval refuses it in one line."""
    ck = save_checkpoint(tiny_ckpt, tmp_path / "ck")
    code, _, stderr = run_cli(monkeypatch, capsys, "eval", "--model", ck, "--index", tiny_index.root, "--data",
                              tiny_dataset.root, "--max-sessions", 2, "--index-prior", 1, "--lexical-prior", 1)
    assert code != 0 and "needs the item form" in stderr and "Traceback" not in stderr


def test_cli_pick_prior_of_the_item_form_records_the_form(tiny_ckpt, tiny_index, tiny_dataset, tmp_path, monkeypatch,
                                                          capsys):
    """--index-prior-form item: the margins are taken over the item-resolution floor, and the checkpoint gets
    the form with the weight (and the lexical term's), so radgr eval and serve fuse the same prior by default."""
    from trainer.evaluate import evaluate_index_only_items, evaluate_item_priors, paired_difference

    ck = save_checkpoint(tiny_ckpt, tmp_path / "ck")
    code, _, stderr = run_cli(monkeypatch, capsys, "eval", "--model", ck, "--index", tiny_index.root, "--data",
                              tiny_dataset.root, "--beam-width", 8, "--max-sessions", 12, "--no-unconstrained",
                              "--index-prior", 0, "--index-prior", 1e4, "--index-prior-form", "item",
                              "--split", "valid", "--pick-prior", "sid mrr", "--lexical-prior", 2)
    assert code == 0, stderr
    ckpt = load_checkpoint(ck)
    floor = evaluate_index_only_items(tiny_index, tiny_dataset, "valid", 8, 12, lexical_prior=2)["per_session"]
    margin = {w: paired_difference(evaluate_item_priors(ckpt, tiny_index, tiny_dataset, "valid", 8, 16, 12,
                                                        unconstrained=False, index_prior=w, prior_form="item",
                                                        lexical_prior=2)[0]["per_session"]["sid mrr"], floor["sid mrr"])
              for w in (0.0, 1e4)}
    assert margin[1e4]["mean"] == 0.0  # the drowned model is the hybrid floor itself
    want = max(margin, key=lambda w: (margin[w]["lo"], margin[w]["mean"]))
    assert ckpt.index_prior == want and ckpt.index_prior_form == "item" and ckpt.lexical_prior == 2

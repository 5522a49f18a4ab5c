"""Does RDRW's similarity find the pseudo-negatives? Measured on synthetic data, where the truth is known.

    python bench/rdrw_signal.py --model runs/rdrw/sft --model runs/rdrw/rad-dpo \\
        --data runs/rdrw/data --index runs/rdrw/index --out bench/results/rdrw_signal_cpu.md

RDRW (paper eq. 5-7) halves the penalty of a negative whose EOS hidden state is close to y_w*'s,
on the premise that such a negative is likely relevant but unclicked. This checks the premise.
For train sessions of a dataset whose exposure column keeps the true relevance, each session's
training negatives are drawn exactly as `trainer.loop` draws them in epoch 0 (exposed-unclicked
SIDs first, random catalog SIDs to fill N) and labelled by the truth: pseudo-negative (exposed,
relevance >= 2), true negative (exposed, relevance < 2) or random fill.

Signals, same sessions and negatives:
  model EOS cosine   cosine of the negative's EOS hidden state to y_w*'s, from one packed forward
                     pass per batch (`candidate_logps(hidden=True)`, as training computes it)
  text cosine        cosine of the items' catalog-text embeddings (the MiniLM vectors the index
                     was built from): needs no model; the peer
  shared SID prefix  how many leading SID codes the negative shares with y_w* (what TLGD detaches)
  SID vector cosine  cosine of the SIDs' RQ-KMeans reconstructions (sum of their codes' centroids):
                     what `radgr train rad-dpo --rdrw-signal sid` uses instead of the EOS states

For each: ROC AUC of pseudo vs true negatives (0.5: the signal cannot tell them apart), and the
mean eq. 6 weight per group when the quartiles are those of all the run's values of that signal
(as RDRW's window holds them after its warm-up); the weight ratio true / pseudo says how much
more a true negative is pushed down than a pseudo-negative.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sid_index.atomic import atomic_file  # noqa: E402
from sid_index.data.schema import RELEVANT_GRADE, load_dataset  # noqa: E402
from sid_index.embed import embed_texts, item_texts  # noqa: E402
from sid_index.index import load_centroids, load_index  # noqa: E402
from trainer.data import build_examples, sample_negatives, session_rng  # noqa: E402
from trainer.losses import common_prefix  # noqa: E402
from trainer.model import load_checkpoint  # noqa: E402
from trainer.packing import candidate_logps, pack  # noqa: E402
from trainer.rdrw import SidVectors, eos_similarity, rdrw_weight  # noqa: E402

GROUPS = ("pseudo", "true", "random")


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a pos value > a neg value) + P(tie) / 2 (Mann-Whitney U / (n1 n0)); nan if a side is empty."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    _, inverse, counts = np.unique(np.concatenate([pos, neg]), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based ranks, ties get their average rank
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def weights_of(values: np.ndarray, lam: float) -> np.ndarray:
    """Eq. 6 weights of `values` with the quartiles of `values` themselves."""
    q25, q50, q75 = np.quantile(values, [0.25, 0.5, 0.75])
    return rdrw_weight(torch.as_tensor(values, dtype=torch.float64), float(q25), float(q50), float(q75), lam).numpy()


def session_negatives(dataset, index, ex, num_neg: int, seed: int, max_sessions: int | None):
    """Per train session with exposure truth: its example row, y_w*'s SKU, and its training negatives
    (codes [N, L], label per row, one SKU per row for the text signal)."""
    table = dataset.split("train")
    if "exposure" not in table.column_names:
        raise SystemExit(f"{dataset.root}: no exposure column (true relevance): use synthetic data (radgr data synth)")
    truth = {}
    for sid_, pos, expo in zip(table["session_id"].to_pylist(), table["positives"].to_pylist(),
                               table["exposure"].to_pylist(), strict=True):
        truth[sid_] = (pos, expo)
    row_of = {s: i for i, s in enumerate(ex.session_ids)}
    all_sids = index.trie.sids().astype(np.int64)
    out = []
    for sid_, (pos, expo) in truth.items():
        i = row_of.get(sid_)
        if i is None or not expo:
            continue
        top = tuple(int(c) for c in ex.pos_codes[i][0])
        best = max((p for p in pos if index.sid_of(p["sku_id"]) == top), key=lambda p: p["grade"] or 0.0)
        relevance: dict[tuple[int, ...], tuple[float, str]] = {}  # exposed-unclicked SID -> (max relevance, a SKU)
        for e in expo:
            codes = index.sid_of(e["sku_id"])
            if not e["clicked"] and codes is not None and e["relevance"] is not None:
                was = relevance.get(codes)
                if was is None or e["relevance"] > was[0]:
                    relevance[codes] = (float(e["relevance"]), e["sku_id"])
        negs = sample_negatives(ex.neg_codes[i], ex.pos_codes[i], all_sids, num_neg, session_rng(seed, 0, i))
        labels, skus = [], []
        for row in negs:
            key = tuple(int(c) for c in row)
            if key in relevance:
                rel, sku = relevance[key]
                labels.append("pseudo" if rel >= RELEVANT_GRADE else "true")
            else:
                labels.append("random")
                sku = index.skus_of(key)[0]
            skus.append(sku)
        out.append({"row": i, "top_sku": best["sku_id"], "neg_codes": negs, "labels": labels, "neg_skus": skus})
        if max_sessions is not None and len(out) >= max_sessions:
            break
    return out


def candidate_ids(ckpt, ex, session) -> np.ndarray:
    """Token ids [1 + N, L] of a session's y_w* and then its negatives, as training packs them."""
    return np.asarray(ckpt.vocab.codes_to_ids(np.concatenate([ex.pos_codes[session["row"]][:1],
                                                              session["neg_codes"]])))


@torch.no_grad()
def model_similarities(ckpt, ex, sessions, batch_size: int) -> list[np.ndarray]:
    """Eq. 5 per session: cosine of each negative's EOS hidden state to y_w*'s, [N] arrays."""
    ckpt.model.eval()
    sims = []
    for start in range(0, len(sessions), batch_size):
        chunk = sessions[start : start + batch_size]
        cands = [candidate_ids(ckpt, ex, s) for s in chunk]
        packed = pack([ex.prompts[s["row"]] for s in chunk], cands, ckpt.eos_id, ckpt.pad_id)
        _, hidden = candidate_logps(ckpt.model, packed, hidden=True)
        first = 0
        for c in cands:
            h = hidden[first : first + len(c)]
            sims.append(eos_similarity(h[:1], h[None, 1:])[0].numpy())
            first += len(c)
    return sims


def text_similarities(dataset, sessions) -> list[np.ndarray]:
    catalog = dataset.catalog
    emb, _ = embed_texts(item_texts(catalog), progress=False)
    emb = F.normalize(torch.as_tensor(emb, dtype=torch.float32), dim=-1)
    row = {sku: i for i, sku in enumerate(catalog["sku_id"].to_pylist())}
    return [(emb[[row[k] for k in s["neg_skus"]]] @ emb[row[s["top_sku"]]]).numpy() for s in sessions]


def sid_vector_similarities(ckpt, ex, sessions, index) -> list[np.ndarray]:
    """`--rdrw-signal sid`: cosine of the SIDs' RQ-KMeans reconstructions, as training computes it."""
    vectors = SidVectors(load_centroids(index), ckpt.vocab.offsets)
    out = []
    for s in sessions:
        v = vectors(torch.as_tensor(candidate_ids(ckpt, ex, s)))
        out.append(eos_similarity(v[:1], v[None, 1:])[0].numpy())
    return out


def prefix_overlaps(ex, sessions) -> list[np.ndarray]:
    return [common_prefix(torch.as_tensor(s["neg_codes"]), torch.as_tensor(ex.pos_codes[s["row"]][:1])).numpy()
            .astype(np.float64) for s in sessions]


def summarise(name: str, per_session: list[np.ndarray], labels: np.ndarray, lam: float) -> dict:
    values = np.concatenate(per_session).astype(np.float64)
    w = weights_of(values, lam)
    res = {"signal": name, "auc_pseudo_vs_true": roc_auc(values[labels == "pseudo"], values[labels == "true"])}
    for g in GROUPS:
        res[f"mean_{g}"] = float(values[labels == g].mean()) if (labels == g).any() else float("nan")
        res[f"weight_{g}"] = float(w[labels == g].mean()) if (labels == g).any() else float("nan")
    res["weight_ratio_true_over_pseudo"] = res["weight_true"] / res["weight_pseudo"]
    return res


def markdown(rows: list[dict], counts: dict[str, int], header: str) -> str:
    lines = [header, "", "negatives: " + ", ".join(f"{g} {counts[g]:,}" for g in GROUPS), "",
             "| signal | AUC pseudo vs true | mean: pseudo / true / random | eq. 6 weight: pseudo / true / random"
             " | weight true / pseudo |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['signal']} | {r['auc_pseudo_vs_true']:.3f} | "
                     + " / ".join(f"{r[f'mean_{g}']:.3f}" for g in GROUPS) + " | "
                     + " / ".join(f"{r[f'weight_{g}']:.3f}" for g in GROUPS)
                     + f" | {r['weight_ratio_true_over_pseudo']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, help="checkpoint (repeatable)")
    ap.add_argument("--data", type=Path, required=True, help="dataset with an exposure column (synthetic)")
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--num-negatives", type=int, default=16, help="negatives per session, as in training")
    ap.add_argument("--max-sessions", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0, help="the training seed whose epoch-0 negatives are drawn")
    ap.add_argument("--rdrw-lambda", type=float, default=12.0)
    ap.add_argument("--out", type=Path, help="write the markdown table here (and .json beside it)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    dataset, index = load_dataset(args.data), load_index(args.index)
    rows, counts = [], None
    for k, path in enumerate(args.model):
        ckpt = load_checkpoint(path)
        ckpt.check_index(index)
        ex = build_examples(dataset, index, ckpt.prompts, "train")
        if k == 0:  # the sessions and negatives depend on the index and the seed only, not the model
            sessions = session_negatives(dataset, index, ex, args.num_negatives, args.seed, args.max_sessions)
            if not sessions:
                raise SystemExit(f"{args.data}: no train session with exposed negatives")
            labels = np.concatenate([s["labels"] for s in sessions])
            counts = {g: int((labels == g).sum()) for g in GROUPS}
            rows.append(summarise("text cosine (MiniLM, no model)", text_similarities(dataset, sessions), labels,
                                  args.rdrw_lambda))
            rows.append(summarise("shared SID prefix", prefix_overlaps(ex, sessions), labels, args.rdrw_lambda))
            rows.append(summarise("SID vector cosine (--rdrw-signal sid)",
                                  sid_vector_similarities(ckpt, ex, sessions, index), labels, args.rdrw_lambda))
        rows.append(summarise(f"model EOS cosine: {path}", model_similarities(ckpt, ex, sessions, args.batch_size),
                              labels, args.rdrw_lambda))
    command = "python bench/rdrw_signal.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    header = (f"`{command}`\n\nRDRW signal on {args.data} ({len(sessions):,} train sessions, "
              f"{args.num_negatives} negatives each, "
              f"drawn as epoch 0 of seed {args.seed}; pseudo: exposed, unclicked, relevance >= {RELEVANT_GRADE:g}); "
              f"{time.perf_counter() - t0:.0f} s on {torch.get_num_threads()} CPU thread(s)")
    md = markdown(rows, counts, header)
    print(md, end="")
    result = {"rows": rows, "counts": counts, "sessions": len(sessions),
              "args": {k: str(v) for k, v in vars(args).items()}}
    if args.out:
        with atomic_file(args.out, "w") as fh:
            fh.write(md)
        with atomic_file(args.out.with_suffix(".json"), "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()

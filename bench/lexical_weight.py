"""The lexical term's weight, chosen on the index alone: the item-resolution floor with BM25 mixed in.

    python bench/lexical_weight.py --index runs/homedepot/index --data runs/homedepot/data --split valid \
        --weights 0,0.25,0.5,1,2,4 --out bench/results/lexical_weight_homedepot.md

Each row ranks SIDs by their best SKU's `2 q.e - |e|^2 + w x BM25(query, SKU) / best BM25 of the query`
(`trainer.evaluate.evaluate_index_only_items`, what the item-form index prior fuses into the search with
`--lexical-prior w`), beside the BM25 and dense peers (`trainer.peers`) on the same sessions. No model is
involved, so the weight is fixed before any model sees it; `radgr eval --pick-prior` then picks the
index-prior weight with the model on top of it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sid_index.atomic import atomic_file
from sid_index.data.schema import load_dataset
from sid_index.index import load_index
from trainer.data import build_examples
from trainer.evaluate import evaluate_index_only_items, metric_cell, paired_difference
from trainer.peers import bm25_peer, dense_peer, requests_of, score_peer

METRICS = [("item", "recall@10"), ("item", "recall@50"), ("item", "recall@100"), ("item", "ndcg@10"),
           ("sid", "recall@128")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="valid")
    ap.add_argument("--weights", default="0,0.25,0.5,1,2,4")
    ap.add_argument("--max-sessions", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    args = ap.parse_args()

    index, dataset = load_index(args.index), load_dataset(args.data)
    ex = build_examples(dataset, index, None, args.split)
    n = len(ex) if args.max_sessions is None else min(len(ex), args.max_sessions)
    req = requests_of(dataset, args.split, ex.session_ids[:n])
    rows = [score_peer(make(), ex, n, index, dataset, args.split, 128)
            for make in (lambda: bm25_peer(dataset, req), lambda: dense_peer(dataset, index, req, None))]
    for w in [float(x) for x in args.weights.split(",")]:
        r = evaluate_index_only_items(index, dataset, args.split, max_sessions=n, lexical_prior=w)
        r["name"] = f"{r['model']}, lexical weight {w:g}"
        rows.append(r)
    bm25 = rows[0]
    lines = [f"{args.data} ({args.split}, {n} sessions): the index alone at item resolution, BM25 mixed in",
             "", "| row | " + " | ".join(f"{lv} {k}" for lv, k in METRICS) + " | item R@100 vs BM25 |",
             "|---|" + "---|" * (len(METRICS) + 1)]
    for r in rows:
        d = paired_difference(r["per_session"]["item recall@100"], bm25["per_session"]["item recall@100"])
        diff = "-" if r is bm25 else f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]{'*' if d['clear'] else ''}"
        lines.append(f"| {r.get('name') or r['model']} | "
                     + " | ".join(metric_cell(r, lv, k) for lv, k in METRICS) + f" | {diff} |")
    table = "\n".join(lines) + "\n"
    print(table, end="")
    if args.out is not None:
        with atomic_file(args.out, "w") as fh:
            fh.write(table)


if __name__ == "__main__":
    main()

"""What the ranking of SKUs inside a SID costs: the same beams, two ways of turning SIDs into items.

    python bench/item_ranking.py --model runs/conv/amazon/best --index runs/amazon/index --data runs/amazon/data \
        --split valid --max-sessions 600

  SID order    every SKU of the best SID (the index's order: most popular first), then every SKU of the next
               SID, ...: a SID holding 29 SKUs fills the top of the list with them
  item share   each SKU scored log p(SID) - log |SKUs on the SID| (`sid_index.index.scored_items`, what
               `radgr eval` and the server do): the SID's probability is the mass of all SKUs trained on its
               tokens, shared evenly

One beam search per session (width 128, trie-constrained, the checkpoint's index prior unless
--index-prior), both rankings scored on the same sessions; prints item Recall@10/50/100 and NDCG@10
of each with 95% bootstrap intervals and the paired difference.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from sid_index.data.schema import load_dataset
from sid_index.decoding import IndexPrior, beam_search
from sid_index.index import load_index
from trainer.data import build_examples, embed_prompt_texts
from trainer.evaluate import bootstrap_ci, paired_difference, prior_request_vectors, ranked_items, ranking_metrics
from trainer.model import load_checkpoint

COLUMNS = ("recall@10", "recall@50", "recall@100", "ndcg@10")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="valid")
    ap.add_argument("--max-sessions", type=int, default=600)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--index-prior", type=float, default=None, help="default: the checkpoint's")
    args = ap.parse_args()

    ckpt, index, dataset = load_checkpoint(args.model), load_index(args.index), load_dataset(args.data)
    weight = ckpt.index_prior if args.index_prior is None else args.index_prior
    ex = build_examples(dataset, index, ckpt.prompts, args.split)
    n = min(len(ex), args.max_sessions)
    if ckpt.text_model is not None:
        ex.texts[n:] = [""] * (len(ex) - n)
    embed_prompt_texts(ex, ckpt.text_model)
    centroids, prior_vectors = (prior_request_vectors(ex, n, dataset, args.split, index)
                                if weight > 0 else (None, None))
    model, constraint = ckpt.decoder.eval(), index.constraint("cpu")
    rows: dict[str, list[dict[str, float]]] = {"SID order": [], "item share": []}
    for start in range(0, n, 16):
        batch = list(range(start, min(n, start + 16)))
        vectors = None if ex.text_vectors is None else torch.from_numpy(ex.text_vectors[batch])
        prior = None if prior_vectors is None else IndexPrior.of(centroids, prior_vectors[batch], weight, "cpu")
        res = beam_search(model, [ex.prompts[i] for i in batch], ckpt.vocab, ckpt.eos_id, args.width, constraint,
                          pad_id=ckpt.pad_id, text_vectors=vectors, prior=prior)
        codes, keep, scores = res.codes.numpy(), res.valid.numpy(), res.scores.float().numpy()
        for row, i in enumerate(batch):
            sids = [tuple(c) for c in codes[row][keep[row]].tolist()]
            gains = dict(zip(ex.pos_skus[i], ex.pos_sku_grades[i], strict=True))
            for name, ranked in (("SID order", ranked_items(sids, index.skus_of)),
                                 ("item share", ranked_items(sids, index.skus_of, scores[row][keep[row]].tolist()))):
                rows[name].append(ranking_metrics(ranked, ex.pos_skus[i], (10, 50, 100), gains))
    print(f"{args.model} on {n:,} {args.split} sessions, width {args.width}, index prior {weight:g}\n")
    print("| items of a SID | " + " | ".join(f"item {c}" for c in COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for name, metrics in rows.items():
        cells = []
        for c in COLUMNS:
            v = np.array([m[c] for m in metrics])
            lo, hi = bootstrap_ci(v)
            cells.append(f"{v.mean():.4f} [{lo:.4f}, {hi:.4f}]")
        print(f"| {name} | " + " | ".join(cells) + " |")
    diffs = [paired_difference([m[c] for m in rows["item share"]], [m[c] for m in rows["SID order"]])
             for c in COLUMNS]
    print("| item share - SID order (paired) | " + " | ".join(
        f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]{'*' if d['clear'] else ''}" for d in diffs) + " |")


if __name__ == "__main__":
    main()

"""What the ranking of SKUs inside a SID costs: the same beams, two ways of turning SIDs into items.

    python bench/item_ranking.py --model runs/conv/amazon/best --index runs/amazon/index --data runs/amazon/data \
        --split valid --max-sessions 600

  SID order    every SKU of the best SID (the index's order: most popular first), then every SKU of the next
               SID, ...: a SID holding 29 SKUs fills the top of the list with them
  item share   each SKU scored log p(SID) - log |SKUs on the SID| (`sid_index.index.scored_items`, what
               `radgr eval` and the server do): the SID's probability is the mass of all SKUs trained on its
               tokens, shared evenly; SKUs of one SID in the index's order (most popular first)
  ... text     the same, SKUs of one SID ordered by the cosine of their MiniLM text embedding to the request's
               (the query's, else the mean of the history items'): the index's text, at item level
  ... oracle   the same, the session's positives first inside their SID: the most any order inside a SID
               could give (an upper bound, not a ranking anyone can serve)
  ... no hist  the same, SKUs already in the session's history removed (repeats are rare on Amazon)

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
from sid_index.index import load_index, scored_items
from trainer.data import build_examples, embed_prompt_texts
from trainer.evaluate import (
    bootstrap_ci,
    dedupe,
    paired_difference,
    prior_request_vectors,
    ranked_items,
    ranking_metrics,
)
from trainer.model import load_checkpoint
from trainer.peers import item_embeddings, requests_of

COLUMNS = ("recall@10", "recall@50", "recall@100", "ndcg@10")
RANKINGS = ("SID order", "item share", "item share, text inside a SID", "item share, oracle inside a SID",
            "item share, no history items", "item share, text inside a SID, no history items")


def text_vectors(req, emb: np.ndarray, row_of: dict[str, int], model) -> np.ndarray:
    """Per session: the query's unit MiniLM embedding, else the mean of its history items' (zero: neither)."""
    from sid_index.embed import embed_texts

    out = np.zeros((len(req.queries), emb.shape[1]), dtype=np.float32)
    asked = [i for i, q in enumerate(req.queries) if q]
    if asked:
        vecs, _ = embed_texts([req.queries[i] for i in asked], model, progress=False, cache_dir=None)
        out[asked] = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    for i, hist in enumerate(req.histories):
        rows = [row_of[s] for s in hist if s in row_of]
        if not req.queries[i] and rows:
            out[i] = emb[rows].mean(0)
    return out


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
    emb, text_model = item_embeddings(dataset, index, None)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    row_of = {s: i for i, s in enumerate(dataset.catalog["sku_id"].to_pylist())}
    req = requests_of(dataset, args.split, ex.session_ids[:n])
    request_text = text_vectors(req, emb, row_of, text_model)
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in RANKINGS}
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
            sid_scores = scores[row][keep[row]].tolist()
            items = scored_items(sids, sid_scores, index.skus_of)
            cos = {sku: float(emb[row_of[sku]] @ request_text[i]) for sku, _, _ in items if sku in row_of}
            pos, hist = set(ex.pos_skus[i]), set(req.histories[i])
            text = dedupe(s for s, _, _ in sorted(items, key=lambda t: (-t[2], t[1], -cos.get(t[0], 0.0))))
            rankings = {
                "SID order": ranked_items(sids, index.skus_of),
                "item share": ranked_items(sids, index.skus_of, sid_scores),
                "item share, text inside a SID": text,
                "item share, oracle inside a SID": dedupe(
                    s for s, _, _ in sorted(items, key=lambda t: (-t[2], t[1], t[0] not in pos))),
                "item share, no history items": [s for s in ranked_items(sids, index.skus_of, sid_scores)
                                                 if s not in hist],
                "item share, text inside a SID, no history items": [s for s in text if s not in hist],
            }
            for name, ranked in rankings.items():
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
    for name in RANKINGS:
        if name == "item share":
            continue
        diffs = [paired_difference([m[c] for m in rows[name]], [m[c] for m in rows["item share"]]) for c in COLUMNS]
        print(f"| {name} - item share (paired) | " + " | ".join(
            f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]{'*' if d['clear'] else ''}" for d in diffs) + " |")


if __name__ == "__main__":
    main()

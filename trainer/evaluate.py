"""Offline evaluation: trie-constrained beam search over a split, SID- and item-level metrics.

For every session with a positive the model decodes `width` SIDs under the index's trie.

- SID level: targets are the session's distinct positive SIDs. Recall@K = share of them in
  the top K SIDs (K = 8, 64, 128); MRR = 1 / rank of the first target SID (0 if none).
- Item level: the ranked SIDs become SKUs (every SKU of a SID, in index order, i.e. most
  popular first; repeats dropped); targets are the positive SKUs; Recall@10/50/100/500, MRR and
  NDCG@10/50 (RecBole's definition; the gain of a positive is its grade, so equal grades, as on
  Amazon, give RecBole's binary NDCG and graded data, as on Home Depot, graded NDCG).
- Truth (synthetic data, where the exposure lists carry true relevance): targets are the SIDs
  of every exposed item with relevance >= 2, clicked or not (pseudo-negatives included);
  SID Recall@K and MRR against them. Absent when the data does not know the truth.
- Intervals: every mean comes with a 95% bootstrap interval over sessions (`ci95`), and the
  per-session values of the headline metrics are kept (`per_session`) so that two systems
  evaluated on the same sessions can be compared pairwise (`paired_difference`).
- Item prior (`item_prior` > 0): each SKU of the beam also gets weight x the item prior, the
  request vector against the SKU's own text embedding (`sid_index.retrieve.item_prior_scores`);
  several weights re-score one beam search.
- Baselines on the same sessions: the most popular SIDs of train, and index-only retrieval
  (`sid_index.retrieve`: the request's text embedding against the SIDs' centroid sums).
- Invalid-SID rate: the same model decoded with no constraint (same width); the share of
  its returned beams that are not a SID of the index (non-SID tokens included). The same
  rate is measured, not assumed, for the constrained decode: it must be 0.

The metric functions are small and pure (ranked list + target set -> number).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sid_index.data.schema import RELEVANT_GRADE, Dataset, load_dataset, split_names
from sid_index.decoding import IndexPrior, ItemPrior, ItemPriorTable, beam_search
from sid_index.embed import embed_texts
from sid_index.errors import RadgrError
from sid_index.index import SidIndex, load_centroids, load_index, require_index, scored_items
from sid_index.retrieve import (
    IndexRetriever,
    embedding_model_of,
    item_bonus,
    item_form_bonus,
    item_request_vector,
    lexical_rows,
    own_item_scores,
    request_vector,
)
from sid_index.trie import BEAM_WIDTH
from trainer.config import HEADLINE, HEADLINE_NAMES, EvalConfig
from trainer.data import build_examples, embed_prompt_texts, history_codes
from trainer.model import META_FILE, load_checkpoint, resolve_checkpoint

SID_KS = (8, 64, 128)
ITEM_KS = (10, 50, 100, 500)
NDCG_KS = (10, 50)
CURVE_KS = tuple(2**i for i in range(10))  # recall-vs-K curves (plots), 1 ... 512
BOOTSTRAP_SAMPLES = 1000


# ----------------------------------------------------------------------------- metric functions


def recall_at_k(ranked: Sequence[Hashable], targets: Iterable[Hashable], k: int) -> float:
    """Share of the distinct targets found among the first k ranked entries (0 for no targets)."""
    targets = set(targets)
    if not targets:
        return 0.0
    return len(targets.intersection(ranked[:k])) / len(targets)


def reciprocal_rank(ranked: Sequence[Hashable], targets: Iterable[Hashable]) -> float:
    """1 / (1-based rank of the first target in `ranked`), 0 when no target is ranked."""
    targets = set(targets)
    for rank, item in enumerate(ranked, 1):
        if item in targets:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked: Sequence[Hashable], gains: Mapping[Hashable, float], k: int) -> float:
    """DCG of the first k ranked entries (gain / log2(rank + 1)) over the best possible DCG of the
    targets' gains at k (0 for no targets). With every gain 1 this is RecBole's NDCG@k."""
    ideal = sorted(gains.values(), reverse=True)[:k]
    if not ideal or ideal[0] <= 0:
        return 0.0
    dcg = sum(gains.get(item, 0.0) / np.log2(rank + 1) for rank, item in enumerate(ranked[:k], 1))
    return float(dcg / sum(g / np.log2(rank + 1) for rank, g in enumerate(ideal, 1)))


def dedupe(items: Iterable[Hashable]) -> list:
    """Items in first-seen order, repeats dropped."""
    return list(dict.fromkeys(items))


def ranked_items(ranked_sids: Sequence[Sequence[int]], skus_of, scores: Sequence[float] | None = None,
                 item_bonus=None) -> list[str]:
    """SKUs of ranked SIDs. Without scores (a fixed ranking: popularity, distance): every SKU of each SID in
    the index's order, concatenated. With the SIDs' log-probs (a model's beam): by item share of its SID's
    probability plus `item_bonus` (the item prior; `sid_index.index.scored_items`). Repeats dropped."""
    if scores is not None:
        return dedupe(sku for sku, _, _ in scored_items(ranked_sids, scores, skus_of, item_bonus))
    return dedupe(sku for sid in ranked_sids for sku in skus_of(sid))


def ranking_metrics(ranked: Sequence[Hashable], targets: Iterable[Hashable], ks: Sequence[int],
                    gains: Mapping[Hashable, float] | None = None) -> dict[str, float]:
    """Recall@k for every k, NDCG@k for every k of NDCG_KS when `gains` (target -> gain) are given, and the
    reciprocal rank, of one ranked list."""
    targets = set(targets)
    out = {f"recall@{k}": recall_at_k(ranked, targets, k) for k in ks}
    if gains is not None:
        out.update({f"ndcg@{k}": ndcg_at_k(ranked, gains, k) for k in NDCG_KS})
    out["mrr"] = reciprocal_rank(ranked, targets)
    return out


def headline_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The HEADLINE_NAMES means of one `evaluate` result, as a flat name -> value dict."""
    return {f"{level} {key}": float(result[level][key]) for level, key in HEADLINE}


def mean_metrics(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-key means over sessions."""
    if not rows:
        return {}
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


def bootstrap_ci(values: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of per-session `values` (resampling sessions)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for start in range(0, samples, 100):  # bounded memory: 100 resamples at a time
        idx = rng.integers(0, len(values), size=(min(100, samples - start), len(values)))
        means[start : start + len(idx)] = values[idx].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def paired_difference(a: Sequence[float], b: Sequence[float], seed: int = 0) -> dict[str, float]:
    """Mean of a - b over the same sessions, with its 95% bootstrap interval; `clear` when it excludes 0."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same sessions ({len(a)} vs {len(b)})")
    lo, hi = bootstrap_ci(a - b, seed=seed)
    return {"mean": float((a - b).mean()) if len(a) else 0.0, "lo": lo, "hi": hi, "clear": bool(lo > 0 or hi < 0)}


# ----------------------------------------------------------------------------- evaluation

def truth_targets(table, index: SidIndex) -> dict[str, set[tuple[int, ...]]]:
    """Per session id: SIDs of the exposed items whose known true relevance is >= RELEVANT_GRADE (none: no entry)."""
    if "exposure" not in table.column_names:
        return {}
    out: dict[str, set[tuple[int, ...]]] = {}
    for sid_, exposure in zip(table["session_id"].to_pylist(), table["exposure"].to_pylist(), strict=True):
        known = [e for e in exposure or [] if e["relevance"] is not None]
        if known:
            codes = {index.sid_of(e["sku_id"]) for e in known if e["relevance"] >= RELEVANT_GRADE}
            out[sid_] = {c for c in codes if c is not None}
    return out


class RankingScores:
    """Per-session metric rows of ranked SID lists (SID, item, curves, truth); `summary` averages them."""

    def __init__(self, index: SidIndex, truth: dict[str, set[tuple[int, ...]]], width: int):
        self.index, self.truth, self.width = index, truth, width
        self.sid, self.item, self.sid_curve, self.item_curve, self.truth_rows = [], [], [], [], []
        self.session_ids: list[str] = []

    def add(self, ex, i: int, sids: list[tuple[int, ...]], scores: list[float] | None = None,
            item_bonus=None) -> None:
        """Score the ranking `sids` (with the model's log-probs `scores` and the item prior's `item_bonus`,
        if any) for session `i` of `ex`."""
        self._add(ex, i, sids, ranked_items(sids, self.index.skus_of, scores, item_bonus))

    def add_ranked(self, ex, i: int, sids: list[tuple[int, ...]], items: list[str]) -> None:
        """Score a SID ranking and an item ranking made together (the item-form floor)."""
        self._add(ex, i, sids, dedupe(items))

    def add_items(self, ex, i: int, items: list[str]) -> None:
        """Score an item ranking (a peer's): its SID ranking is the SIDs of its items, first seen first."""
        sids = dedupe(c for c in map(self.index.sid_of, items) if c is not None)[: self.width]
        self._add(ex, i, sids, dedupe(items))

    def _add(self, ex, i: int, sids: list[tuple[int, ...]], items: list[str]) -> None:
        pos = {tuple(c) for c in ex.pos_codes[i].tolist()}
        gains = dict(zip(ex.pos_skus[i], ex.pos_sku_grades[i], strict=True))
        self.session_ids.append(ex.session_ids[i])
        self.sid.append(ranking_metrics(sids, pos, SID_KS))
        self.item.append(ranking_metrics(items, ex.pos_skus[i], ITEM_KS, gains))
        self.sid_curve.append({str(k): recall_at_k(sids, pos, k) for k in CURVE_KS if k <= self.width})
        self.item_curve.append({str(k): recall_at_k(items, ex.pos_skus[i], k) for k in CURVE_KS})
        if self.truth.get(ex.session_ids[i]):
            self.truth_rows.append(ranking_metrics(sids, self.truth[ex.session_ids[i]], SID_KS))

    def summary(self) -> dict[str, Any]:
        rows = {"sid": self.sid, "item": self.item}
        per_session = {f"{level} {key}": [r[key] for r in rows[level]] for level, key in HEADLINE}
        return {
            "sid": mean_metrics(self.sid),
            "item": mean_metrics(self.item),
            "ci95": {name: bootstrap_ci(np.asarray(v)) for name, v in per_session.items()},
            "per_session": {"session_ids": list(self.session_ids), **per_session},
            "curves": {"sid": mean_metrics(self.sid_curve), "item": mean_metrics(self.item_curve)},  # K = 1, 2, 4..
            "truth": mean_metrics(self.truth_rows),  # {} without known relevance
            "truth_sessions": len(self.truth_rows),
        }


def popular_sids(dataset: Dataset, index: SidIndex, split: str = "train") -> list[tuple[int, ...]]:
    """Every SID that is a positive of some session of `split`, by the number of sessions it is a
    positive of (most first; ties by SID)."""
    counts: dict[tuple[int, ...], int] = {}
    for positives in dataset.split(split)["positives"].to_pylist():
        for codes in {index.sid_of(p["sku_id"]) for p in positives or []} - {None}:
            counts[codes] = counts.get(codes, 0) + 1
    return sorted(counts, key=lambda c: (-counts[c], c))


def sid_ranking(index: SidIndex, sids: list[tuple[int, ...]]) -> tuple[list[tuple[int, ...]], list[str]]:
    """A SID ranking with its items: every SKU of each SID in the index's order (`ranked_items`)."""
    return sids, ranked_items(sids, index.skus_of)


def _fixed_rankings(name: str, index: SidIndex, dataset: Dataset, split: str, width: int,
                    max_sessions: int | None, rank, timed: bool) -> dict[str, Any]:
    """Metrics of rankings made without a model, `rank(ex, n)` -> one (SIDs, items) pair per session
    (`sid_ranking` for a SID list whose items are each SID's SKUs in the index's order), on the sessions
    `evaluate` scores (the split's sessions with a positive in the index, in order). `timed`: report sessions/s."""

    start = time.perf_counter()
    ex = build_examples(dataset, index, None, split)
    n = len(ex) if max_sessions is None else min(len(ex), max_sessions)
    rankings = rank(ex, n)
    scores = RankingScores(index, truth_targets(dataset.split(split), index), width)
    for i in range(n):
        scores.add_ranked(ex, i, *rankings[i])
    wall = time.perf_counter() - start
    return {"model": name, "split": split, "width": width, "sessions": n, "skipped": ex.skipped,
            "not_evaluated": len(ex) - n, **scores.summary(), "constrained": {"invalid_rate": 0.0, "beams": n * width},
            "unconstrained": {}, "wall_s": wall, "sessions_per_s": n / wall if timed and wall > 0 else None}


POPULAR_SIDS = "most popular (train)"


def evaluate_popular(
    index: SidIndex, dataset: Dataset, split: str = "test", width: int = BEAM_WIDTH, max_sessions: int | None = None
) -> dict[str, Any]:
    """The metrics of a ranking that ignores the request: the `width` SIDs most often positive in the
    train split, the same for every session. The floor a trained model has to clear."""

    def rank(ex, n: int) -> list[tuple[list[tuple[int, ...]], list[str]]]:
        return [sid_ranking(index, popular_sids(dataset, index)[:width])] * n

    return _fixed_rankings(POPULAR_SIDS, index, dataset, split, width, max_sessions, rank, False)


INDEX_ONLY = "index only (quantised text embedding)"
INDEX_ONLY_ITEMS = "index only (item text vectors)"
INDEX_ONLY_HYBRID = "index only (item text vectors + lexical)"  # BM25 mixed in: sid_index.lexical


def request_vectors(ex, n: int, dataset: Dataset, split: str, index: SidIndex, centroids,
                    embedding_model: Path | None = None) -> list[np.ndarray | None]:
    """The index-only request vector of the first `n` sessions of `ex` (`sid_index.retrieve.request_vector`):
    the query's embedding by the index's text model, else the history's SID vectors, else None."""

    queries, histories = _requests(ex, n, dataset, split)
    qvec = _query_vectors(queries, index, embedding_model)
    history = [history_codes(index, h)[0] for h in histories]
    return [request_vector(centroids, qvec.get(i), history[i]) for i in range(n)]


def item_request_vectors(ex, n: int, dataset: Dataset, split: str, index: SidIndex,
                         embedding_model: Path | None = None) -> list[np.ndarray | None]:
    """The item prior's request vector of the first `n` sessions (`sid_index.retrieve.item_request_vector`):
    the query's embedding, else the last history items' own vectors, else None."""
    queries, histories = _requests(ex, n, dataset, split)
    qvec = _query_vectors(queries, index, embedding_model)
    return [item_request_vector(index, qvec.get(i), histories[i]) for i in range(n)]


def _requests(ex, n: int, dataset: Dataset, split: str) -> tuple[list[str], list[list[str]]]:
    """The query (stripped) and history (sku_ids) of the first `n` sessions of `ex`."""
    table = dataset.split(split)
    requests = {s: (q, h) for s, q, h in zip(table["session_id"].to_pylist(), table["query"].to_pylist(),
                                              table["history"].to_pylist(), strict=True)}
    picked = [requests[ex.session_ids[i]] for i in range(n)]
    return [(q or "").strip() for q, _ in picked], [list(h or []) for _, h in picked]


def _query_vectors(queries: Sequence[str], index: SidIndex, embedding_model: Path | None) -> dict[int, np.ndarray]:
    """Position -> the query's embedding by the index's text model, for the non-empty queries."""
    with_query = [i for i, q in enumerate(queries) if q]
    if not with_query:
        return {}
    emb, _ = embed_texts([queries[i] for i in with_query], embedding_model_of(index, embedding_model), progress=False)
    return dict(zip(with_query, emb, strict=True))


def evaluate_index_only(
    index: SidIndex, dataset: Dataset, split: str = "test", width: int = BEAM_WIDTH,
    max_sessions: int | None = None, embedding_model: Path | None = None,
) -> dict[str, Any]:
    """The metrics of the index alone (`sid_index.retrieve`): no training, the floor a model must beat.

    Each session's request vector (query embedding, else recency-weighted history SID vectors) is
    matched against every SID's centroid sum; the `width` nearest SIDs are its ranking.
    """

    def rank(ex, n: int) -> list[tuple[list[tuple[int, ...]], list[str]]]:
        retriever = IndexRetriever(index)
        vectors = request_vectors(ex, n, dataset, split, index, retriever.centroids, embedding_model)
        found = [i for i in range(n) if vectors[i] is not None]
        hits = retriever.search(np.stack([vectors[i] for i in found]), width) if found else []
        by_session = dict(zip(found, hits, strict=True))
        return [sid_ranking(index, by_session.get(i, [])) for i in range(n)]

    return _fixed_rankings(INDEX_ONLY, index, dataset, split, width, max_sessions, rank, True)


def evaluate_index_only_items(
    index: SidIndex, dataset: Dataset, split: str = "test", width: int = BEAM_WIDTH,
    max_sessions: int | None = None, embedding_model: Path | None = None, lexical_prior: float = 0.0,
) -> dict[str, Any]:
    """The index alone at item resolution, the floor of the item-form index prior: each session's item-prior
    request vector (query embedding, else the last history items' own vectors) against every SKU's own vector,
    plus `lexical_prior` x the query's normalised BM25 score (`sid_index.lexical`) when > 0; SIDs ranked by
    their best SKU (exact dense, or hybrid, retrieval read off at SID level), their SKUs by their own score."""

    def rank(ex, n: int) -> list[tuple[list[tuple[int, ...]], list[str]]]:
        table, sids = ItemPriorTable.of(index), index.trie.sids()
        vectors = item_request_vectors(ex, n, dataset, split, index, embedding_model)
        queries = _requests(ex, n, dataset, split)[0]
        found = [i for i in range(n) if vectors[i] is not None]
        out: list[tuple[list[tuple[int, ...]], list[str]]] = [([], []) for _ in range(n)]
        for start in range(0, len(found), 256):  # [256 x SKUs] scores at a time
            part = found[start : start + 256]
            lexical = lexical_rows(index, [queries[i] for i in part], lexical_prior)
            best = table.sid_scores(torch.from_numpy(np.stack([vectors[i] for i in part])), lexical)
            top = best.topk(min(width, best.shape[1]), dim=1).indices.tolist()
            for k, (i, row) in enumerate(zip(part, top, strict=True)):
                ranked = [tuple(sids[j].tolist()) for j in row]
                skus = [sku for sid in ranked for sku in index.skus_of(sid)]
                own = own_item_scores(index, vectors[i], None if lexical is None else lexical[k], skus)
                out[i] = ranked, [skus[j] for j in np.argsort(-own, kind="stable")]
        return out

    res = _fixed_rankings(INDEX_ONLY_HYBRID if lexical_prior > 0 else INDEX_ONLY_ITEMS, index, dataset, split,
                          width, max_sessions, rank, True)
    return {**res, "lexical_prior": lexical_prior}


def prior_request_vectors(ex, n: int, dataset: Dataset, split: str, index: SidIndex,
                          embedding_model: Path | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """The index's centroids and the request vectors [n, D] the index prior scores SIDs against (zeros for a
    session with neither query nor history: no prior); refuses an index without RQ-KMeans centroids."""

    centroids = load_centroids(index)
    if len(centroids) != index.levels:
        raise RadgrError(f"--index-prior: index {index.root} has no RQ-KMeans centroids (built from given codes)")
    zero = np.zeros(centroids[0].shape[1], dtype=np.float32)
    vectors = request_vectors(ex, n, dataset, split, index, centroids, embedding_model)
    return centroids, np.stack([zero if v is None else v for v in vectors])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(
    ckpt,
    index: SidIndex,
    dataset: Dataset,
    split: str = "test",
    width: int = BEAM_WIDTH,
    batch_size: int = 16,
    max_sessions: int | None = None,
    device: str = "cpu",
    unconstrained: bool = True,
    index_prior: float = 0.0,
    embedding_model: Path | None = None,
    item_prior: float = 0.0,
    prior_form: str = "sid",
) -> dict[str, Any]:
    """Metrics of one checkpoint (`trainer.model.Checkpoint`) on one split; see the module docstring.

    `index_prior` > 0 fuses the index's own retrieval score into the search (`sid_index.decoding.IndexPrior`)
    with that weight, from the same request vectors as the index-only row; `item_prior` > 0 adds the item
    prior (`sid_index.retrieve.item_prior_scores`) with that weight to each SKU's score of the beam. `prior_form`
    'item' fuses the index prior at item resolution instead (`sid_index.decoding.ItemPrior`)."""
    return evaluate_item_priors(ckpt, index, dataset, split, width, batch_size, max_sessions, device, unconstrained,
                                index_prior, embedding_model, (item_prior,), prior_form)[0]


def evaluate_item_priors(
    ckpt,
    index: SidIndex,
    dataset: Dataset,
    split: str = "test",
    width: int = BEAM_WIDTH,
    batch_size: int = 16,
    max_sessions: int | None = None,
    device: str = "cpu",
    unconstrained: bool = True,
    index_prior: float = 0.0,
    embedding_model: Path | None = None,
    item_priors: Sequence[float] = (0.0,),
    prior_form: str = "sid",
    lexical_prior: float = 0.0,
) -> list[dict[str, Any]]:
    """`evaluate` for several item-prior weights from one beam search per session (the item prior re-scores
    the beam's SKUs and leaves the search alone): one result per weight, in order. `lexical_prior` > 0 adds
    the query's BM25 term to the item-form index prior (`lexical_rows`)."""

    start = time.perf_counter()
    dev = torch.device(device)
    ex = build_examples(dataset, index, ckpt.prompts, split)
    if len(ex) == 0:
        raise RadgrError(f"{dataset.root}: split '{split}' has no session with a positive in index {index.root}")
    n = len(ex) if max_sessions is None else min(len(ex), max_sessions)
    if ckpt.text_model is not None:
        ex.texts[n:] = [""] * (len(ex) - n)  # only the evaluated sessions need embedding
    embed_prompt_texts(ex, ckpt.text_model)
    model = ckpt.decoder.to(dev).eval()
    constraint = index.constraint(str(dev))
    vocab, eos, pad = ckpt.vocab, ckpt.eos_id, ckpt.pad_id
    # Batches of similar prompt length waste less on padding; results are per session.
    order = sorted(range(n), key=lambda i: len(ex.prompts[i]))
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]

    def vectors(batch: list[int]) -> torch.Tensor | None:
        return None if ex.text_vectors is None else torch.from_numpy(ex.text_vectors[batch])

    item_vectors = (item_request_vectors(ex, n, dataset, split, index, embedding_model)
                    if any(w > 0 for w in item_priors) or (index_prior > 0 and prior_form == "item") else [None] * n)
    if index_prior > 0 and prior_form == "item":
        table, zero = ItemPriorTable.of(index, dev), np.zeros(index.item_vectors.shape[1], dtype=np.float32)
        item_stack = np.stack([zero if v is None else v for v in item_vectors])
        queries = _requests(ex, n, dataset, split)[0]

        def prior(batch: list[int]) -> IndexPrior | ItemPrior | None:
            return table.prior(item_stack[batch], index_prior,
                               lexical_rows(index, [queries[i] for i in batch], lexical_prior))
    else:
        centroids, prior_vectors = (prior_request_vectors(ex, n, dataset, split, index, embedding_model)
                                    if index_prior > 0 else (None, None))

        def prior(batch: list[int]) -> IndexPrior | ItemPrior | None:
            return None if prior_vectors is None else IndexPrior.of(centroids, prior_vectors[batch], index_prior, dev)

    truth = truth_targets(dataset.split(split), index)
    trie_beams = trie_invalid = 0
    ranked: dict[int, tuple[list[tuple[int, ...]], list[float]]] = {}
    t0 = time.perf_counter()
    for batch in batches:
        res = beam_search(model, [ex.prompts[i] for i in batch], vocab, eos, width, constraint, pad_id=pad,
                          text_vectors=vectors(batch), prior=prior(batch))
        live = torch.isfinite(res.scores)  # res.valid: live and a SID of the index (checked, not assumed)
        trie_beams += int(live.sum())
        trie_invalid += int((live & ~res.valid).sum())
        codes, keep, beam = res.codes.cpu().numpy(), res.valid.cpu().numpy(), res.scores.float().cpu().numpy()
        for row, i in enumerate(batch):
            ranked[i] = [tuple(c) for c in codes[row][keep[row]].tolist()], beam[row][keep[row]].tolist()
    _sync(dev)
    decode_s = time.perf_counter() - t0
    @functools.cache
    def session_lexical(i: int) -> np.ndarray | None:  # once per session, whatever the number of weights
        lexical = lexical_rows(index, [queries[i]], lexical_prior)
        return None if lexical is None else lexical[0]

    def bonus(i: int, weight: float):  # the item prior; with the item form, relative to each SID's best SKU
        if not (index_prior > 0 and prior_form == "item"):
            return item_bonus(index, item_vectors[i], weight)
        return item_form_bonus(index, item_vectors[i], session_lexical(i) if weight > 0 else None, weight)

    per_weight = []
    for weight in item_priors:
        scores = RankingScores(index, truth, width)
        for i in range(n):  # session order, so per-session values pair with every other system's
            scores.add(ex, i, *ranked[i], item_bonus=bonus(i, weight))
        per_weight.append((weight, scores.summary()))

    free: dict[str, Any] = {}
    if unconstrained:
        beams = invalid = top1 = 0
        t0 = time.perf_counter()
        for batch in batches:
            res = beam_search(model, [ex.prompts[i] for i in batch], vocab, eos, width, constraint, pad_id=pad,
                              constrained=False, text_vectors=vectors(batch))  # free decode; `valid` checks the index
            live = torch.isfinite(res.scores)
            bad = live & ~res.valid
            beams += int(live.sum())
            invalid += int(bad.sum())
            top1 += int(bad[:, 0].sum())
        _sync(dev)
        free = {
            "invalid_rate": invalid / beams if beams else 0.0,
            "invalid_top1_rate": top1 / n,
            "beams": beams,
            "decode_s": time.perf_counter() - t0,
        }

    wall_s = time.perf_counter() - start
    return [{
        "model": str(ckpt.path) if ckpt.path is not None else None,
        "index_prior": index_prior,
        "index_prior_form": prior_form,
        "lexical_prior": lexical_prior if index_prior > 0 and prior_form == "item" else 0.0,
        "item_prior": weight,
        "split": split,
        "width": width,
        "sessions": n,
        "skipped": ex.skipped,  # sessions of the split without any positive in the index
        "not_evaluated": len(ex) - n,  # beyond --max-sessions
        **summary,
        "constrained": {"invalid_rate": trie_invalid / trie_beams if trie_beams else 0.0, "beams": trie_beams},
        "unconstrained": free,
        "decode_s": decode_s,
        "sessions_per_s": n / decode_s if decode_s > 0 else None,
        "wall_s": wall_s,
        "device": str(dev),
    } for weight, summary in per_weight]


# ----------------------------------------------------------------------------- several checkpoints -> one table


def evaluate_models(cfg: EvalConfig, log=print) -> list[dict[str, Any]]:
    """Evaluate every checkpoint of `cfg` on one index and dataset; fails before any work on a bad path."""

    if torch.device(cfg.device).type == "cuda" and not torch.cuda.is_available():
        raise RadgrError(f"--device {cfg.device}: CUDA is not available on this machine")
    paths = [resolve_checkpoint(p) for p in cfg.model]
    index = load_index(cfg.index)
    for path in paths:  # before loading any weights: a mismatch on the last model fails at once
        _precheck(path, index, cfg.split)
    dataset = load_dataset(cfg.data)
    results = []
    for given, path in zip(cfg.model, paths, strict=True):
        ckpt = load_checkpoint(path, device=cfg.device)
        ckpt.check_index(index)
        item_priors = cfg.item_prior if cfg.item_prior is not None else [ckpt.item_prior]
        form = cfg.index_prior_form or ckpt.index_prior_form
        lexical = cfg.lexical_prior if cfg.lexical_prior is not None else ckpt.lexical_prior
        if lexical > 0 and form != "item":
            raise RadgrError(f"--lexical-prior {lexical:g} needs the item form of the index prior "
                             f"(--index-prior-form item); {given} is evaluated with the '{form}' form")
        for weight in cfg.index_prior if cfg.index_prior is not None else [ckpt.index_prior]:
            prior_name = (f" + index prior {weight:g}" + (" (items" + (f" + lexical {lexical:g}" if lexical else "")
                                                             + ")" if form == "item" else "") if weight else "")
            log(f"evaluating {given} on {cfg.data} ({cfg.split}), beam width {cfg.beam_width}, {cfg.device}"
                + prior_name.replace(" + ", ", ", 1)
                + (f", item prior {', '.join(f'{w:g}' for w in item_priors)}" if any(item_priors) else ""))
            rows = evaluate_item_priors(ckpt, index, dataset, cfg.split, cfg.beam_width, cfg.batch_size,
                                        cfg.max_sessions, cfg.device, cfg.unconstrained and not weight, weight,
                                        cfg.embedding_model, item_priors, form, lexical)
            for res in rows:
                res["name"] = (str(given) + prior_name
                               + (f" + item prior {res['item_prior']:g}" if res["item_prior"] else ""))
            results.extend(rows)
        del ckpt
    if cfg.baselines:
        emb = {"embedding_model": cfg.embedding_model}
        floors = [(evaluate_popular, {}), (evaluate_index_only, emb)]
        if cfg.index_prior_form == "item":
            floors.append((evaluate_index_only_items, emb))
            if cfg.lexical_prior:
                floors.append((evaluate_index_only_items, {**emb, "lexical_prior": cfg.lexical_prior}))
        names = ["most popular", INDEX_ONLY, INDEX_ONLY_ITEMS, INDEX_ONLY_HYBRID][: len(floors)]
        log(f"baselines on the same sessions: {', '.join(names)}")
        for fn, kw in floors:
            res = fn(index, dataset, cfg.split, cfg.beam_width, cfg.max_sessions, **kw)
            res["name"] = res["model"]
            results.append(res)
    return results


Weights = tuple[float, float]  # (index prior, item prior)


def pick_prior(results: Sequence[dict[str, Any]], metric: str) -> tuple[Weights, dict[Weights, dict[str, float]]]:
    """The (index-prior, item-prior) weights whose margin over the index-only row on `metric` is surest: the
    highest lower end of the paired 95% interval (ties: the higher mean). Why not the highest mean: on a few
    hundred or thousand valid sessions the means of nearby weights sit inside each other's noise, and the
    one chosen should be the weight that beats the floor, not a coin toss between weights.

    `results`: one model's rows (one per weight pair, `index_prior` and `item_prior` set) and the index-only
    row, same sessions. Returns the pair and, per pair, its paired difference to the floor."""
    floor, rows = floor_and_models(results)
    if floor is None or not rows:
        raise RadgrError("--pick-prior needs the model's rows and the index-only row (no --no-baselines)")
    if metric not in floor["per_session"]:
        raise RadgrError(f"--pick-prior: unknown metric '{metric}'")
    margins = {(float(r["index_prior"]), float(r.get("item_prior", 0.0))):
               paired_difference(r["per_session"][metric], floor["per_session"][metric]) for r in rows}
    best = max(margins, key=lambda w: (margins[w]["lo"], margins[w]["mean"]))
    return best, margins


def _precheck(path: Path, index: SidIndex, split: str) -> None:
    """From a checkpoint's metadata alone: refuse one trained for another index (`check_index` reruns after
    loading), or one trained on the sessions it would be judged on (a refit on train+valid, judged on valid)."""

    try:
        meta = json.loads((path / META_FILE).read_text())
        trained_for, stages = meta.get("index_id"), list(meta.get("stages", []))
    except (OSError, ValueError, AttributeError, TypeError):
        return  # load_checkpoint reports a damaged file
    require_index(trained_for, index, f"checkpoint {path}")
    seen = {part for st in stages if isinstance(st, dict) for part in split_names(str(st.get("split", "train")))}
    if split != "train" and split in seen:
        raise RadgrError(f"checkpoint {path} was trained on the '{split}' sessions: its numbers there are its "
                         "training fit; evaluate it on another split")


def floor_and_models(results: Sequence[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The index-only row (None when absent; the strongest present: hybrid, then item resolution) and the
    trained checkpoints' rows, those with per-session scores."""
    floors = {r["model"]: r for r in results
              if r["model"] in (INDEX_ONLY, INDEX_ONLY_ITEMS, INDEX_ONLY_HYBRID) and r.get("per_session")}
    floor = floors.get(INDEX_ONLY_HYBRID, floors.get(INDEX_ONLY_ITEMS, floors.get(INDEX_ONLY)))
    return floor, [r for r in results if r.get("per_session") and r.get("device")]


def metric_cell(r: dict[str, Any], level: str, key: str) -> str:
    """Mean, with ± half its 95% interval where known ("-" when the row has no such metric)."""
    value = (r.get(level) or {}).get(key)
    if value is None:
        return "-"
    ci = (r.get("ci95") or {}).get(f"{level} {key}")
    return f"{value:.4f}" if ci is None else f"{value:.4f} ± {(ci[1] - ci[0]) / 2:.4f}"


def difference_cell(a: dict[str, Any], b: dict[str, Any], name: str) -> str:
    """`paired_difference` of per-session metric `name` of rows a and b: mean [95% interval], * when it excludes 0."""
    d = paired_difference(a["per_session"][name], b["per_session"][name])
    return f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]{'*' if d['clear'] else ''}"


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """One row per evaluated system (± = half the 95% bootstrap interval over sessions); then, where an
    index-only row is present, each model's paired difference to it."""
    head = ["model", "sessions"]
    head += [f"SID R@{k}" for k in SID_KS] + ["SID MRR"]
    head += [f"item R@{k}" for k in ITEM_KS] + [f"item NDCG@{k}" for k in NDCG_KS] + ["item MRR"]
    head += ["invalid SIDs, free decode", "invalid SIDs, trie", "sessions/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        free = r["unconstrained"].get("invalid_rate")
        cells = [str(r.get("name") or r["model"]), f"{r['sessions']:,}"]
        cells += [metric_cell(r, "sid", f"recall@{k}") for k in SID_KS] + [metric_cell(r, "sid", "mrr")]
        cells += [metric_cell(r, "item", f"recall@{k}") for k in ITEM_KS]
        cells += [metric_cell(r, "item", f"ndcg@{k}") for k in NDCG_KS]
        cells += [metric_cell(r, "item", "mrr")]
        cells += ["-" if free is None else f"{free:.2%}", f"{r['constrained']['invalid_rate']:.2%}"]
        cells += ["-" if r.get("sessions_per_s") is None else f"{r['sessions_per_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    floor, models = floor_and_models(results)
    if floor is not None and models:
        lines += ["", f"Paired difference to {floor['model']} on the same sessions "
                  "(mean [95% interval]; * excludes 0):",
                  "", "| model | " + " | ".join(HEADLINE_NAMES) + " |", "|" + "---|" * (len(HEADLINE_NAMES) + 1)]
        for r in models:
            cells = [difference_cell(r, floor, name) for name in HEADLINE_NAMES]
            lines.append(f"| {r.get('name') or r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

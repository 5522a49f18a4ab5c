"""Peers: the retrievers a search or recommendation engineer would try first, in the same harness.

Every peer ranks items (SKUs) for exactly the sessions `radgr eval` scores (the split's sessions with
a positive in the index, in order, the first `max_sessions`), and `RankingScores.add_items` scores the
rankings with the same metric code as the model rows (item Recall@K, NDCG@K, MRR; its SID metrics
from the SIDs of the ranked items, first seen first). Which peers apply follows the data:

- most popular items: by the number of train sessions they are a positive of (RecBole's Pop);
- query data: BM25 over the item text the index embeds (`bm25s`, English stop words, Snowball
  stemmer), and dense retrieval: the query's MiniLM embedding against every item's, exact inner
  product (faiss; the embeddings are unit length, so cosine);
- history data: next-item co-occurrence (items that followed the session's last history item in
  train, by count; popularity fills the rest), and history text: the mean MiniLM embedding of the
  history items against every item's (history items left out);
- rankings computed elsewhere (SASRec through RecBole, `bench/sasrec_recbole.py`, in its own virtual
  environment): a JSON file of item lists keyed by session id or by a user field;
- published rows for the dataset (`PUBLISHED`), marked as not run here.

Rows scored earlier (`--rows-from`: a `radgr eval` or `radgr bench peers` JSON) join the table when they
were scored on exactly these sessions (their per-session values name them), so one table can gather a
model decoded on another machine, or a peer whose rankings are gone, without decoding again.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sid_index.data.schema import Dataset, load_dataset
from sid_index.embed import embed_texts, item_texts
from sid_index.errors import RadgrError
from sid_index.index import SidIndex, load_index
from sid_index.lexical import fit_bm25, tokenize
from sid_index.retrieve import embedding_model_of
from sid_index.trie import BEAM_WIDTH
from trainer.config import PeersConfig
from trainer.data import build_examples
from trainer.evaluate import (
    INDEX_ONLY,
    ITEM_KS,
    POPULAR_SIDS,
    EvalConfig,
    RankingScores,
    difference_cell,
    evaluate_index_only,
    evaluate_models,
    metric_cell,
    truth_targets,
)
from trainer.model import META_FILE, resolve_checkpoint

OURS_PREFIX = "radgr SFT: "  # our model rows in the peer tables (a checkpoint path follows)
DEPTH = max(ITEM_KS)  # items each peer ranks per session
MAX_RANKING_FILE = 512 * 2**20  # bytes: an external rankings file is untrusted input

# Published figures on a dataset's standard split (full ranking), quoted beside our rows, never run here.
PUBLISHED: dict[str, list[dict[str, Any]]] = {
    "amazon-scientific": [{
        "name": "VQ-Rec (published, not run here)",
        "source": "VQ-Rec repository's table for Scientific (UniSRec/RecBole preprocessing, leave-one-out)",
        "item": {"recall@10": 0.1238, "ndcg@10": 0.0645, "recall@50": 0.2409, "ndcg@50": 0.0901},
    }],
}


@dataclass
class Requests:
    """What a peer may look at for each evaluated session: its query and its history (SKUs, oldest first)."""

    queries: list[str]
    histories: list[list[str]]


@dataclass
class Peer:
    """One peer's rankings of the evaluated sessions and what they cost."""

    name: str
    rankings: list[list[str]]
    fit_s: float  # building the index / counting / training
    rank_s: float  # ranking every session


def requests_of(dataset: Dataset, split: str, session_ids: Sequence[str]) -> Requests:
    table = dataset.split(split)
    by_id = {s: (q, h) for s, q, h in zip(table["session_id"].to_pylist(), table["query"].to_pylist(),
                                          table["history"].to_pylist(), strict=True)}
    return Requests([(by_id[s][0] or "").strip() for s in session_ids], [list(by_id[s][1] or []) for s in session_ids])


def train_counts(dataset: Dataset) -> Counter[str]:
    """Per SKU: the number of train sessions it is a positive of."""
    counts: Counter[str] = Counter()
    for positives in dataset.split("train")["positives"].to_pylist():
        counts.update({p["sku_id"] for p in positives or []})
    return counts


def popular_items(dataset: Dataset) -> list[str]:
    """Every catalog SKU, most often a train positive first (ties, and never-positive SKUs, by SKU id)."""
    counts = train_counts(dataset)
    return sorted(dataset.catalog["sku_id"].to_pylist(), key=lambda s: (-counts[s], s))


def _timed(name: str, fit: Callable[[], Any], rank: Callable[[Any], list[list[str]]]) -> Peer:
    t0 = time.perf_counter()
    model = fit()
    t1 = time.perf_counter()
    rankings = rank(model)
    return Peer(name, rankings, t1 - t0, time.perf_counter() - t1)


def popularity_peer(dataset: Dataset, req: Requests, depth: int = DEPTH) -> Peer:
    return _timed("most popular items (train)", lambda: popular_items(dataset)[:depth],
                  lambda top: [top] * len(req.queries))


def bm25_peer(dataset: Dataset, req: Requests, depth: int = DEPTH) -> Peer:
    """BM25 over `item_texts`, tokenised and scored as the index's lexical prior (`sid_index.lexical`)."""
    skus = dataset.catalog["sku_id"].to_pylist()

    def rank(retriever) -> list[list[str]]:
        docs, scores = retriever.retrieve(tokenize(req.queries), k=min(depth, len(skus)), show_progress=False,
                                          n_threads=0)
        return [[skus[d] for d, s in zip(row, srow, strict=True) if s > 0] for row, srow in zip(docs, scores,
                                                                                             strict=True)]

    return _timed("BM25 (bm25s)", lambda: fit_bm25(item_texts(dataset.catalog)), rank)


def item_embeddings(dataset: Dataset, index: SidIndex, embedding_model: Path | None) -> tuple[np.ndarray, Path]:
    """MiniLM embeddings of every catalog item's text, by the index's text model (its build cache answers)."""

    model = embedding_model_of(index, embedding_model)
    emb, _ = embed_texts(item_texts(dataset.catalog), model, progress=False)
    return emb, model


def _inner_product_search(items: np.ndarray, queries: np.ndarray, depth: int) -> np.ndarray:
    import faiss

    search = faiss.IndexFlatIP(items.shape[1])
    search.add(np.ascontiguousarray(items, dtype=np.float32))
    _, idx = search.search(np.ascontiguousarray(queries, dtype=np.float32), min(depth, len(items)))
    return idx


def dense_peer(dataset: Dataset, index: SidIndex, req: Requests, embedding_model: Path | None = None,
               depth: int = DEPTH) -> Peer:
    """The query's MiniLM embedding against every item's (not quantised: what the index's SIDs approximate)."""

    skus = dataset.catalog["sku_id"].to_pylist()

    def rank(fitted) -> list[list[str]]:
        emb, model = fitted
        queries, _ = embed_texts(req.queries, model, progress=False, cache_dir=None)
        return [[skus[i] for i in row if i >= 0] for row in _inner_product_search(emb, queries, depth)]

    return _timed("dense MiniLM (exact)", lambda: item_embeddings(dataset, index, embedding_model), rank)


def history_text_peer(dataset: Dataset, index: SidIndex, req: Requests, embedding_model: Path | None = None,
                      depth: int = DEPTH) -> Peer:
    """The mean MiniLM embedding of the session's history items against every item's; history items left out."""
    skus = dataset.catalog["sku_id"].to_pylist()
    row_of = {s: i for i, s in enumerate(skus)}

    def rank(fitted) -> list[list[str]]:
        emb, _ = fitted
        vectors = np.zeros((len(req.histories), emb.shape[1]), dtype=np.float32)
        for i, hist in enumerate(req.histories):
            rows = [row_of[s] for s in hist if s in row_of]
            if rows:
                vectors[i] = emb[rows].mean(0)
        deep = _inner_product_search(emb, vectors, depth + max(map(len, req.histories), default=0))
        out = []
        for hist, row in zip(req.histories, deep, strict=True):
            seen = set(hist)
            out.append([skus[i] for i in row if i >= 0 and skus[i] not in seen][:depth] if hist else [])
        return out

    return _timed("history text (mean MiniLM)", lambda: item_embeddings(dataset, index, embedding_model), rank)


def cooccurrence_peer(dataset: Dataset, req: Requests, depth: int = DEPTH) -> Peer:
    """Items that followed the last history item in train (a positive of a train session whose history ends
    with it), by count; the most popular items fill the rest. The first-order transition any sequential
    model should at least capture."""

    def fit():
        table = dataset.split("train")
        follows: dict[str, Counter[str]] = {}
        for hist, positives in zip(table["history"].to_pylist(), table["positives"].to_pylist(), strict=True):
            if hist:
                follows.setdefault(hist[-1], Counter()).update({p["sku_id"] for p in positives or []})
        return follows, popular_items(dataset)[: 2 * depth]

    def rank(fitted) -> list[list[str]]:
        follows, popular = fitted
        out = []
        for hist in req.histories:
            counts = follows.get(hist[-1], Counter()) if hist else Counter()
            first = [s for s, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
            out.append(list(dict.fromkeys(first + popular))[:depth])
        return out

    return _timed("next-item co-occurrence", fit, rank)


def external_peer(path: Path, dataset: Dataset, split: str, session_ids: Sequence[str], depth: int = DEPTH) -> Peer:
    """Rankings made elsewhere: JSON {"system", "key" ("session_id" or a user field), "rankings": {key: [sku, ...]},
    optional "train_s", "rank_ms_per_session"}. A session the file does not rank gets an empty ranking."""
    try:
        if path.stat().st_size > MAX_RANKING_FILE:
            raise RadgrError(f"{path}: larger than {MAX_RANKING_FILE >> 20} MiB")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RadgrError(f"{path}: cannot read rankings ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise RadgrError(f"{path}: not valid JSON ({exc})") from None
    if not (isinstance(doc, dict) and isinstance(doc.get("rankings"), dict) and isinstance(doc.get("key"), str)):
        raise RadgrError(f'{path}: expected {{"system": ..., "key": ..., "rankings": {{key: [sku, ...]}}}}')
    rankings = doc["rankings"]
    if doc["key"] == "session_id":
        keys = list(session_ids)
    else:
        table = dataset.split(split)
        if "user" not in table.column_names:
            raise RadgrError(f"{path}: keyed by user field '{doc['key']}', but the sessions carry no user fields")
        users = dict(zip(table["session_id"].to_pylist(), table["user"].to_pylist(), strict=True))
        keys = [dict(users[s] or []).get(doc["key"]) for s in session_ids]
    out = []
    for key in keys:
        ranked = rankings.get(key, []) if key is not None else []
        if not isinstance(ranked, list) or not all(isinstance(s, str) for s in ranked):
            raise RadgrError(f"{path}: the ranking of '{key}' is not a list of SKU ids")
        out.append(ranked[:depth])
    found = sum(bool(r) for r in out)
    if found < len(out):
        raise RadgrError(f"{path}: ranks {found} of the {len(out)} evaluated sessions (keyed by '{doc['key']}')")
    per = float(doc.get("rank_ms_per_session") or 0.0) / 1000
    return Peer(str(doc.get("system") or path.stem), out, float(doc.get("train_s") or 0.0), per * len(out))


def score_peer(peer: Peer, ex, n: int, index: SidIndex, dataset: Dataset, split: str, width: int) -> dict[str, Any]:
    """A peer's metrics on the first `n` sessions of `ex`, in the shape `evaluate` returns."""
    scores = RankingScores(index, truth_targets(dataset.split(split), index), width)
    for i in range(n):
        scores.add_items(ex, i, peer.rankings[i])
    return {"model": peer.name, "name": peer.name, "split": split, "width": width, "sessions": n,
            "skipped": ex.skipped, "not_evaluated": len(ex) - n, **scores.summary(),
            "constrained": {"invalid_rate": 0.0, "beams": 0}, "unconstrained": {}, "peer": True,
            "train_s": peer.fit_s, "ms_per_session": 1000 * peer.rank_s / n if n else None}


def run_peers(index: SidIndex, dataset: Dataset, split: str = "test", width: int = BEAM_WIDTH,
              max_sessions: int | None = None, embedding_model: Path | None = None,
              rankings: Sequence[Path] = (), log=print) -> list[dict[str, Any]]:
    """Every peer that applies to the data, plus the external rankings, scored on the same sessions."""

    ex = build_examples(dataset, index, None, split)
    n = len(ex) if max_sessions is None else min(len(ex), max_sessions)
    ids = ex.session_ids[:n]
    req = requests_of(dataset, split, ids)
    peers: list[Callable[[], Peer]] = [lambda: popularity_peer(dataset, req)]
    if any(req.queries):
        peers += [lambda: bm25_peer(dataset, req), lambda: dense_peer(dataset, index, req, embedding_model)]
    if any(req.histories):
        peers += [lambda: cooccurrence_peer(dataset, req),
                  lambda: history_text_peer(dataset, index, req, embedding_model)]
    peers += [lambda p=p: external_peer(p, dataset, split, ids) for p in rankings]
    out = []
    for make in peers:
        peer = make()
        log(f"peer {peer.name}: fit {peer.fit_s:.1f} s, ranked {n} sessions in {peer.rank_s:.1f} s")
        out.append(score_peer(peer, ex, n, index, dataset, split, width))
    return out


def reused_rows(path: Path, split: str, session_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of an earlier `--out` JSON (`radgr eval`: "models", `radgr bench peers`: "rows") scored on exactly
    `session_ids` of `split`, checked so that each pairs session by session with this run's rows. radgr eval's
    SID-popularity row is left out (the peers rank items), and so are published rows (added anyway)."""
    try:
        if path.stat().st_size > MAX_RANKING_FILE:
            raise RadgrError(f"--rows-from {path}: larger than {MAX_RANKING_FILE >> 20} MiB")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RadgrError(f"--rows-from {path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise RadgrError(f"--rows-from {path}: not valid JSON ({exc})") from None
    rows = (doc.get("rows") or doc.get("models")) if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise RadgrError(f'--rows-from {path}: expected the JSON of radgr eval or radgr bench peers --out '
                         '({"models": [...]} or {"rows": [...]})')
    n, out = len(session_ids), []
    for r in rows:
        if r.get("model") == POPULAR_SIDS or r.get("published"):
            continue
        name = str(r.get("name") or r.get("model"))
        per = r.get("per_session")
        if r.get("split") != split:
            raise RadgrError(f"--rows-from {path}: row '{name}' was scored on split {r.get('split')!r}, "
                             f"this table on {split!r}")
        if not isinstance(per, dict) or per.get("session_ids") != list(session_ids):
            raise RadgrError(f"--rows-from {path}: row '{name}' was not scored on the {n} sessions of this table "
                             "(its per-session values name other sessions)")
        values_ok = all(isinstance(v, list) and len(v) == n and all(isinstance(x, int | float) for x in v)
                        for k, v in per.items() if k != "session_ids")
        if not (values_ok and r.get("sessions") == n and isinstance(r.get("item"), dict)):
            raise RadgrError(f"--rows-from {path}: row '{name}' is malformed (metrics or per-session values)")
        out.append(dict(r, name=name, reused_from=str(path)))
    return out


def published_rows(dataset: Dataset) -> list[dict[str, Any]]:
    """`PUBLISHED` rows of this dataset (by its dataset.json name)."""
    return [dict(row, published=True) for row in PUBLISHED.get(str(dataset.info.get("name", "")), [])]


# ----------------------------------------------------------------------------- one table: models and peers


def compare(cfg: PeersConfig, log=print) -> list[dict[str, Any]]:
    """The models (with the most-popular-SID and index-only rows), every peer, and the published rows."""

    for flag, paths in (("--rankings", cfg.rankings), ("--rows-from", cfg.rows_from)):  # before any slow work
        for path in paths:
            if not path.is_file():
                raise RadgrError(f"{flag} {path}: no such file")
    if cfg.model:
        ev = EvalConfig(model=cfg.model, index=cfg.index, data=cfg.data, split=cfg.split, beam_width=cfg.beam_width,
                        batch_size=cfg.batch_size, max_sessions=cfg.max_sessions, device=cfg.device,
                        unconstrained=False, index_prior=cfg.index_prior, item_prior=cfg.item_prior,
                        index_prior_form=cfg.index_prior_form, lexical_prior=cfg.lexical_prior,
                        embedding_model=cfg.embedding_model)
        # the peers' popularity ranks items; radgr eval's popular-SID row would be a second, different one
        results = [r for r in evaluate_models(ev, log) if r["model"] != POPULAR_SIDS]
        for r in results:
            if r.get("device"):  # our trained models: named as such beside the peers
                r["train_s"] = checkpoint_train_s(r["model"])
                r["name"] = f"{OURS_PREFIX}{r['name']}"
    index, dataset = load_index(cfg.index), load_dataset(cfg.data)
    if not cfg.model:
        results = [evaluate_index_only(index, dataset, cfg.split, cfg.beam_width, cfg.max_sessions,
                                       cfg.embedding_model)]
        results[0]["name"] = results[0]["model"]
    for r in results:
        if r.get("sessions_per_s") and not r.get("device"):
            r["ms_per_session"] = 1000 / r["sessions_per_s"]
    results += run_peers(index, dataset, cfg.split, cfg.beam_width, cfg.max_sessions, cfg.embedding_model,
                         cfg.rankings, log)
    ids = next(r for r in results if r["model"] == INDEX_ONLY)["per_session"]["session_ids"]
    have = {r.get("name") or r["model"] for r in results}
    models, peers = [], []
    for path in cfg.rows_from:
        for r in reused_rows(path, cfg.split, ids):
            if r.get("device") and not r["name"].startswith(OURS_PREFIX):
                r["name"] = f"{OURS_PREFIX}{r['name']}"
                r["train_s"] = checkpoint_train_s(r["model"])
            if r["name"] in have:
                log(f"--rows-from {path}: '{r['name']}' is computed by this run, kept from it")
                continue
            have.add(r["name"])
            (models if r.get("device") else peers).append(r)
    return models + results + peers + published_rows(dataset)


# ----------------------------------------------------------------------------- the table

PEER_COLUMNS = (("item R@10", "recall@10"), ("item R@50", "recall@50"), ("item R@100", "recall@100"),
                ("item NDCG@10", "ndcg@10"), ("item NDCG@50", "ndcg@50"))


def checkpoint_train_s(path: str | Path | None) -> float | None:
    """Training wall time of a checkpoint, summed over its stages (None when a stage did not record it)."""

    try:
        stages = json.loads((resolve_checkpoint(Path(path)) / META_FILE).read_text()).get("stages") or []
    except (OSError, ValueError, TypeError, RadgrError):
        return None
    times = [s.get("train_s") for s in stages]
    return float(sum(times)) if times and None not in times else None


def peers_table(results: Sequence[dict[str, Any]]) -> str:
    """One row per system on the same sessions (± = half the 95% bootstrap interval over sessions), published
    rows last; then each trained model's paired difference to each peer run here."""
    head = ["system", "sessions", *(c for c, _ in PEER_COLUMNS), "SID R@128", "train min", "ms / session"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        train_s = r.get("train_s")
        ms = r.get("ms_per_session")
        if ms is None and r.get("sessions_per_s"):
            ms = 1000 / r["sessions_per_s"]
        cells = [str(r.get("name") or r["model"]), "-" if r.get("published") else f"{r['sessions']:,}"]
        cells += [metric_cell(r, "item", key) for _, key in PEER_COLUMNS] + [metric_cell(r, "sid", "recall@128")]
        cells += ["-" if train_s is None else f"{train_s / 60:.1f}", "-" if ms is None else f"{ms:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    models = [r for r in results if r.get("device") and r.get("per_session")]
    peers = [r for r in results if not r.get("device") and r.get("per_session")]
    keys = ("item recall@10", "item recall@50", "item recall@100", "item ndcg@10")
    if models and peers:
        lines += ["", "Paired difference, model minus peer, on the same sessions (mean [95% interval]; "
                  "* excludes 0):", "", "| model | peer | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
        for m in models:
            for p in peers:
                cells = [difference_cell(m, p, key) for key in keys]
                lines.append(f"| {m.get('name') or m['model']} | {p['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

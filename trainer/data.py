"""Sessions -> training examples: a prompt, its positives (graded) and its negative pool, as SID codes.

Everything the trainer and the evaluator need from the interchange files is resolved once here,
into flat numpy arrays: SKU ids become SID codes through the index, positives sharing a SID are
merged (the highest grade wins), and the negative pool of a session is its exposed-but-unclicked
SIDs topped up with random catalog SIDs to a fixed N, drawn from a generator seeded per
(seed, epoch, session), so a resumed run sees exactly the negatives the uninterrupted one saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from sid_index.data.schema import Dataset
from sid_index.embed import embed_texts, item_texts, resolve_model
from sid_index.index import SidIndex
from trainer.prompt import PromptBuilder


def history_codes(index: SidIndex, skus: Sequence[str]) -> tuple[list[tuple[int, ...]], list[str]]:
    """SID codes of history SKUs, oldest first, and the SKUs the index does not hold (left out).

    Training skips those; the server refuses a request that names any.
    """
    codes, missing = [], []
    for sku in skus:
        sid = index.sid_of(sku)
        if sid is None:
            missing.append(sku)
        else:
            codes.append(sid)
    return codes, missing


def request_ids(
    prompts: PromptBuilder, index: SidIndex, query: str | None, history: Sequence[str] = (),
    user: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
) -> list[int]:
    """Prompt ids of one request given as the interchange schema has it (SKU ids, user map)."""
    return prompts.request(query, history_codes(index, history or ())[0], dict(user) if user else None)


@dataclass
class Examples:
    """One row per usable session (at least one positive with a SID)."""

    session_ids: list[str]
    prompts: list[list[int]]
    pos_codes: list[np.ndarray]  # [P_s, L], best grade first
    pos_grades: list[np.ndarray]  # [P_s]
    neg_codes: list[np.ndarray]  # [E_s, L] exposed-but-unclicked, distinct, none equal to a positive
    pos_skus: list[list[str]]  # the positive SKUs themselves (item-level evaluation)
    pos_sku_grades: list[list[float]]  # their grades (graded NDCG)
    skipped: int  # sessions without any positive
    texts: list[str] = field(default_factory=list)  # what fills the prompt's text-vector slot ('' none)
    text_vectors: np.ndarray | None = None  # [n, D] their embeddings (`embed_prompt_texts`), zero rows for ''

    def __len__(self) -> int:
        return len(self.prompts)

    def extend(self, other: Examples) -> None:
        """Append `other`'s rows (an SFT epoch mixes indexing examples into the sessions)."""
        for name in ("session_ids", "prompts", "pos_codes", "pos_grades", "neg_codes", "pos_skus", "pos_sku_grades",
                     "texts"):
            getattr(self, name).extend(getattr(other, name))
        if self.text_vectors is not None or other.text_vectors is not None:
            if self.text_vectors is None or other.text_vectors is None:
                raise ValueError("both example sets need text vectors, or neither")
            self.text_vectors = np.concatenate([self.text_vectors, other.text_vectors])


def build_examples(dataset: Dataset, index: SidIndex, prompts: PromptBuilder | None, split: str) -> Examples:
    """Examples of one split of a dataset, for a given index and prompt template (None: no prompts, for
    systems that rank without a model; the sessions are the same)."""
    table = dataset.split(split)
    cols = {c: table[c].to_pylist() for c in ("session_id", "query", "history", "positives", "exposed_negatives")}
    users = table["user"].to_pylist() if "user" in table.column_names else [None] * table.num_rows
    ex = Examples([], [], [], [], [], [], [], 0)
    for sid_, query, hist, pos, negs, user in zip(*cols.values(), users, strict=True):
        best: dict[tuple[int, ...], float] = {}
        skus, sku_grades = [], []
        for p in pos or []:
            codes = index.sid_of(p["sku_id"])
            if codes is None:
                continue
            grade = float(p["grade"]) if p["grade"] is not None else 1.0
            skus.append(p["sku_id"])
            sku_grades.append(grade)
            best[codes] = max(best.get(codes, grade), grade)
        if not best:
            ex.skipped += 1
            continue
        order = sorted(best.items(), key=lambda kv: -kv[1])  # stable: ties keep the session's order
        neg = []
        for sku in negs or []:
            codes = index.sid_of(sku)
            if codes is not None and codes not in best and codes not in neg:
                neg.append(codes)
        ex.session_ids.append(sid_)
        ex.prompts.append([] if prompts is None else request_ids(prompts, index, query, hist, user))
        ex.pos_codes.append(np.array([c for c, _ in order], dtype=np.int64))
        ex.pos_grades.append(np.array([g for _, g in order], dtype=np.float32))
        ex.neg_codes.append(np.array(neg, dtype=np.int64).reshape(-1, index.levels))
        ex.pos_skus.append(skus)
        ex.pos_sku_grades.append(sku_grades)
        ex.texts.append((query or "").strip())
    return ex


def embed_prompt_texts(ex: Examples, text_model: dict | None, override: str | Path | None = None,
                       catalog: pa.Table | None = None) -> Examples:
    """Fill `ex.text_vectors` with the text model's embeddings of `ex.texts` (nothing when `text_model`
    is None: a checkpoint without text inputs). Item texts are embedded as the whole catalog, in one
    call, so that the index build's embedding cache answers them."""

    if text_model is None:
        return ex
    model = resolve_model(text_model.get("embedding_model"), text_model.get("embedding_fingerprint"), override)
    vectors = np.zeros((len(ex), int(text_model["text_dim"])), dtype=np.float32)
    known: dict[str, np.ndarray] = {}
    if catalog is not None:
        texts = item_texts(catalog)
        emb, _ = embed_texts(texts, model, progress=False)
        known.update(zip(texts, emb, strict=True))
    rest = sorted({t for t in ex.texts if t and t not in known})
    if rest:
        emb, _ = embed_texts(rest, model, progress=False)
        known.update(zip(rest, emb, strict=True))
    for i, text in enumerate(ex.texts):
        if text:
            vectors[i] = known[text]
    ex.text_vectors = vectors
    return ex


def indexing_examples(dataset: Dataset, index: SidIndex, prompts: PromptBuilder) -> Examples:
    """DSI-style examples: an item's text -> its SID, so items never seen in a session get a learned SID."""
    catalog: pa.Table = dataset.catalog
    texts = item_texts(catalog)
    ex = Examples([], [], [], [], [], [], [], 0)
    for sku, text in zip(catalog["sku_id"].to_pylist(), texts, strict=True):
        codes = index.sid_of(sku)
        if codes is None:
            ex.skipped += 1
            continue
        ex.session_ids.append(f"item:{sku}")
        ex.prompts.append(prompts.item(text))
        ex.pos_codes.append(np.array([codes], dtype=np.int64))
        ex.pos_grades.append(np.ones(1, dtype=np.float32))
        ex.neg_codes.append(np.zeros((0, index.levels), dtype=np.int64))
        ex.pos_skus.append([sku])
        ex.pos_sku_grades.append([1.0])
        ex.texts.append(text)
    return ex


def sample_negatives(
    exposed: np.ndarray, positives: np.ndarray, all_sids: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Exactly `n` negative SIDs: exposed ones first (a random subset if more), then random catalog SIDs.

    Random fills avoid the session's positives and each other; when the catalog is too small to
    avoid repeats, repeats are allowed rather than returning fewer than `n`.
    """
    if len(exposed) >= n:
        return exposed[rng.permutation(len(exposed))[:n]]
    taken = {tuple(c) for c in positives.tolist()} | {tuple(c) for c in exposed.tolist()}
    need = n - len(exposed)
    picks: list[np.ndarray] = []
    for _ in range(8):
        cand = all_sids[rng.integers(0, len(all_sids), size=2 * need + 8)]
        for row in cand:
            key = tuple(row.tolist())
            if key not in taken:
                taken.add(key)
                picks.append(row)
                if len(picks) == need:
                    break
        if len(picks) == need:
            break
    while len(picks) < need:  # tiny catalogs: allow repeats
        picks.append(all_sids[rng.integers(0, len(all_sids))])
    return np.concatenate([exposed, np.stack(picks)]) if len(exposed) else np.stack(picks)


def session_rng(seed: int, epoch: int, item: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, item])

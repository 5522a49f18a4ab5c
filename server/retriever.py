"""Requests in catalog terms (query, SKU history, user features) <-> the engine's prompts and SIDs.

Also the start-up checks: the checkpoint must have been trained for this very index and its
tokenizer must hold exactly the index's SID tokens, or the server refuses to start.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from server.engine import Hits
from sid_index.atomic import CHECKSUMS
from sid_index.embed import CachedEncoder, resolve_model
from sid_index.errors import RadgrError
from sid_index.index import SidIndex, load_centroids, scored_items
from sid_index.retrieve import (
    embedding_model_of,
    item_bonus,
    item_form_bonus,
    item_request_vector,
    lexical_rows,
    request_vector,
)
from sid_index.tokens import format_sid, sid_tokens
from trainer.data import history_codes
from trainer.model import Checkpoint
from trainer.prompt import PromptBuilder

_SID_TOKEN = re.compile(r"^<[a-h]_\d+>$")


class UnknownSkus(ValueError):
    """History SKUs that the index does not hold."""

    def __init__(self, skus: list[str]):
        super().__init__(f"unknown SKU ids in history: {', '.join(skus[:20])}{' ...' if len(skus) > 20 else ''}")
        self.skus = skus


@dataclass
class Item:
    sku: str
    sid: str
    score: float
    rank: int  # rank of its SID among the decoded SIDs (0 = best)


def check_compatible(ckpt: Checkpoint, index: SidIndex) -> None:
    """Refuse a checkpoint/index pair that would decode SIDs of some other catalog."""
    ckpt.check_index(index)
    if tuple(ckpt.meta["codebook_sizes"]) != tuple(index.codebook_sizes):
        raise RadgrError(
            f"checkpoint {ckpt.path} has codebooks {ckpt.meta['codebook_sizes']}, index {index.root} "
            f"{list(index.codebook_sizes)}"
        )
    expected = set(sid_tokens(index.codebook_sizes))
    present = {t for t in ckpt.tokenizer.get_vocab() if _SID_TOKEN.match(t)}
    if present != expected:
        extra, missing = sorted(present - expected), sorted(expected - present)
        raise RadgrError(
            f"tokenizer of {ckpt.path} does not hold exactly the index's SID tokens "
            f"({len(missing)} missing, e.g. {missing[:3]}; {len(extra)} extra, e.g. {extra[:3]})"
        )


def model_version(ckpt: Checkpoint) -> str:
    """Folder name plus a short fingerprint of its files: of its checksums.json (the SHA-256 of every file,
    verified when it was loaded), else of the metadata and weight files' sizes and first MiB."""

    root = Path(ckpt.path)
    name = root.parent.name if root.name == "model" else root.name
    if (root / CHECKSUMS).is_file():
        return f"{name}-{hashlib.sha256((root / CHECKSUMS).read_bytes()).hexdigest()[:12]}"
    h = hashlib.sha256((root / "radgr.json").read_bytes())
    for f in sorted(root.glob("*.safetensors")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}".encode())
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
    return f"{name}-{h.hexdigest()[:12]}"


@dataclass
class Encoded:
    """A request as the engine takes it."""

    prompt: list[int]
    vector: np.ndarray | None  # the query's text embedding (checkpoints with text inputs, or the index prior)
    prior: np.ndarray | None  # the index prior's request vector (servers with an index prior)
    embed_s: float | None  # time spent embedding the query (None: not embedded)
    item: np.ndarray | None = None  # the item prior's request vector (servers with an item prior)
    lexical: np.ndarray | None = None  # [SKUs] weighted BM25 row of the item-form prior (servers with a lexical term)


class Retriever:
    """Builds prompts (and text / index-prior vectors) from requests and turns decoded SIDs into ranked SKUs."""

    def __init__(self, ckpt: Checkpoint, index: SidIndex, text_cache: int = 4096, index_prior: float = 0.0,
                 item_prior: float = 0.0, index_prior_form: str = "sid", lexical_prior: float = 0.0):
        check_compatible(ckpt, index)
        self.index = index
        self.item_prior = item_prior  # weight of the item prior on each SKU of the beam (0: none)
        self.item_form = index_prior > 0 and index_prior_form == "item"  # the index prior at item resolution
        if lexical_prior > 0 and index_prior_form != "item":
            raise RadgrError(f"lexical prior {lexical_prior:g}: it is a term of the item-form index prior "
                             "(index_prior_form item)")
        self.lexical_prior = lexical_prior if self.item_form else 0.0  # BM25's weight in the item scores
        if item_prior > 0 or self.item_form:
            index.vectors_of([])  # refuses an index without item vectors before the server starts
        if self.lexical_prior > 0:
            index.lexical()  # likewise an index without a lexical folder
        self.prompts: PromptBuilder = ckpt.prompts
        self.encoder = None  # the index's text model: for checkpoints with text inputs and for the index prior
        self.centroids = None  # the index's RQ-KMeans centroids, for the index prior
        if index_prior > 0 and not self.item_form:
            self.centroids = load_centroids(index)
            if len(self.centroids) != index.levels:
                raise RadgrError(f"index prior: index {index.root} has no RQ-KMeans centroids (built from given codes)")
        if ckpt.text_model is not None or index_prior > 0 or item_prior > 0:

            text = ckpt.text_model
            model = (resolve_model(text.get("embedding_model"), text.get("embedding_fingerprint")) if text
                     else embedding_model_of(index))
            self.encoder = CachedEncoder(model, text_cache)

    def vector(self, query: str | None) -> np.ndarray | None:
        """The text vector of a request's query (None without a query, or when nothing here embeds text)."""
        if self.encoder is None or not (query and query.strip()):
            return None
        return self.encoder(query.strip())

    def encode(self, query: str | None, history: Sequence[str] = (), user: Mapping[str, str] | None = None
               ) -> Encoded:
        """`prompt`, the query's vector and the index prior's request vector (`sid_index.retrieve.request_vector`)
        of one request; raises `UnknownSkus` like `prompt`."""
        import time


        codes = self._history_codes(history)
        prompt = self.prompts.request(query, codes, dict(user) if user else None)
        t0 = time.perf_counter()
        vector = self.vector(query)
        embed_s = None if vector is None else time.perf_counter() - t0
        item = item_request_vector(self.index, vector, history) if self.item_prior > 0 or self.item_form else None
        prior = item if self.item_form else None if self.centroids is None else request_vector(self.centroids,
                                                                                                 vector, codes)
        rows = lexical_rows(self.index, [query.strip()], self.lexical_prior) if query and query.strip() else None
        return Encoded(prompt, vector, prior, embed_s, item, None if rows is None else rows[0])

    def prompt(
        self, query: str | None, history: Sequence[str] = (), user: Mapping[str, str] | None = None
    ) -> list[int]:
        """Prompt ids of a request; raises `UnknownSkus` naming every history SKU the index lacks."""
        return self.prompts.request(query, self._history_codes(history), dict(user) if user else None)

    def _history_codes(self, history: Sequence[str]) -> list[tuple[int, ...]]:
        codes, unknown = history_codes(self.index, history)
        if unknown:
            raise UnknownSkus(unknown)
        return codes

    def reachable(self, hits: Hits) -> int:
        """Distinct SKUs of all decoded SIDs: the most `items` can return."""
        return len({sku for codes in hits.codes.tolist() for sku in self.index.skus_of(codes)})

    def title_of(self, sku: str) -> str | None:
        """The SKU's catalog title, where the index keeps titles."""
        return self.index.title_of(sku)

    def items(self, hits: Hits, top_k: int, request: Encoded | None = None) -> list[Item]:
        """The best `top_k` SKUs of the beam, each scored by its share of its SID's probability (log p(SID) -
        log |SKUs(SID)|) plus the weighted item prior against the request's item vector (`Encoded.item`); with
        the item form, the item prior relative to its SID's best SKU (`sid_index.retrieve.item_form_bonus`);
        as radgr eval ranks them (`sid_index.index.scored_items`); `rank` is its SID's."""
        codes = hits.codes.tolist()
        vector = None if request is None else request.item
        bonus = (item_form_bonus(self.index, vector, request.lexical, self.item_prior) if self.item_form
                 else item_bonus(self.index, vector, self.item_prior))
        ranked = scored_items(codes, np.asarray(hits.scores).tolist(), self.index.skus_of, bonus)
        return [Item(sku=sku, sid=format_sid(codes[rank]), score=score, rank=rank)
                for sku, rank, score in ranked[:top_k]]

"""The native engine: `beam_search` in plain PyTorch over the checkpoint, batched across requests.

Every batch of requests is one `beam_search` call: the prompts are prefilled together, their
KV cache is shared by their beams, and each SID step is one forward over all live beams of
all requests, masked by the trie on the device. Requests of different beam widths share the
batch (`widths`). It needs only torch and transformers, which makes it the engine for any
machine without vLLM and the yardstick the vLLM engine is checked against.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from server.engine import BatchingEngine, BatchStats, Hits
from sid_index.decoding import IndexPrior, ItemPriorTable, beam_search, lexical_stack
from sid_index.index import SidIndex, load_centroids
from trainer.model import Checkpoint


class NativeEngine(BatchingEngine):
    name = "native"

    def __init__(self, ckpt: Checkpoint, index: SidIndex, device: str = "cpu", score_eos: bool = False,
                 index_prior: float = 0.0, index_prior_form: str = "sid", **kwargs):
        super().__init__(**kwargs)
        self.ckpt = ckpt
        self.model = ckpt.decoder.to(device).eval()
        self.constraint = index.constraint(device)
        self.score_eos = score_eos
        self.device = device
        self.index_prior = index_prior  # weight of the index's retrieval score (sid_index.decoding.IndexPrior)
        self.centroids = self.items = None
        if index_prior > 0 and index_prior_form == "item":
            self.items = ItemPriorTable.of(index, device)  # sid_index.decoding.ItemPrior: SIDs' best items
        elif index_prior > 0:
            self.centroids = load_centroids(index)

    @torch.inference_mode()
    def decode(self, prompts: list[list[int]], widths: list[int], vectors: list[np.ndarray | None] | None = None,
               priors: list[np.ndarray | None] | None = None, lexicals: list[np.ndarray | None] | None = None
               ) -> tuple[list[Hits], BatchStats]:
        start = time.perf_counter()
        ck = self.ckpt
        text = None
        if ck.text_inputs is not None:  # rows without a slot ignore their (zero) vector
            zero = np.zeros(ck.text_inputs.text_dim, dtype=np.float32)
            text = torch.from_numpy(np.stack([zero if v is None else v for v in vectors or [None] * len(prompts)]))
        prior = None
        if self.centroids is not None or self.items is not None:
            if priors is None or any(p is None for p in priors):
                raise ValueError("an engine with an index prior needs every request's prior vector")
            prior = (self.items.prior(np.stack(priors), self.index_prior, lexical_stack(lexicals, self.items))
                     if self.items is not None
                     else IndexPrior.of(self.centroids, np.stack(priors), self.index_prior, self.device))
        res = beam_search(
            self.model, prompts, ck.vocab, ck.eos_id, max(widths), self.constraint,
            include_eos=self.score_eos, pad_id=ck.pad_id, widths=widths, text_vectors=text, prior=prior,
        )
        codes, scores, valid = res.codes.cpu().numpy(), res.scores.float().cpu().numpy(), res.valid.cpu().numpy()
        live = np.isfinite(scores)
        hits = [Hits(codes=codes[b][valid[b]], scores=scores[b][valid[b]]) for b in range(len(prompts))]
        stats = BatchStats(
            requests=len(prompts),
            beams_per_step=[len(prompts)] + [sum(widths)] * (ck.vocab.levels - 1 + int(self.score_eos)),
            invalid=int((live & ~valid).sum()),
            seconds=time.perf_counter() - start,
        )
        return hits, stats

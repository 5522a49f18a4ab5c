"""The vLLM engine: vLLM runs the model, a trie logits processor masks it, our driver keeps the beams.

vLLM (0.32) has no constrained wide beam search: its `beam_search` sends one request per beam
and sorts Python objects (0.9 s at width 128 on the tiny model here), and its logits processors
cannot see a trie. So:

- `TrieLogitsProcessor` (vLLM's V1 logits-processor API) replaces, for every request that
  carries `extra_args["radgr_level"]`, the logits with the *masked log-softmax*: log-probs of
  the full vocabulary, -inf outside the trie's allowed tokens. With the engine started in
  `logprobs_mode="processed_logits"` the log-probs vLLM returns are exactly these: the same
  scores as the native engine, never renormalised over the allowed set.
- The driver runs the SID levels as engine steps: each step submits one 1-token request per
  live beam (prompt + the beam's tokens; vLLM's prefix cache, block size 32 on CPU, reuses the
  prompt's KV), asks for as many log-probs as the level's largest trie fan-out needs, and
  picks the next beams with numpy over all (beam, candidate) pairs at once.
- All requests of a batch share every step: their beams go to the engine together.

The prefix to mask is read from each request's prompt tail (its last `level` tokens are the
beam's SID tokens), so one `SamplingParams` per level serves every beam of a step.

A checkpoint with text inputs (`trainer/text_inputs.py`) is served through vLLM's prompt
embeddings (`enable_prompt_embeds`): the driver computes each beam request's input embeddings
with the checkpoint's `TextInputs` (token embeddings, SID centroid shifts, the projected query
vector in its slot) and submits them as a mixed-mode `EmbedsPrompt` whose token ids are the real
ones, every position taken from the embeddings; the logits processor still reads the beam's SID
prefix from those ids, and vLLM's prefix cache hashes the embeddings block by block.

With an index prior the driver adds each candidate code's prior gain to its log-prob before
picking beams: every allowed code of a beam comes back (k = the level's largest fan-out, whatever
the width: the top codes by log-prob alone need not hold the best fused ones), so this is the same
search as the native engine's. The SID form (`sid_index.decoding.IndexPrior`): weight
* (2 r.c - |c|^2), r the request vector minus the beam's prefix centroids. The item form
(`sid_index.decoding.ItemPrior`): the best item below the code's trie node minus the best below
the beam's, from the request's heads (computed once per batch), the driver tracking each beam's node.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import msgspec
import numpy as np
import torch

from server.engine import BatchingEngine, BatchStats, Hits
from server.settings import ServerSettings, with_checkpoint_prior
from sid_index.decoding import ItemPrior, ItemPriorTable, lexical_stack, lookahead_gain
from sid_index.index import SidIndex, load_centroids, load_index
from trainer.model import Checkpoint

LEVEL_ARG = "radgr_level"
CONFIG_KEY = "radgr"


def _processor_class():
    """Defined lazily: importing vllm costs seconds and is not needed by the native engine."""
    from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

    class TrieLogitsProcessor(LogitsProcessor):
        """Masked log-softmax over the SID trie for requests tagged with a SID level (others untouched)."""

        def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
            cfg = (vllm_config.additional_config or {}).get(CONFIG_KEY)
            self.enabled = cfg is not None
            if not self.enabled:
                return
            self.constraint = load_index(cfg["index"]).constraint(device)
            self.offsets = list(cfg["sid_offsets"])
            self.sizes = list(cfg["codebook_sizes"])
            self.eos_id = int(cfg["eos_id"])
            self.levels = len(self.sizes)
            n = vllm_config.scheduler_config.max_num_seqs
            self.level = np.full(n, -1, dtype=np.int64)
            self.prefix = np.zeros((n, self.levels), dtype=np.int64)  # SID codes of each request's beam

        def is_argmax_invariant(self) -> bool:
            return False

        def update_state(self, batch_update: BatchUpdate | None) -> None:
            if not self.enabled or not batch_update:
                return
            for i in batch_update.removed:
                self.level[i] = -1
            for i, params, prompt_ids, _ in batch_update.added:
                t = (params.extra_args or {}).get(LEVEL_ARG)
                if t is None:
                    self.level[i] = -1
                    continue
                self.level[i] = t
                if t:
                    tail = np.asarray(prompt_ids[-t:], dtype=np.int64)
                    self.prefix[i, :t] = tail - np.asarray(self.offsets[:t])
            for a, b, direction in batch_update.moved:
                la, pa = self.level[a], self.prefix[a].copy()
                if direction == MoveDirectionality.SWAP:
                    self.level[a], self.prefix[a] = self.level[b], self.prefix[b]
                else:
                    self.level[a] = -1
                self.level[b], self.prefix[b] = la, pa

        def apply(self, logits: torch.Tensor) -> torch.Tensor:
            if not self.enabled:
                return logits
            levels = self.level[: logits.shape[0]]
            tagged = np.flatnonzero(levels >= 0)
            if not len(tagged):
                return logits
            for t in np.unique(levels[tagged]).tolist():
                rows_np = tagged[levels[tagged] == t]
                rows = torch.from_numpy(rows_np).to(logits.device)
                sub = logits[rows]
                logp = sub - torch.logsumexp(sub.float(), -1, keepdim=True).to(sub.dtype)
                out = torch.full_like(sub, float("-inf"))
                if t < self.levels:
                    lo, hi = self.offsets[t], self.offsets[t] + self.sizes[t]
                    prefix = torch.from_numpy(self.prefix[rows_np, :t]).to(logits.device)
                    allowed = self.constraint.mask_nodes(t, self.constraint.nodes_of(prefix))
                    out[:, lo:hi] = logp[:, lo:hi].masked_fill(~allowed, float("-inf"))
                else:
                    out[:, self.eos_id] = logp[:, self.eos_id]
                logits[rows] = out
            return logits

    return TrieLogitsProcessor


def checkpoint_dtype(path) -> str:
    """The dtype the checkpoint was saved in: what "auto" means here (vLLM's "auto" downcasts float32 to bf16)."""
    import json

    cfg = json.loads((Path(path) / "config.json").read_text())
    return str(cfg.get("dtype") or cfg.get("torch_dtype") or "auto")


def _token_embedding(path) -> torch.nn.Embedding:
    """The checkpoint's input token embeddings, read from its safetensors (the model itself runs in vLLM)."""
    from safetensors import safe_open

    for f in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 (safe_open has no __iter__)
                if key.endswith("embed_tokens.weight"):
                    return torch.nn.Embedding.from_pretrained(fh.get_tensor(key), freeze=True)
    raise ValueError(f"{path}: no embed_tokens weight in its safetensors")


def max_fanout(index: SidIndex) -> list[int]:
    """Largest number of children of any trie node, per level: the log-probs a step needs per beam."""
    return [int(np.diff(np.asarray(index.trie.offsets[t])).max()) for t in range(index.levels)]


class VllmEngine(BatchingEngine):
    name = "vllm"

    def __init__(self, ckpt: Checkpoint, index: SidIndex, settings: ServerSettings, **kwargs):
        super().__init__(**kwargs)
        self.ckpt = ckpt
        self.index = index
        self.settings = settings = with_checkpoint_prior(settings, ckpt.index_prior, ckpt.item_prior,
                                                         ckpt.index_prior_form, ckpt.lexical_prior)
        self.score_eos = settings.score_eos
        self.fanout = max_fanout(index)
        self.constraint = index.constraint("cpu")  # the driver's copy, to track each beam's trie node
        self.text_inputs = ckpt.text_inputs  # None: plain token prompts
        self.token_embedding = _token_embedding(ckpt.path) if self.text_inputs is not None else None
        self.centroids = self.items = None  # what the index prior is computed from, when the server fuses it
        if settings.index_prior > 0 and settings.index_prior_form == "item":
            self.items = ItemPriorTable.of(index)  # the best item below every trie node, per request
        elif settings.index_prior > 0:  # per level [K, D] float64
            self.centroids = [np.asarray(c, dtype=np.float64) for c in load_centroids(index)]
        self.fused = self.centroids is not None or self.items is not None  # an index prior is added
        self.llm = None
        self._n = 0

    def _engine_args(self) -> dict:
        s, ck = self.settings, self.ckpt
        cpu = not torch.cuda.is_available()
        need = max(f if self.fused else min(s.max_beam_width, f) for f in self.fanout)
        args = dict(
            model=str(Path(ck.path).resolve()),
            tokenizer=str(Path(ck.path).resolve()),
            dtype=checkpoint_dtype(ck.path) if s.dtype == "auto" else s.dtype,
            max_model_len=s.vllm_max_model_len,
            max_num_seqs=s.max_beam_width * s.max_batch_requests,
            max_num_batched_tokens=max(8192, s.max_beam_width * s.max_batch_requests * 8),
            max_logprobs=max(need, 1),
            logprobs_mode="processed_logits",
            logits_processors=[_processor_class()],
            enable_prefix_caching=True,
            block_size=s.vllm_block_size or (32 if cpu else 16),
            enforce_eager=cpu,
            seed=0,
            additional_config={CONFIG_KEY: {
                "index": str(Path(self.index.root).resolve()),
                "sid_offsets": list(ck.vocab.offsets),
                "codebook_sizes": list(ck.vocab.codebook_sizes),
                "eos_id": ck.eos_id,
            }},
        )
        if self.text_inputs is not None:
            args["enable_prompt_embeds"] = True
        if cpu:
            args["kv_cache_memory_bytes"] = int(s.vllm_kv_cache_gib * 2**30)
        else:
            args["gpu_memory_utilization"] = s.vllm_gpu_memory_utilization
        return args

    def _ensure_llm(self):
        """Started lazily in the thread that will use it (vLLM's engine is not shared across threads)."""
        if self.llm is None:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process: starts in seconds, no spin
            os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")  # the V1 logits-processor API
            from vllm import LLM, SamplingParams

            self._SamplingParams = SamplingParams
            self.llm = LLM(**self._engine_args())
        return self.llm

    def start(self) -> None:
        super().start()
        # Build the engine now (in the worker thread) so start-up errors surface at load time.
        prior = None
        if self.fused:
            prior = np.zeros(self.centroids[0].shape[1] if self.items is None else self.items.vectors.shape[1])
        self.submit([self.ckpt.eos_id], 1, 600, None, prior).result()

    def shutdown_backend(self) -> None:
        self.llm = None

    def _params(self, level: int, k: int):
        return self._SamplingParams(
            max_tokens=1, temperature=0.0, logprobs=k, detokenize=False, skip_special_tokens=False,
            extra_args={LEVEL_ARG: level}, flat_logprobs=True,
        )

    @torch.inference_mode()
    def _embeds(self, prompt: list[int], vector: np.ndarray | None) -> torch.Tensor:
        """Input embeddings [T, H] of one beam request, exactly as `TextInputLM` computes them."""
        ids = torch.tensor([prompt], dtype=torch.long)
        vec = None if vector is None else torch.as_tensor(vector, dtype=torch.float32)[None]
        return self.text_inputs.embed(self.token_embedding, ids, vec)[0].to(self.token_embedding.weight.dtype)

    def _step(self, prompts: list[list[int]], level: int, k: int, vectors: list[np.ndarray | None] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """One engine pass: top-k (token ids, log-probs) [N, k] after each prompt (-inf padded)."""
        from vllm.inputs import EmbedsPrompt, TokensPrompt

        engine = self.llm.llm_engine
        params = self._params(level, k)
        base = self._n
        self._n += len(prompts)
        embeds = self.text_inputs is not None

        def prompt_of(i: int):
            if not embeds:
                return TokensPrompt(prompt_token_ids=prompts[i])
            return EmbedsPrompt(prompt_embeds=self._embeds(prompts[i], vectors[i] if vectors else None),
                                prompt_token_ids=prompts[i], prompt_is_token_ids=[False] * len(prompts[i]))

        # vLLM's input processing (validation, a deep copy of the params) costs ~0.3 ms per request:
        # run it once per step and give every other beam a copy with its own prompt (1.2-1.8x
        # faster at width 128). vLLM marks passing a processed request as deprecated (one warning).
        template = engine.input_processor.process_inputs(
            str(base), prompt_of(0), params, supported_tasks=engine.get_supported_tasks(),
        )
        for i, p in enumerate(prompts):
            extra = {}
            if embeds:
                extra = {"prompt_embeds": template.prompt_embeds if i == 0 else prompt_of(i)["prompt_embeds"],
                         "prompt_is_token_ids": [False] * len(p)}
            request = msgspec.structs.replace(template, request_id=str(base + i), prompt_token_ids=p, **extra)
            engine.add_request(request.request_id, request, params)
        ids = np.zeros((len(prompts), k), dtype=np.int64)
        lps = np.full((len(prompts), k), -np.inf)
        while engine.has_unfinished_requests():
            for out in engine.step():
                if not out.finished:
                    continue
                row = int(out.request_id) - base
                flat = out.outputs[0].logprobs
                lo, hi = flat.start_indices[0], flat.end_indices[0]
                lo += hi - lo > k  # the sampled token comes first, then the top k (which hold it again)
                n = min(hi - lo, k)
                ids[row, :n] = flat.token_ids[lo : lo + n]
                lps[row, :n] = flat.logprobs[lo : lo + n]
        return ids, lps

    def _prior_gain(self, residual: np.ndarray, codes: np.ndarray, level: int) -> np.ndarray:
        """weight * (2 r.c - |c|^2) of candidate codes [n, k] (any value where the log-prob is -inf)."""
        cent = self.centroids[level][np.clip(codes, 0, len(self.centroids[level]) - 1)]  # [n, k, D]
        gain = 2 * np.einsum("nd,nkd->nk", residual, cent) - (cent * cent).sum(-1)
        return self.settings.index_prior * gain

    def _item_gain(self, prior: ItemPrior, row: int, nodes: np.ndarray, codes: np.ndarray, level: int
                   ) -> tuple[np.ndarray, np.ndarray]:
        """The item form's gain of candidate codes [n, k] after request `row`'s beams at trie `nodes` [n]
        (`sid_index.decoding.lookahead_gain`), and the child node of each (-1: not allowed; log-prob -inf)."""
        at = torch.from_numpy(nodes)
        gain, kids = lookahead_gain(prior, torch.full_like(at, row), at, level, self.constraint)
        pick = np.clip(codes, 0, kids.shape[1] - 1)
        return np.take_along_axis(gain.numpy(), pick, 1), np.take_along_axis(kids.numpy(), pick, 1)

    def decode(self, prompts: list[list[int]], widths: list[int], vectors: list[np.ndarray | None] | None = None,
               priors: list[np.ndarray | None] | None = None, lexicals: list[np.ndarray | None] | None = None
               ) -> tuple[list[Hits], BatchStats]:
        start = time.perf_counter()
        self._ensure_llm()
        levels = self.ckpt.vocab.levels
        offsets = np.asarray(self.ckpt.vocab.offsets)
        # Per request: beam tokens [n, t], scores [n]
        toks = [np.zeros((1, 0), dtype=np.int64) for _ in prompts]
        scores = [np.zeros(1) for _ in prompts]
        prior = self.centroids is not None  # the SID form
        if self.fused and (priors is None or any(p is None for p in priors)):
            raise ValueError("an engine with an index prior needs every request's prior vector")
        residual = [np.asarray(p, dtype=np.float64)[None] for p in priors] if prior else None  # [beams, D]
        item = nodes = None  # the item form: the batch's ItemPrior and each request's beams' trie nodes
        if self.items is not None:
            item = self.items.prior(np.stack(priors), self.settings.index_prior, lexical_stack(lexicals, self.items))
            nodes = [np.zeros(1, dtype=np.int64) for _ in prompts]
        beams_per_step = []
        for t in range(levels + int(self.score_eos)):
            k = 1 if t == levels else self.fanout[t] if self.fused else max(1, min(max(widths), self.fanout[t]))
            flat_prompts = [p + row.tolist() for p, beams in zip(prompts, toks, strict=True) for row in beams]
            flat_vectors = [v for v, beams in zip(vectors or [None] * len(prompts), toks, strict=True) for _ in beams]
            beams_per_step.append(len(flat_prompts))
            ids, lps = self._step(flat_prompts, t, k, flat_vectors)
            at = 0
            for b, w in enumerate(widths):
                n = len(toks[b])
                cand_ids, cand_lp = ids[at : at + n], lps[at : at + n]
                at += n
                if prior and t < levels:
                    cand_lp = cand_lp + self._prior_gain(residual[b], cand_ids - offsets[t], t)
                if item is not None and t < levels:
                    gain, child = self._item_gain(item, b, nodes[b], cand_ids - offsets[t], t)
                    cand_lp = cand_lp + gain
                total = (scores[b][:, None] + cand_lp).reshape(-1)
                if t == levels:  # EOS: one candidate per beam, re-rank
                    order = np.argsort(-total, kind="stable")
                    toks[b], scores[b] = toks[b][order], total[order]
                    continue
                keep = np.flatnonzero(np.isfinite(total))
                if len(keep) > w:
                    keep = keep[np.argpartition(-total[keep], w - 1)[:w]]
                keep = keep[np.argsort(-total[keep], kind="stable")]
                parent, col = keep // k, keep % k
                toks[b] = np.concatenate([toks[b][parent], cand_ids[parent, col][:, None]], 1)
                scores[b] = total[keep]
                if prior:
                    residual[b] = residual[b][parent] - self.centroids[t][cand_ids[parent, col] - offsets[t]]
                if item is not None:
                    nodes[b] = child[parent, col]
        hits, invalid = [], 0
        for b in range(len(prompts)):
            codes = toks[b] - offsets[None, :]
            ok = self.constraint.contains(torch.from_numpy(codes)).numpy() & np.isfinite(scores[b])
            invalid += int((~ok).sum())
            hits.append(Hits(codes=codes[ok], scores=scores[b][ok]))
        stats = BatchStats(len(prompts), beams_per_step, invalid, time.perf_counter() - start)
        return hits, stats

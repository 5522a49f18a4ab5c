"""Trie-constrained beam search over Semantic IDs for any Hugging Face causal LM, in plain torch.

One call decodes a batch of prompts: they are left-padded (attention mask + position ids,
so padding never shifts a position) and prefilled once; their KV cache is shared by all
beams and never copied per beam: every later step runs the beams' few SID tokens as one
packed query over it (`_beam_logits`).
Step t scores every (beam, next token) pair at once, masks the pairs the trie forbids
(`SidConstraint.mask_nodes` on the trie node each beam sits at) and keeps the best `width`
per prompt with one `topk`; nothing loops over beams in Python and nothing syncs with the
host inside the loop (the CPU constraint's ragged gather aside).

Scores are log pi(SID | prompt) under the model's full-vocabulary softmax (masking never
renormalises), plus log pi(EOS | prompt, SID) when `include_eos`: exactly what
`score_sids` computes teacher-forced, which the tests use as the brute-force reference.

With an `IndexPrior` (the index's own retrieval, `sid_index.retrieve`, fused into the search)
each SID's score also gets `weight * (|q|^2 - |q - v_SID|^2)`: q the request's text vector,
v_SID the sum of its codes' centroids. It is added level by level, `weight * (2 r.c - |c|^2)`
for code centroid c and the beam's residual r (q minus its prefix's centroids); the increments
telescope to the whole term, so the search ranks model and index evidence together.

An `ItemPrior` is the same term at item resolution: a SID is worth `weight * max (2 q.e - |e|^2)` over
its SKUs' own text vectors e (no quantisation loss), and each prefix is worth the best SID under it.
Step t adds the change of that best value, so the increments again telescope to the SID's own term,
and the prefix part is an exact lookahead: at a large weight the search returns exactly the `width`
SIDs holding the best items (dense retrieval at SID level), at any width. A lexical term (the request's
BM25 scores, `sid_index.lexical`) can join each item's score: the lookahead is over whatever the items score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sid_index.constraint import SidConstraint
from sid_index.index import SidIndex
from sid_index.tokens import SidVocab
from sid_index.trie import BEAM_WIDTH, TrieArrays

NEG_INF = float("-inf")


@dataclass
class IndexPrior:
    """The index's retrieval score as a decoding prior (see the module docstring)."""

    centroids: list[torch.Tensor]  # per level [K_l, D], on the model's device
    vectors: torch.Tensor  # [B, D] request vectors (zero rows: no prior for that request)
    weight: float

    @staticmethod
    def of(centroids, vectors, weight: float, device) -> IndexPrior:
        return IndexPrior([torch.as_tensor(c, dtype=torch.float32, device=device) for c in centroids],
                          torch.as_tensor(vectors, dtype=torch.float32, device=device), float(weight))

    def score(self, codes: torch.Tensor) -> torch.Tensor:
        """weight * (|q|^2 - |q - v|^2) of SIDs `codes` [B, S, L] (the reference the search must equal)."""
        v = sum(c[codes[..., level]] for level, c in enumerate(self.centroids))
        q = self.vectors[:, None, :]
        return self.weight * ((q * q).sum(-1) - ((q - v) ** 2).sum(-1))


@dataclass
class ItemPrior:
    """The index prior at item resolution, searched with exact lookahead (see the module docstring)."""

    heads: list[torch.Tensor]  # heads[t] [B, nodes at level t+1]: weight x the best item score under each node

    def score(self, leaves: torch.Tensor) -> torch.Tensor:
        """weight * the best item score of SIDs given as leaf ids [B, S] (the reference the search must equal)."""
        return self.heads[-1].gather(1, leaves)


class ItemPriorTable:
    """What an `ItemPrior` is computed from, once per index and device: every SKU's own text vector, the
    trie position (leaf id) of its SID and each level's parent links."""

    def __init__(self, trie: TrieArrays, item_vectors: np.ndarray, item_sids: np.ndarray,
                 device: str | torch.device = "cpu"):
        codes = torch.as_tensor(np.asarray(item_sids, dtype=np.int64).reshape(len(item_vectors), -1))
        leaves = SidConstraint(trie, dense_budget=0).nodes_of(codes)  # last-level edge ids: no tables built
        if (leaves < 0).any():
            raise ValueError("an item's SID is not in the trie")
        vectors = torch.from_numpy(np.asarray(item_vectors, dtype=np.float32))
        self.device = torch.device(device)
        self.vectors = vectors.to(self.device)  # [N, D]
        self.norms = (vectors * vectors).sum(-1).to(self.device)  # [N]
        self.leaves = leaves.to(self.device)  # [N] leaf id of each item (row of `TrieArrays.sids`)
        self.parents = [torch.from_numpy(trie.parents(level)).to(self.device) for level in range(trie.levels)]
        self.sizes = [trie.nodes(level) for level in range(trie.levels)] + [trie.num_sids]  # nodes per level

    @staticmethod
    def of(index: SidIndex, device: str | torch.device = "cpu") -> ItemPriorTable:
        """The table of an index's own item vectors (`radgr index build` keeps them)."""
        index.vectors_of([])  # refuses an index without item vectors, with the item prior's message
        sids = [index.sid_of(index.rows.restore_key(r)) for r in range(len(index.rows))]
        return ItemPriorTable(index.trie, index.item_vectors, np.asarray(sids, dtype=np.int64), device)

    def item_scores(self, q: torch.Tensor, lexical=None) -> torch.Tensor:
        """[B, N]: each item's 2 q.e - |e|^2 for request vectors q [B, D], plus `lexical` [B, N] when given (the
        requests' weighted BM25 scores in item-vector row order, `sid_index.lexical`)."""
        items = 2 * q @ self.vectors.T - self.norms
        if lexical is not None:
            items = items + torch.as_tensor(lexical, dtype=torch.float32, device=self.device).reshape(items.shape)
        return items

    def sid_scores(self, q: torch.Tensor, lexical=None) -> torch.Tensor:
        """[B, num_sids]: the best `item_scores` over each SID's items (SIDs in trie order, `TrieArrays.sids`)."""
        items = self.item_scores(q, lexical)
        best = torch.full((q.shape[0], self.sizes[-1]), NEG_INF, device=self.device)
        return best.scatter_reduce_(1, self.leaves.expand(q.shape[0], -1), items, "amax")

    def prior(self, vectors, weight: float, lexical=None) -> ItemPrior:
        """The `ItemPrior` of request vectors [B, D] (zero rows: no prior for that request), with the requests'
        weighted lexical scores [B, N] added to every item's score when given."""
        q = torch.as_tensor(vectors, dtype=torch.float32, device=self.device).reshape(-1, self.vectors.shape[1])
        batch = q.shape[0]
        heads = [self.sid_scores(q, lexical)]
        for level in range(len(self.parents) - 1, 0, -1):  # nodes of level+1 are the edges of `level`
            up = torch.full((batch, self.sizes[level]), NEG_INF, device=self.device)
            heads.insert(0, up.scatter_reduce_(1, self.parents[level].expand(batch, -1), heads[0], "amax"))
        live = (q != 0).any(-1, keepdim=True)
        return ItemPrior([torch.where(live, float(weight) * h, torch.zeros_like(h)) for h in heads])


def lexical_stack(rows, table: ItemPriorTable) -> np.ndarray | None:
    """One batch's lexical rows [B, SKUs] for `ItemPriorTable.prior` (zeros for a request without one); None
    when no request has one."""
    if rows is None or all(r is None for r in rows):
        return None
    zero = np.zeros(len(table.vectors), dtype=np.float32)
    return np.stack([zero if r is None else np.asarray(r, dtype=np.float32) for r in rows])


@dataclass
class BeamResult:
    """Beams per prompt, best first."""

    codes: torch.LongTensor  # [B, W, L] SID codes; -1 where a token is not a SID token of that level (or empty slot)
    scores: torch.Tensor  # [B, W] sum of token log-probs (incl. EOS when include_eos); -inf for empty slots
    valid: torch.BoolTensor  # [B, W] finite score and the codes form a SID (of the index, when it is known)
    tokens: torch.LongTensor  # [B, W, L] the generated token ids (meaningless for empty slots)

    def sids(self, b: int) -> list[tuple[int, ...]]:
        """The valid SIDs of prompt `b`, best first (one host transfer)."""
        keep = self.valid[b].cpu()
        return [tuple(row) for row in self.codes[b].cpu()[keep].tolist()]


def model_device(model) -> torch.device:
    dev = getattr(model, "device", None)
    return torch.device(dev) if dev is not None else next(model.parameters()).device


def same_device(a: torch.device, b: torch.device) -> bool:
    """'cuda' and 'cuda:0' name the same device when the current one is 0."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type == "cuda":
        current = torch.cuda.current_device()
        return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
    return True


def left_pad(prompts: list[list[int]], pad_id: int, device: torch.device):
    """Token ids [B, T], attention mask [B, T] and position ids [B, T] of left-padded prompts."""
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.as_tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


def _empty(batch: int, width: int, levels: int, device: torch.device) -> BeamResult:
    return BeamResult(
        codes=torch.full((batch, width, levels), -1, dtype=torch.long, device=device),
        scores=torch.full((batch, width), NEG_INF, device=device),
        valid=torch.zeros((batch, width), dtype=torch.bool, device=device),
        tokens=torch.zeros((batch, width, levels), dtype=torch.long, device=device),
    )


@torch.no_grad()
def beam_search(
    model,
    prompts: list[list[int]],
    vocab: SidVocab,
    eos_id: int,
    width: int = BEAM_WIDTH,
    constraint: SidConstraint | None = None,
    include_eos: bool = True,
    pad_id: int = 0,
    *,
    constrained: bool = True,
    widths: list[int] | None = None,
    text_vectors: torch.Tensor | None = None,
    prior: IndexPrior | ItemPrior | None = None,
) -> BeamResult:
    """The best `width` SIDs of each prompt, best first.

    With a `constraint` every returned beam is a SID of the index, and the search is exact
    (equal to scoring every SID) whenever `width` is at least the number of valid prefixes
    of every level. With `constraint=None`, or `constrained=False`, any vocabulary token may
    be chosen at every step (the free decode that measures hallucinated SIDs); `valid` then
    checks index membership through `constraint` when one is given, and only that every
    token is a SID token of its level when none is. Slots beyond the number of distinct
    continuations hold score -inf, codes -1 and valid False; SIDs are never repeated.
    `widths` (one per prompt, each <= `width`) gives prompts their own beam width in the same
    batch: a prompt's slots past its width are kept empty at every step, which is exactly a
    search of that width (the server batches requests of different widths this way).
    `text_vectors` [B, D] fill the prompts' text-vector slots (a `TextInputLM` model).
    `prior` adds the index's retrieval score to every SID's (constrained search only): an `IndexPrior` (SID
    reconstructions) or an `ItemPrior` (the SIDs' best items, with exact lookahead).
    The model is used as it is (call `model.eval()` first).
    """
    device = model_device(model)
    batch, levels = len(prompts), vocab.levels
    if width < 1:
        raise ValueError("width must be >= 1")
    if batch == 0:
        return _empty(0, width, levels, device)
    use_trie = constraint is not None and constrained
    if constraint is not None and not same_device(constraint.device, device):
        raise ValueError(f"constraint is on {constraint.device}, the model on {device}")

    narrow = None
    if widths is not None:
        if len(widths) != batch or not all(1 <= int(w) <= width for w in widths):
            raise ValueError(f"widths must give one value in 1..{width} per prompt")
        if min(widths) < width:
            narrow = torch.arange(width, device=device)[None, :] >= torch.as_tensor(widths, device=device)[:, None]

    ids, mask, pos = left_pad(prompts, pad_id, device)
    extra = {} if text_vectors is None else {"text_vectors": torch.as_tensor(text_vectors, device=device)}
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1, **extra)
    cache, logits = out.past_key_values, out.logits[:, -1]
    next_pos = pos[:, -1] + 1  # [B]: position of every beam's first SID token
    work = torch.promote_types(logits.dtype, torch.float32)  # log-probs in float32 (float64 for a double model)

    beams = 1  # step 0: one beam per prompt (the W copies would only give duplicates)
    scores = torch.zeros(batch, 1, dtype=work, device=device)
    tokens = torch.zeros(batch, 1, 0, dtype=torch.long, device=device)
    nodes = constraint.root(batch)[:, None] if use_trie else None  # [B, beams] trie node of each beam
    if prior is not None and not use_trie:
        raise ValueError("an index prior needs the constrained search")
    residual = prior.vectors.to(work)[:, None, :] if isinstance(prior, IndexPrior) else None  # [B, beams, D]
    for t in range(levels):
        if use_trie:
            lo, hi = vocab.token_range(t)
            lse = torch.logsumexp(logits.to(work), -1, keepdim=True)
            logp = logits[:, lo:hi].to(work) - lse
            if isinstance(prior, IndexPrior):  # weight * (2 r.c - |c|^2) per (beam, code)
                cent = prior.centroids[t].to(work)
                gain = 2 * residual @ cent.T - (cent * cent).sum(-1)
                logp = logp + prior.weight * gain.reshape(batch * beams, -1)
            elif isinstance(prior, ItemPrior):  # the best item below each child, minus the best below the beam
                rows = torch.arange(batch, device=nodes.device).repeat_interleave(beams)  # each beam's request
                logp = logp + lookahead_gain(prior, rows, nodes.reshape(-1), t, constraint)[0].to(work)
            logp = logp.masked_fill(~constraint.mask_nodes(t, nodes.reshape(-1)), NEG_INF)
        else:
            lo = 0
            logp = torch.log_softmax(logits.to(work), -1)
        cand = None
        if logp.shape[-1] > width:  # the global best W are among each beam's best W: rank W*W pairs, not W*V
            logp, cand = logp.topk(width, dim=-1)
        n_cand = logp.shape[-1]
        total = (scores[:, :, None] + logp.view(batch, beams, n_cand)).view(batch, beams * n_cand)
        k = min(width, beams * n_cand)
        top, idx = total.topk(k, dim=1)
        if k < width:  # tiny index / vocabulary: pad with empty slots
            top = torch.cat([top, top.new_full((batch, width - k), NEG_INF)], 1)
            idx = torch.cat([idx, idx.new_zeros((batch, width - k))], 1)
        if narrow is not None:
            top = top.masked_fill(narrow, NEG_INF)
        parent = idx // n_cand  # [B, W]
        choice = idx % n_cand if cand is None else cand.view(batch, beams * n_cand).gather(1, idx)
        tokens = torch.cat([tokens.gather(1, parent[:, :, None].expand(-1, -1, t)), (choice + lo)[:, :, None]], 2)
        if residual is not None:
            residual = residual.gather(1, parent[:, :, None].expand(-1, -1, residual.shape[-1])) \
                - prior.centroids[t].to(work)[choice]
        if use_trie and t + 1 < levels:
            nodes = constraint.advance(nodes.gather(1, parent).reshape(-1), t, choice.reshape(-1)).view(batch, width)
        scores = top
        beams = width
        if t + 1 < levels or include_eos:
            logits = _beam_logits(model, cache, mask, next_pos, tokens).reshape(batch * width, -1)

    if include_eos:
        eos = logits[:, eos_id].to(work) - torch.logsumexp(logits.to(work), -1)
        scores = scores + eos.view(batch, width)  # -inf slots stay -inf
        scores, order = scores.sort(dim=1, descending=True)
        tokens = tokens.gather(1, order[:, :, None].expand(-1, -1, levels))

    live = torch.isfinite(scores)
    codes = torch.where(live[:, :, None], vocab.ids_to_codes(tokens), torch.full_like(tokens, -1))
    if constraint is not None:
        valid = live & constraint.contains(codes.view(-1, levels)).view(batch, width)
    else:
        valid = live & (codes >= 0).all(-1)
    return BeamResult(codes=codes, scores=scores, valid=valid, tokens=tokens)


def lookahead_gain(prior: ItemPrior, rows: torch.Tensor, nodes: torch.Tensor, t: int, constraint: SidConstraint
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The item form's step-t gain of every code after beams at trie `nodes` [n] of requests `rows` [n] (rows of
    the prior's heads): [n, K_t] heads[t] of each (beam, code)'s child minus heads[t-1] of the beam's node (0 at
    t = 0), and the child ids [n, K_t] (-1: the code is not allowed; its gain is meaningless, mask it). Both
    engines add it: the native search to every code, the vLLM driver to the codes vLLM returned."""
    head = prior.heads[t]
    kids = constraint.children(t, nodes)
    gain = head.reshape(-1)[rows[:, None] * head.shape[1] + kids.clamp(min=0)]
    if t > 0:
        here = prior.heads[t - 1]
        gain = gain - here.reshape(-1)[rows * here.shape[1] + nodes.clamp(min=0)][:, None]
    return gain, kids


def _beam_logits(model, cache, prompt_mask: torch.Tensor, next_pos: torch.Tensor, tokens: torch.Tensor):
    """Next-token logits [B, W, V] of every beam, over one shared prompt cache.

    The beams' tokens so far ([B, W, n], n <= levels) go in as one packed query per prompt:
    each token sees the prompt's real tokens and the earlier tokens of its own beam (a 4D
    mask, as in training's packing), at positions continuing the prompt's. The prompt's KV
    cache is never copied per beam; the n tokens per beam are recomputed instead (n <= 3),
    and the cache is cropped back to the prompt afterwards.
    """
    batch, width, n = tokens.shape
    device = tokens.device
    beam_of = torch.arange(width, device=device).repeat_interleave(n)
    step_of = torch.arange(n, device=device).repeat(width)
    own = (beam_of[:, None] == beam_of[None, :]) & (step_of[None, :] <= step_of[:, None])  # [W*n, W*n]
    allowed = torch.cat(
        [prompt_mask.bool()[:, None, :].expand(-1, width * n, -1), own[None].expand(batch, -1, -1)], dim=2
    )
    dtype = next(model.parameters()).dtype
    additive = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
    last = torch.arange(width, device=device) * n + (n - 1)  # each beam's newest token
    out = model(
        input_ids=tokens.reshape(batch, width * n),
        attention_mask=additive[:, None],
        position_ids=next_pos[:, None] + step_of[None, :],
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=last,
    )
    cache.crop(-(width * n))
    return out.logits


@torch.no_grad()
def score_sids(
    model,
    prompt: list[int],
    sid_codes: torch.Tensor,
    vocab: SidVocab,
    eos_id: int,
    include_eos: bool = True,
    chunk: int = 512,
) -> torch.Tensor:
    """Teacher-forced log pi(SID | prompt) [S] of every SID [S, L] (plus log pi(EOS) when `include_eos`).

    The prompt is prefilled once per chunk of SIDs and its cache shared by the chunk's rows.
    """
    device = model_device(model)
    sid_codes = torch.as_tensor(sid_codes, dtype=torch.long, device=device)
    n, levels = sid_codes.shape
    if levels != vocab.levels:
        raise ValueError(f"SIDs have {levels} levels, the vocabulary {vocab.levels}")
    sid_ids = vocab.codes_to_ids(sid_codes)  # [S, L]
    ids = torch.as_tensor([prompt], dtype=torch.long, device=device)
    targets = torch.cat([sid_ids, torch.full((n, 1), eos_id, dtype=torch.long, device=device)], 1)
    steps = levels + 1 if include_eos else levels
    parts = [torch.empty(0, device=device)]
    for start in range(0, n, chunk):
        want = targets[start : start + chunk, :steps]  # the tokens scored
        m = want.shape[0]
        pre = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        work = torch.promote_types(pre.logits.dtype, torch.float32)
        cache = pre.past_key_values
        cache.batch_repeat_interleave(m)
        logits = [pre.logits[:, -1:].to(work).expand(m, -1, -1)]
        if steps > 1:  # the next-token distributions after each scored token but the last
            pos = torch.arange(len(prompt), len(prompt) + steps - 1, device=device)[None].expand(m, -1)
            more = model(input_ids=want[:, :-1], position_ids=pos, past_key_values=cache, use_cache=True).logits
            logits.append(more.to(work))
        logp = torch.log_softmax(torch.cat(logits, 1), -1)  # [m, steps, V]
        parts.append(logp.gather(2, want[:, :, None]).squeeze(2).sum(1))
    return torch.cat(parts) if n else parts[0]

"""Text-embedding inputs: what the index's text model knows, fed to the decoder as prompt vectors.

The SIDs are residual k-means codes of text embeddings (MiniLM by default), so a request's
text embedding already lies in the space the codes were cut from (`sid_index.retrieve` ranks
SIDs with it and no training at all). A small decoder trained from scratch would otherwise
have to learn English from a few thousand queries. Two learned linear maps bring that space in:

- the query (or, for an indexing example, the item text) is embedded by the index's text model
  and projected (`proj`: D_text -> hidden) into one prompt vector, which takes the place of the
  placeholder token `TEXT_VECTOR_TOKEN` right after the "query: " / "item: " label;
- every SID token at the input (history items, and the beam's own SID prefix) gets its code's
  RQ-KMeans centroid, projected (`sid_proj`), added to its token embedding, so the decoder sees
  where each history item lies in the text space (the sum over an item's three codes is the
  index's reconstruction of its embedding).

The decoder stays a plain Hugging Face causal LM (and a plain vLLM checkpoint): the maps live
beside it in `text_inputs/text_inputs.safetensors` (a subfolder, so that vLLM, which loads every
top-level safetensors file as the LM's weights, never sees them), and `TextInputLM` runs the LM on
`inputs_embeds`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainer.rdrw import SidVectors

TEXT_VECTOR_TOKEN = "<|text_vector|>"
TEXT_INPUTS_FILE = "text_inputs/text_inputs.safetensors"  # relative to the checkpoint folder


class TextInputs(nn.Module):
    """The two projections and the per-SID-token centroid table."""

    def __init__(self, text_dim: int, hidden: int, vector_token_id: int, sid_lo: int, sid_centroids: torch.Tensor):
        super().__init__()
        self.vector_token_id = int(vector_token_id)
        self.sid_lo = int(sid_lo)
        self.proj = nn.Linear(text_dim, hidden)
        self.sid_proj = nn.Linear(text_dim, hidden, bias=False)
        self.register_buffer("sid_centroids", torch.as_tensor(sid_centroids, dtype=torch.float32))

    @classmethod
    def for_index(cls, centroids: Sequence[np.ndarray], offsets: Sequence[int], hidden: int, vector_token_id: int,
                  seed: int = 0) -> TextInputs:
        """Fresh projections for an index's centroids ([codes, D] per level) at SID token `offsets`."""
        table = SidVectors(centroids, offsets)  # the same token-id -> centroid table as RDRW's SID signal
        gen = torch.Generator().manual_seed(seed)
        module = cls(table.table.shape[1], hidden, vector_token_id, table.lo, table.table)
        with torch.no_grad():  # small, like the token embeddings (HF initializer_range 0.02)
            for lin in (module.proj, module.sid_proj):
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * 0.02)
            module.proj.bias.zero_()
        return module

    @property
    def text_dim(self) -> int:
        return self.proj.in_features

    def embed(self, token_embedding: nn.Module, input_ids: torch.Tensor, vectors: torch.Tensor | None) -> torch.Tensor:
        """Input embeddings [B, T, H] of `input_ids`, SID tokens shifted by their centroids and each row's
        placeholder (at most one per row) replaced by its projected text vector ([B, D] `vectors`)."""
        emb = token_embedding(input_ids)
        rel = input_ids - self.sid_lo
        is_sid = (rel >= 0) & (rel < self.sid_centroids.shape[0])
        if bool(is_sid.any()):
            shift = self.sid_proj(self.sid_centroids[rel.clamp(0, self.sid_centroids.shape[0] - 1)]).to(emb.dtype)
            emb = emb + shift * is_sid[..., None].to(emb.dtype)
        slot = input_ids == self.vector_token_id
        if bool(slot.any()):
            if vectors is None:
                raise ValueError("prompts hold a text-vector slot but no text vectors were given")
            if int(slot.sum(1).max()) > 1:
                raise ValueError("at most one text-vector slot per row")
            proj = self.proj(vectors.to(device=emb.device, dtype=self.proj.weight.dtype)).to(emb.dtype)  # [B, H]
            emb = torch.where(slot[..., None], proj[:, None, :].expand_as(emb), emb)
        return emb

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        meta = {"vector_token_id": str(self.vector_token_id), "sid_lo": str(self.sid_lo)}
        (folder / TEXT_INPUTS_FILE).parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(folder / TEXT_INPUTS_FILE), metadata=meta)

    @classmethod
    def load_from(cls, like: TextInputs, tensors: dict[str, torch.Tensor]) -> TextInputs:
        """A copy of `like` holding `tensors` (full weights gathered from a distributed run)."""
        module = cls(like.text_dim, like.proj.out_features, like.vector_token_id, like.sid_lo, like.sid_centroids.cpu())
        module.load_state_dict({k: v.cpu() for k, v in tensors.items()})
        return module

    @classmethod
    def load(cls, file: Path) -> TextInputs:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(file), framework="pt") as fh:
                meta = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except SafetensorError as exc:
            raise ValueError(f"{file}: {exc}") from None
        expected = {"proj.weight", "proj.bias", "sid_proj.weight", "sid_centroids"}
        if set(tensors) != expected or "vector_token_id" not in meta or "sid_lo" not in meta:
            raise ValueError(f"{file}: expected tensors {sorted(expected)} and their metadata")
        hidden, text_dim = tensors["proj.weight"].shape
        module = cls(text_dim, hidden, int(meta["vector_token_id"]), int(meta["sid_lo"]), tensors["sid_centroids"])
        module.load_state_dict(tensors)
        return module


class TextInputLM(nn.Module):
    """A causal LM whose inputs go through `TextInputs` (same call signature, plus `text_vectors`)."""

    def __init__(self, lm: nn.Module, text_inputs: TextInputs):
        super().__init__()
        self.lm = lm
        self.text_inputs = text_inputs

    @property
    def config(self):
        return self.lm.config

    def forward(self, input_ids: torch.Tensor, text_vectors: torch.Tensor | None = None, **kwargs):
        embeds = self.text_inputs.embed(self.lm.get_input_embeddings(), input_ids, text_vectors)
        return self.lm(inputs_embeds=embeds, **kwargs)

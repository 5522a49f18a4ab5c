"""SID tokens: one token range per level, `<a_17><b_4><c_250>`.

Level l uses the letter `LEVEL_LETTERS[l]`; a code c at level l is the token `<{letter}_{c}>`.
Every code of every codebook gets a token (not only the codes in use) so that one index
format serves any catalog refresh without resizing the model. Token ids of a level are
kept contiguous, which turns code <-> token-id mapping into one addition.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sid_index.errors import RadgrError

LEVEL_LETTERS = "abcdefgh"
_SID_RE = re.compile(r"<([a-h])_(\d+)>")


def sid_tokens(codebook_sizes: Sequence[int]) -> list[str]:
    """All SID token strings, level by level, code by code."""
    return [f"<{LEVEL_LETTERS[lvl]}_{c}>" for lvl, k in enumerate(codebook_sizes) for c in range(k)]


def format_sid(codes: Sequence[int]) -> str:
    """(17, 4, 250) -> '<a_17><b_4><c_250>'."""
    return "".join(f"<{LEVEL_LETTERS[lvl]}_{int(c)}>" for lvl, c in enumerate(codes))


def parse_sid(text: str, levels: int | None = None) -> tuple[int, ...]:
    """'<a_17><b_4><c_250>' or '17-4-250' -> (17, 4, 250); raises RadgrError on malformed input."""
    text = text.strip()
    if text.startswith("<"):
        parts = _SID_RE.findall(text)
        if "".join(f"<{a}_{b}>" for a, b in parts) != text or [p[0] for p in parts] != list(
            LEVEL_LETTERS[: len(parts)]
        ):
            raise RadgrError(f"malformed SID '{text}' (expected e.g. <a_17><b_4><c_250>)")
        codes = tuple(int(b) for _, b in parts)
    else:
        try:
            codes = tuple(int(p) for p in text.split("-"))
        except ValueError:
            raise RadgrError(f"malformed SID '{text}' (expected e.g. <a_17><b_4><c_250> or 17-4-250)") from None
    if levels is not None and len(codes) != levels:
        raise RadgrError(f"SID '{text}' has {len(codes)} levels, the index has {levels}")
    return codes


@dataclass(frozen=True)
class SidVocab:
    """Where the SID tokens sit in a tokenizer's vocabulary: level l, code c <-> id `offsets[l] + c`."""

    codebook_sizes: tuple[int, ...]
    offsets: tuple[int, ...]

    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    def token_range(self, level: int) -> tuple[int, int]:
        """[lo, hi) token ids of a level."""
        lo = self.offsets[level]
        return lo, lo + self.codebook_sizes[level]

    def codes_to_ids(self, codes: np.ndarray | Sequence[Sequence[int]]):
        """[..., L'] codes (L' <= levels) -> token ids of the same shape (numpy or torch)."""
        import torch

        if isinstance(codes, torch.Tensor):
            off = torch.tensor(self.offsets[: codes.shape[-1]], dtype=codes.dtype, device=codes.device)
            return codes + off
        codes = np.asarray(codes, dtype=np.int64)
        return codes + np.asarray(self.offsets[: codes.shape[-1]], dtype=np.int64)

    def ids_to_codes(self, ids):
        """[..., L'] token ids (positions 0..L'-1 of a SID) -> codes; -1 where an id is not of that level."""
        import torch

        n = ids.shape[-1]
        if isinstance(ids, torch.Tensor):
            lo = torch.tensor(self.offsets[:n], dtype=ids.dtype, device=ids.device)
            k = torch.tensor(self.codebook_sizes[:n], dtype=ids.dtype, device=ids.device)
            codes = ids - lo
            return torch.where((codes >= 0) & (codes < k), codes, torch.full_like(codes, -1))
        ids = np.asarray(ids, dtype=np.int64)
        codes = ids - np.asarray(self.offsets[:n])
        return np.where((codes >= 0) & (codes < np.asarray(self.codebook_sizes[:n])), codes, -1)

    @classmethod
    def from_tokenizer(cls, tokenizer, codebook_sizes: Sequence[int]) -> SidVocab:
        """Locate the SID tokens in `tokenizer`; fails clearly when they are absent or not contiguous."""
        offsets = []
        for lvl, k in enumerate(codebook_sizes):
            letter = LEVEL_LETTERS[lvl]
            ids = tokenizer.convert_tokens_to_ids([f"<{letter}_{c}>" for c in range(k)])
            first = ids[0]
            if first is None or first == tokenizer.unk_token_id or list(ids) != list(range(first, first + k)):
                raise RadgrError(
                    f"tokenizer does not hold the {k} SID tokens <{letter}_0>..<{letter}_{k - 1}> "
                    "as one contiguous range (add them with sid_index.tokens.add_sid_tokens)"
                )
            offsets.append(first)
        return cls(tuple(int(k) for k in codebook_sizes), tuple(int(o) for o in offsets))


def add_sid_tokens(tokenizer, codebook_sizes: Sequence[int], model=None) -> SidVocab:
    """Add every SID token to a Hugging Face tokenizer (and resize `model`'s embeddings if given).

    Tokens already present are left in place; the result is checked for contiguity per level.
    """
    tokens = sid_tokens(codebook_sizes)
    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if missing:
        from tokenizers import AddedToken

        # Not "special": they must survive decode(skip_special_tokens=True); not normalized: no lowercasing.
        tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in missing])
    sid_vocab = SidVocab.from_tokenizer(tokenizer, codebook_sizes)
    if model is not None:
        model.resize_token_embeddings(len(tokenizer))
    return sid_vocab

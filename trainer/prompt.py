"""The prompt template, shared by the trainer and the server so both see the same tokens.

A request becomes token ids, never a string round trip through the tokenizer, so SID tokens
in the history cannot be split or merged by the tokenizer's pre-tokenizer:

    "query: " <query text, at most max_query_tokens> " history:" <SIDs of the last H items>
    " user: " "k=v; k=v" " items:"

and the target is the SID tokens of one item followed by EOS. A checkpoint trained with
text-embedding inputs (trainer/text_inputs.py) has one more token, a slot right after the
"query: " (or "item: ") label that its projected text embedding fills. Parts that are absent (empty
query, no history, no user features) are left out with their label. An indexing example
(DSI-style, item text -> its SID) uses "item: " <title> " items:" instead.

Optionally (`align` > 1) prompts are left-filled with the pad token up to a multiple of
`align` tokens; the filler is part of the prompt in training too. A serving engine with a
paged KV cache of that block size (vLLM: 32 on CPU) then holds the whole prompt in full,
shareable blocks and computes only each beam's own SID tokens per step; without it every
beam recomputes the prompt's last partial block (2-3x slower at width 128). Off by default:
the small scratch model learned markedly slower with up to 31 pad tokens in front of short
prompts (demo SFT loss 2.10 vs 1.43 after the same 563 steps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from sid_index.tokens import SidVocab


class PromptConfig(BaseModel):
    """How requests become prompts; stored in every checkpoint so the server builds the same ones."""

    model_config = ConfigDict(extra="forbid")

    max_history: int = Field(20, ge=0, description="most recent history items kept, as SID tokens")
    max_query_tokens: int = Field(32, ge=0, description="query (and item-text) tokens kept, the first ones; 0 with "
                                  "text inputs: the text enters only as its embedding (short prompts, fast)")
    max_user_tokens: int = Field(32, ge=0, description="user-feature tokens kept")
    align: int = Field(1, ge=1, description="left-fill prompts with pad tokens to a multiple of this (vLLM: 32)")


class PromptBuilder:
    """Token ids of prompts and targets for one tokenizer and SID vocabulary."""

    def __init__(
        self, tokenizer, vocab: SidVocab, eos_id: int, config: PromptConfig | None = None, pad_id: int | None = None,
        vector_id: int | None = None,
    ):
        self.tokenizer = tokenizer
        self.pad_id = int(tokenizer.pad_token_id if pad_id is None else pad_id)
        self.vocab = vocab
        self.eos_id = int(eos_id)
        self.config = config or PromptConfig()
        self.vector_id = vector_id  # the text-vector slot token, or None (no slot)
        self._slot = [] if vector_id is None else [int(vector_id)]
        self._label = {k: self._encode(k) for k in ("query: ", " history:", " user: ", " items:", "item: ")}

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode_text(self, text: str) -> list[int]:
        """Ids of user text (query, user features, item titles): never a SID, slot or other added token,
        whatever the text holds ("<a_6><b_1>" typed into a query is text, not a SID). Special tokens are
        split by the tokenizer; the SID tokens (not special) cannot match once every "<" is followed by a
        zero-width space."""
        return list(self.tokenizer(text.replace("<", "<\u200b"), add_special_tokens=False,
                                   split_special_tokens=True)["input_ids"])

    def request(
        self,
        query: str | None,
        history: Sequence[Sequence[int]] = (),
        user: Mapping[str, str] | None = None,
    ) -> list[int]:
        """Prompt ids for a query, the SID codes of the history (oldest first) and user features."""
        cfg = self.config
        ids: list[int] = []
        if query and query.strip():
            ids += self._label["query: "] + self._slot + self._encode_text(query.strip())[: cfg.max_query_tokens]
        recent = list(history)[-cfg.max_history :] if cfg.max_history else []
        if recent:
            ids += self._label[" history:"] + [int(t) for t in self.vocab.codes_to_ids(recent).reshape(-1)]
        if user and cfg.max_user_tokens:
            text = "; ".join(f"{k}={v}" for k, v in sorted(user.items()))
            ids += self._label[" user: "] + self._encode_text(text)[: cfg.max_user_tokens]
        return self._aligned(ids + self._label[" items:"])

    def _aligned(self, ids: list[int]) -> list[int]:
        return [self.pad_id] * (-len(ids) % self.config.align) + ids

    def item(self, title: str) -> list[int]:
        """Prompt ids of an indexing example: the item's text, whose target is the item's SID."""
        text = self._encode_text(title.strip())[: self.config.max_query_tokens]
        return self._aligned(self._label["item: "] + self._slot + text + self._label[" items:"])

    def target(self, codes: Sequence[int]) -> list[int]:
        """SID tokens of one item followed by EOS: what the model learns to generate."""
        return [int(t) for t in self.vocab.codes_to_ids([list(codes)])[0]] + [self.eos_id]

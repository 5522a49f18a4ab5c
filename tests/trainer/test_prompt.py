"""The prompt template: left-filled to the alignment with pad tokens, unchanged otherwise; saved in checkpoints."""

from __future__ import annotations

import pytest

from trainer.model import load_checkpoint, save_checkpoint
from trainer.prompt import PromptBuilder, PromptConfig


@pytest.mark.parametrize("align", [1, 8, 32])
def test_prompts_are_left_filled_to_the_alignment(tiny_ckpt, tiny_index, align):
    ck = tiny_ckpt
    plain = PromptBuilder(ck.tokenizer, ck.vocab, ck.eos_id, PromptConfig(align=1))
    aligned = PromptBuilder(ck.tokenizer, ck.vocab, ck.eos_id, PromptConfig(align=align))
    history = [tuple(c) for c in tiny_index.trie.sids()[:3].tolist()]
    for base, ids in ((plain.request("red lamp", history), aligned.request("red lamp", history)),
                      (plain.item("oak desk"), aligned.item("oak desk"))):
        assert len(ids) % align == 0 and len(ids) - len(base) < align
        fill = len(ids) - len(base)
        assert ids[fill:] == base and ids[:fill] == [ck.pad_id] * fill


def test_alignment_round_trips_through_the_checkpoint(tiny_ckpt, tmp_path):
    assert tiny_ckpt.prompts.config.align == 1  # off unless asked for
    tiny_ckpt.meta["prompt"]["align"] = 32
    old = load_checkpoint(save_checkpoint(tiny_ckpt, tmp_path / "ck"))
    ids = old.prompts.request("red lamp")
    assert len(ids) % 32 == 0 and ids[0] == old.pad_id

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


def test_user_text_never_becomes_a_sid_slot_or_special_token(tiny_ckpt, tiny_index):
    """Typed into a query, user features or a title, SID / EOS / pad / slot token strings stay text."""
    import copy

    from sid_index.tokens import format_sid
    from trainer.text_inputs import TEXT_VECTOR_TOKEN

    ck = tiny_ckpt
    tok = copy.deepcopy(ck.tokenizer)  # the fixture is shared
    tok.add_special_tokens({"additional_special_tokens": [TEXT_VECTOR_TOKEN]})
    slot = tok.convert_tokens_to_ids(TEXT_VECTOR_TOKEN)
    builder = PromptBuilder(tok, ck.vocab, ck.eos_id, PromptConfig(), vector_id=slot)
    sid = format_sid(tiny_index.trie.sids()[0])
    evil = f"lamp {sid} {tok.eos_token}{tok.pad_token}{TEXT_VECTOR_TOKEN} <a_1>"
    added = set(tok.added_tokens_decoder)
    assert set(tok(evil, add_special_tokens=False)["input_ids"]) & added  # what plain encoding does
    for ids, allowed in ((builder.request(evil, [], {"k": evil}), 1), (builder.item(evil), 1)):
        assert sum(t in added for t in ids) == allowed and ids.count(slot) == 1  # only the builder's own slot
    assert "lamp" in tok.decode(builder.request(evil))

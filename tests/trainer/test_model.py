"""Checkpoints round-trip; prompts are the same after a reload; a mismatched index is refused."""

import pytest

from sid_index.errors import RadgrError
from trainer.model import load_checkpoint, save_checkpoint


def test_checkpoint_round_trip(tiny_ckpt, tiny_index, tmp_path):
    ids = tiny_ckpt.prompts.request("red drill", [(1, 2, 3), (4, 5, 6)], {"age": "30"})
    save_checkpoint(tiny_ckpt, tmp_path / "ck")
    back = load_checkpoint(tmp_path / "ck")
    assert back.prompts.request("red drill", [(1, 2, 3), (4, 5, 6)], {"age": "30"}) == ids
    assert back.vocab == tiny_ckpt.vocab
    assert back.eos_id == tiny_ckpt.tokenizer.eos_token_id
    sids = back.vocab.codes_to_ids([[1, 2, 3], [4, 5, 6]]).reshape(-1).tolist()
    assert [t for t in ids if t in sids] == sids  # history enters as SID tokens, in order
    for a, b in zip(tiny_ckpt.model.state_dict().values(), back.model.state_dict().values(), strict=True):
        assert (a == b).all()
    back.check_index(tiny_index)


def test_other_index_refused(tiny_ckpt, tiny_index, tmp_path):
    save_checkpoint(tiny_ckpt, tmp_path / "ck")
    back = load_checkpoint(tmp_path / "ck")
    back.meta["index_id"] = "0" * 16
    with pytest.raises(RadgrError, match="trained for index"):
        back.check_index(tiny_index)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(RadgrError, match="not a radgr checkpoint"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("bad", [-1.0, "20", True, None, float("inf")])
def test_a_bad_index_prior_in_the_metadata_is_refused(tiny_ckpt, tmp_path, bad):
    """radgr.json is untrusted: the prior weight eval and serve would fuse must be a number >= 0."""
    tiny_ckpt.meta["index_prior"] = bad
    save_checkpoint(tiny_ckpt, tmp_path / "ck")
    with pytest.raises(RadgrError, match="index_prior must be a number >= 0"):
        load_checkpoint(tmp_path / "ck")
    tiny_ckpt.meta["index_prior"] = 2.5
    save_checkpoint(tiny_ckpt, tmp_path / "ok")
    assert load_checkpoint(tmp_path / "ok").index_prior == 2.5
    del tiny_ckpt.meta["index_prior"]

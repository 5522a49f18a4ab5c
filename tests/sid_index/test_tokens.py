import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from sid_index.embed import default_model_path
from sid_index.errors import RadgrError
from sid_index.tokens import SidVocab, add_sid_tokens, format_sid, parse_sid, sid_tokens


def test_format_and_parse():
    assert format_sid((17, 4, 250)) == "<a_17><b_4><c_250>"
    assert parse_sid("<a_17><b_4><c_250>") == (17, 4, 250)
    assert parse_sid("17-4-250", levels=3) == (17, 4, 250)
    for bad in ["<b_1><a_2>", "<a_1>x<b_2>", "1-x-3", "<a_1><b_2"]:
        with pytest.raises(RadgrError, match="malformed SID"):
            parse_sid(bad)
    with pytest.raises(RadgrError, match="2 levels, the index has 3"):
        parse_sid("1-2", levels=3)
    assert len(sid_tokens([3, 2])) == 5


def test_add_to_hf_tokenizer_and_map_ids():
    tok = AutoTokenizer.from_pretrained(str(default_model_path()))
    base = len(tok)
    vocab = add_sid_tokens(tok, [16, 8, 4])
    assert len(tok) == base + 28
    assert vocab.token_range(0) == (base, base + 16)
    assert vocab.token_range(2) == (base + 24, base + 28)
    ids = tok("<a_15><b_0><c_3>", add_special_tokens=False)["input_ids"]
    assert ids == [base + 15, base + 16, base + 27]
    assert tok.decode(ids).replace(" ", "") == "<a_15><b_0><c_3>"
    codes = np.array([[15, 0, 3], [1, 7, 0]])
    assert np.array_equal(vocab.ids_to_codes(vocab.codes_to_ids(codes)), codes)
    t = torch.tensor(codes)
    assert torch.equal(vocab.ids_to_codes(vocab.codes_to_ids(t)), t)
    # an id from another level or outside the ranges maps to -1
    assert vocab.ids_to_codes(np.array([[base + 16, 3]])).tolist() == [[-1, -1]]
    # adding again is a no-op; finding them again gives the same vocab
    assert add_sid_tokens(tok, [16, 8, 4]) == vocab
    assert SidVocab.from_tokenizer(tok, [16, 8, 4]) == vocab


def test_missing_tokens_are_reported():
    tok = AutoTokenizer.from_pretrained(str(default_model_path()))
    with pytest.raises(RadgrError, match="does not hold the 4 SID tokens <a_0>..<a_3>"):
        SidVocab.from_tokenizer(tok, [4, 4])

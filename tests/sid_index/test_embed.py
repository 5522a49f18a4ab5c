import numpy as np
import pytest

import sid_index.embed as embed
from sid_index.errors import RadgrError


def test_default_model_embeds_offline_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["cast iron frying pan", "red cordless drill", "cast iron skillet"]
    emb, info = embed.embed_texts(texts, cache_dir=tmp_path, progress=False)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 2] > sim[0, 1]  # the pans are closer to each other than to the drill
    assert not info["cached"]

    def no_model(*a, **k):
        raise AssertionError("cache miss: the model was loaded again")

    monkeypatch.setattr(embed, "load_model", no_model)
    again, info2 = embed.embed_texts(texts, cache_dir=tmp_path, progress=False)
    assert info2["cached"] and np.array_equal(again, emb)
    with pytest.raises(AssertionError, match="cache miss"):
        embed.embed_texts(texts + ["new item"], cache_dir=tmp_path, progress=False)


def test_bad_model_path(tmp_path):
    with pytest.raises(RadgrError, match="not a local sentence-transformers model folder"):
        embed.embed_texts(["x"], model_path=tmp_path, cache_dir=None)

"""Checkpoints round-trip; prompts are the same after a reload; a mismatched index is refused."""

import json

import pytest
import torch

from sid_index.errors import RadgrError
from sid_index.retrieve import embedding_model_of
from trainer.model import ScratchModelConfig, load_checkpoint, new_model, save_checkpoint


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


@pytest.mark.parametrize("bad", ["items", 1, None])
def test_a_bad_index_prior_form_in_the_metadata_is_refused(tiny_ckpt, tmp_path, bad):
    """The prior's form is read from radgr.json too: only 'sid' (the default when absent) or 'item'."""
    assert tiny_ckpt.index_prior_form == "sid"
    tiny_ckpt.meta["index_prior_form"] = bad
    save_checkpoint(tiny_ckpt, tmp_path / "ck")
    with pytest.raises(RadgrError, match="index_prior_form must be 'sid' or 'item'"):
        load_checkpoint(tmp_path / "ck")
    tiny_ckpt.meta["index_prior_form"] = "item"
    save_checkpoint(tiny_ckpt, tmp_path / "ok")
    assert load_checkpoint(tmp_path / "ok").index_prior_form == "item"
    del tiny_ckpt.meta["index_prior_form"]


def test_a_metadata_update_keeps_the_weights_and_verifies(tiny_ckpt, tmp_path):
    """update_checkpoint_meta changes radgr.json only: the weight file is the same inode (not rewritten), the
    folder still passes its checksums, the other metadata is kept; a damaged folder is refused untouched."""
    from trainer.model import update_checkpoint_meta

    ck = save_checkpoint(tiny_ckpt, tmp_path / "ck")
    weights = ck / "model.safetensors"
    inode = weights.stat().st_ino
    assert update_checkpoint_meta(ck, {"index_prior": 7.5, "note": {"a": 1}}) == ck
    assert weights.stat().st_ino == inode
    back = load_checkpoint(ck)  # verifies every checksum
    assert back.index_prior == 7.5 and back.meta["note"] == {"a": 1}
    assert back.meta["index_id"] == tiny_ckpt.meta["index_id"]
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no temporary or old sibling left
    (ck / "tokenizer.json").write_text("{}")
    with pytest.raises(RadgrError, match="tokenizer.json: damaged"):
        update_checkpoint_meta(ck, {"index_prior": 1.0})
    assert json.loads((ck / "radgr.json").read_text())["index_prior"] == 7.5


def test_residual_dropout_drops_block_outputs_only_while_training(tiny_ckpt):
    """Each decoder layer's attention and MLP outputs: in training every element is 0 or itself / (1 - p),
    about a share p of them 0; in eval mode and once the hooks are removed the model is the one it was."""
    import torch

    from trainer.model import residual_dropout

    model, p = tiny_ckpt.model, 0.4
    ids = torch.randint(0, len(tiny_ckpt.tokenizer), (3, 12), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    layers = [m for m in model.modules() if hasattr(m, "self_attn") and hasattr(m, "mlp")]
    raw, dropped = [], []
    first = [b.register_forward_hook(lambda m, a, out: raw.append(out[0] if isinstance(out, tuple) else out))
             for layer in layers for b in (layer.self_attn, layer.mlp)]  # hooks run in order: before dropout
    handles = residual_dropout(model, p)
    last = [b.register_forward_hook(lambda m, a, out: dropped.append(out[0] if isinstance(out, tuple) else out))
            for layer in layers for b in (layer.self_attn, layer.mlp)]
    assert len(handles) == 2 * len(layers) == 2 * model.config.num_hidden_layers
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, plain)  # eval: no dropout
        assert all(torch.equal(r, d) for r, d in zip(raw, dropped, strict=True))
        raw.clear(), dropped.clear()
        model.train()
        train_a, train_b = model(input_ids=ids).logits, model(input_ids=ids).logits
    assert not torch.allclose(train_a, train_b)
    zeros = kept = 0
    for r, d in zip(raw[: len(handles)], dropped[: len(handles)], strict=True):
        is_zero = d == 0
        assert torch.allclose(d[~is_zero], r[~is_zero] / (1 - p), rtol=1e-5, atol=1e-6)
        zeros, kept = zeros + int(is_zero.sum()), kept + int((~is_zero).sum())
    assert abs(zeros / (zeros + kept) - p) < 0.03
    for h in first + handles + last:
        h.remove()
    with torch.no_grad():  # hooks gone: training mode computes what eval mode does (Qwen3 has no dropout of its own)
        assert torch.equal(model(input_ids=ids).logits, plain)
    model.eval()



def test_loads_in_threads_leave_weight_tying_on(served_path):
    """transformers' from_pretrained swaps PreTrainedModel.tie_weights for a no-op while it loads and puts the
    saved one back after; two loads in two threads once left the no-op in place for the whole process (a
    server's two apps; every later load then failed on an untied lm_head). With HF_LOAD_LOCK the loads take
    turns: the class keeps its own tie_weights and every model's head is its embedding. (With the lock swapped
    for a no-op, 8 threads x 3 rounds left the stand-in in place on every one of 5 runs here.)"""
    import threading

    from transformers import PreTrainedModel

    original = PreTrainedModel.__dict__["tie_weights"]
    start, loaded, errors = threading.Barrier(8), [], []

    def load():
        start.wait()
        try:
            loaded.append(load_checkpoint(served_path).model)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    for _ in range(3):
        threads = [threading.Thread(target=load) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert PreTrainedModel.__dict__["tie_weights"] is original
    assert not errors and len(loaded) == 24
    for m in loaded:
        assert m.lm_head.weight is m.model.embed_tokens.weight and not m.lm_head.weight.is_meta


TEXT_MODEL_START = ScratchModelConfig(hidden_size=384, num_layers=1, num_heads=6, num_kv_heads=2, head_dim=64,
                                      intermediate_size=128, tokenizer="text-model")


def test_text_model_start_takes_the_index_text_models_words_and_embeddings(tiny_index, tmp_path):
    """--tokenizer text-model: prompts tokenise with the index's MiniLM WordPiece vocabulary, every one of its rows
    starts as MiniLM's token embedding, the SID tokens come after it, and all of it survives a save and reload."""
    from transformers import AutoModel, AutoTokenizer

    text_dir = embedding_model_of(tiny_index)
    words = AutoTokenizer.from_pretrained(text_dir)
    minilm = AutoModel.from_pretrained(text_dir).get_input_embeddings().weight.detach()
    ckpt = new_model(tiny_index, [], scratch=TEXT_MODEL_START, seed=0)
    emb = ckpt.model.get_input_embeddings().weight.detach()
    assert torch.equal(emb[: len(minilm)], minilm)
    assert not torch.equal(emb[len(minilm) + 1], torch.zeros(384))  # SID rows keep their fresh init
    assert min(ckpt.vocab.offsets) >= len(minilm)  # SID tokens after the WordPiece vocabulary
    assert ckpt.eos_id == len(minilm) and ckpt.pad_id == words.pad_token_id  # EOS added, BERT's [PAD] kept

    query = "Cordless drill, 18V"
    ids = ckpt.prompts.request(query, [(1, 2, 3)], {})
    pieces = words(query, add_special_tokens=False)["input_ids"]
    assert any(ids[i: i + len(pieces)] == pieces for i in range(len(ids)))  # the query as MiniLM's WordPieces
    save_checkpoint(ckpt, tmp_path / "ck")
    back = load_checkpoint(tmp_path / "ck")
    assert back.prompts.request(query, [(1, 2, 3)], {}) == ids
    assert torch.equal(back.model.get_input_embeddings().weight.detach(), emb)


def test_text_model_start_needs_the_text_models_width(tiny_index):
    with pytest.raises(RadgrError, match="pass --hidden-size 384"):
        new_model(tiny_index, [], scratch=TEXT_MODEL_START.model_copy(update={"hidden_size": 256}))


def test_a_base_checkpoint_refuses_the_scratch_options(tiny_dataset, tiny_index, tmp_path):
    """--base brings its own size and tokenizer: a scratch option beside it is an error, not silently ignored."""
    from trainer.config import SFTConfig

    for bad in ({"tokenizer": "text-model"}, {"hidden_size": 384}):
        with pytest.raises(ValueError, match="scratch model options"):
            SFTConfig(data=tiny_dataset.root, index=tiny_index.root, out=tmp_path / "x", base=tmp_path, scratch=bad)
    SFTConfig(data=tiny_dataset.root, index=tiny_index.root, out=tmp_path / "x", base=tmp_path)

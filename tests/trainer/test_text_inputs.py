"""Text-embedding inputs: the embedding rule by hand, beam search and packed training against a
brute-force forward pass over explicit `inputs_embeds`, checkpoints, prompts, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sid_index.constraint import SidConstraint
from sid_index.decoding import beam_search
from sid_index.errors import RadgrError
from trainer.packing import candidate_logps, pack
from trainer.text_inputs import TEXT_INPUTS_FILE, TextInputLM, TextInputs

from ..sid_index.test_decoding import BASE, EOS, SIZES, VOCAB, make_model, make_trie

SLOT = 30  # an ordinary token id used as the text-vector slot
DIM = 8


def make_text_lm(seed: int = 0) -> TextInputLM:
    rng = np.random.default_rng(seed)
    centroids = [rng.normal(size=(k, DIM)) for k in SIZES]
    module = TextInputs.for_index(centroids, VOCAB.offsets, 64, SLOT, seed=seed)
    with torch.no_grad():  # wide weights: the text vectors must visibly move the scores
        module.proj.weight.mul_(20)
        module.sid_proj.weight.mul_(20)
    return TextInputLM(make_model(0.3, torch.float64, seed), module.double()).eval()


def explicit_embeds(lm: TextInputLM, ids: list[int], vector: np.ndarray | None) -> torch.Tensor:
    """The embedding rule, one token at a time."""
    ti, table = lm.text_inputs, lm.lm.get_input_embeddings().weight
    rows = []
    for t in ids:
        if t == SLOT:
            rows.append(ti.proj(torch.as_tensor(vector, dtype=torch.float64)))
        elif BASE <= t < BASE + sum(SIZES):
            rows.append(table[t] + ti.sid_proj(ti.sid_centroids[t - BASE]))
        else:
            rows.append(table[t])
    return torch.stack(rows)[None]


@torch.no_grad()
def brute_score(lm: TextInputLM, prompt: list[int], vector, sid: tuple[int, ...], include_eos: bool) -> float:
    """log pi(SID (+EOS) | prompt) from one full forward pass over explicit embeddings, no cache."""
    target = [int(t) for t in VOCAB.codes_to_ids([list(sid)])[0]] + ([EOS] if include_eos else [])
    seq = prompt + target[:-1]
    logits = lm.lm(inputs_embeds=explicit_embeds(lm, seq, vector)).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return float(sum(logp[len(prompt) - 1 + j, t] for j, t in enumerate(target)))


def test_embed_rule_by_hand():
    lm = make_text_lm()
    ids = [5, SLOT, 6, BASE + 2, BASE + 4 + 3, BASE + 9 + 5, 7]
    vec = np.random.default_rng(3).normal(size=DIM)
    got = lm.text_inputs.embed(lm.lm.get_input_embeddings(), torch.tensor([ids]), torch.tensor(vec[None]))
    torch.testing.assert_close(got, explicit_embeds(lm, ids, vec))
    with pytest.raises(ValueError, match="no text vectors"):
        lm.text_inputs.embed(lm.lm.get_input_embeddings(), torch.tensor([ids]), None)
    with pytest.raises(ValueError, match="at most one"):
        lm.text_inputs.embed(lm.lm.get_input_embeddings(), torch.tensor([[SLOT, SLOT]]), torch.tensor(vec[None]))


@pytest.mark.parametrize("include_eos", [True, False])
def test_beam_search_exact_against_brute_force(include_eos):
    lm = make_text_lm()
    trie = make_trie(40)
    sids = [tuple(s) for s in trie.sids().tolist()]
    prompts = [[5, SLOT, 6, 7], [SLOT, 3], [9, BASE + 1, BASE + 6, BASE + 12, 8]]  # the last one has no slot
    vectors = np.random.default_rng(1).normal(size=(3, DIM))
    res = beam_search(lm, prompts, VOCAB, EOS, width=64, constraint=SidConstraint(trie), include_eos=include_eos,
                      text_vectors=torch.from_numpy(vectors))
    for b, prompt in enumerate(prompts):
        want = sorted(((brute_score(lm, prompt, vectors[b], s, include_eos), s) for s in sids), reverse=True)
        assert res.sids(b) == [s for _, s in want]
        np.testing.assert_allclose(res.scores[b, : len(sids)].numpy(), [v for v, _ in want], atol=1e-6)
    # the vector matters: another vector, another ranking
    other = beam_search(lm, prompts[:1], VOCAB, EOS, width=64, constraint=SidConstraint(trie),
                        text_vectors=torch.from_numpy(-vectors[:1]))
    assert other.sids(0) != res.sids(0)


def test_packed_candidates_against_brute_force():
    lm = make_text_lm(seed=2)
    prompts = [[5, SLOT, 6, 7], [SLOT, 3]]
    cands = [np.array([[0, 1, 2], [3, 4, 5]]), np.array([[1, 1, 1]])]
    vectors = np.random.default_rng(2).normal(size=(2, DIM))
    packed = pack(prompts, [np.asarray(VOCAB.codes_to_ids(c)) for c in cands], EOS, 0)
    with torch.no_grad():
        tok, _ = candidate_logps(lm, packed, text_vectors=torch.from_numpy(vectors))
    want = [brute_score(lm, p, vectors[b], tuple(c), True) for b, p in enumerate(prompts) for c in cands[b].tolist()]
    np.testing.assert_allclose(tok.sum(1).numpy(), want, atol=1e-6)


def test_checkpoint_round_trip_and_damage(tiny_dataset, tiny_index, tmp_path):
    from sid_index.embed import item_texts
    from trainer.model import load_checkpoint, new_model, save_checkpoint

    from .conftest import TINY_MODEL

    texts = item_texts(tiny_dataset.catalog)
    ckpt = new_model(tiny_index, texts, scratch=TINY_MODEL, text_inputs=True)
    assert ckpt.text_model["text_dim"] == 384 and ckpt.prompts.vector_id is not None
    prompt = ckpt.prompts.request("red shoes", [(1, 2, 3)])
    assert prompt.count(ckpt.prompts.vector_id) == 1
    assert ckpt.prompts.request(None, [(1, 2, 3)]).count(ckpt.prompts.vector_id) == 0  # no query, no slot
    assert ckpt.prompts.item("a title").count(ckpt.prompts.vector_id) == 1
    path = save_checkpoint(ckpt, tmp_path / "ck")
    assert (path / TEXT_INPUTS_FILE).is_file()
    loaded = load_checkpoint(path)
    vec = torch.randn(1, 384)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        a = ckpt.decoder.eval()(input_ids=ids, text_vectors=vec).logits
        b = loaded.decoder.eval()(input_ids=ids, text_vectors=vec).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the plain HF folder still loads without radgr (vLLM and transformers read it as a Qwen3)
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(path).config.vocab_size == len(ckpt.tokenizer)
    assert not list(path.glob("*.safetensors"))[1:]  # one top-level weights file: vLLM loads every one it sees
    (path / TEXT_INPUTS_FILE).write_bytes((path / TEXT_INPUTS_FILE).read_bytes()[:100])
    with pytest.raises(RadgrError, match=r"text_inputs.safetensors: damaged \(its SHA-256"):
        load_checkpoint(path)
    (path / "checksums.json").unlink()  # a checkpoint from before checksums: the loader's own check still holds
    with pytest.raises(RadgrError, match="damaged text-input weights"):
        load_checkpoint(path)


def test_an_older_layout_loads_and_saves_in_the_new_one(tiny_dataset, tiny_index, tmp_path):
    """Checkpoints from before the text_inputs/ subfolder (weights at the top level, radgr.json naming that file)
    load; what is saved from them (a pref run's init) names the new file and loads again."""
    import shutil

    from sid_index.embed import item_texts
    from trainer.model import load_checkpoint, new_model, save_checkpoint

    from .conftest import TINY_MODEL

    ckpt = new_model(tiny_index, item_texts(tiny_dataset.catalog), scratch=TINY_MODEL, text_inputs=True)
    old = save_checkpoint(ckpt, tmp_path / "old")
    shutil.move(old / TEXT_INPUTS_FILE, old / "text_inputs.safetensors")
    (old / "text_inputs").rmdir()
    meta = json.loads((old / "radgr.json").read_text())
    meta["text_inputs"]["file"] = "text_inputs.safetensors"
    (old / "radgr.json").write_text(json.dumps(meta))
    (old / "checksums.json").unlink()  # as old as the layout: before checksums
    loaded = load_checkpoint(old)
    again = load_checkpoint(save_checkpoint(loaded, tmp_path / "new"))
    assert json.loads((tmp_path / "new" / "radgr.json").read_text())["text_inputs"]["file"] == TEXT_INPUTS_FILE
    for k, v in loaded.text_inputs.state_dict().items():
        assert torch.equal(v, again.text_inputs.state_dict()[k])


def test_sft_with_text_inputs_resumes_exactly_and_evaluates(tiny_dataset, tiny_index, tmp_path):
    from trainer.evaluate import evaluate
    from trainer.loop import train
    from trainer.model import load_checkpoint

    from .test_loop import Killed, kill_at, sft_cfg

    full = train(sft_cfg(tiny_dataset, tiny_index, tmp_path / "full", index_ratio=0.5, text_inputs=True))
    with pytest.raises(Killed):
        train(sft_cfg(tiny_dataset, tiny_index, tmp_path / "cut", index_ratio=0.5, text_inputs=True),
              on_step=kill_at(4))
    cut = train(sft_cfg(tiny_dataset, tiny_index, tmp_path / "cut", index_ratio=0.5, text_inputs=True, resume=True))
    a, b = load_checkpoint(full), load_checkpoint(cut)
    for x, y in ((a.model, b.model), (a.text_inputs, b.text_inputs)):
        sx, sy = x.state_dict(), y.state_dict()
        assert all(torch.equal(sx[k], sy[k]) for k in sx)
    start = TextInputs.for_index([np.zeros((k, 384)) for k in tiny_index.codebook_sizes], a.vocab.offsets,
                                 a.model.config.hidden_size, a.text_inputs.vector_token_id)
    assert not torch.equal(start.proj.weight, a.text_inputs.proj.weight)  # the projection was trained
    assert json.loads((full / "radgr.json").read_text())["text_inputs"]["file"] == TEXT_INPUTS_FILE
    res = evaluate(a, tiny_index, tiny_dataset, width=8, batch_size=4, max_sessions=6, unconstrained=False)
    assert res["sessions"] == 6 and res["constrained"]["invalid_rate"] == 0


def test_sft_init_continues_a_checkpoint_with_its_own_model_and_text_inputs(tiny_dataset, tiny_index, tmp_path):
    """A second SFT phase (--init): starts from the checkpoint's weights, keeps its tokenizer, prompt and text
    inputs, and records both phases; model-shaping options are refused rather than ignored."""
    from trainer.config import SFTConfig
    from trainer.loop import train
    from trainer.model import load_checkpoint

    from .test_loop import sft_cfg

    first = train(sft_cfg(tiny_dataset, tiny_index, tmp_path / "first", index_ratio=0.5, text_inputs=True))

    def cont(out, lr):
        return SFTConfig(data=tiny_dataset.root, index=tiny_index.root, out=out, init=first, steps=3, batch_size=8,
                         lr=lr, index_ratio=0.5, device="cpu", progress=False)

    a = load_checkpoint(first)
    still = load_checkpoint(train(cont(tmp_path / "still", 1e-12)))
    moved = load_checkpoint(train(cont(tmp_path / "moved", 1e-3)))
    for x, y, z in ((a.model, still.model, moved.model), (a.text_inputs, still.text_inputs, moved.text_inputs)):
        sx, sy, sz = x.state_dict(), y.state_dict(), z.state_dict()
        assert all(torch.allclose(sx[k], sy[k], atol=1e-6) for k in sx)  # it started from the checkpoint
        assert any(not torch.allclose(sx[k], sz[k], atol=1e-6) for k in sx)  # and it trained
    assert moved.tokenizer.get_vocab() == a.tokenizer.get_vocab() and moved.meta["prompt"] == a.meta["prompt"]
    assert [s["stage"] for s in moved.meta["stages"]] == ["sft", "sft"]
    assert [s["steps"] for s in moved.meta["stages"]] == [6, 3]
    for bad in ({"text_inputs": True}, {"base": tmp_path}, {"prompt": {"max_history": 5}}):
        with pytest.raises(ValueError, match="init continues a radgr checkpoint"):
            SFTConfig(data=tiny_dataset.root, index=tiny_index.root, out=tmp_path / "x", init=first, **bad)


def test_a_unique_sid_index_trains_evaluates_and_fuses_its_prior(tiny_dataset, tmp_path):
    """An index built with --unique-sids (a fourth level, zero centroids) through SFT with text inputs and
    eval with the index prior: every decoded SID is valid and names one SKU, so an item's score is its SID's."""
    from sid_index.build import IndexConfig, build_index
    from sid_index.index import load_index
    from trainer.evaluate import evaluate
    from trainer.loop import train
    from trainer.model import load_checkpoint

    from .test_loop import sft_cfg

    index = load_index(build_index(IndexConfig(dataset=tiny_dataset.root, out=tmp_path / "index",
                                               codebook_sizes=[8, 8, 8], cache_dir=tmp_path / "cache",
                                               unique_sids=True), progress=False))
    assert index.levels == 4 and index.num_sids == index.num_skus
    ckpt = load_checkpoint(train(sft_cfg(tiny_dataset, index, tmp_path / "run", index_ratio=0.5, text_inputs=True)))
    assert ckpt.vocab.levels == 4
    for prior in (0.0, 2.0):
        res = evaluate(ckpt, index, tiny_dataset, width=8, batch_size=4, max_sessions=6, unconstrained=False,
                       index_prior=prior)
        assert res["sessions"] == 6 and res["constrained"]["invalid_rate"] == 0
        # one SKU per SID: the 8 decoded SIDs are the 8 items, so item recall@10 is SID recall@8
        assert res["item"]["recall@10"] == pytest.approx(res["sid"]["recall@8"])

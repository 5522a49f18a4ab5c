"""The training loop: resume after a kill equals an uninterrupted run; logs, plot and checkpoint; clear errors."""

import csv
import json

import pytest
import torch

from sid_index.errors import RadgrError
from trainer.config import PREF_CONFIGS, RadDPOConfig, SFTConfig
from trainer.loop import Stream, train
from trainer.model import load_checkpoint, load_state

from .conftest import TINY_MODEL


class Killed(Exception):
    pass


def kill_at(step):
    def hook(done, row):
        if done == step:
            raise Killed

    return hook


def sft_cfg(ds, idx, out, **kw):
    return SFTConfig(data=ds.root, index=idx.root, out=out, steps=6, batch_size=8, save_every=3, log_every=1,
                     device="cpu", progress=False, scratch=TINY_MODEL, **kw)


def same_weights(a, b):
    sa, sb = load_checkpoint(a).model.state_dict(), load_checkpoint(b).model.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def sft_run(tiny_dataset, tiny_index, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft")
    return train(sft_cfg(tiny_dataset, tiny_index, out / "full", index_ratio=0.5))


def test_sft_outputs(sft_run):
    out = sft_run.parent
    for name in ("metrics.csv", "loss.png", "train_config.json", "tb"):
        assert (out / name).exists(), name
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    ck = load_checkpoint(sft_run)
    (stage,) = ck.meta["stages"]
    assert stage["stage"] == "sft" and stage["steps"] == 6 and stage["train_s"] > 0
    assert load_state(sft_run)["step"] == 6


def test_sft_resume_after_kill_equals_uninterrupted(sft_run, tiny_dataset, tiny_index, tmp_path):
    with pytest.raises(Killed):
        train(sft_cfg(tiny_dataset, tiny_index, tmp_path, index_ratio=0.5), on_step=kill_at(4))
    assert load_state(tmp_path / "model")["step"] == 3  # the last complete checkpoint survived the kill
    train(sft_cfg(tiny_dataset, tiny_index, tmp_path, index_ratio=0.5, resume=True))
    assert same_weights(tmp_path / "model", sft_run)
    with open(tmp_path / "metrics.csv") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4, 5, 6]  # no duplicated rows


@pytest.mark.parametrize("method", ["rad-dpo", "dpo"])
def test_pref_resume_after_kill_equals_uninterrupted(method, sft_run, tiny_dataset, tiny_index, tmp_path):
    def cfg(out, **kw):
        rdrw = {"rdrw_warmup": 30, "rdrw_window": 50} if method == "rad-dpo" else {}
        return PREF_CONFIGS[method](data=tiny_dataset.root, index=tiny_index.root, out=out, init=sft_run, steps=6,
                                    batch_size=4, save_every=3, log_every=1, device="cpu", progress=False,
                                    num_negatives=6, **rdrw, **kw)

    full = train(cfg(tmp_path / "full"))
    with pytest.raises(Killed):
        train(cfg(tmp_path / "part"), on_step=kill_at(5))
    train(cfg(tmp_path / "part", resume=True))
    assert same_weights(tmp_path / "part" / "model", full)
    if method == "rad-dpo":  # the quantile window was saved and restored, and warm-up ended mid-run
        state = load_state(full)["rdrw"]
        assert state["seen"] == 6 * 4 * 6
        with open(tmp_path / "full" / "metrics.csv") as fh:
            weights = [float(r["weight_mean"]) for r in csv.DictReader(fh)]
        assert weights[0] == 1.0 and weights[-1] < 1.0
    stages = [{k: v for k, v in st.items() if k not in ("train_s", "epochs")}
              for st in load_checkpoint(full).meta["stages"]]
    assert stages == [{"stage": "sft", "steps": 6, "split": "train"},
                      {"stage": "pref", "steps": 6, "split": "train", "method": method}]


def test_errors(sft_run, tiny_dataset, tiny_index, tmp_path):
    with pytest.raises(RadgrError, match="pass --resume"):
        train(sft_cfg(tiny_dataset, tiny_index, sft_run.parent))
    with pytest.raises(RadgrError, match="no checkpoint"):
        train(sft_cfg(tiny_dataset, tiny_index, tmp_path / "new", resume=True))
    with pytest.raises(RadgrError, match="not a radgr checkpoint"):
        train(RadDPOConfig(data=tiny_dataset.root, index=tiny_index.root, out=tmp_path / "p", init=tmp_path,
                           steps=1, device="cpu", progress=False))


def test_stream_is_a_pure_function_of_the_step():
    a = Stream(10, 4, 0.5, seed=3, batch=3, world=2, rank=0)
    b = Stream(10, 4, 0.5, seed=3, batch=3, world=2, rank=1)
    seen = []
    for step in range(7):  # 7 steps x 2 ranks x 3 = 42 = 3 epochs of 10 sessions + 4 indexing examples
        seen += a.at(step)[1] + b.at(step)[1]
    for e in range(3):
        epoch = seen[e * 14 : (e + 1) * 14]
        assert sorted(x for x in epoch if x < 10) == list(range(10))  # every session once per epoch
        assert len([x for x in epoch if x >= 10]) == 4  # ratio 0.5 of 10 sessions, capped at 4 items
    assert Stream(10, 4, 0.5, seed=3, batch=3, world=2, rank=0).at(5) == a.at(5)


@pytest.mark.slow
def test_two_process_ddp_run(tiny_dataset, tiny_index, tmp_path):
    """The same command under torchrun (2 CPU processes, gloo): one checkpoint, one metrics file, LR on schedule."""
    import subprocess
    import sys

    out = tmp_path / "ddp"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "radgr.cli", "train", "sft", "--data", str(tiny_dataset.root), "--index", str(tiny_index.root),
         "--out", str(out), "--steps", "4", "--batch-size", "4", "--hidden-size", "64", "--layers", "1",
         "--tokenizer-vocab", "400", "--device", "cpu", "--warmup-ratio", "0", "--log-every", "1", "--no-progress",
         "--index-ratio", "0"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("checkpoint written") == 1
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["lr"]) == pytest.approx(0.0, abs=1e-12)  # cosine reaches 0 at the last step, not before
    assert float(rows[1]["lr"]) > 0
    assert float(rows[0]["epoch"]) == pytest.approx(8 / 480, abs=1e-3)  # 2 processes x 4 sessions per step
    (stage,) = load_checkpoint(out).meta["stages"]
    assert stage["stage"] == "sft" and stage["steps"] == 4


def test_rdrw_sid_signal_uses_the_index_vectors(sft_run, tiny_dataset, tiny_index, tmp_path):
    """--rdrw-signal sid: the similarities in the RDRW window are the cosines of the SIDs' RQ-KMeans
    reconstructions (sum of their codes' centroids), recomputed here from the index files and the batches."""
    import numpy as np

    from sid_index.index import load_centroids
    from trainer.data import build_examples
    from trainer.loop import make_batch

    cfg = RadDPOConfig(data=tiny_dataset.root, index=tiny_index.root, out=tmp_path / "sid", init=sft_run, steps=4,
                       batch_size=4, log_every=1, device="cpu", progress=False, num_negatives=6, rdrw_warmup=30,
                       rdrw_window=1000, rdrw_signal="sid")
    state = load_state(train(cfg))["rdrw"]
    ck = load_checkpoint(sft_run)
    ex = build_examples(tiny_dataset, tiny_index, ck.prompts, "train")
    stream = Stream(len(ex), 0, 0.0, cfg.seed, cfg.batch_size, 1, 0)
    cents = load_centroids(tiny_index)
    all_sids = tiny_index.trie.sids().astype(np.int64)
    want = []
    for step in range(cfg.steps):
        epoch, items = stream.at(step)
        b = make_batch(ex, items, ck, cfg.max_positives, cfg.num_negatives, all_sids, cfg.seed, epoch)
        codes = ck.vocab.ids_to_codes(b.packed.targets[:, :-1]).numpy()
        vec = sum(cents[level][codes[:, level]] for level in range(tiny_index.levels))
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        top = vec[b.pos_idx[:, 0].numpy()]
        want.append(np.einsum("sd,snd->sn", top, vec[b.neg_idx.numpy()]).reshape(-1))
    want = np.concatenate(want)
    assert state["seen"] == len(want) == 4 * 4 * 6
    np.testing.assert_allclose(state["buffer"][: len(want)].numpy(), want, atol=1e-5)
    with open(tmp_path / "sid" / "metrics.csv") as fh:
        weights = [float(r["weight_mean"]) for r in csv.DictReader(fh)]
    assert weights[0] == 1.0 and 0.5 <= weights[-1] < 1.0  # warm-up (30 pairs) ended after step 2


def test_rdrw_sid_signal_needs_centroids(sft_run, tiny_dataset, tiny_index, tmp_path, monkeypatch):
    import trainer.loop

    monkeypatch.setattr(trainer.loop, "load_centroids", lambda index: [])  # an index built from given codes
    with pytest.raises(RadgrError, match="no RQ-KMeans centroids"):
        train(RadDPOConfig(data=tiny_dataset.root, index=tiny_index.root, out=tmp_path / "p", init=sft_run, steps=1,
                           device="cpu", progress=False, rdrw_signal="sid"))


class _RunsCode:
    """Unpickling this would create a file (what a crafted trainer_state.pt could do with a shell command)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_resume_state_is_never_unpickled_as_code(sft_run, tmp_path):
    import shutil

    from trainer.model import STATE_FILE

    ck = tmp_path / "model"
    shutil.copytree(sft_run, ck)
    marker = tmp_path / "pwned"
    torch.save({"step": 1, "payload": _RunsCode(marker)}, ck / STATE_FILE)
    with pytest.raises(RadgrError, match="damaged or untrusted training state"):
        load_state(ck)
    assert not marker.exists()
    (ck / STATE_FILE).write_bytes((sft_run / STATE_FILE).read_bytes()[:200])  # truncated
    with pytest.raises(RadgrError, match="damaged or untrusted training state"):
        load_state(ck)


def test_a_kill_between_the_renames_of_a_save_resumes_from_the_last_complete_checkpoint(
        sft_run, tiny_dataset, tiny_index, tmp_path, monkeypatch):
    """Fault injected at the worst moment of the step-6 save: the step-3 checkpoint moved aside, the new one not in
    place. Without recovery `--resume` refused and a plain rerun restarted from step 0."""
    import os

    from sid_index import atomic
    from trainer.model import resolve_checkpoint

    real, calls = os.replace, []

    def crash(src, dst):
        calls.append(dst)
        if str(dst).endswith("/model") and sum(str(c).endswith("/model") for c in calls) == 2 and len(calls) > 2:
            raise Killed  # the second save's second rename
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(Killed):
        train(sft_cfg(tiny_dataset, tiny_index, tmp_path, index_ratio=0.5))
    monkeypatch.setattr(atomic.os, "replace", real)
    assert not (tmp_path / "model").exists()
    with pytest.raises(RadgrError, match="interrupted save left a complete checkpoint"):
        resolve_checkpoint(tmp_path)
    train(sft_cfg(tiny_dataset, tiny_index, tmp_path, index_ratio=0.5, resume=True))
    assert same_weights(tmp_path / "model", sft_run)


def test_flipped_bytes_in_the_weights_are_refused(sft_run, tmp_path):
    import shutil

    ck = tmp_path / "model"
    shutil.copytree(sft_run, ck)
    weights = bytearray((ck / "model.safetensors").read_bytes())
    weights[-4096:] = bytes(b ^ 0xFF for b in weights[-4096:])
    (ck / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(RadgrError, match=r"model.safetensors: damaged \(its SHA-256 differs"):
        load_checkpoint(ck)
    (ck / "model.safetensors").unlink()
    with pytest.raises(RadgrError, match="model.safetensors: missing"):
        load_checkpoint(ck, with_model=False)


def test_validation_keeps_the_best_checkpoint_and_stops_on_patience(tiny_dataset, tiny_index, tmp_path, monkeypatch):
    """Scripted validation values 0.2, 0.5, 0.4, 0.3 at steps 1..4 (eval every step, patience 2): the best is
    step 2's weights in out/best, and the run stops at step 4 instead of 6."""
    from trainer import loop

    values = iter([0.2, 0.5, 0.4, 0.3, 0.9])
    seen = []

    def scripted(cfg, ckpt, index, dataset, device):
        seen.append(ckpt.decoder.training)
        value = next(values)
        # the metric that picks (item recall@10, the default) scripted, every other one offset by its column
        return {name: value + (name != "item recall@10") * i for i, name in enumerate(loop.HEADLINE_NAMES)}

    monkeypatch.setattr(loop, "_validation_metrics", scripted)
    cfg = sft_cfg(tiny_dataset, tiny_index, tmp_path, eval_every=1, patience=2)
    snapshots = {}
    train(cfg, on_step=lambda done, row: snapshots.setdefault(done, {
        k: v.clone() for k, v in load_checkpoint(tmp_path / "best").model.state_dict().items()}))
    assert load_state(tmp_path / "model")["step"] == 4 and load_state(tmp_path / "model")["best"] == {
        "step": 2, "value": 0.5, "stale": 2}
    best = load_checkpoint(tmp_path / "best")
    with open(tmp_path / "metrics.csv") as fh:
        epoch_at_2 = float(next(r["epoch"] for r in csv.DictReader(fh) if r["step"] == "2"))
    assert best.meta["stages"][-1] == {"stage": "sft", "steps": 2, "epochs": epoch_at_2, "split": "train",
                                       "best_of_validation": True}
    assert all(torch.equal(best.model.state_dict()[k], v) for k, v in snapshots[2].items())
    with open(tmp_path / "metrics.csv") as fh:
        valid = [(int(r["step"]), float(r["valid"])) for r in csv.DictReader(fh) if r["valid"]]
    assert valid == [(1, 0.2), (2, 0.5), (3, 0.4), (4, 0.3)]
    with open(tmp_path / "validation.csv") as fh:  # every headline metric, one row per validation
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["sid mrr"]) for r in rows] == [0.2 + 1, 0.5 + 1, 0.4 + 1, 0.3 + 1]
    assert [float(r["item recall@10"]) for r in rows] == [0.2, 0.5, 0.4, 0.3]
    assert (tmp_path / "loss.png").stat().st_size > 0
    before = load_checkpoint(tmp_path / "model").model.state_dict()
    train(cfg.model_copy(update={"resume": True}))  # a rerun (make's --resume) does not train past the stop
    assert load_state(tmp_path / "model")["step"] == 4
    assert all(torch.equal(before[k], v) for k, v in load_checkpoint(tmp_path / "model").model.state_dict().items())


def test_validation_metric_is_radgr_evals(sft_run, tiny_dataset, tiny_index, tmp_path):
    """The number that picks the best checkpoint is `radgr eval`'s on the same valid sessions."""
    from trainer.evaluate import evaluate
    from trainer.loop import _validation_metrics

    cfg = sft_cfg(tiny_dataset, tiny_index, tmp_path, eval_every=1, eval_sessions=5, eval_width=8,
                  eval_metric="sid mrr")
    ckpt = load_checkpoint(sft_run)
    want = evaluate(ckpt, tiny_index, tiny_dataset, "valid", 8, 4, 5, unconstrained=False)
    got = _validation_metrics(cfg, ckpt, tiny_index, tiny_dataset, "cpu")
    assert got["sid mrr"] == want["sid"]["mrr"] and got["item recall@10"] == want["item"]["recall@10"]
    with pytest.raises(ValueError, match="eval_metric must be one of"):
        sft_cfg(tiny_dataset, tiny_index, tmp_path, eval_every=1, eval_metric="accuracy")
    with pytest.raises(ValueError, match="patience needs eval_every"):
        sft_cfg(tiny_dataset, tiny_index, tmp_path, patience=3)


def test_index_ratio_defaults_from_the_data(tiny_dataset, tmp_path):
    import pyarrow as pa

    from sid_index.data.schema import Dataset
    from trainer.loop import SEARCH_INDEX_RATIO, default_index_ratio

    assert default_index_ratio(tiny_dataset) == SEARCH_INDEX_RATIO == 1.0  # the synthetic sessions carry queries
    no_queries = tiny_dataset.sessions.set_column(
        tiny_dataset.sessions.column_names.index("query"), "query", pa.array([""] * tiny_dataset.sessions.num_rows))
    assert default_index_ratio(Dataset(tiny_dataset.root, tiny_dataset.catalog, no_queries)) == 0.0


def test_pref_on_the_index_prior(sft_run, tiny_dataset, tiny_index, tmp_path):
    """--negatives index draws from the index's nearest SIDs (positives removed), --index-prior adds each
    candidate's weighted index score to its reward, and the checkpoint records the weight for eval / serve."""
    import numpy as np

    from sid_index.index import load_centroids
    from trainer.data import build_examples
    from trainer.evaluate import EvalConfig, evaluate_models, request_vectors
    from trainer.loop import index_negatives, make_batch, request_prior

    weight, pool = 2.0, 5
    cfg = RadDPOConfig(data=tiny_dataset.root, index=tiny_index.root, out=tmp_path / "p", init=sft_run, steps=2,
                       batch_size=4, log_every=1, device="cpu", progress=False, num_negatives=3, negatives="index",
                       index_pool=pool, index_prior=weight, eval_every=2, eval_sessions=5, eval_width=8)
    path = train(cfg)
    assert load_checkpoint(path).index_prior == weight
    assert load_checkpoint(tmp_path / "p" / "best").index_prior == weight
    assert load_checkpoint(sft_run).index_prior == 0.0

    # Brute force: the request vectors, every SID's vector by loops over levels, distances sorted.
    ck = load_checkpoint(sft_run)
    ex = build_examples(tiny_dataset, tiny_index, ck.prompts, "train")
    cents = load_centroids(tiny_index)
    vectors = request_vectors(ex, len(ex), tiny_dataset, "train", tiny_index, cents)
    sids = [tuple(s) for s in tiny_index.trie.sids().tolist()]

    def vec(sid):
        return sum(np.asarray(cents[level][code], dtype=np.float64) for level, code in enumerate(sid))

    prior = request_prior(ex, tiny_dataset, "train", tiny_index, weight)
    negs = index_negatives(ex, prior, tiny_index, pool)
    for i in range(0, len(ex), 37):
        q = np.asarray(vectors[i], dtype=np.float64)
        pos = {tuple(c) for c in ex.pos_codes[i].tolist()}
        ranked = sorted((s for s in sids if s not in pos), key=lambda s: float(((q - vec(s)) ** 2).sum()))
        assert [tuple(c) for c in negs[i].tolist()] == ranked[:pool]

    ex.neg_codes = negs
    all_sids = tiny_index.trie.sids().astype(np.int64)
    items = list(range(4))
    b = make_batch(ex, items, ck, cfg.max_positives, 3, all_sids, 0, 0, prior)
    codes = ck.vocab.ids_to_codes(b.packed.targets[:, :-1]).numpy()
    row_of = np.repeat(items, [len(ex.pos_codes[i][: cfg.max_positives]) + 3 for i in items])
    want = [weight * (float(np.dot(vectors[i], vectors[i])) - float(((vectors[i] - vec(c)) ** 2).sum()))
            for i, c in zip(row_of, map(tuple, codes.tolist()), strict=True)]
    np.testing.assert_allclose(b.cand_prior.numpy(), want, rtol=1e-4, atol=1e-4)
    for s, i in enumerate(items):  # every negative is one of the session's pool
        pool_i = {tuple(c) for c in negs[i].tolist()}
        assert all(tuple(codes[j]) in pool_i for j in b.neg_idx[s].tolist())

    # radgr eval fuses the checkpoint's own prior unless told otherwise.
    ev = dict(model=[path], index=tiny_index.root, data=tiny_dataset.root, split="valid", beam_width=8,
              max_sessions=5, unconstrained=False, baselines=False)
    assert [r["index_prior"] for r in evaluate_models(EvalConfig(**ev), log=lambda *_: None)] == [weight]
    assert [r["index_prior"] for r in evaluate_models(EvalConfig(**ev, index_prior=[0.0]),
                                                      log=lambda *_: None)] == [0.0]
    twice = EvalConfig(**ev, index_prior=[0.0, weight, 0.0], item_prior=[0.0, 0.0])  # e.g. a script's picked 0
    assert (twice.index_prior, twice.item_prior) == ([0.0, weight], [0.0])  # one row per distinct pair
    with pytest.raises(ValueError, match="index_prior"):  # a reward offset of RAD-DPO's list-wise term only
        PREF_CONFIGS["dpo"](data=tiny_dataset.root, index=tiny_index.root, out=tmp_path / "d", init=sft_run,
                            index_prior=1.0)


def test_dropout_trains_other_weights_and_leaves_the_checkpoint_format(sft_run, tiny_dataset, tiny_index, tmp_path):
    """--dropout changes the updates (another model) but not what is saved: the same HF config, so vLLM and the
    native engine serve it as any checkpoint; the run's settings record the rate."""
    run = train(sft_cfg(tiny_dataset, tiny_index, tmp_path / "drop", index_ratio=0.5, dropout=0.3))
    assert not same_weights(run, sft_run)
    assert (run / "config.json").read_text() == (sft_run / "config.json").read_text()
    assert json.loads((tmp_path / "drop" / "train_config.json").read_text())["dropout"] == 0.3


def test_stop_at_epoch_cuts_the_longer_schedule_where_an_uninterrupted_run_passes(tiny_dataset, tiny_index,
                                                                                  tmp_path):
    """Stopping at the epoch of step 4 of a 6-step schedule gives the first 4 steps of the 6-step run: the same LR
    at every step (not a 4-step cosine); the stage records the epoch it reached, the number a refit stops at."""
    with pytest.raises(Killed):
        train(sft_cfg(tiny_dataset, tiny_index, tmp_path / "probe"), on_step=kill_at(1))
    per_step = float(next(csv.DictReader(open(tmp_path / "probe" / "metrics.csv")))["epoch"])
    cut = train(sft_cfg(tiny_dataset, tiny_index, tmp_path / "cut", stop_at_epoch=4 * per_step))
    with pytest.raises(Killed):
        train(sft_cfg(tiny_dataset, tiny_index, tmp_path / "full"), on_step=kill_at(4))
    rows = {name: list(csv.DictReader(open(tmp_path / name / "metrics.csv"))) for name in ("cut", "full")}
    assert [r["lr"] for r in rows["cut"]] == [r["lr"] for r in rows["full"][:4]]
    assert float(rows["cut"][-1]["lr"]) > 0  # a 4-step cosine would have reached 0
    assert load_state(cut)["step"] == 4
    assert (tmp_path / "full" / "model").exists()
    assert load_state(tmp_path / "full" / "model")["step"] == 3  # the kill came after step 3's save
    assert load_checkpoint(cut).meta["stages"][-1]["epochs"] == pytest.approx(4 * per_step, abs=1e-3)
    resumed = train(sft_cfg(tiny_dataset, tiny_index, tmp_path / "cut", stop_at_epoch=4 * per_step, resume=True))
    assert same_weights(resumed, cut)  # already at its end: nothing more trained


def test_refit_on_train_and_valid(tiny_dataset, tiny_index, tmp_path):
    """split train+valid trains on both splits' sessions (counted from the epoch column against the examples
    built another way) and records it in the checkpoint; validating on the sessions it trains on is refused."""
    from trainer.data import build_examples

    run = train(sft_cfg(tiny_dataset, tiny_index, tmp_path / "refit", split="train+valid", index_ratio=0))
    n = sum(len(build_examples(tiny_dataset, tiny_index, None, split)) for split in ("train", "valid"))
    rows = list(csv.DictReader(open(tmp_path / "refit" / "metrics.csv")))
    assert float(rows[-1]["epoch"]) == pytest.approx(round(6 * 8 / n, 4))
    assert tiny_dataset.split("train+valid").num_rows == (
        tiny_dataset.split("train").num_rows + tiny_dataset.split("valid").num_rows)
    assert load_checkpoint(run).meta["stages"][-1]["split"] == "train+valid"
    with pytest.raises(ValueError, match="eval_every validates on sessions"):
        sft_cfg(tiny_dataset, tiny_index, tmp_path / "x", split="train+valid", eval_every=2)

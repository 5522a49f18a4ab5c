"""The training loop shared by SFT and preference alignment.

One step = `batch_size` sessions per process, each packed with its candidates into one row
(trainer.packing), one forward pass, the stage's loss, one optimizer step. The data order is a
pure function of (seed, step): epoch e is a permutation drawn from (seed, e), process r of W
takes its slice of every global batch, and negatives are drawn per (seed, epoch, session).
So `--resume` from the last checkpoint replays exactly what an uninterrupted run would have
done, given the optimizer, scheduler and RDRW state saved beside the weights.

Runs unchanged on one CPU, one GPU, or several under `accelerate launch` / `torchrun`
(accelerate prepares DDP or FSDP from its config).
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DistributedType

from sid_index.atomic import atomic_file, recover_dir, write_json
from sid_index.data.schema import load_dataset
from sid_index.embed import item_texts
from sid_index.errors import RadgrError
from sid_index.index import SidIndex, load_centroids, load_index
from sid_index.retrieve import IndexRetriever, prior_scores
from trainer.config import MIN_DEFAULT_STEPS, DPOConfig, RadDPOConfig, RunConfig, SFTConfig, SimPOConfig
from trainer.data import (
    Examples,
    build_examples,
    embed_prompt_texts,
    indexing_examples,
    sample_negatives,
    session_rng,
)
from trainer.evaluate import HEADLINE_NAMES, evaluate, headline_metrics, request_vectors
from trainer.losses import common_prefix, dpo_loss, orpo_loss, rad_dpo_loss, sft_loss, simpo_loss
from trainer.model import Checkpoint, load_checkpoint, load_state, new_model, residual_dropout, save_checkpoint
from trainer.packing import Packed, candidate_logps, pack
from trainer.rdrw import QuantileTracker, SidVectors, eos_similarity

VALIDATION_FIELDS = ["step", *HEADLINE_NAMES]
METRICS = ["step", "epoch", "loss", "sft", "pref", "margin", "accuracy", "weight_mean", "lr", "grad_norm",
           "sessions_per_s", "valid"]
BEST = "best"  # out/best: the checkpoint with the best validation metric (with eval_every)
VALIDATION_FILE = "validation.csv"  # every headline metric at each validation: the curves beyond eval_metric


@dataclass
class Batch:
    """A packed batch and where each session's positives and negatives sit among its candidates."""

    packed: Packed
    pos_idx: torch.Tensor  # [S, P] candidate index (0 in padded slots)
    pos_mask: torch.Tensor  # [S, P]
    neg_idx: torch.Tensor  # [S, N] (N = 0 for SFT)
    neg_lcp: torch.Tensor  # [S, N] common prefix of each negative with y_w*, in SID tokens
    text_vectors: torch.Tensor | None = None  # [S, D] what fills each prompt's text-vector slot
    cand_prior: torch.Tensor | None = None  # [C] weighted index score of each candidate (`RequestPrior`)

    def to(self, device) -> Batch:
        vectors = None if self.text_vectors is None else self.text_vectors.to(device)
        prior = None if self.cand_prior is None else self.cand_prior.to(device)
        return Batch(self.packed.to(device), self.pos_idx.to(device), self.pos_mask.to(device),
                     self.neg_idx.to(device), self.neg_lcp.to(device), vectors, prior)


@dataclass
class RequestPrior:
    """Each example's request vector (`sid_index.retrieve.request_vector`) and the index's centroids:
    the weighted retrieval score the fused search adds to a SID's log-prob, per training candidate."""

    centroids: list[np.ndarray]
    vectors: list[np.ndarray | None]  # per example; None: no query and no history, no prior
    weight: float

    def scores(self, i: int, codes: np.ndarray) -> np.ndarray:
        v = self.vectors[i]
        if v is None or self.weight == 0:
            return np.zeros(len(codes), dtype=np.float32)
        return self.weight * prior_scores(self.centroids, v, codes)


def index_negatives(ex: Examples, prior: RequestPrior, index: SidIndex, pool: int) -> list[np.ndarray]:
    """The `pool` SIDs nearest each example's request vector, minus its positives, nearest first."""

    retriever = IndexRetriever(index)
    found = [i for i, v in enumerate(prior.vectors) if v is not None]
    hits = dict(zip(found, retriever.search(np.stack([prior.vectors[i] for i in found]), pool + 8), strict=True)) \
        if found else {}
    out = []
    for i in range(len(ex)):
        pos = {tuple(c) for c in ex.pos_codes[i].tolist()}
        keep = [c for c in hits.get(i, []) if c not in pos][:pool]
        out.append(np.asarray(keep, dtype=np.int64).reshape(-1, index.levels))
    return out


def make_batch(
    ex: Examples, items: list[int], ckpt: Checkpoint, max_pos: int, num_neg: int,
    all_sids: np.ndarray | None, seed: int, epoch: int, prior: RequestPrior | None = None,
) -> Batch:
    """Sessions `items` of `ex` with up to `max_pos` positives and exactly `num_neg` negatives each
    (and each candidate's index score with `prior`)."""
    prompts, cands, pos_rows, neg_rows, offsets = [], [], [], [], []
    start = 0
    for i in items:
        pos = ex.pos_codes[i][:max_pos]
        neg = np.zeros((0, pos.shape[1]), dtype=np.int64)
        if num_neg:
            neg = sample_negatives(ex.neg_codes[i], ex.pos_codes[i], all_sids, num_neg, session_rng(seed, epoch, i))
        codes = np.concatenate([pos, neg])
        if prior is not None:
            offsets.append(prior.scores(i, codes))
        prompts.append(ex.prompts[i])
        cands.append(np.asarray(ckpt.vocab.codes_to_ids(codes)))
        pos_rows.append(np.arange(start, start + len(pos)))
        neg_rows.append(np.arange(start + len(pos), start + len(codes)))
        start += len(codes)
    width = max(len(r) for r in pos_rows)
    pos_idx = np.zeros((len(items), width), dtype=np.int64)
    pos_mask = np.zeros((len(items), width), dtype=bool)
    for s, r in enumerate(pos_rows):
        pos_idx[s, : len(r)] = r
        pos_mask[s, : len(r)] = True
    neg_idx = torch.from_numpy(np.stack(neg_rows).astype(np.int64))
    packed = pack(prompts, cands, ckpt.eos_id, ckpt.pad_id)
    sid_targets = packed.targets[:, :-1]
    top = sid_targets[torch.from_numpy(pos_idx[:, 0])]  # y_w* of each session
    neg_lcp = common_prefix(sid_targets[neg_idx], top[:, None, :]) if num_neg else neg_idx
    vectors = None if ex.text_vectors is None else torch.from_numpy(ex.text_vectors[items])
    cand_prior = torch.from_numpy(np.concatenate(offsets)) if prior is not None else None
    return Batch(packed, torch.from_numpy(pos_idx), torch.from_numpy(pos_mask), neg_idx, neg_lcp, vectors, cand_prior)


class Stream:
    """Which example each process trains on at each step; an epoch may add a share of indexing examples."""

    def __init__(self, n_sessions: int, n_items: int, ratio: float, seed: int, batch: int, world: int, rank: int):
        self.n_sessions, self.n_items = n_sessions, n_items
        self.extra = min(n_items, round(ratio * n_sessions)) if n_items else 0
        self.epoch_len = n_sessions + self.extra
        self.seed, self.batch, self.world, self.rank = seed, batch, world, rank
        self._cache: dict[int, np.ndarray] = {}

    def order(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            rng = np.random.default_rng([self.seed, epoch, 7])
            items = self.n_sessions + rng.permutation(self.n_items)[: self.extra]
            self._cache = {epoch: rng.permutation(np.concatenate([np.arange(self.n_sessions), items]))}
        return self._cache[epoch]

    def steps_for(self, epochs: float) -> int:
        return max(1, math.ceil(epochs * self.epoch_len / (self.batch * self.world)))

    def at(self, step: int) -> tuple[int, list[int]]:
        """(epoch, example ids) of this process at `step`."""
        first = (step * self.world + self.rank) * self.batch
        epoch = first // self.epoch_len
        out = []
        for pos in range(first, first + self.batch):
            e, off = divmod(pos, self.epoch_len)
            out.append(int(self.order(e)[off]))
        return epoch, out


class MetricsLog:
    """metrics.csv (one row per logged step) and TensorBoard; a resumed run drops rows past its checkpoint."""

    def __init__(self, out: Path, resume_step: int, enabled: bool):
        self.path = out / "metrics.csv"
        self.valid_path = out / VALIDATION_FILE
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        for path, fields in ((self.path, METRICS), (self.valid_path, VALIDATION_FIELDS)):
            rows = []
            if resume_step and path.is_file():
                with open(path, newline="") as fh:
                    rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
            with atomic_file(path, "w") as fh:
                w = csv.DictWriter(fh, fieldnames=fields)
                w.writeheader()
                w.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tb"), purge_step=resume_step + 1 if resume_step else None)
        except ImportError:  # tensorboard is optional at run time; the CSV always exists
            self.writer = None

    def log(self, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=METRICS).writerow({k: row.get(k, "") for k in METRICS})
        if self.writer is not None:
            for k, v in row.items():
                if k != "step" and v != "":
                    self.writer.add_scalar(f"train/{k}", v, int(row["step"]))

    def valid(self, step: int, value: float, metrics: dict[str, float]) -> None:
        """The validation metric at `step`: its own metrics.csv row (the other columns empty) and TensorBoard;
        every headline metric (`metrics`) as a row of validation.csv."""
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=METRICS).writerow({"step": step, "valid": value})
        with open(self.valid_path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=VALIDATION_FIELDS).writerow({"step": step, **metrics})
        if self.writer is not None:
            self.writer.add_scalar("valid/metric", value, step)
            for name, v in metrics.items():
                self.writer.add_scalar(f"valid/{name}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_losses(out: Path) -> None:
    """loss.png next to the checkpoint: total, SFT and preference loss against the step, and the validation
    metric on a second axis when the run validates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    rows_train = [r for r in rows if r.get("loss")]  # validation rows carry only the step and the metric
    steps = [int(r["step"]) for r in rows_train]
    for key in ("loss", "sft", "pref"):
        vals = [float(r[key]) if r[key] else math.nan for r in rows_train]
        if not all(math.isnan(v) for v in vals):
            ax.plot(steps, vals, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(out.name)
    ax.legend(loc="upper left")
    valid = [(int(r["step"]), float(r["valid"])) for r in rows if r.get("valid")]
    if valid:  # the validation metric (eval_every), on its own axis
        right = ax.twinx()
        right.plot(*zip(*valid, strict=True), "o-", color="tab:red", label="valid")
        right.set_ylabel("valid metric")
        right.legend(loc="upper right")
    fig.tight_layout()
    with atomic_file(out / "loss.png", "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


def _accelerator(cfg: RunConfig):
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RadgrError("--device cuda: no CUDA device is available")
    return Accelerator(cpu=cfg.device == "cpu", mixed_precision=cfg.mixed_precision)


def _start(cfg: RunConfig, index: SidIndex, dataset) -> tuple[Checkpoint, dict[str, Any] | None]:
    """The model to train: the run's own last checkpoint when resuming, else a new one."""
    recovered = recover_dir(cfg.out / "model")  # a crash between a save's two renames left it hidden
    if recovered is not None:
        print(f"recovered the checkpoint of an interrupted save: {recovered} -> {cfg.out / 'model'}")
    if cfg.resume:
        state = load_state(cfg.out / "model") if (cfg.out / "model").exists() else None
        if state is None:
            raise RadgrError(f"--resume: no checkpoint with training state under {cfg.out / 'model'}")
        return load_checkpoint(cfg.out / "model", dtype=torch.float32), state
    if (cfg.out / "model").exists():
        raise RadgrError(f"{cfg.out / 'model'} exists: pass --resume to continue it, or choose another --out")
    if isinstance(cfg, SFTConfig) and cfg.init is None:
        train = dataset.split(cfg.split)
        texts = item_texts(dataset.catalog) + [q for q in train["query"].to_pylist() if q]
        ckpt = new_model(index, texts, base=cfg.base, scratch=cfg.scratch, prompt=cfg.prompt, seed=cfg.seed,
                         text_inputs=cfg.text_inputs)
        ckpt.model.float()
        return ckpt, None
    return load_checkpoint(cfg.init, dtype=torch.float32), None


def train(cfg: RunConfig, on_step: Callable[[int, dict], None] | None = None) -> Path:
    """Run SFT (`SFTConfig`) or preference alignment (a `PrefConfig`, one class per method); returns the
    checkpoint folder."""
    from transformers import get_cosine_schedule_with_warmup

    stage = "sft" if isinstance(cfg, SFTConfig) else "pref"
    acc = _accelerator(cfg)
    index = load_index(cfg.index)
    dataset = load_dataset(cfg.data)
    ckpt, state = _start(cfg, index, dataset)
    ckpt.check_index(index)
    base_stages = state["base_stages"] if state else list(ckpt.meta.get("stages", []))

    ex = build_examples(dataset, index, ckpt.prompts, cfg.split)
    if not len(ex):
        raise RadgrError(f"{cfg.data}: no '{cfg.split}' session has a positive in the index; nothing to train on")
    embed_prompt_texts(ex, ckpt.text_model)
    n_sessions = len(ex)
    index_ratio = getattr(cfg, "index_ratio", 0.0)
    if stage == "sft" and index_ratio is None:
        index_ratio = default_index_ratio(dataset, cfg.split)
        if acc.is_main_process:
            print(f"--index-ratio {index_ratio:g} (from the data: see default_index_ratio)", file=sys.stderr)
    if stage == "sft" and index_ratio > 0:
        ex.extend(embed_prompt_texts(indexing_examples(dataset, index, ckpt.prompts), ckpt.text_model,
                                     catalog=dataset.catalog))
    stream = Stream(n_sessions, len(ex) - n_sessions, index_ratio, cfg.seed,
                    cfg.batch_size, acc.num_processes, acc.process_index)
    total = cfg.steps or stream.steps_for(cfg.epochs or 1.0)
    if cfg.steps is None and cfg.epochs is None and total < MIN_DEFAULT_STEPS:
        total = MIN_DEFAULT_STEPS
        if acc.is_main_process:
            print(f"{total} steps ({total * cfg.batch_size * acc.num_processes / stream.epoch_len:.1f} epochs): "
                  "one epoch of this data is shorter than that (give --steps or --epochs to change it)",
                  file=sys.stderr)
    num_neg = cfg.num_negatives if stage == "pref" else 0
    all_sids = index.trie.sids().astype(np.int64) if num_neg else None
    prior = None
    prior_weight = trained_prior(cfg)
    if stage == "pref" and (prior_weight > 0 or cfg.negatives == "index"):
        prior = request_prior(ex, dataset, cfg.split, index, prior_weight)
        if cfg.negatives == "index":
            ex.neg_codes = index_negatives(ex, prior, index, cfg.index_pool)
        if prior_weight == 0:
            prior = None

    model = ckpt.decoder
    model.train()
    if cfg.dropout > 0:
        residual_dropout(model, cfg.dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    step_sessions = cfg.batch_size * acc.num_processes
    end = total if cfg.stop_at_epoch is None else min(total, max(1, round(cfg.stop_at_epoch * stream.epoch_len
                                                                          / step_sessions)))
    # The scheduler is stepped here once per optimizer step: `total` already counts every process's
    # sessions, so accelerate's per-process scheduler stepping would run it `num_processes` times too fast.
    model, optimizer = acc.prepare(model, optimizer)
    tracker = sid_vectors = None
    if isinstance(cfg, RadDPOConfig) and cfg.rdrw:
        tracker = QuantileTracker(cfg.rdrw_warmup, cfg.rdrw_window)
        if cfg.rdrw_signal == "sid":
            centroids = load_centroids(index)
            if len(centroids) != index.levels:
                raise RadgrError(f"--rdrw-signal sid: index {cfg.index} has no RQ-KMeans centroids "
                                 "(built from given codes); use --rdrw-signal eos")
            sid_vectors = SidVectors(centroids, ckpt.vocab.offsets).to(acc.device)
    ref = None
    if isinstance(cfg, DPOConfig):
        ref = load_checkpoint(cfg.init, dtype=torch.float32).decoder.to(acc.device).eval().requires_grad_(False)
    start = 0
    if state is not None:
        if state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
        else:
            acc.print("resuming without optimizer state (it was sharded by FSDP): Adam moments restart")
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if tracker is not None and state.get("rdrw"):
            tracker.load_state_dict(state["rdrw"])
        start = int(state["step"])
        if start >= end:
            acc.print(f"{cfg.out}: already trained for {start} of {end} steps")
            return cfg.out / "model"
        if cfg.patience is not None and (state.get("best") or {}).get("stale", 0) >= cfg.patience:
            acc.print(f"{cfg.out}: stopped early at step {start} (no better valid {cfg.eval_metric} in "
                      f"{cfg.patience} validations)")
            return cfg.out / "model"

    cfg.out.mkdir(parents=True, exist_ok=True)
    if acc.is_main_process:
        write_json(cfg.out / "train_config.json", {"stage": stage, **json.loads(cfg.model_dump_json()),
                                                   **({"index_ratio_used": index_ratio} if stage == "sft" else {})})
    log = MetricsLog(cfg.out, start, acc.is_main_process)

    def epochs_at(step: int) -> float:
        return round(step * step_sessions / stream.epoch_len, 4)

    sharded = acc.distributed_type == DistributedType.FSDP  # each rank holds a shard of the optimizer state

    run_start, earlier_s = time.perf_counter(), float((state or {}).get("train_s") or 0.0)

    def save(step: int) -> None:
        acc.wait_for_everyone()
        train_s = earlier_s + time.perf_counter() - run_start  # wall time of this stage, resumed runs included
        unwrapped = acc.unwrap_model(model)
        weights = acc.get_state_dict(model)
        if acc.is_main_process:
            entry = {"stage": stage, "steps": step, "epochs": epochs_at(step), "train_s": round(train_s, 1),
                     "split": cfg.split,
                     **({"method": cfg.method} if stage == "pref" else {})}
            ckpt.meta["stages"] = base_stages + [entry]
            _record_prior(ckpt, cfg)
            train_state = {
                "step": step, "optimizer": None if sharded else optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(), "rdrw": tracker.state_dict() if tracker else None,
                "base_stages": base_stages, "config": json.loads(cfg.model_dump_json()), "train_s": train_s,
                "best": dict(best),
            }
            save_checkpoint(ckpt, cfg.out / "model", state=train_state, model=unwrapped, state_dict=weights)
            plot_losses(cfg.out)
        acc.wait_for_everyone()

    from tqdm.auto import tqdm

    best = dict((state or {}).get("best") or {"step": 0, "value": None, "stale": 0})  # the validation record

    def validate(step: int) -> bool:
        """Score the current weights on valid; keep them in out/best when better. True: stop now (patience)."""
        stop = torch.zeros(1, device=acc.device)
        if acc.is_main_process:
            metrics = _validation_metrics(cfg, ckpt, index, dataset, acc.device)
            value = metrics[cfg.eval_metric]
            model.train()
            if best["value"] is None or value > best["value"]:
                best.update(step=step, value=value, stale=0)
                ckpt.meta["stages"] = base_stages + [{"stage": stage, "steps": step, "epochs": epochs_at(step),
                                                      "split": cfg.split, "best_of_validation": True}]
                _record_prior(ckpt, cfg)
                save_checkpoint(ckpt, cfg.out / BEST, model=acc.unwrap_model(model))
            else:
                best["stale"] += 1
            acc.print(f"step {step}: valid {cfg.eval_metric} {value:.4f} (best {best['value']:.4f} at {best['step']})")
            stop[0] = float(cfg.patience is not None and best["stale"] >= cfg.patience)
            log.valid(step, value, metrics)
        return bool(acc.reduce(stop, reduction="sum").item() > 0)

    bar = tqdm(total=end, initial=start, disable=not (cfg.progress and acc.is_main_process), desc=stage)
    tick = time.perf_counter()
    for step in range(start, end):
        epoch, items = stream.at(step)
        batch = make_batch(ex, items, ckpt, cfg.max_positives, num_neg, all_sids, cfg.seed, epoch,
                           prior).to(acc.device)
        with acc.autocast():
            loss, stats = _loss(cfg, stage, model, ref, batch, tracker, acc, sid_vectors)
        acc.backward(loss)
        grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        row = {"step": done, "epoch": epochs_at(done),
               "loss": float(acc.reduce(loss.detach(), reduction="mean")), "lr": scheduler.get_last_lr()[0],
               "grad_norm": float(grad_norm),
               **{k: float(v) for k, v in stats.items()}}
        bar.update(1)
        if done % cfg.log_every == 0 or done == end:
            now = time.perf_counter()
            row["sessions_per_s"] = round(cfg.log_every * step_sessions / (now - tick), 2)
            tick = now
            log.log(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        stop = cfg.eval_every is not None and (done % cfg.eval_every == 0 or done == end) and validate(done)
        if done % cfg.save_every == 0 or done == end or stop:
            save(done)
        if on_step is not None:
            on_step(done, row)
        if stop:
            acc.print(f"early stop at step {done}: no better valid {cfg.eval_metric} in {cfg.patience} validations")
            break
    bar.close()
    log.close()
    return cfg.out / "model"


SEARCH_INDEX_RATIO = 1.0  # indexing examples per session on search data, when not given


def default_index_ratio(dataset, split: str = "train") -> float:
    """1 indexing example (item text -> SID) per session when the sessions carry queries: on search data the
    products of new queries are mostly never a training target, and only the item-text examples make them
    reachable; 0 for pure history data, where every target item appears in the histories."""
    queries = dataset.split(split)["query"].to_pylist()
    return SEARCH_INDEX_RATIO if any(q and q.strip() for q in queries) else 0.0


def request_prior(ex: Examples, dataset, split: str, index: SidIndex, weight: float) -> RequestPrior:
    """`RequestPrior` of every example of `ex` (rows of `split`)."""

    centroids = load_centroids(index)
    if len(centroids) != index.levels:
        raise RadgrError(f"index {index.root} has no RQ-KMeans centroids (built from given codes): "
                         "--index-prior / --negatives index need an index built from embeddings")
    return RequestPrior(centroids, request_vectors(ex, len(ex), dataset, split, index, centroids), weight)


def trained_prior(cfg: RunConfig) -> float:
    """The index-prior weight a run trains on top of: RadDPOConfig's `index_prior`; 0 for the other stages."""
    return getattr(cfg, "index_prior", 0.0)


def _record_prior(ckpt: Checkpoint, cfg: RunConfig) -> None:
    """A model trained on top of the index prior is served with it: the checkpoint says with which weight."""
    weight = trained_prior(cfg)
    if weight > 0:
        ckpt.meta["index_prior"] = weight


def _validation_metrics(cfg: RunConfig, ckpt, index: SidIndex, dataset, device) -> dict[str, float]:
    """Every headline metric (`cfg.eval_metric` among them) of the current weights on the first `eval_sessions`
    valid sessions (trie beam search, fused with the index prior the model is trained on)."""

    res = evaluate(ckpt, index, dataset, "valid", cfg.eval_width, 16, cfg.eval_sessions, str(device),
                   unconstrained=False, index_prior=trained_prior(cfg))
    return headline_metrics(res)


def _loss(cfg, stage, model, ref, batch: Batch, tracker, acc, sid_vectors: SidVectors | None = None
          ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The stage's loss on one packed batch (RDRW similarities from `sid_vectors` when given, else EOS states)."""
    need_hidden = tracker is not None and sid_vectors is None
    tok, hidden = candidate_logps(model, batch.packed, hidden=need_hidden, text_vectors=batch.text_vectors)
    pos_tok = tok[batch.pos_idx]
    if stage == "sft":
        return sft_loss(pos_tok, batch.pos_mask)
    neg_tok = tok[batch.neg_idx]
    if isinstance(cfg, RadDPOConfig):
        weights = None
        extra = {}
        if tracker is not None:
            reps = hidden if sid_vectors is None else sid_vectors(batch.packed.targets[:, :-1])
            sims = eos_similarity(reps[batch.pos_idx[:, 0]], reps[batch.neg_idx])
            weights = tracker.weights(sims, cfg.rdrw_lambda)  # from earlier pairs only, then add these
            tracker.update(acc.gather(sims.detach().contiguous()))
            extra = {"weight_mean": weights.mean()}
        prior = batch.cand_prior
        loss, stats = rad_dpo_loss(pos_tok, batch.pos_mask, neg_tok, batch.neg_lcp, weights, beta=cfg.beta,
                                   form=cfg.form, tlgd=cfg.tlgd, multi_label_sft=cfg.multi_label_sft,
                                   sft_weight=cfg.sft_weight,
                                   pos_offset=None if prior is None else prior[batch.pos_idx],
                                   neg_offset=None if prior is None else prior[batch.neg_idx])
        return loss, {**stats, **extra}
    if isinstance(cfg, DPOConfig):
        with torch.no_grad():
            ref_tok, _ = candidate_logps(ref, batch.packed, text_vectors=batch.text_vectors)
        return dpo_loss(pos_tok, batch.pos_mask, neg_tok, ref_tok[batch.pos_idx], ref_tok[batch.neg_idx], cfg.beta)
    if isinstance(cfg, SimPOConfig):
        return simpo_loss(pos_tok, batch.pos_mask, neg_tok, beta=cfg.beta, gamma=cfg.gamma)
    return orpo_loss(pos_tok, batch.pos_mask, neg_tok, lam=cfg.beta)

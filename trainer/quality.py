"""Quality experiments: every method from the same SFT checkpoint, several seeds (the tables:
`trainer.quality_report`; the rows: `trainer.variants`).

One experiment = one dataset + index. For each seed: one SFT run; from its checkpoint one
preference run per variant (same data, same number of steps); then `evaluate` on the test split.
Experiments whose datasets give SFT the same examples (`sft_fingerprint`: the denoising shares
differ only in their unclicked slots) can share one SFT run per seed (`sft_from`), so their
differences come from the preference stage alone; SFT checkpoints trained elsewhere (a converged
recipe, one per seed) can be given instead (`sft_checkpoints`). Each finished step leaves a file
(`train_done.json`, `eval.json`), so a killed or interrupted experiment continues where it
stopped when run again (training resumes from its last checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sid_index.atomic import atomic_file, write_json
from sid_index.data.schema import load_dataset
from sid_index.errors import RadgrError, make_config
from sid_index.index import load_index, require_index
from sid_index.trie import BEAM_WIDTH
from trainer.config import SEEDS, SFTConfig, pref_config
from trainer.evaluate import (
    EvalConfig,
    evaluate_models,
    evaluate_popular,
)
from trainer.loop import train
from trainer.model import META_FILE, resolve_checkpoint
from trainer.quality_report import aggregate, collect, markdown, plot_curves
from trainer.variants import PAPER_VARIANTS, POPULAR, VARIANTS, slug


class QualityConfig(BaseModel):
    """One experiment: a dataset + index, the variants, seeds and the settings shared by every run."""

    model_config = ConfigDict(extra="forbid")

    name: str
    data: Path
    index: Path
    out: Path
    seeds: list[int] = Field(default_factory=lambda: list(SEEDS), min_length=1)
    variants: list[str] = Field(default_factory=lambda: list(PAPER_VARIANTS))
    sft: dict[str, Any] = Field(default_factory=dict, description="SFTConfig options (not data/index/out/seed)")
    pref: dict[str, Any] = Field(default_factory=dict, description="preference options; each reaches the "
                                "variants whose method has it (trainer.config.pref_config)")
    eval: dict[str, Any] = Field(default_factory=dict, description="EvalConfig options (beam_width, max_sessions..)")
    device: str = "cpu"
    baseline: bool = Field(True, description=f"add the '{POPULAR}' row")
    sft_from: Path | None = Field(None, description="experiment folder whose finished seed<n>/sft runs to start "
                                  "from instead of training one (same SFT examples and index required)")
    sft_checkpoints: list[Path] = Field(default_factory=list, description="one SFT checkpoint per seed, in seed "
                                        "order, trained elsewhere (e.g. `make best-<name> SEED=<n>`): the sft row "
                                        "and every preference run's start")
    results: Path | None = Field(None, description="a second, durable home for every finished (seed, row) result "
                                 "(e.g. bench/results/grid/<name>, committed): each eval.json is copied there, and one "
                                 "found there is not run again, so a grid can be run one seed per machine or session")

    @model_validator(mode="after")
    def _one_sft_source(self) -> QualityConfig:
        if self.sft_checkpoints and self.sft_from is not None:
            raise ValueError("give sft_from or sft_checkpoints, not both")
        if self.sft_checkpoints and len(self.sft_checkpoints) != len(self.seeds):
            raise ValueError(f"{len(self.sft_checkpoints)} sft_checkpoints for {len(self.seeds)} seeds: one per seed")
        return self

    @field_validator("variants")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [x for x in v if x not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variants {unknown}; known: {list(VARIANTS)}")
        return v


def _same_settings(cfg, out: Path) -> None:
    """Refuse to reuse or resume a run in `out` that was started with other settings (a changed
    --set or preset would otherwise mix two experiments in one table)."""
    saved = out / "train_config.json"
    if saved.is_file():
        _refuse_changed(json.loads(saved.read_text()), cfg, {"stage", "resume", "progress", "index_ratio_used"}, out)


def _refuse_changed(was: dict[str, Any], cfg, ignore: set[str], where: Path) -> None:
    now = json.loads(cfg.model_dump_json())
    changed = sorted(k for k in (was.keys() | now.keys()) - ignore if was.get(k) != now.get(k))
    if changed:
        diffs = ", ".join(f"{k} {was.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise RadgrError(f"{where} was trained with other settings ({diffs}); use another --out or delete it")


def _same_eval(res: dict[str, Any], ev, path: Path) -> None:
    """Refuse an earlier result measured with another width, split or number of sessions."""
    total = res["sessions"] + res.get("not_evaluated", 0)
    want = {"width": ev.beam_width, "split": ev.split,
            "sessions": total if ev.max_sessions is None else min(total, ev.max_sessions)}
    changed = {k: (res[k], v) for k, v in want.items() if res[k] != v}
    if changed:
        diffs = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise RadgrError(f"{path} was measured with other eval settings ({diffs}); use another --out or delete it")


def _train_once(cfg, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Train unless `out/train_done.json` says it is done; resume a run that was interrupted.
    Returns that record: the checkpoint and the training seconds."""

    done = out / "train_done.json"
    _same_settings(cfg, out)
    if done.is_file():
        return json.loads(done.read_text())
    resume = (out / "model" / "trainer_state.pt").is_file()
    log(f"{'resuming' if resume else 'training'} {out}")
    start = time.perf_counter()
    path = train(cfg.model_copy(update={"resume": resume}))
    record = {"checkpoint": str(path), "seconds": time.perf_counter() - start, "resumed": resume}
    write_json(done, record)
    return record


def sft_fingerprint(data: Path) -> str:
    """A hash of everything SFT reads from a dataset: the catalog and each session's id, split, query,
    history, user features and positives (not its negatives). Equal fingerprints: the same SFT examples."""
    import pyarrow.parquet as pq

    h = hashlib.sha256()
    for name, columns in (("catalog.parquet", None),
                          ("sessions.parquet", ["session_id", "split", "query", "history", "user", "positives"])):
        path = Path(data) / name
        present = None if columns is None else [c for c in columns if c in pq.read_schema(path).names]  # user: optional
        h.update(json.dumps(pq.read_table(path, columns=present).to_pydict(), sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def finished_sft(folder: Path, seed: int) -> tuple[Path, dict[str, Any]]:
    """The finished SFT run of `seed` in an experiment folder and its training config."""
    run = Path(folder) / f"seed{seed}" / "sft"
    if not (run / "train_done.json").is_file():
        raise RadgrError(f"{run}: no finished SFT run to start from; run that experiment first")
    return run, json.loads((run / "train_config.json").read_text())


def _shared_sft(cfg: QualityConfig, seed: int, fingerprint: str) -> dict[str, Any]:
    """The finished SFT run of `seed` under cfg.sft_from, after checking it was trained on the same
    SFT examples and for the same index as this experiment."""
    run, trained = finished_sft(cfg.sft_from, seed)
    if sft_fingerprint(Path(trained["data"])) != fingerprint:
        raise RadgrError(f"{run} was trained on {trained['data']}, whose catalog or positives differ from {cfg.data}")
    require_index(load_index(trained["index"], verify=False).index_id, load_index(cfg.index, verify=False), str(run))
    return json.loads((run / "train_done.json").read_text())


def _given_sft(cfg: QualityConfig, seed: int) -> dict[str, Any]:
    """The SFT checkpoint given for `seed` (sft_checkpoints), after checking it was trained for this index."""
    path = resolve_checkpoint(cfg.sft_checkpoints[cfg.seeds.index(seed)])
    trained_for = json.loads((path / META_FILE).read_text()).get("index_id")
    require_index(trained_for, load_index(cfg.index, verify=False), str(path))
    return {"checkpoint": str(path), "seconds": None}


def with_overrides(options: dict[str, dict[str, Any]], assignments: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`stage.key=value` assignments (stage: sft, pref or eval; `key` may be dotted, e.g.
    sft.scratch.hidden_size=512; the value is read as JSON, else kept as text) applied to copies of
    the per-stage option dicts."""
    out = json.loads(json.dumps(options))
    for text in assignments:
        path, eq, raw = text.partition("=")
        stage, *keys = path.strip().split(".")
        if not eq or stage not in out or not keys or not all(keys):
            raise RadgrError(f"--set {text!r}: expected STAGE.KEY=VALUE with STAGE one of {sorted(out)}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        node = out[stage]
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise RadgrError(f"--set {text!r}: {key} is not a group of options")
        node[keys[-1]] = value
    return out


def _stage_configs(cfg: QualityConfig, seed: int, root: Path, sft_checkpoint: Path) -> dict[str, Any]:
    """The SFT, per-variant preference and eval configs of one seed; a bad option is one RadgrError line."""

    common = dict(data=cfg.data, index=cfg.index, device=cfg.device, progress=False)
    configs: dict[str, Any] = {"sft": make_config(SFTConfig, "sft", out=root / "sft", seed=seed, **common, **cfg.sft),
                               "eval": make_config(EvalConfig, "eval", model=[sft_checkpoint], index=cfg.index,
                                                   data=cfg.data, device=cfg.device,
                                                   **{"baselines": False, **cfg.eval})}
    for variant in cfg.variants:
        if VARIANTS[variant] is not None:
            configs[variant] = pref_config(variant, out=root / slug(variant), init=sft_checkpoint, seed=seed,
                                           **common, **cfg.pref, **VARIANTS[variant])
    return configs


# the keys of a preference run's config that name paths or machine state, not the experiment's settings
_NOT_SETTINGS = {"stage", "resume", "progress", "index_ratio_used", "out", "init", "data", "index", "device"}


def _result_path(folder: Path, seed: int, row: str) -> Path:
    return folder / f"seed{seed}" / slug(row) / "eval.json"


def _restore_results(cfg: QualityConfig, log: Callable[[str], None]) -> None:
    """Copy the results kept under cfg.results into cfg.out where out lacks them (a fresh machine or session)."""
    for seed in cfg.seeds:
        for row in rows_of(cfg):
            kept, here = _result_path(cfg.results, seed, row), _result_path(cfg.out, seed, row)
            if kept.is_file() and not here.is_file():
                here.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(kept, here)
                log(f"seed {seed} {row}: the result kept in {kept}")


def _keep(cfg: QualityConfig, seed: int, row: str, result: dict[str, Any]) -> None:
    write_json(_result_path(cfg.out, seed, row), result)
    if cfg.results is not None:
        write_json(_result_path(cfg.results, seed, row), result)


def _same_pref_settings(res: dict[str, Any], cfg, path: Path) -> None:
    """Refuse a result whose preference run was trained with other settings than this experiment's."""
    if res.get("train_config") is not None:  # absent: the sft row, or written before results carried them
        _refuse_changed(res["train_config"], cfg, _NOT_SETTINGS, path)


def run_quality(cfg: QualityConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and evaluate every (seed, variant) not done yet; return the aggregate (also written to out/)."""
    _stage_configs(cfg, cfg.seeds[0], cfg.out, cfg.out)  # every option checked before anything trains
    if cfg.results is not None:
        _restore_results(cfg, log)
    popular = None
    fingerprint = sft_fingerprint(cfg.data) if cfg.sft_from else None
    pending = [s for s in cfg.seeds if not all(_result_path(cfg.out, s, r).is_file() for r in rows_of(cfg))]
    given = {seed: _given_sft(cfg, seed) for seed in pending} if cfg.sft_checkpoints else {}  # checked first
    for seed in cfg.seeds:
        root = cfg.out / f"seed{seed}"
        if seed not in pending:  # every row done (perhaps on another machine): its SFT start is not needed
            configs = _stage_configs(cfg, seed, root, root)
            for row in rows_of(cfg):
                path = _result_path(cfg.out, seed, row)
                res = json.loads(path.read_text())
                _same_eval(res, configs["eval"], path)
                if row in configs:
                    _same_pref_settings(res, configs[row], path)
            continue
        if given:
            sft = given[seed]
        elif cfg.sft_from:
            sft = _shared_sft(cfg, seed, fingerprint)
        else:
            sft = _train_once(_stage_configs(cfg, seed, root, root)["sft"], root / "sft", log)
        configs = _stage_configs(cfg, seed, root, Path(sft["checkpoint"]))
        if cfg.baseline and not (root / slug(POPULAR) / "eval.json").is_file():
            popular = popular or _evaluate_popular(configs["eval"])  # the same for every seed
            _keep(cfg, seed, POPULAR, popular | {"variant": POPULAR, "seed": seed})
        for variant in cfg.variants:
            result = root / slug(variant) / "eval.json"
            trained = VARIANTS[variant] is not None
            if trained:
                _same_settings(configs[variant], root / slug(variant))
            if result.is_file():
                res = json.loads(result.read_text())
                _same_eval(res, configs["eval"], result)
                if trained:
                    _same_pref_settings(res, configs[variant], result)
                continue
            run = _train_once(configs[variant], root / slug(variant), log) if trained else sft
            res = evaluate_models(configs["eval"].model_copy(update={"model": [run["checkpoint"]]}), log=log)[0]
            res |= {"variant": variant, "seed": seed, "train_s": run.get("seconds")}
            _keep(cfg, seed, variant, res | ({"train_config": json.loads(configs[variant].model_dump_json())}
                                             if trained else {}))
            log(f"seed {seed} {variant}: SID R@128 {res['sid']['recall@128']:.4f}, MRR {res['sid']['mrr']:.4f}")
    return write_report(cfg)


def _evaluate_popular(ev) -> dict[str, Any]:
    return evaluate_popular(load_index(ev.index), load_dataset(ev.data), ev.split, ev.beam_width,
                            ev.max_sessions)


def rows_of(cfg: QualityConfig) -> list[str]:
    """The table's rows: the baseline, then the variants."""
    return ([POPULAR] if cfg.baseline else []) + cfg.variants


def write_report(cfg: QualityConfig) -> dict[str, Any]:
    """quality.json (every value), quality.md (the table), recall.png (curves) under cfg.out."""
    rows = aggregate(collect(cfg.out, rows_of(cfg), cfg.seeds))
    write_json(cfg.out / "quality.json", {"name": cfg.name, "config": json.loads(cfg.model_dump_json()),
                                          "rows": rows})
    with atomic_file(cfg.out / "quality.md", "w") as fh:
        fh.write(markdown(rows, cfg.name))
    if rows:
        plot_curves(rows, cfg.out / "recall.png", cfg.name)
    return rows


# Run sizes. "demo": what `make demo` trains (minutes per run on 2 CPUs); "real": the real datasets on CPU;
# "tiny": the tests. Each is (sft, pref, eval) options.
PRESETS: dict[str, tuple[dict, dict, dict]] = {
    "tiny": (
        {"steps": 3, "batch_size": 8, "lr": 3e-3,
         "scratch": {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "head_dim": 32,
                     "intermediate_size": 128, "tokenizer_vocab": 400}},
        {"steps": 2, "batch_size": 4, "num_negatives": 4, "rdrw_warmup": 4, "rdrw_window": 16},
        {"beam_width": 16, "max_sessions": 12, "batch_size": 4},
    ),
    "demo": (
        {"epochs": 3, "index_ratio": 0.5, "batch_size": 32, "lr": 3e-3},
        {"steps": 60, "batch_size": 16, "lr": 1e-4, "num_negatives": 16, "rdrw_warmup": 1024},
        {"beam_width": BEAM_WIDTH, "max_sessions": 300, "batch_size": 4},
    ),
    "real": (
        {"steps": 1200, "batch_size": 16, "lr": 2e-3, "index_ratio": 0.5},
        {"steps": 200, "batch_size": 8, "lr": 5e-4, "num_negatives": 16, "rdrw_warmup": 256},
        {"beam_width": BEAM_WIDTH, "max_sessions": 300, "batch_size": 4},
    ),
}



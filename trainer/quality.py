"""Quality experiments: every method from the same SFT checkpoint, several seeds, mean +- std tables.

One experiment = one dataset + index. For each seed: one SFT run; from its checkpoint one
preference run per variant (same data, same number of steps); then `evaluate` on the test split.
Experiments whose datasets give SFT the same examples (`sft_fingerprint`: the denoising shares
differ only in their unclicked slots) can share one SFT run per seed (`sft_from`), so their
differences come from the preference stage alone. Each finished step leaves a file
(`train_done.json`, `eval.json`), so a killed or interrupted experiment continues where it
stopped when run again (training resumes from its last checkpoint). `aggregate` turns the
per-seed results into a table: mean and sample standard deviation per metric, and, against SFT
and RAD-DPO, whether the difference is larger than the seed spread: the mean of the per-seed
differences (paired: a seed's runs share its SFT checkpoint) against twice its standard error.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sid_index.atomic import atomic_file, write_json
from sid_index.data.schema import load_dataset
from sid_index.errors import RadgrError, make_config
from sid_index.index import MANIFEST_FILE, load_index
from trainer.config import PrefConfig, SFTConfig
from trainer.evaluate import (
    HEADLINE_NAMES,
    POPULAR_SIDS,
    EvalConfig,
    bootstrap_ci,
    evaluate_models,
    evaluate_popular,
    paired_difference,
)
from trainer.loop import train
from trainer.model import META_FILE, resolve_checkpoint

# RAD-DPO's list-wise term in its two forms (trainer/losses.py), each row named by its form:
# the softmax-DPO form (ours; the default of `radgr train pref`) and the paper's eq. 7
RAD_DPO = "rad-dpo-softmax"  # the default form's row, the reference of the comparisons
RAD_FORMS = {RAD_DPO: "softmax", "rad-dpo-paper": "paper"}
# not in the paper: RDRW weights from the index's SID vectors instead of EOS states (bench/rdrw_signal.py)
SID_SIGNAL = f"{RAD_DPO}, RDRW on SID vectors"
ABLATIONS = {"w/o TLGD": {"tlgd": False}, "w/o RDRW": {"rdrw": False},
             "w/o multi-label SFT": {"multi_label_sft": False}}
# name -> PrefConfig switches (None: the SFT checkpoint itself)
VARIANTS: dict[str, dict[str, Any] | None] = {
    "sft": None,
    "dpo": {"method": "dpo"},
    "simpo": {"method": "simpo"},
    "orpo": {"method": "orpo"},
    **{f"{name} {ablation}".strip(): {"method": "rad-dpo", "form": form, **switches}
       for name, form in RAD_FORMS.items() for ablation, switches in {"": {}, **ABLATIONS}.items()},
    SID_SIGNAL: {"method": "rad-dpo", "rdrw_signal": "sid"},
}
# the rows of the paper's Table 1: what an experiment runs unless --variant says otherwise
PAPER_VARIANTS = [v for v in VARIANTS if v != SID_SIGNAL]
# (column, path in an eval result, format)
COLUMNS = [
    ("SID R@8", ("sid", "recall@8")), ("SID R@64", ("sid", "recall@64")), ("SID R@128", ("sid", "recall@128")),
    ("SID MRR", ("sid", "mrr")), ("item R@10", ("item", "recall@10")), ("item R@50", ("item", "recall@50")),
    ("item R@100", ("item", "recall@100")), ("item R@500", ("item", "recall@500")),
    ("item NDCG@10", ("item", "ndcg@10")), ("item MRR", ("item", "mrr")),
    ("invalid, free decode", ("unconstrained", "invalid_rate")), ("invalid, trie", ("constrained", "invalid_rate")),
    # synthetic data only: against every truly relevant exposed item (evaluate's "truth")
    ("truth SID R@128", ("truth", "recall@128")), ("truth SID MRR", ("truth", "mrr")),
]
KEY_METRICS = ("item R@10", "item NDCG@10", "SID MRR")  # the columns compared against SFT and RAD-DPO
POPULAR = POPULAR_SIDS  # the baseline row: one ranking for every request (evaluate_popular)


class QualityConfig(BaseModel):
    """One experiment: a dataset + index, the variants, seeds and the settings shared by every run."""

    model_config = ConfigDict(extra="forbid")

    name: str
    data: Path
    index: Path
    out: Path
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    variants: list[str] = Field(default_factory=lambda: list(PAPER_VARIANTS))
    sft: dict[str, Any] = Field(default_factory=dict, description="SFTConfig options (not data/index/out/seed)")
    pref: dict[str, Any] = Field(default_factory=dict, description="PrefConfig options shared by every variant")
    eval: dict[str, Any] = Field(default_factory=dict, description="EvalConfig options (beam_width, max_sessions..)")
    device: str = "cpu"
    baseline: bool = Field(True, description=f"add the '{POPULAR}' row")
    sft_from: Path | None = Field(None, description="experiment folder whose finished seed<n>/sft runs to start "
                                  "from instead of training one (same SFT examples and index required)")
    sft_checkpoints: list[Path] = Field(default_factory=list, description="one SFT checkpoint per seed, in seed "
                                        "order, trained elsewhere (e.g. `make best-<name> SEED=<n>`): the sft row "
                                        "and every preference run's start")

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


def slug(variant: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", variant.lower()).strip("-")


def _same_settings(cfg, out: Path) -> None:
    """Refuse to reuse or resume a run in `out` that was started with other settings (a changed
    --set or preset would otherwise mix two experiments in one table)."""
    saved = out / "train_config.json"
    if not saved.is_file():
        return
    ignore = {"stage", "resume", "progress", "index_ratio_used"}
    was = {k: v for k, v in json.loads(saved.read_text()).items() if k not in ignore}
    now = {k: v for k, v in json.loads(cfg.model_dump_json()).items() if k not in ignore}
    changed = sorted(k for k in was.keys() | now.keys() if was.get(k) != now.get(k))
    if changed:
        diffs = ", ".join(f"{k} {was.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise RadgrError(f"{out} was trained with other settings ({diffs}); use another --out or delete it")


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


def _index_id(index: Path) -> str:
    return json.loads((Path(index) / MANIFEST_FILE).read_text())["index_id"]


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
    if _index_id(trained["index"]) != _index_id(cfg.index):
        raise RadgrError(f"{run} was trained for index {trained['index']}, not {cfg.index}")
    return json.loads((run / "train_done.json").read_text())


def _given_sft(cfg: QualityConfig, seed: int) -> dict[str, Any]:
    """The SFT checkpoint given for `seed` (sft_checkpoints), after checking it was trained for this index."""

    path = resolve_checkpoint(cfg.sft_checkpoints[cfg.seeds.index(seed)])
    trained_for = json.loads((path / META_FILE).read_text()).get("index_id")
    if trained_for != _index_id(cfg.index):
        raise RadgrError(f"{path} was trained for index {trained_for}, not {cfg.index}")
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
            configs[variant] = make_config(PrefConfig, f"{variant}", out=root / slug(variant), init=sft_checkpoint,
                                           seed=seed, **common, **cfg.pref, **VARIANTS[variant])
    return configs


def run_quality(cfg: QualityConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and evaluate every (seed, variant) not done yet; return the aggregate (also written to out/)."""

    _stage_configs(cfg, cfg.seeds[0], cfg.out, cfg.out)  # every option checked before anything trains
    popular = None
    fingerprint = sft_fingerprint(cfg.data) if cfg.sft_from else None
    for seed in cfg.seeds:  # every given checkpoint checked before anything trains
        if cfg.sft_checkpoints:
            _given_sft(cfg, seed)
    for seed in cfg.seeds:
        root = cfg.out / f"seed{seed}"
        if cfg.sft_checkpoints:
            sft = _given_sft(cfg, seed)
        elif cfg.sft_from:
            sft = _shared_sft(cfg, seed, fingerprint)
        else:
            sft = _train_once(_stage_configs(cfg, seed, root, root)["sft"], root / "sft", log)
        configs = _stage_configs(cfg, seed, root, Path(sft["checkpoint"]))
        if cfg.baseline and not (root / slug(POPULAR) / "eval.json").is_file():
            popular = popular or _evaluate_popular(configs["eval"])  # the same for every seed
            write_json(root / slug(POPULAR) / "eval.json", popular | {"variant": POPULAR, "seed": seed})
        for variant in cfg.variants:
            result = root / slug(variant) / "eval.json"
            if VARIANTS[variant] is not None:
                _same_settings(configs[variant], root / slug(variant))
            if result.is_file():
                _same_eval(json.loads(result.read_text()), configs["eval"], result)
                continue
            run = sft if VARIANTS[variant] is None else _train_once(configs[variant], root / slug(variant), log)
            res = evaluate_models(configs["eval"].model_copy(update={"model": [run["checkpoint"]]}), log=log)[0]
            write_json(result, res | {"variant": variant, "seed": seed, "train_s": run.get("seconds")})
            log(f"seed {seed} {variant}: SID R@128 {res['sid']['recall@128']:.4f}, MRR {res['sid']['mrr']:.4f}")
    return write_report(cfg)


def _evaluate_popular(ev) -> dict[str, Any]:

    return evaluate_popular(load_index(ev.index), load_dataset(ev.data), ev.split, ev.beam_width,
                            ev.max_sessions)


def rows_of(cfg: QualityConfig) -> list[str]:
    """The table's rows: the baseline, then the variants."""
    return ([POPULAR] if cfg.baseline else []) + cfg.variants


def collect(out: Path, variants: Sequence[str], seeds: Sequence[int]) -> dict[str, list[dict]]:
    """The eval results on disk, per variant (seeds that have not run yet are missing)."""
    found: dict[str, list[dict]] = {}
    for v in variants:
        rows = []
        for s in seeds:
            f = out / f"seed{s}" / slug(v) / "eval.json"
            if f.is_file():
                rows.append(json.loads(f.read_text()))
        found[v] = rows
    return found


def _get(result: dict, path: tuple[str, str]) -> float:
    value = result.get(path[0], {}).get(path[1])
    return float("nan") if value is None else float(value)


def beyond_spread(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether the mean of the per-seed differences a[i] - b[i] is more than twice its standard error.

    Paired by seed: every preference run of a seed starts from that seed's SFT checkpoint, so the
    seed-to-seed spread of the SFT models is shared by both sides and cancels in the differences.
    """
    if len(a) != len(b) or len(a) < 2:
        return False
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    se = float(np.std(d, ddof=1)) / math.sqrt(len(d))
    diff = float(d.mean())
    return abs(diff) > 2 * se if se > 0 else diff != 0


def seed_mean_sessions(results: Sequence[dict], column: str) -> np.ndarray | None:
    """`column`'s per-session values averaged over the results' seeds (the same sessions in each); None when
    a result lacks them (no per-session values kept, or a metric without them) or the sessions differ."""
    level, key = dict(COLUMNS)[column]
    name = f"{level} {key}"
    per = [r.get("per_session") or {} for r in results]
    if not results or name not in HEADLINE_NAMES or not all(name in p and "session_ids" in p for p in per):
        return None
    if len({tuple(p["session_ids"]) for p in per}) != 1:
        return None
    return np.mean([np.asarray(p[name], dtype=float) for p in per], axis=0)


def aggregate(found: dict[str, list[dict]], refs: Sequence[str] = ("sft", RAD_DPO)) -> dict[str, Any]:
    """Per variant: seeds, mean and std of every column, the 95% bootstrap interval over sessions of the
    seed-averaged metric (`ci95`, where per-session values were kept), recall curves (mean), and the
    comparisons of KEY_METRICS against each variant of `refs`: the seed-paired difference (`beyond_spread`)
    and the session-paired interval of the seed-averaged difference (`lo`, `hi`, `clear`)."""
    rows: dict[str, Any] = {}
    for v, results in found.items():
        if not results:
            continue
        vals = {col: [_get(r, path) for r in results] for col, path in COLUMNS}
        curves = {}
        for level in ("sid", "item"):
            ks = sorted({int(k) for r in results for k in r.get("curves", {}).get(level, {})})
            curves[level] = {k: float(np.mean([r["curves"][level][str(k)] for r in results])) for k in ks}
        per_session = {c: seed_mean_sessions(results, c) for c, _ in COLUMNS}
        rows[v] = {
            "seeds": [r["seed"] for r in results],
            "train_s": [r["train_s"] for r in results if r.get("train_s") is not None],
            "eval_s": [r["wall_s"] for r in results if r.get("wall_s") is not None],
            "sessions": results[0].get("sessions"),
            "values": vals,
            "mean": {c: float(np.mean(x)) for c, x in vals.items()},
            "std": {c: float(np.std(x, ddof=1)) if len(x) > 1 else 0.0 for c, x in vals.items()},
            "ci95": {c: bootstrap_ci(x) for c, x in per_session.items() if x is not None},
            "curves": curves,
        }
    for v, row in rows.items():
        row["vs"] = {}
        for ref in refs:
            if ref in rows and ref != v:
                common = [s for s in row["seeds"] if s in rows[ref]["seeds"]]  # pairs: the same seed's runs
                mine = [r for r in found[v] if r["seed"] in common]
                theirs = [r for r in found[ref] if r["seed"] in common]
                row["vs"][ref] = {}
                for c in KEY_METRICS:
                    a = [row["values"][c][row["seeds"].index(s)] for s in common]
                    b = [rows[ref]["values"][c][rows[ref]["seeds"].index(s)] for s in common]
                    cmp = {"diff": float(np.mean(a) - np.mean(b)) if common else float("nan"),
                           "seeds": len(common), "beyond_spread": beyond_spread(a, b)}
                    sa, sb = seed_mean_sessions(mine, c), seed_mean_sessions(theirs, c)
                    if sa is not None and sb is not None and sa.shape == sb.shape:
                        d = paired_difference(sa, sb)
                        cmp |= {"lo": d["lo"], "hi": d["hi"], "clear": d["clear"]}
                    row["vs"][ref][c] = cmp
    return rows


def difference_text(cmp: dict[str, Any]) -> str:
    """A comparison as a cell: the difference, its session interval where known, * when it is beyond both the
    seed spread and the session interval (only the seed spread where no interval is known)."""
    if "lo" not in cmp:
        return f"{cmp['diff']:+.4f}{' *' if cmp['beyond_spread'] else ''}"
    sure = cmp["clear"] and (cmp["beyond_spread"] or cmp["seeds"] < 2)
    return f"{cmp['diff']:+.4f} [{cmp['lo']:+.4f}, {cmp['hi']:+.4f}]{' *' if sure else ''}"


def markdown(rows: dict[str, Any], title: str) -> str:
    # columns no result has (the truth columns on real data) are left out
    columns = [(c, p) for c, p in COLUMNS if any(not math.isnan(r["mean"][c]) for r in rows.values())]
    head = ["method", "seeds"] + [c for c, _ in columns] + [f"{m} vs SFT" for m in KEY_METRICS] + ["train min"]
    lines = [f"{title}: mean over seeds ± half its 95% bootstrap interval over sessions (± the std over seeds "
             "where no per-session values were kept). \"vs SFT\": the difference to the SFT row, each seed's runs "
             "paired with that seed's SFT checkpoint, [95% interval over sessions]; * when the interval excludes "
             "0 and the mean of the per-seed differences is beyond twice its standard error", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v, row in rows.items():
        cells = [v, str(len(row["seeds"]))]
        for c, _ in columns:
            fmt = "{:.2%}" if c.startswith("invalid") else "{:.4f}"
            if math.isnan(row["mean"][c]):  # not measured for this row (the baseline decodes nothing)
                cells.append("–")
                continue
            ci = row["ci95"].get(c)
            spread = (ci[1] - ci[0]) / 2 if ci is not None else row["std"][c] if len(row["seeds"]) > 1 else None
            cells.append(fmt.format(row["mean"][c]) + ("" if spread is None else f" ± {fmt.format(spread)}"))
        for m in KEY_METRICS:
            cmp = row["vs"].get("sft", {}).get(m)
            cells.append("–" if cmp is None else difference_text(cmp))
        cells.append(f"{np.mean(row['train_s']) / 60:.1f}" if row["train_s"] else "–")
        lines.append("| " + " | ".join(cells) + " |")
    seeded = {v: r for v, r in rows.items() if len(r["seeds"]) > 1}
    if seeded:
        lines += ["", "Spread over seeds (std of each seed's value): "
                  + "; ".join(f"{v} " + ", ".join(f"{m} {r['std'][m]:.4f}" for m in KEY_METRICS
                                                  if not math.isnan(r["std"][m]))
                              for v, r in seeded.items())]
    return "\n".join(lines) + "\n"


def plot_curves(rows: dict[str, Any], path: Path, title: str) -> None:
    """Recall vs K per method (SID and item level), means over seeds, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, level, label in ((axes[0], "sid", "SID"), (axes[1], "item", "item")):
        for v, row in rows.items():
            curve = row["curves"].get(level) or {}
            if curve:
                ks = sorted(curve)
                ax.plot(ks, [curve[k] for k in ks], marker="o", ms=3, label=v)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("K")
        ax.set_ylabel(f"{label} Recall@K")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


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
        {"beam_width": 128, "max_sessions": 300, "batch_size": 4},
    ),
    "real": (
        {"steps": 1200, "batch_size": 16, "lr": 2e-3, "index_ratio": 0.5},
        {"steps": 200, "batch_size": 8, "lr": 5e-4, "num_negatives": 16, "rdrw_warmup": 256},
        {"beam_width": 128, "max_sessions": 300, "batch_size": 4},
    ),
}


def denoise_report(out: Path, shares: Sequence[float], variants: Sequence[str], seeds: Sequence[int]) -> str:
    """One table over the pseudo-negative shares: rows (share, method), mean ± std of the key columns."""
    cols = ["SID R@8", "SID R@128", "SID MRR", "truth SID R@128", "truth SID MRR"]
    lines = ["| pseudo-negative share | method | seeds | " + " | ".join(cols) + " | SID MRR vs w/o RDRW |",
             "|---|---|---|" + "---|" * (len(cols) + 1)]
    no_rdrw = f"{RAD_DPO} w/o RDRW"
    table: dict[str, Any] = {}
    for share in shares:
        rows = aggregate(collect(out / f"share_{share:g}", variants, seeds), refs=(no_rdrw,))
        table[f"{share:g}"] = rows
        for v, row in rows.items():
            cells = [f"{share:.0%}", v, str(len(row["seeds"]))]
            cells += [f"{row['mean'][c]:.4f} ± {row['std'][c]:.4f}" for c in cols]
            cmp = row["vs"].get(no_rdrw, {}).get("SID MRR") if v == RAD_DPO else None
            cells.append("–" if cmp is None else f"{cmp['diff']:+.4f}{' *' if cmp['beyond_spread'] else ''}")
            lines.append("| " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    write_json(out / "denoise.json", {"shares": list(shares), "rows": table})
    with atomic_file(out / "denoise.md", "w") as fh:
        fh.write(md)
    return md

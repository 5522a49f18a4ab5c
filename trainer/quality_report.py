"""Tables of quality experiments: per method, the mean over seeds of every metric, its 95% interval over
sessions, and the comparison with SFT and RAD-DPO (paired by seed, and by session); recall curves; the
denoising table over pseudo-negative shares."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sid_index.atomic import atomic_file, write_json
from trainer.evaluate import HEADLINE_NAMES, bootstrap_ci, paired_difference
from trainer.variants import RAD_DPO, slug

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

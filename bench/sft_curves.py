"""Validation curves of several SFT runs side by side, on a common axis: training sessions seen.

    python bench/sft_curves.py --run "recipe (seed 0)=runs/best/amazon" --run small=runs/sweep/amazon/size-small \\
        --out bench/results/sft_curves_amazon.md --png bench/results/sft_curves_amazon.png

Each run folder is a `radgr train sft` output: its `validation.csv` (one row per validation), its
`train_config.json` (batch size, LR, model size) and its last checkpoint (parameter count, training time).
Runs with another batch size validate at other steps; sessions seen (step x batch) puts them on one axis.
The table: the run's settings, its validation metric at each point, its best value and where it was.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sid_index.atomic import atomic_file  # noqa: E402
from sid_index.errors import RadgrError  # noqa: E402


def parameter_count(model_dir: Path) -> int | None:
    """Parameters of the checkpoint's decoder, from its safetensors header (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    path = model_dir / "model.safetensors"
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="np") as fh:
            return sum(math.prod(fh.get_slice(name).get_shape()) for name in fh.keys())  # noqa: SIM118
    except SafetensorError as exc:
        raise RadgrError(f"{path}: not a safetensors file ({exc})") from exc


def read_run(name: str, folder: Path, metric: str) -> dict:
    """One run's settings and curve: [(sessions seen, value)], with its training time."""
    cfg_path, val_path = folder / "train_config.json", folder / "validation.csv"
    for path in (cfg_path, val_path):
        if not path.is_file():
            raise RadgrError(f"{path}: missing (is {folder} a `radgr train sft --eval-every` output?)")
    cfg = json.loads(cfg_path.read_text())
    with open(val_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and metric not in rows[0]:
        raise RadgrError(f"{val_path}: no column '{metric}' (columns: {', '.join(rows[0])})")
    curve = [(int(r["step"]) * int(cfg["batch_size"]), float(r[metric])) for r in rows if r.get(metric)]
    meta_path = folder / "model" / "radgr.json"
    stages = json.loads(meta_path.read_text()).get("stages", []) if meta_path.is_file() else []
    scratch = cfg.get("scratch") or {}
    return {"name": name, "folder": str(folder), "hidden": scratch.get("hidden_size"),
            "layers": scratch.get("num_layers"), "lr": cfg["lr"], "batch": cfg["batch_size"],
            "params": parameter_count(folder / "model"), "curve": curve,
            "train_min": stages[-1]["train_s"] / 60 if stages and stages[-1].get("train_s") else None}


def table(runs: list[dict], metric: str) -> str:
    points = sorted({seen for r in runs for seen, _ in r["curve"]})
    head = ["run", "hidden x layers", "parameters", "lr", "batch", *[f"{p / 1000:,.0f}k" for p in points],
            f"best {metric}", "at (sessions)", "train min"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        values = dict(r["curve"])
        best = max(r["curve"], key=lambda sv: (sv[1], -sv[0]), default=None)
        params = "-" if r["params"] is None else f"{r['params'] / 1e6:.1f}M"
        cells = [r["name"], f"{r['hidden']} x {r['layers']}", params,
                 f"{r['lr']:g}", str(r["batch"]), *[f"{values[p]:.4f}" if p in values else "-" for p in points],
                 "-" if best is None else f"**{best[1]:.4f}**", "-" if best is None else f"{best[0]:,}",
                 "-" if r["train_min"] is None else f"{r['train_min']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        if r["curve"]:
            seen, values = zip(*r["curve"], strict=True)
            ax.plot([s / 1000 for s in seen], values, marker="o", label=r["name"])
    ax.set_xlabel("training sessions seen (thousands)")
    ax.set_ylabel(f"valid {metric}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", required=True, metavar="NAME=FOLDER")
    ap.add_argument("--metric", default="item recall@10")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--png", type=Path)
    args = ap.parse_args(argv)
    runs = []
    for spec in args.run:
        name, sep, folder = spec.rpartition("=")
        if not sep or not name:
            ap.error(f"--run {spec!r}: expected NAME=FOLDER")
        try:
            runs.append(read_run(name, Path(folder), args.metric))
        except RadgrError as exc:
            ap.error(str(exc))
    command = shlex.join(["python", "bench/sft_curves.py", *(argv if argv is not None else sys.argv[1:])])
    text = (f"# SFT validation curves: {args.metric} against training sessions seen\n\n`{command}`\n\n"
            + table(runs, args.metric))
    with atomic_file(args.out, "w") as fh:
        fh.write(text)
    if args.png:
        plot(runs, args.metric, args.png)
    print(text, end="")


if __name__ == "__main__":
    main()

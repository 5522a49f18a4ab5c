"""How many preference steps? RAD-DPO and DPO from one SFT checkpoint, validated every few steps.

    python bench/pref_budget.py --init runs/best/amazon/annealed/best --data runs/amazon/data \\
        --index runs/amazon/index --out runs/grid/curve/amazon --markdown bench/results/pref_budget_amazon.md

Each method trains with the options `radgr bench quality --preset real` gives every preference run, changed
by the same --set pref.KEY=VALUE options the grid passes (only the step count and the validation differ),
validating the model alone on the first --eval-sessions valid
sessions every --eval-every steps (every headline metric lands in <run>/validation.csv). Step 0 is the SFT
checkpoint itself on the same sessions. The table: item R@10 and MRR and SID MRR against the step, and the
step count where validation stopped improving (the budget `make grid-<name>` uses for every method).
Resumable: run it again after an interruption and each run continues.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

METHODS = ("rad-dpo-softmax", "dpo")  # the paper's method (our default form) and the classic baseline
SHOWN = ("item recall@10", "item mrr", "sid mrr")  # the default --metrics: Amazon's headline first


def train_curve(args: argparse.Namespace, variant: str) -> Path:
    from sid_index.atomic import write_json
    from trainer.config import pref_config
    from trainer.loop import train
    from trainer.quality import PRESETS, with_overrides
    from trainer.variants import VARIANTS, slug

    out = args.out / slug(variant)
    if (out / "train_done.json").is_file():
        return out
    pref = with_overrides({"pref": PRESETS["real"][1]}, args.set or [])["pref"]
    opts = {**pref, **VARIANTS[variant], "steps": args.steps, "eval_every": args.eval_every,
            "eval_sessions": args.eval_sessions, "eval_metric": "item recall@10"}
    resume = (out / "model" / "trainer_state.pt").is_file()
    train(pref_config(variant, data=args.data, index=args.index, init=args.init, out=out, seed=args.seed,
                      progress=False, resume=resume, **opts))
    write_json(out / "train_done.json", {"steps": args.steps})
    return out


def start_row(args: argparse.Namespace) -> dict[str, float]:
    """The SFT checkpoint on the same valid sessions, as the runs validate (model alone)."""
    from sid_index.atomic import write_json
    from sid_index.data.schema import load_dataset
    from sid_index.index import load_index
    from trainer.evaluate import evaluate, headline_metrics
    from trainer.model import load_checkpoint

    path = args.out / "start.json"
    if path.is_file():
        return json.loads(path.read_text())
    res = evaluate(load_checkpoint(args.init), load_index(args.index), load_dataset(args.data), "valid", 128, 16,
                   args.eval_sessions, "cpu", unconstrained=False, index_prior=0.0)
    row = headline_metrics(res)
    write_json(path, row)
    return row


def read_curve(run: Path) -> list[dict[str, float]]:
    with open(run / "validation.csv", newline="") as fh:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def budget(curve: list[dict[str, float]], start: dict[str, float], metric: str) -> int:
    """The first step whose `metric` is the best of the curve (0: no step beat the SFT start)."""
    best = max([start[metric]] + [r[metric] for r in curve])
    return 0 if start[metric] >= best else int(next(r["step"] for r in curve if r[metric] == best))


def table(curves: dict[str, list[dict[str, float]]], start: dict[str, float], shown: Sequence[str] = SHOWN) -> str:
    head = ["step"] + [f"{m} {s}" for m in curves for s in shown]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    steps = sorted({int(r["step"]) for c in curves.values() for r in c})
    lines.append("| 0 (SFT) | " + " | ".join(f"{start[s]:.4f}" for _ in curves for s in shown) + " |")
    for step in steps:
        cells = []
        for curve in curves.values():
            row = next((r for r in curve if int(r["step"]) == step), None)
            cells += ["-" if row is None else f"{row[s]:.4f}" for s in shown]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines += ["", "Best step per method (0: none beat the SFT start):", ""]
    lines += [f"- {m}: " + ", ".join(f"{s} at {budget(c, start, s)}" for s in shown) for m, c in curves.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--init", type=Path, required=True, help="the SFT checkpoint every run starts from")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--index", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="one run folder per method under it")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-sessions", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", help="pref.KEY=VALUE: as radgr bench quality --set (repeatable)")
    p.add_argument("--metrics", default=",".join(SHOWN),
                   help="validation columns shown, comma-separated (e.g. Home Depot's 'item recall@100' first)")
    p.add_argument("--markdown", type=Path)
    args = p.parse_args(argv)
    shown = [m.strip() for m in args.metrics.split(",") if m.strip()]
    from trainer.config import HEADLINE_NAMES

    if unknown := [m for m in shown if m not in HEADLINE_NAMES]:
        p.error(f"--metrics: not a validation column: {', '.join(unknown)} (columns: {', '.join(HEADLINE_NAMES)})")
    from sid_index.atomic import atomic_file

    start = start_row(args)
    curves = {m: read_curve(train_curve(args, m)) for m in METHODS}
    text = (f"Preference budget: validation (first {args.eval_sessions:,} valid sessions, model alone) against "
            f"the step, from {args.init}.\n\n`{shlex.join(['python', *sys.argv])}`\n\n" + table(curves, start, shown))
    print(text, end="")
    if args.markdown:
        with atomic_file(args.markdown, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()

"""How much of a training batch can each RAD-DPO ablation change? Counted on the data, no model needed.

    python bench/ablation_reach.py --dataset amazon runs/amazon/data runs/amazon/index \\
        --dataset homedepot runs/homedepot/data runs/homedepot/index --out bench/results/ablation_reach.md

Two of the paper's ablations switch off something that only exists on some data:
- *w/o multi-label SFT* trains the SFT term on y_w* alone instead of every positive: on a session with one
  positive the two objectives are the same function, so the ablation cannot differ there.
- *w/o TLGD* lets the gradient through the SID tokens a negative shares with y_w* (its common prefix): a
  negative that shares no prefix has nothing to detach.
For the first `--sessions` train sessions, with the negatives the training loop draws at epoch 0
(`trainer.loop.make_batch`: exposed negatives first, then random catalog SIDs; positives capped at
`--max-positives`), this counts the sessions with more than one positive and the negatives (and SID tokens)
inside a prefix shared with y_w*. A share near 0 means the ablation's row is, by construction, the full
method's row.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sid_index.atomic import atomic_file  # noqa: E402
from sid_index.data.schema import load_dataset  # noqa: E402
from sid_index.index import load_index  # noqa: E402
from trainer.config import PrefConfig  # noqa: E402
from trainer.data import build_examples, sample_negatives, session_rng  # noqa: E402
from trainer.losses import common_prefix  # noqa: E402


def reach(data: Path, index_dir: Path, sessions: int | None, num_neg: int, max_pos: int, seed: int) -> dict:
    """The counts of one dataset (see the module docstring)."""
    index = load_index(index_dir)
    ex = build_examples(load_dataset(data), index, None, "train")
    all_sids = index.trie.sids()
    n = len(ex) if sessions is None else min(sessions, len(ex))
    multi = exposed = shared = shared_tokens = 0
    positives = 0
    for i in range(n):
        pos = ex.pos_codes[i][:max_pos]
        positives += len(pos)
        multi += len(pos) > 1
        neg = sample_negatives(ex.neg_codes[i], ex.pos_codes[i], all_sids, num_neg, session_rng(seed, 0, i))
        exposed += min(len(ex.neg_codes[i]), num_neg)
        lcp = common_prefix(torch.from_numpy(neg), torch.from_numpy(pos[:1])).numpy()  # as the loop: with y_w*
        shared += int((lcp > 0).sum())
        shared_tokens += int(lcp.sum())
    negs = n * num_neg
    return {"sessions": n, "positives_per_session": positives / n, "multi_positive_share": multi / n,
            "exposed_share": exposed / negs, "shared_prefix_share": shared / negs,
            # every candidate's reward counts its L SID tokens and EOS (|y| = L + 1)
            "shared_token_share": shared_tokens / (negs * (index.levels + 1))}


def main(argv: list[str] | None = None) -> None:
    defaults = PrefConfig.model_fields
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", nargs=3, action="append", required=True, metavar=("NAME", "DATA", "INDEX"))
    ap.add_argument("--sessions", type=int, default=None, help="first N train sessions (default: all)")
    ap.add_argument("--num-negatives", type=int, default=defaults["num_negatives"].default)
    ap.add_argument("--max-positives", type=int, default=defaults["max_positives"].default)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    rows = [(name, reach(Path(d), Path(i), args.sessions, args.num_negatives, args.max_positives, args.seed))
            for name, d, i in args.dataset]
    lines = ["# What the ablations w/o multi-label SFT and w/o TLGD can change, per dataset", "",
             f"`python {' '.join(shlex.quote(a) for a in (['bench/ablation_reach.py'] + (argv or sys.argv[1:])))}`",
             "", f"Train sessions, {args.num_negatives} negatives each as the training loop draws them at epoch 0, "
             f"positives capped at {args.max_positives}.", "",
             "| dataset | sessions | positives / session | sessions with > 1 positive (multi-label SFT differs) "
             "| negatives exposed (not random) | negatives sharing a prefix with y_w* (TLGD acts) "
             "| negative tokens detached by TLGD (of L + EOS) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['sessions']:,} | {r['positives_per_session']:.2f} | "
                     f"{r['multi_positive_share']:.1%} | {r['exposed_share']:.1%} | {r['shared_prefix_share']:.1%} | "
                     f"{r['shared_token_share']:.2%} |")
    text = "\n".join(lines) + "\n"
    with atomic_file(args.out, "w") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()

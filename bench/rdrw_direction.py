"""Which way does RDRW push, in each form of RAD-DPO's list-wise term? Measured on real training batches.

    python bench/rdrw_direction.py --model runs/best/homedepot/best --data runs/homedepot/data \\
        --index runs/homedepot/index --out bench/results/rdrw_direction_homedepot.md

RDRW (paper eq. 5-7) gives a negative whose EOS hidden state is close to y_w*'s a weight below 1: "likely a
pseudo-negative, push it down less". For the first `--sessions` train sessions, with the negatives and
packing of the training loop's epoch 0 (`trainer.loop.make_batch`: the session's exposed negatives first,
then random catalog SIDs), this takes each negative's reward r_j = log pi(y_j|x) / |y| and EOS similarity
from the checkpoint, the eq. 6 weights from the quartiles of all these similarities (RDRW's window after its
warm-up), and then, for each form, the push on each negative: dL_PL / dr_j, by autograd through
`trainer.losses.rad_dpo_loss` (positive: a descent step lowers r_j), with those weights and with every
weight 1. Reported per similarity quartile (Q4: weight 0.5, the likeliest pseudo-negatives; Q1: weight 1)
and per source (exposed / random): the mean push with and without weights and their ratio. Softening, as
RDRW means it, is a ratio below 1 on the down-weighted negatives.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sid_index.atomic import atomic_file  # noqa: E402
from sid_index.data.schema import load_dataset  # noqa: E402
from sid_index.index import load_index  # noqa: E402
from trainer.data import build_examples, embed_prompt_texts, sample_negatives, session_rng  # noqa: E402
from trainer.loop import make_batch  # noqa: E402
from trainer.losses import rad_dpo_loss  # noqa: E402
from trainer.model import load_checkpoint  # noqa: E402
from trainer.packing import candidate_logps  # noqa: E402
from trainer.rdrw import eos_similarity, rdrw_weight  # noqa: E402

FORMS = ("softmax", "paper")


def pushes(r_w: torch.Tensor, r_l: torch.Tensor, weights: torch.Tensor | None, form: str, beta: float
           ) -> torch.Tensor:
    """dL_PL / dr_j of each negative [S, N], for rewards r_w [S] and r_l [S, N], through `rad_dpo_loss` itself
    (each reward enters as a one-token sequence, so r = its log-prob; L_SFT does not involve the negatives)."""
    rl = r_l.detach().double().clone().requires_grad_(True)
    pos = r_w.detach().double()[:, None, None]
    loss, _ = rad_dpo_loss(pos, torch.ones(len(r_w), 1, dtype=torch.bool), rl[..., None],
                           torch.zeros_like(rl, dtype=torch.long), weights, beta=beta, form=form, tlgd=False)
    (grad,) = torch.autograd.grad(loss, rl)
    return grad * len(r_w)  # the loss is a mean over sessions: per-session gradients


@torch.no_grad()
def rewards_and_similarities(ckpt, ex, items: list[int], num_neg: int, all_sids: np.ndarray, seed: int,
                             batch_size: int) -> dict[str, np.ndarray]:
    """Per session: r_w [S], and per negative r_j, EOS cosine to y_w* and whether it was exposed [S, N]."""
    ckpt.model.eval()
    out: dict[str, list] = {"r_w": [], "r_l": [], "sim": [], "exposed": []}
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        batch = make_batch(ex, chunk, ckpt, 1, num_neg, all_sids, seed, 0)
        tok, hidden = candidate_logps(ckpt.model, batch.packed, hidden=True, text_vectors=batch.text_vectors)
        t = tok.shape[-1]
        out["r_w"].append((tok[batch.pos_idx[:, 0]].sum(-1) / t).numpy())
        out["r_l"].append((tok[batch.neg_idx].sum(-1) / t).numpy())
        out["sim"].append(eos_similarity(hidden[batch.pos_idx[:, 0]], hidden[batch.neg_idx]).numpy())
        for i in chunk:  # make_batch's own draw, again: which of its negatives the session exposed
            shown = {tuple(c) for c in ex.neg_codes[i].tolist()}
            negs = sample_negatives(ex.neg_codes[i], ex.pos_codes[i], all_sids, num_neg, session_rng(seed, 0, i))
            out["exposed"].append([tuple(c) in shown for c in negs.tolist()])
    return {k: np.concatenate(v) if k != "exposed" else np.asarray(v, dtype=bool) for k, v in out.items()}


def direction(values: dict[str, np.ndarray], betas: dict[str, float], lam: float) -> dict:
    """Per form: the mean push per group with RDRW's weights and with all weights 1, and their ratio."""
    sim = torch.as_tensor(values["sim"], dtype=torch.float64)
    q25, q50, q75 = (float(q) for q in np.quantile(values["sim"], [0.25, 0.5, 0.75]))
    weights = rdrw_weight(sim, q25, q50, q75, lam)
    quartile = np.digitize(values["sim"], [q25, q50, q75])  # 0..3
    groups = {f"Q{q + 1} similarity": quartile == q for q in range(4)}
    groups |= {"exposed": values["exposed"], "random": ~values["exposed"], "all": np.ones_like(values["exposed"])}
    r_w, r_l = torch.as_tensor(values["r_w"]), torch.as_tensor(values["r_l"])
    out = {"quartiles": [q25, q50, q75], "weights": {g: float(weights.numpy()[m].mean()) if m.any() else None
                                                      for g, m in groups.items()}, "forms": {}}
    for form in FORMS:
        with_w = pushes(r_w, r_l, weights, form, betas[form]).numpy()
        without = pushes(r_w, r_l, None, form, betas[form]).numpy()
        out["forms"][form] = {"beta": betas[form], "groups": {
            g: {"negatives": int(m.sum()), "push": float(with_w[m].mean()), "push_w1": float(without[m].mean()),
                "ratio": float(with_w[m].mean() / without[m].mean())}
            for g, m in groups.items() if m.any()}}
    return out


def markdown(res: dict, header: str) -> str:
    lines = [header, "", "| form | group | negatives | mean weight | push, RDRW weights | push, weights 1 | ratio |",
             "|---|---|---|---|---|---|---|"]
    for form, r in res["forms"].items():
        for g, v in r["groups"].items():
            lines.append(f"| {form} (beta {r['beta']:g}) | {g} | {v['negatives']:,} | {res['weights'][g]:.3f} | "
                         f"{v['push']:.3e} | {v['push_w1']:.3e} | {v['ratio']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="the checkpoint preference training starts from")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--sessions", type=int, default=1024, help="the first N train sessions")
    ap.add_argument("--num-negatives", type=int, default=16)
    ap.add_argument("--beta-softmax", type=float, default=1.0)
    ap.add_argument("--beta-paper", type=float, default=1.0)
    ap.add_argument("--rdrw-lambda", type=float, default=12.0)
    ap.add_argument("--seed", type=int, default=0, help="the training seed whose epoch-0 negatives are drawn")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", type=Path, help="write the markdown table here (and .json beside it)")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    ckpt = load_checkpoint(args.model, dtype=torch.float32)
    index, dataset = load_index(args.index), load_dataset(args.data)
    ex = build_examples(dataset, index, ckpt.prompts, "train")
    embed_prompt_texts(ex, ckpt.text_model)
    items = list(range(min(args.sessions, len(ex))))
    values = rewards_and_similarities(ckpt, ex, items, args.num_negatives, index.trie.sids().astype(np.int64),
                                      args.seed, args.batch_size)
    res = direction(values, {"softmax": args.beta_softmax, "paper": args.beta_paper}, args.rdrw_lambda)
    res |= {"model": str(args.model), "sessions": len(items), "margin": float((values["r_w"][:, None]
                                                                                - values["r_l"]).mean())}
    command = "python bench/rdrw_direction.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    header = (f"# RDRW's direction in each form: {args.model}, {len(items):,} train sessions x "
              f"{args.num_negatives} negatives\n\n`{command}`\n\nReward margin r_w - r_j (per token, mean): "
              f"{res['margin']:+.3f}. Similarity quartiles: " + ", ".join(f"{q:.3f}" for q in res["quartiles"]))
    table = markdown(res, header)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(args.out, "w") as fh:
            fh.write(table)
        with atomic_file(args.out.with_suffix(".json"), "w") as fh:
            json.dump(res, fh, indent=1)
    return res


if __name__ == "__main__":
    main()

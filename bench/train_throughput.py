"""Training-step throughput: packed RAD-DPO step vs one forward pass per candidate.

    python bench/train_throughput.py                                  # CPU, demo-size model, N = 4, 16, 64
    python bench/train_throughput.py --device cuda --model-size 0.6b --dtype bfloat16

Same random-weight Qwen3ForCausalLM, same synthetic sessions for every method: a prompt of
about `--prompt-len` random token ids (query + history SIDs; lengths drawn in
[prompt-len - 8, prompt-len], so prompts are left-padded as in training), 2 positives and N
negatives of 3 SID tokens each (+ EOS as the last target); a quarter of the negatives share
the first two SID tokens with the top positive, a quarter the first one, the rest are random.

One timed step = build the batch tensors, forward, RAD-DPO loss (softmax form, TLGD, RDRW
weights from EOS hidden states with a warmed-up quartile tracker), backward, grad clipping,
AdamW step, exactly as `trainer.loop` does. Methods:

  packed         `pack` + `candidate_logps(..., hidden=True)`: the prompt and all candidates
                 of a session in one row (block-diagonal mask), one forward per batch.
  per-candidate  prompt + candidate + EOS as its own sequence, one forward each in a Python
                 loop; the graphs of all candidates are kept for the list-wise loss.
  padded         TRL-style concatenated forward: every candidate its own row with the prompt
                 repeated, all in one left-padded batch.
  dpo            DPO over all (positive, negative) pairs against a frozen reference model
                 (a second copy of the weights, forward under no_grad), both packed, as
                 `trainer.loop._loss` does for `radgr train dpo`.

Every method computes logits only where targets are predicted (`logits_to_keep`) and log-probs
as logit[target] - logsumexp, so the comparison isolates how candidates are laid out.
Before timing, the losses of packed, per-candidate and padded are checked to agree in float32
(|diff| <= 1e-4); the first (warm-up) step of every configuration also reports its loss.

Peak memory: on CUDA, `torch.cuda.max_memory_allocated` (reset before each configuration);
on CPU every configuration runs in a fresh subprocess and reports RSS (ru_maxrss). "step" is
the peak above what was resident just before the first step (activations, gradients, transient
buffers); "total" is the peak above the process before the model was built (adds the weights,
AdamW state and, for DPO, the reference model).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.memory import maxrss_mb, rss_mb  # noqa: E402
from trainer.losses import common_prefix, dpo_loss, rad_dpo_loss  # noqa: E402
from trainer.packing import candidate_logps, pack  # noqa: E402
from trainer.rdrw import QuantileTracker, eos_similarity  # noqa: E402

# Qwen3 shapes; vocab = BPE vocabulary + one token per code of every SID level.
MODEL_SIZES = {
    "tiny": dict(hidden=64, layers=2, heads=2, kv=1, head_dim=32, inter=128, bpe=256, codebooks=(8, 8, 8)),
    "demo": dict(hidden=256, layers=4, heads=4, kv=2, head_dim=64, inter=768, bpe=4096, codebooks=(32, 32, 32)),
    "0.6b": dict(hidden=1024, layers=28, heads=16, kv=8, head_dim=128, inter=3072, bpe=151936,
                 codebooks=(8192, 4096, 2048)),
    "1.7b": dict(hidden=2048, layers=28, heads=16, kv=8, head_dim=128, inter=6144, bpe=151936,
                 codebooks=(8192, 4096, 2048)),
}
EOS, PAD = 0, 1  # special tokens at the start of the BPE range
N_POS = 2
METHODS = ("packed", "per-candidate", "padded")
CHECK_ATOL = 1e-4  # float32 loss agreement between the three layouts
LR, MAX_GRAD_NORM, RAD_BETA, DPO_BETA = 1e-4, 1.0, 1.0, 0.1


# ---------------------------------------------------------------- model and data


def build_model(size: str, device: str, dtype: torch.dtype, seed: int = 0):
    s = MODEL_SIZES[size]
    config = Qwen3Config(
        vocab_size=s["bpe"] + sum(s["codebooks"]), hidden_size=s["hidden"], intermediate_size=s["inter"],
        num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["kv"],
        head_dim=s["head_dim"], max_position_embeddings=1024, tie_word_embeddings=True,
        eos_token_id=EOS, pad_token_id=PAD, bos_token_id=None,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen3ForCausalLM(config)
    return model.to(dtype)


@dataclass
class Sessions:
    prompts: list[list[int]]
    cands: list[np.ndarray]  # [N_POS + N, L] token ids per session, positives first (top positive at 0)
    pos_idx: torch.Tensor  # [S, N_POS] candidate index in the global order (session by session)
    pos_mask: torch.Tensor
    neg_idx: torch.Tensor  # [S, N]
    neg_lcp: torch.Tensor  # [S, N] common prefix of each negative with the top positive

    def to(self, device) -> Sessions:
        return Sessions(self.prompts, self.cands, self.pos_idx.to(device), self.pos_mask.to(device),
                        self.neg_idx.to(device), self.neg_lcp.to(device))


def make_sessions(size: str, n_sessions: int, n_neg: int, prompt_len: int, seed: int = 0) -> Sessions:
    s = MODEL_SIZES[size]
    books = s["codebooks"]
    offsets = s["bpe"] + np.concatenate([[0], np.cumsum(books)[:-1]])
    rng = np.random.default_rng([seed, n_neg])

    def random_code() -> np.ndarray:
        return np.array([rng.integers(k) for k in books])

    prompts, cands = [], []
    for _ in range(n_sessions):
        p = int(rng.integers(max(1, prompt_len - 8), prompt_len + 1))
        prompts.append(rng.integers(2, s["bpe"], size=p).tolist())
        top = random_code()
        codes = [top]
        for i in range(1, N_POS + n_neg):
            # second positive: a sibling under the first level; negatives: a quarter share two
            # levels with the top positive, a quarter one level, the rest are random
            share = 1 if i < N_POS else (2 if i % 4 == 0 else 1 if i % 4 == 1 else 0)
            c = random_code()
            c[:share] = top[:share]
            if np.array_equal(c, top):
                c[-1] = (c[-1] + 1) % books[-1]
            codes.append(c)
        cands.append(np.stack(codes).astype(np.int64) + offsets)
    c_per = N_POS + n_neg
    base = torch.arange(n_sessions)[:, None] * c_per
    pos_idx = base + torch.arange(N_POS)[None]
    neg_idx = base + N_POS + torch.arange(n_neg)[None]
    flat = torch.from_numpy(np.concatenate(cands))
    neg_lcp = common_prefix(flat[neg_idx], flat[pos_idx[:, 0]][:, None, :])
    return Sessions(prompts, cands, pos_idx, torch.ones_like(pos_idx, dtype=torch.bool), neg_idx, neg_lcp)


def warm_tracker(seed: int = 0) -> QuantileTracker:
    """A tracker past its warm-up, so RDRW weights are computed (not all 1) from the first timed step."""
    tracker = QuantileTracker(warmup=4096, window=4096)
    tracker.update(torch.from_numpy(np.random.default_rng(seed).beta(8, 2, 4096)).float())
    return tracker


# ---------------------------------------------------------------- the three layouts


def logps_packed(model, sess: Sessions, device, hidden: bool = True):
    packed = pack(sess.prompts, sess.cands, EOS, PAD).to(device)
    return candidate_logps(model, packed, hidden=hidden)


def _tail_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [R, L+1, V] predicting targets [R, L+1] -> per-token log-probs, as candidate_logps takes them."""
    picked = logits.gather(-1, targets[..., None])[..., 0].float()
    return picked - torch.logsumexp(logits.float(), dim=-1)


def logps_per_candidate(model, sess: Sessions, device, hidden: bool = True):
    """One forward pass per candidate: prompt + candidate + EOS alone, default positions and causal mask."""
    toks, hids = [], []
    for prompt, cands in zip(sess.prompts, sess.cands, strict=True):
        for cand in cands:
            seq = torch.tensor([*prompt, *cand.tolist(), EOS], device=device)[None]
            n = len(cand) + 1  # targets: the SID tokens, then EOS
            out = model(input_ids=seq, logits_to_keep=n + 1, output_hidden_states=hidden, use_cache=False)
            toks.append(_tail_logps(out.logits[:, :n], seq[:, -n:]))
            if hidden:
                hids.append(out.hidden_states[-1][:, -2])  # last SID token: the position that predicts EOS
    return torch.cat(toks), (torch.cat(hids) if hidden else None)


def logps_padded(model, sess: Sessions, device, hidden: bool = True):
    """TRL-style: every candidate its own row (prompt repeated), left-padded, one forward for the batch."""
    rows = [[*prompt, *cand.tolist(), EOS] for prompt, cands in zip(sess.prompts, sess.cands, strict=True)
            for cand in cands]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
    n = sess.cands[0].shape[1] + 1
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=n + 1,
                output_hidden_states=hidden, use_cache=False)
    tok = _tail_logps(out.logits[:, :n], ids[:, -n:])
    return tok, (out.hidden_states[-1][:, -2] if hidden else None)


LAYOUTS = {"packed": logps_packed, "per-candidate": logps_per_candidate, "padded": logps_padded}


def rad_dpo_step_loss(tok, hid, sess: Sessions, tracker: QuantileTracker) -> torch.Tensor:
    """As trainer.loop._loss with method rad-dpo: RDRW weights from earlier pairs, then TLGD + softmax form."""
    sims = eos_similarity(hid[sess.pos_idx[:, 0]], hid[sess.neg_idx])
    weights = tracker.weights(sims)
    tracker.update(sims.detach())
    loss, _ = rad_dpo_loss(tok[sess.pos_idx], sess.pos_mask, tok[sess.neg_idx], sess.neg_lcp, weights,
                           beta=RAD_BETA, form="softmax", tlgd=True)
    return loss


def loss_fn(method: str, model, ref, sess: Sessions, tracker, device) -> torch.Tensor:
    if method == "dpo":
        tok, _ = logps_packed(model, sess, device, hidden=False)
        with torch.no_grad():
            ref_tok, _ = logps_packed(ref, sess, device, hidden=False)
        loss, _ = dpo_loss(tok[sess.pos_idx], sess.pos_mask, tok[sess.neg_idx], ref_tok[sess.pos_idx],
                           ref_tok[sess.neg_idx], beta=DPO_BETA)
        return loss
    tok, hid = LAYOUTS[method](model, sess, device)
    return rad_dpo_step_loss(tok, hid, sess, tracker)


# ---------------------------------------------------------------- measuring


def check_agreement(args) -> dict:
    """float32, no update: the three layouts give the same loss (and log-probs, EOS hidden states)."""
    device, n = args.device, args.negatives[0]
    model = build_model(args.model_size, device, torch.float32, args.seed)
    sess = make_sessions(args.model_size, args.batch_size, n, args.prompt_len, args.seed).to(device)
    out = {}
    with torch.no_grad():
        for m in METHODS:
            tok, hid = LAYOUTS[m](model, sess, device)
            out[m] = (float(rad_dpo_step_loss(tok, hid, sess, warm_tracker(args.seed))), tok, hid)
    ref_loss, ref_tok, ref_hid = out["packed"]
    res = {"negatives": n, "atol": CHECK_ATOL, "loss": {m: v[0] for m, v in out.items()},
           "max_loss_diff": max(abs(v[0] - ref_loss) for v in out.values()),
           "max_logp_diff": max(float((v[1] - ref_tok).abs().max()) for v in out.values()),
           "max_hidden_diff": max(float((v[2] - ref_hid).abs().max()) for v in out.values())}
    res["ok"] = res["max_loss_diff"] <= CHECK_ATOL
    del model
    return res


def measure(cfg: dict) -> dict:
    """One configuration: warm-up step, then `repeats` timed steps; speed and peak memory."""
    device, dtype = cfg["device"], getattr(torch, cfg["dtype"])
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        mem0 = torch.cuda.memory_allocated() / 2**20
    else:
        mem0 = rss_mb()
    model = build_model(cfg["model_size"], device, dtype, cfg["seed"]).train()
    ref = None
    if cfg["method"] == "dpo":
        ref = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    # allocate AdamW state now (lr 0: weights unchanged) so it counts as resident, not as step memory
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.param_groups[0]["lr"] = 0.0
    opt.step()
    opt.param_groups[0]["lr"] = LR
    opt.zero_grad(set_to_none=True)
    sess = make_sessions(cfg["model_size"], cfg["batch_size"], cfg["negatives"], cfg["prompt_len"], cfg["seed"])
    sess = sess.to(device)
    tracker = warm_tracker(cfg["seed"])
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    phases: list[tuple[float, float, float]] = []

    def step() -> float:
        t0 = time.perf_counter()
        loss = loss_fn(cfg["method"], model, ref, sess, tracker, device)
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        phases.append((t1 - t0, t2 - t1, time.perf_counter() - t2))
        return float(loss.detach())

    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = rss_mb()
    first_loss = step()  # warm-up; weights are still the initial ones, so its loss is comparable across methods
    sync()
    times: list[float] = []
    while len(times) < cfg["repeats"] and (not times or sum(times) < cfg["max_seconds"]):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else maxrss_mb()
    step_s = statistics.median(times)
    timed = phases[1:]
    phase_ms = {k: 1e3 * statistics.median([p[i] for p in timed])
                for i, k in enumerate(("forward", "backward", "optim"))}
    return {
        "negatives": cfg["negatives"], "method": cfg["method"], "first_loss": first_loss,
        "step_ms": 1e3 * step_s, "step_ms_all": [1e3 * t for t in times],
        "sessions_per_s": cfg["batch_size"] / step_s, "phase_ms": phase_ms,
        "peak_step_mb": peak - before, "peak_total_mb": peak - mem0, "resident_mb": before - mem0,
        "candidates": cfg["batch_size"] * (N_POS + cfg["negatives"]),
    }


def run_config(cfg: dict, args) -> dict:
    if args.device.startswith("cuda") or args.in_process:
        return measure(cfg)
    cmd = [sys.executable, __file__, "--_measure", json.dumps(cfg), "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


# ---------------------------------------------------------------- report


def phases(r: dict) -> str:
    return " / ".join(f"{r['phase_ms'][k]:.0f}" for k in ("forward", "backward", "optim"))


def report(res: dict, args) -> list[str]:
    s = MODEL_SIZES[args.model_size]
    vocab = s["bpe"] + sum(s["codebooks"])
    chk = res["check"]
    mem = ("torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else
           "ru_maxrss of a fresh process per configuration" if not args.in_process else
           "ru_maxrss, all configurations in one process (high-water mark: later rows can only under-report)")
    lines = [
        f"Training step throughput, model {args.model_size} (hidden {s['hidden']}, {s['layers']} layers, "
        f"vocab {vocab:,}), {args.dtype}, batch {args.batch_size} sessions, prompt ~{args.prompt_len} tokens, "
        f"{N_POS} positives + N negatives x {len(s['codebooks'])} SID tokens, device {args.device}, "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs ({args.threads} torch "
        f"thread{'' if args.threads == 1 else 's'}), "
        f"median of up to {args.repeats} timed steps after a warm-up step (fewer once a configuration's timed "
        f"steps pass {args.max_seconds:g} s)",
        "",
        f"Loss check (float32, N={chk['negatives']}, before timing): packed {chk['loss']['packed']:.6f}, "
        f"per-candidate {chk['loss']['per-candidate']:.6f}, padded {chk['loss']['padded']:.6f}; "
        f"max |diff| {chk['max_loss_diff']:.2e} (tolerance {chk['atol']:.0e}) -> {'OK' if chk['ok'] else 'FAIL'}; "
        f"max |diff| of token log-probs {chk['max_logp_diff']:.2e}, of EOS hidden states {chk['max_hidden_diff']:.2e}",
        "",
        f"Peak memory: {mem}; step = above what was resident before the first step (activations, gradients, "
        "transients), total = above the process before the model was built (adds weights and AdamW state).",
        "",
        "| N | method | sessions/s | step ms (forward+loss / backward / optimizer) | peak memory MB (step / total) | "
        "speed-up vs per-candidate | "
        "memory vs per-candidate (step) | warm-up loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in args.negatives:
        rows = {r["method"]: r for r in res["runs"] if r["negatives"] == n and r["method"] in METHODS}
        peer = rows["per-candidate"]
        for m in METHODS:
            r = rows[m]
            lines.append(
                f"| {n} | {m} | {r['sessions_per_s']:.2f} | {r['step_ms']:.0f} ({phases(r)}) | "
                f"{r['peak_step_mb']:.0f} / {r['peak_total_mb']:.0f} | "
                f"{peer['step_ms'] / r['step_ms']:.2f}x | {r['peak_step_mb'] / peer['peak_step_mb']:.2f}x | "
                f"{r['first_loss']:.6f} |")
    d, rad = res["dpo"], res["rad_dpo"]
    lines += [
        "",
        f"DPO (frozen reference, all {N_POS} x {d['negatives']} pairs, packed) vs RAD-DPO (packed), "
        f"N={d['negatives']}:",
        "",
        "| method | sessions/s | step ms (forward+loss / backward / optimizer) | peak memory MB (step / total) | "
        "memory vs DPO (total) |",
        "|---|---|---|---|---|",
    ]
    for name, r in (("DPO + reference", d), ("RAD-DPO", rad)):
        lines.append(f"| {name} | {r['sessions_per_s']:.2f} | {r['step_ms']:.0f} ({phases(r)}) | "
                     f"{r['peak_step_mb']:.0f} / {r['peak_total_mb']:.0f} | "
                     f"{r['peak_total_mb'] / d['peak_total_mb']:.2f}x |")
    return lines


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="demo")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="parameter dtype")
    ap.add_argument("--batch-size", type=int, default=8, help="sessions per step")
    ap.add_argument("--negatives", type=lambda t: [int(x) for x in t.split(",")], default=[4, 16, 64])
    ap.add_argument("--dpo-negatives", type=int, default=16, help="N of the DPO vs RAD-DPO comparison")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per configuration (median)")
    ap.add_argument("--max-seconds", type=float, default=20.0,
                    help="stop timing a configuration once its timed steps took this long (at least one step)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads on CPU (1: on a small shared box more threads mostly add sync)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--in-process", action="store_true",
                    help="CPU: run every configuration in this process (fast; peak RSS is then a running max)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--_measure", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    if args._measure:
        print(json.dumps(measure(json.loads(args._measure))))
        return {}
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")

    check = check_agreement(args)
    print(json.dumps({"check": check}), file=sys.stderr)
    base = {"device": args.device, "dtype": args.dtype, "model_size": args.model_size, "batch_size": args.batch_size,
            "prompt_len": args.prompt_len, "repeats": args.repeats, "max_seconds": args.max_seconds, "seed": args.seed}
    runs = []
    for n in args.negatives:
        for m in METHODS:
            runs.append(run_config({**base, "negatives": n, "method": m}, args))
            print(json.dumps(runs[-1]), file=sys.stderr)
    dpo = run_config({**base, "negatives": args.dpo_negatives, "method": "dpo"}, args)
    print(json.dumps(dpo), file=sys.stderr)
    rad = next((r for r in runs if r["negatives"] == args.dpo_negatives and r["method"] == "packed"), None)
    if rad is None:
        rad = run_config({**base, "negatives": args.dpo_negatives, "method": "packed"}, args)
    res = {"config": {**base, "negatives": args.negatives, "threads": args.threads, "torch": torch.__version__,
                      "cpus": os.cpu_count(), "in_process": args.in_process},
           "check": check, "runs": runs, "dpo": dpo, "rad_dpo": rad}
    lines = report(res, args)
    res["table"] = "\n".join(lines)
    print("\n" + res["table"])
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    if not check["ok"]:
        raise SystemExit(f"packed and per-candidate losses disagree by {check['max_loss_diff']:.2e}")
    return res


if __name__ == "__main__":
    main()

"""Index scale benchmark: build, size, memory and constraint-step time at 1M and 10M SIDs.

    python bench/index_scale.py                       # 1M and 10M SIDs, codebooks 8192/4096/2048
    python bench/index_scale.py --sids 100000 --reps 50   # quick run

Codes are synthetic and skewed (Zipf per level, like real RQ-KMeans usage), with 1.3 SKUs
per SID as in the paper (170M items -> 130M SIDs). For each size: time to build the index
directory (trie arrays + marisa maps), its size on disk, the resident memory of a fresh
process after loading it (maps memory-mapped) and after building the torch constraint,
and the time of one constraint step for 128 beams (median), per level. The peer is the
usual `prefix_allowed_tokens_fn` approach: a Python dict trie walked beam by beam, in the
same run. Memory is extrapolated linearly to the paper's 130M SIDs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.memory import rss_mb  # noqa: E402
from sid_index.index import load_index, write_index  # noqa: E402

SIZES = (8192, 4096, 2048)
PAPER_SIDS = 130_000_000


def skewed_codes(n_sids: int, sizes=SIZES, skew: float = 0.8, seed: int = 0) -> np.ndarray:
    """`n_sids` distinct code tuples, each level drawn from a Zipf-like law over its codebook."""
    rng = np.random.default_rng(seed)
    probs = []
    for k in sizes:
        p = 1.0 / (np.arange(1, k + 1) + 10.0) ** skew
        probs.append(rng.permutation(p / p.sum()))
    out = np.zeros((0, len(sizes)), np.int64)
    while len(out) < n_sids:
        m = int((n_sids - len(out)) * 1.3) + 1000
        draw = np.stack([rng.choice(k, size=m, p=p) for k, p in zip(sizes, probs, strict=True)], 1)
        out = np.unique(np.concatenate([out, draw]), axis=0)
    return out[rng.permutation(len(out))[:n_sids]]


def dir_bytes(path: Path) -> dict[str, int]:
    sizes = {p.name: p.stat().st_size for p in path.iterdir()}
    return {
        "total": sum(sizes.values()),
        "maps": sum(v for k, v in sizes.items() if k.endswith(".marisa")),
        "trie": sum(v for k, v in sizes.items() if k.startswith("trie_")),
    }


def time_steps(fn, reps: int) -> float:
    """Median seconds of `fn()` over `reps` runs (after 5 warm-ups)."""
    for _ in range(5):
        fn()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def measure_loaded(index_dir: str, beams: int, reps: int, device: str, peer: bool) -> dict:
    """Runs in a fresh process: memory after load, constraint build, step times, and the peer."""
    rss0 = rss_mb()
    idx = load_index(index_dir, verify=False)
    rss_load = rss_mb()
    t = time.perf_counter()
    con = idx.constraint(device=device)
    t_con = time.perf_counter() - t
    rss_con = rss_mb()
    rng = np.random.default_rng(1)
    sids = idx.trie.sids()
    beam_sids = torch.from_numpy(sids[rng.integers(0, len(sids), beams)]).to(device)
    out = {
        "rss_load_mb": rss_load - rss0,
        "rss_constraint_mb": rss_con - rss0,
        "constraint_mb": con.nbytes() / 2**20,
        "constraint_build_s": t_con,
        "dense_levels": [con.is_dense(lvl) for lvl in range(idx.levels)],
        "prefix_ms": [],
        "node_ms": [],
        "peer_ms": [],
    }
    nodes = con.root(beams)
    for level in range(idx.levels):
        prefix = beam_sids[:, :level]
        out["prefix_ms"].append(1e3 * time_steps(lambda p=prefix: con.mask(p), reps))
        out["node_ms"].append(1e3 * time_steps(lambda lv=level, n=nodes: con.mask_nodes(lv, n), reps))
        nodes = con.advance(nodes, level, beam_sids[:, level])
    # the `sid` table is ~N x 3 int64 built just for sampling; drop it before the peer
    del sids
    if peer:
        trie: dict = {}
        for row in idx.trie.sids().tolist():
            node = trie
            for c in row[:-1]:
                node = node.setdefault(c, {})
            node.setdefault("leaves", []).append(row[-1])
        rows = beam_sids.cpu().tolist()

        def peer_step(level: int) -> torch.Tensor:
            mask = torch.zeros(beams, idx.codebook_sizes[level], dtype=torch.bool)
            for i, row in enumerate(rows):
                node = trie
                for c in row[:level]:
                    node = node[c]
                allowed = node["leaves"] if level == idx.levels - 1 else list(node.keys())
                mask[i, allowed] = True
            return mask

        for level in range(idx.levels):
            out["peer_ms"].append(1e3 * time_steps(lambda lv=level: peer_step(lv), max(reps // 10, 5)))
    return out


def run_size(n_sids: int, args, workdir: Path) -> dict:
    t = time.perf_counter()
    codes = skewed_codes(n_sids, seed=args.seed)
    extra = codes[np.random.default_rng(args.seed).integers(0, n_sids, int(n_sids * (args.skus_per_sid - 1)))]
    all_codes = np.concatenate([codes, extra])
    skus = [f"SKU{i:010d}" for i in range(len(all_codes))]
    popularity = np.random.default_rng(args.seed).pareto(1.5, len(all_codes))
    t_gen = time.perf_counter() - t
    out_dir = workdir / f"idx_{n_sids}"
    t = time.perf_counter()
    write_index(out_dir, skus, all_codes, SIZES, popularity=popularity)
    t_build = time.perf_counter() - t
    del codes, extra, all_codes, skus, popularity
    cmd = [sys.executable, __file__, "--_measure", str(out_dir), "--beams", str(args.beams), "--reps", str(args.reps),
           "--device", args.device] + (["--no-peer"] if args.no_peer else [])
    measured = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    res = {"sids": n_sids, "skus": int(n_sids * args.skus_per_sid), "gen_s": t_gen, "build_s": t_build,
           "disk": dir_bytes(out_dir), **measured}
    shutil.rmtree(out_dir)
    return res


def report(results: list[dict], args) -> None:
    dev = args.device
    print(f"\nIndex scale, codebooks {'/'.join(map(str, SIZES))}, {args.beams} beams, device {dev}, "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs\n")
    print("| SIDs | SKUs | build s | disk MB (maps + trie) | RSS MB: loaded / + constraint | constraint MB | "
          "step ms L0/L1/L2 (prefix API) | step ms L0/L1/L2 (node API) | peer ms L0/L1/L2 | "
          "speed-up, 3 steps (peer / node API) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        d = r["disk"]
        fmt = lambda xs: "/".join(f"{x:.3f}" for x in xs)  # noqa: E731
        speed = (statistics.mean(r["peer_ms"]) / statistics.mean(r["node_ms"])) if r["peer_ms"] else float("nan")
        rss = f"{r['rss_load_mb']:.0f} / {r['rss_constraint_mb']:.0f}"
        print(f"| {r['sids']:,} | {r['skus']:,} | {r['build_s']:.1f} | {d['total'] / 2**20:.0f} "
              f"({d['maps'] / 2**20:.0f} + {d['trie'] / 2**20:.0f}) | {rss} | "
              f"{r['constraint_mb']:.0f} | {fmt(r['prefix_ms'])} | {fmt(r['node_ms'])} | "
              f"{fmt(r['peer_ms']) if r['peer_ms'] else 'n/a'} | {speed:.0f}x |")
    if len(results) >= 2:
        a, b = results[-2], results[-1]
        skus = PAPER_SIDS * args.skus_per_sid / 1e6
        print(f"\nLinear extrapolation to {PAPER_SIDS / 1e6:.0f}M SIDs ({skus:.0f}M SKUs), from the two largest runs:")
        for label, get in [
            ("disk, whole index (GB)", lambda r: r["disk"]["total"] / 2**30),
            ("marisa maps, host RAM when paged in (GB)", lambda r: r["disk"]["maps"] / 2**30),
            ("constraint tensors, serving-GPU memory (GB)", lambda r: r["constraint_mb"] / 2**10),
        ]:
            slope = (get(b) - get(a)) / (b["sids"] - a["sids"])
            print(f"  {label:45s} {get(b) + slope * (PAPER_SIDS - b['sids']):8.2f}")
        print("  (the dense level-1 table is fixed at 8192x4096 int32 = 128 MiB once level 1 is full; "
              "the rest grows with SIDs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sids", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--beams", type=int, default=128)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--skus-per-sid", type=float, default=1.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-peer", action="store_true", help="skip the Python dict-trie peer")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--_measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1) if args.device == "cpu" else None
    if args._measure:
        print(json.dumps(measure_loaded(args._measure, args.beams, args.reps, args.device, not args.no_peer)))
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="radgr-bench-"))
    results = []
    for n in args.sids:
        results.append(run_size(n, args, workdir))
        print(json.dumps(results[-1]), file=sys.stderr)
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

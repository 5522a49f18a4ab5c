"""What text inputs and the index prior add to a request's latency, against the same request without them.

    python bench/request_inputs.py --model runs/floor/demo/text-inputs --index runs/demo/index \
        --data runs/demo/data [--requests 50] [--width 128]

Per request (queries of the test split, one at a time, the server's own code paths):

  embed (cold)     the query's MiniLM embedding, never seen before (`CachedEncoder` miss)
  embed (cached)   the same query again (an LRU hit)
  prior vector     `Retriever.encode`'s index-prior request vector on top of the embedding
  decode           native-engine beam search with the text vector (the projection is part of it),
                   and the same with the index prior fused (what the prior costs inside the search)

Prints a markdown table (median and p90 ms) and the ratio of the added work to the decode.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server.native_engine import NativeEngine  # noqa: E402
from server.retriever import Retriever  # noqa: E402
from sid_index.data.schema import load_dataset  # noqa: E402
from sid_index.index import load_index  # noqa: E402
from trainer.model import load_checkpoint  # noqa: E402


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t0) * 1e3


def stats(ms: list[float]) -> str:
    return f"{statistics.median(ms):.2f} | {np.percentile(ms, 90):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="a checkpoint trained with --text-inputs")
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--prior", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    index, ckpt = load_index(args.index), load_checkpoint(args.model, dtype=torch.float32)
    if ckpt.text_model is None:
        sys.exit(f"{args.model}: not a text-input checkpoint")
    test = load_dataset(args.data).split("test")["query"].to_pylist()
    queries = [q for q in dict.fromkeys(test) if q][: args.requests]
    retriever = Retriever(ckpt, index, index_prior=args.prior)
    plain = NativeEngine(ckpt, index)
    fused = NativeEngine(ckpt, index, index_prior=args.prior)
    names = ("embed (cold)", "embed (cached)", "prior vector", "decode, text vector", "decode, text vector + prior")
    rows: dict[str, list[float]] = {k: [] for k in names}
    retriever.encode("warm up")
    plain.search_many([retriever.prompt("warm up")], args.width, [retriever.vector("warm up")])
    for q in queries:
        vec, ms = timed(retriever.vector, q)
        rows["embed (cold)"].append(ms)
        rows["embed (cached)"].append(timed(retriever.vector, q)[1])
        enc, ms = timed(retriever.encode, q)
        rows["prior vector"].append(ms - rows["embed (cached)"][-1])
        rows["decode, text vector"].append(timed(plain.search_many, [enc.prompt], args.width, [vec])[1])
        rows["decode, text vector + prior"].append(
            timed(fused.search_many, [enc.prompt], args.width, [vec], [enc.prior])[1])
    print(f"{len(queries)} requests, width {args.width}, {args.threads} threads, {args.model}\n")
    print("| step | median ms | p90 ms |\n|---|---|---|")
    for name, ms in rows.items():
        print(f"| {name} | {stats(ms)} |")
    decode = statistics.median(rows["decode, text vector"])
    print(f"\nembedding (cold) / decode: {statistics.median(rows['embed (cold)']) / decode:.2f}; "
          f"prior in the search / decode: {statistics.median(rows['decode, text vector + prior']) / decode:.2f}")


if __name__ == "__main__":
    main()

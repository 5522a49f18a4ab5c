"""The paper's serving point: latency at 15 QPS and the highest QPS within a p99 budget, per engine.

    python bench/gpu_serving.py                 # GPU: Qwen3-1.7B-size model, 10M-SID index, width 128
    python bench/gpu_serving.py --quick         # CPU smoke run at a tiny size (what the tests run)

Setup (timing only, so random weights are fine): a Qwen3 model of the given size in bf16 with
the index's SID tokens (vocabulary padded to Qwen3's 151,936 + SID tokens, so the output layer
costs what it costs in production); a synthetic index at the paper's shape (codebooks
8192/4096/2048, --sids valid SIDs drawn with Zipf-skewed codes as in bench/index_scale.py);
prompts of a query plus 50 history items as SID tokens (~170 tokens).

Load: open loop, in process. Requests arrive at fixed intervals (1/QPS) and go to the engine's
request batcher, as the server's handler does (HTTP overhead is the load test's part:
`radgr bench load`). A request's latency runs from its scheduled arrival to its answer, so
a slow engine's queueing shows (no coordinated omission). The queue holds at most
--max-pending requests (more: rejected, 503 in the server) and a request waits at most
--timeout-s (then dropped, 504): both count as errors, so an overloaded engine fails fast.

Per engine: one run at --qps (default 15) for --duration seconds, then a capacity search
(loadtest.report.capacity_search, shared with `radgr bench capacity`): the QPS grows by
--factor while p99 <= --budget-ms and no request fails, then bisects.

Engines: native (server.native_engine), vllm (server.vllm_engine; needs vLLM, which the GPU
machine here does not have), and the peer hf: transformers `generate(num_beams=W,
prefix_allowed_tokens_fn=trie)` behind the same batcher (one batched generate per batch).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.beam import HFGenerate, is_valid, make_prompts  # noqa: E402
from bench.index_scale import skewed_codes  # noqa: E402
from loadtest.report import (  # noqa: E402
    LATENCY_BUDGET_MS,
    TARGET_QPS,
    RunSummary,
    capacity_search,
    format_runs,
    summarize,
)
from server.engine import BatchingEngine, BatchStats, DeadlineExceeded, Hits, QueueFull  # noqa: E402
from sid_index.index import MANIFEST_FILE, SidIndex, load_index, write_index  # noqa: E402
from trainer.model import ScratchModelConfig, load_checkpoint, new_model, save_checkpoint  # noqa: E402
from trainer.prompt import PromptConfig  # noqa: E402

QWEN3_VOCAB = 151_936
# Qwen3 configurations (hidden, layers, heads, kv heads, head_dim, intermediate) from their config.json
SIZES = {
    "1.7b": ScratchModelConfig(hidden_size=2048, num_layers=28, num_heads=16, num_kv_heads=8, head_dim=128,
                               intermediate_size=6144, max_positions=1024),
    "0.6b": ScratchModelConfig(hidden_size=1024, num_layers=28, num_heads=16, num_kv_heads=8, head_dim=128,
                               intermediate_size=3072, max_positions=1024),
    "tiny": ScratchModelConfig(hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=64,
                               intermediate_size=256, max_positions=1024),
}


def build_index(root: Path, n_sids: int, sizes: tuple[int, ...]) -> SidIndex:
    if (root / MANIFEST_FILE).is_file():
        return load_index(root)
    codes = skewed_codes(n_sids, sizes)
    return load_index(write_index(root, [f"B{i:09d}" for i in range(len(codes))], codes, list(sizes)))


def timing_checkpoint(index: SidIndex, size: str, device: str, dtype: torch.dtype, pad_vocab: bool):
    """A checkpoint in memory: a small BPE tokenizer + SID tokens, and a random Qwen3 of `size` built on
    the device (vocabulary padded to Qwen3's when `pad_vocab`; the extra rows are never decoded)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    words = ["drill", "lamp", "chair", "hose", "paint", "saw", "tile", "sofa", "rug", "bulb", "fan", "desk"]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, 4)) for _ in range(500)]
    cfg = SIZES[size]
    ckpt = new_model(index, texts, scratch=SIZES["tiny"].model_copy(update={"tokenizer_vocab": 1000}),
                     prompt=PromptConfig(max_history=50, align=32), seed=0)  # 32: vLLM's best case
    vocab = len(ckpt.tokenizer) + (QWEN3_VOCAB if pad_vocab else 0)
    config = Qwen3Config(
        vocab_size=vocab, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.max_positions, tie_word_embeddings=size != "1.7b",
        eos_token_id=ckpt.eos_id, pad_token_id=ckpt.pad_id, bos_token_id=None, torch_dtype=dtype,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(dtype).eval()
    ckpt.model = model
    return ckpt


class HFEngine(BatchingEngine):
    """The peer behind our request batcher: one batched `generate` per batch."""

    name = "hf"

    def __init__(self, ckpt, index: SidIndex, **kwargs):
        super().__init__(**kwargs)
        self.hf = HFGenerate(ckpt, index)

    def decode(self, prompts, widths, vectors=None, priors=None, lexicals=None):
        start = time.perf_counter()
        codes = self.hf.run(prompts, max(widths))
        hits = [Hits(codes=c[:w], scores=np.zeros(len(c[:w]))) for c, w in zip(codes, widths, strict=True)]
        return hits, BatchStats(len(prompts), [], 0, time.perf_counter() - start)


def open_loop(engine: BatchingEngine, prompts: list[list[int]], index: SidIndex, qps: float, duration_s: float,
              width: int, budget_ms: float, timeout_s: float) -> RunSummary:
    """Requests at fixed intervals for `duration_s`; latency = answer time - scheduled arrival."""
    n = max(1, int(round(qps * duration_s)))
    lat: list[float] = []
    status: list[str] = []
    returned: list[np.ndarray] = []
    lock = threading.Lock()
    pending = []
    t0 = time.perf_counter() + 0.05

    def on_done(due: float):
        def done(fut):
            end = time.perf_counter()
            with lock:
                if fut.cancelled() or fut.exception() is not None:  # dropped past its deadline, or failed
                    status.append("504" if fut.cancelled() or isinstance(fut.exception(), DeadlineExceeded) else "500")
                    lat.append((end - due) * 1e3)
                else:
                    status.append("200")
                    lat.append((end - due) * 1e3)
                    returned.append(fut.result().codes)
        return done

    for i in range(n):
        due = t0 + i / qps
        time.sleep(max(0.0, due - time.perf_counter()))
        try:
            fut = engine.submit(prompts[i % len(prompts)], width, timeout_s)
        except QueueFull:
            with lock:
                status.append("503")
                lat.append(0.0)
            continue
        fut.add_done_callback(on_done(due))
        pending.append(fut)
    for fut in pending:
        try:
            fut.result(timeout=timeout_s + 600)
        except Exception:  # noqa: BLE001 - counted by the callback
            pass
    invalid = sum(int((~is_valid(index, c)).sum()) for c in returned if len(c))
    return summarize(lat, status, qps, duration_s, budget_ms, invalid_sids=invalid,
                     returned_sids=int(sum(len(c) for c in returned)))


def make_engine(name: str, ckpt, index: SidIndex, args):
    kw = dict(max_batch=args.max_batch, max_pending=args.max_pending)
    if name == "native":
        from server.native_engine import NativeEngine

        return NativeEngine(ckpt, index, device=args.device, **kw)
    if name == "hf":
        return HFEngine(ckpt, index, **kw)
    if name == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise ImportError("vLLM is not installed")
        from server.settings import ServerSettings
        from server.vllm_engine import VllmEngine

        path = Path(args.work) / f"model_{args.model_size}_{index.index_id}"  # vLLM loads a checkpoint folder
        if not (path / "radgr.json").is_file():
            save_checkpoint(ckpt, path)
        settings = ServerSettings(model=str(path), index=str(index.root), beam_width=args.width,
                                  max_beam_width=args.width, max_batch_requests=args.max_batch, device=args.device)
        return VllmEngine(load_checkpoint(path, with_model=False), index, settings, **kw)
    raise SystemExit(f"unknown engine {name!r} (native, vllm, hf)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-size", choices=sorted(SIZES), default="1.7b")
    ap.add_argument("--sids", type=int, default=10_000_000)
    ap.add_argument("--codebooks", default="8192,4096,2048")
    ap.add_argument("--history", type=int, default=50)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--engines", default=None, help="default native,vllm,hf (--quick: native,hf)")
    ap.add_argument("--qps", type=float, default=TARGET_QPS)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per run")
    ap.add_argument("--budget-ms", type=float, default=LATENCY_BUDGET_MS)
    ap.add_argument("--start-qps", type=float, default=4.0)
    ap.add_argument("--factor", type=float, default=2.0)
    ap.add_argument("--max-qps", type=float, default=512.0)
    ap.add_argument("--refine", type=int, default=2)
    ap.add_argument("--search-minutes", type=float, default=3.0, help="time budget of each engine's search")
    ap.add_argument("--max-batch", type=int, default=16, help="requests decoded together")
    ap.add_argument("--max-pending", type=int, default=256)
    ap.add_argument("--timeout-s", type=float, default=2.0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    ap.add_argument("--work", default="runs/bench_gpu_serving")
    ap.add_argument("--out", default=None, help="write the results here (.json and .md)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes on CPU: a smoke run of the whole script")
    args = ap.parse_args()
    if args.quick:
        args.model_size, args.sids, args.codebooks, args.history, args.width = "tiny", 3000, "32,16,16", 10, 16
        args.qps, args.duration, args.start_qps, args.max_qps, args.search_minutes = 4, 2, 4, 8, 0.5
    args.engines = args.engines or ("native,hf" if args.quick else "native,vllm,hf")
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    sizes = tuple(int(c) for c in args.codebooks.split(","))
    work = Path(args.work)
    t = time.perf_counter()
    index = build_index(work / f"index_{args.sids}_{'x'.join(map(str, sizes))}", args.sids, sizes)
    print(f"index: {index.num_sids:,} SIDs, codebooks {list(sizes)} ({time.perf_counter() - t:.0f} s)", flush=True)
    ckpt = timing_checkpoint(index, args.model_size, args.device, dtype, pad_vocab=not args.quick)
    params = sum(p.numel() for p in ckpt.model.parameters()) / 1e6
    prompts = make_prompts(ckpt, index, 256, history=args.history)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()}"
    setup = (f"{device_name}, torch {torch.__version__}; model {args.model_size} ({params:,.1f}M params, {dtype}, "
             f"vocab {ckpt.model.config.vocab_size:,}); index {index.num_sids:,} SIDs {list(sizes)}; width "
             f"{args.width}; prompts {int(np.mean([len(p) for p in prompts]))} tokens; batch <= {args.max_batch}")
    print(setup, flush=True)
    results = []
    for name in args.engines.split(","):
        try:
            engine = make_engine(name, ckpt, index, args)
        except ImportError as exc:
            print(f"{name}: not available here ({exc})", flush=True)
            results.append({"engine": name, "skipped": str(exc)})
            continue
        engine.start()
        for f in [engine.submit(p, args.width, 600) for p in prompts[:4]]:  # warm-up: kernels, caches
            f.result()

        def run_at(qps: float, engine=engine, name=name) -> RunSummary:
            r = open_loop(engine, prompts, index, qps, args.duration, args.width, args.budget_ms, args.timeout_s)
            print(f"  {name} {qps:g} QPS: p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, errors {r.errors or 0} -> "
                  + ("pass" if r.passed else "fail"), flush=True)
            return r

        at_target = run_at(args.qps)
        cap = capacity_search(run_at, args.start_qps, args.factor, args.max_qps, args.refine,
                              time_budget_s=args.search_minutes * 60, step_cost_s=args.duration + 1)
        engine.close()
        results.append({"engine": name, "at_target": at_target.to_dict(), "best_qps": cap.best_qps,
                        "search": [r.to_dict() for r in cap.runs], "stopped": cap.stopped})
    md = report(results, args, setup)
    print()
    print(md)
    if args.out:
        out = Path(args.out)
        out.with_suffix(".json").write_text(json.dumps({"setup": setup, "args": vars(args), "results": results},
                                                       indent=2, default=str))
        out.with_suffix(".md").write_text(md + "\n")


def report(results: list[dict], args, setup: str) -> str:
    ran = [r for r in results if "at_target" in r]
    peer = next((r for r in ran if r["engine"] == "hf"), None)
    lines = [setup, "", f"At {args.qps:g} QPS ({args.duration:g} s, open loop):", "",
             format_runs([RunSummary.from_dict(r["at_target"]) for r in ran], [r["engine"] for r in ran])]
    lines += ["", f"Highest QPS with p99 <= {args.budget_ms:g} ms and no failed request:", "",
              "| engine | highest QPS held | vs hf | invalid SIDs returned |", "|---|---|---|---|"]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['engine']} | not run: {r['skipped']} | – | – |")
            continue
        best = r["best_qps"]
        ratio = (f"{best / peer['best_qps']:.1f}x" if best and peer and peer["best_qps"] and r is not peer else "–")
        invalid = sum(s["extra"]["invalid_sids"] for s in [r["at_target"], *r["search"]])
        lines.append(f"| {r['engine']} | {best if best is not None else 'none (not even ' + str(args.start_qps) + ')'} "
                     f"| {ratio} | {invalid} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Constrained beam search over SIDs: our two engines against vLLM's stock beam search and HF generate.

    python bench/beam.py                      # CPU: widths 8/32/128, demo-size and CPU-realistic model
    python bench/beam.py --quick              # a smoke run (tiny sizes, one width)

Setup, built once under --work (default runs/bench_beam): a synthetic index of --sids valid
SIDs (codebooks 256/256/256, random codes), and for each model size a random-weight scratch
Qwen3 checkpoint with the index's SID tokens (timing only: weights do not change the work).
Prompts are realistic: a query plus 50 history items as SID tokens (~170 tokens), left-filled
to a multiple of --prompt-align tokens (default 32: `radgr train sft --prompt-align 32`, the
serving-optimised layout; 1 = the trainer's default, unaligned).

Engines, all on the same checkpoint and prompts, 3 SID steps (no EOS step):

  native     server.native_engine: prompt prefilled once, KV shared by the beams, one
             batched forward per step over all beams of all requests, trie mask + top-k in torch.
  vllm       server.vllm_engine: vLLM with our trie logits processor and step driver.
  vllm-stock vLLM's `LLM.beam_search` (unconstrained: vLLM cannot express a trie).
  hf         transformers `generate(num_beams=W, prefix_allowed_tokens_fn=trie)`, the
             constrained decoder most open generative-recommendation code uses.

Concurrency c: c requests arrive together, the next round once all are answered (closed loop;
throughput counts the rounds' time only, not the validity checks between them).
Our engines take them through their request batcher; vllm-stock gets one `beam_search` call
with the c prompts and hf one batched `generate` (the best case for both). Latency is per
request (arrival to answer); throughput = requests / wall time. Invalid = returned SIDs that
are not in the index, over all returned SIDs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))  # vLLM drops to 1 thread unless this is set
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server.engine import BatchingEngine  # noqa: E402
from server.settings import ServerSettings  # noqa: E402
from sid_index.index import MANIFEST_FILE, SidIndex, load_index, write_index  # noqa: E402
from trainer.model import ScratchModelConfig, load_checkpoint, new_model, save_checkpoint  # noqa: E402
from trainer.prompt import PromptConfig  # noqa: E402

MODELS = {
    "tiny": ScratchModelConfig(hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=256),
    "demo": ScratchModelConfig(),  # hidden 256, 4 layers: the model `make demo` trains
    "cpu-realistic": ScratchModelConfig(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=4,
                                        intermediate_size=1536),
}
CODEBOOKS = (256, 256, 256)
HISTORY = 50


def build_index(root: Path, n_sids: int, seed: int = 0) -> SidIndex:
    if (root / MANIFEST_FILE).is_file():
        return load_index(root)
    rng = np.random.default_rng(seed)
    codes = np.unique(np.stack([rng.integers(0, k, n_sids * 2) for k in CODEBOOKS], 1), axis=0)
    codes = codes[rng.permutation(len(codes))[:n_sids]]
    return load_index(write_index(root, [f"B{i:08d}" for i in range(len(codes))], codes, CODEBOOKS))


def build_model(root: Path, index: SidIndex, size: str, align: int) -> Path:
    if (root / "radgr.json").is_file():
        return root
    words = ["drill", "lamp", "chair", "hose", "paint", "saw", "tile", "sofa", "rug", "bulb", "fan", "desk"]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, 4)) for _ in range(2000)]
    ckpt = new_model(index, texts, scratch=MODELS[size].model_copy(update={"tokenizer_vocab": 1000}),
                     prompt=PromptConfig(max_history=HISTORY, align=align), seed=0)
    return save_checkpoint(ckpt, root)


def make_prompts(ckpt, index: SidIndex, n: int, seed: int = 0, history: int = HISTORY) -> list[list[int]]:
    """Realistic prompts: a short query and `history` random SIDs of the index as the user's history."""
    rng = np.random.default_rng(seed)
    sids = index.trie.sids()
    words = ["cordless drill", "led lamp", "office chair", "garden hose", "wall paint", "oak desk"]
    return [ckpt.prompts.request(str(rng.choice(words)), sids[rng.integers(0, len(sids), history)].tolist())
            for _ in range(n)]


_CONSTRAINTS: dict[str, object] = {}


def is_valid(index: SidIndex, codes: np.ndarray) -> np.ndarray:
    con = _CONSTRAINTS.get(index.index_id) or _CONSTRAINTS.setdefault(index.index_id, index.constraint("cpu"))
    return con.contains(torch.as_tensor(codes, dtype=torch.long)).numpy() if len(codes) else np.zeros(0, bool)


class HFGenerate:
    """transformers' beam search, constrained through a `prefix_allowed_tokens_fn` over the index's trie."""

    name = "hf"

    def __init__(self, ckpt, index: SidIndex):
        self.ckpt, self.index = ckpt, index
        self.con = index.constraint("cpu")
        self.model = ckpt.model.eval()

    def run(self, prompts: list[list[int]], width: int) -> list[np.ndarray]:
        from sid_index.decoding import left_pad

        ck, vocab, con = self.ckpt, self.ckpt.vocab, self.con
        ids, mask, _ = left_pad(prompts, ck.pad_id, next(self.model.parameters()).device)
        plen = ids.shape[1]
        levels = vocab.levels

        def allowed(_batch_id, input_ids):
            gen = input_ids[plen:].cpu()  # the usual per-beam Python callback, trie on the host
            t = len(gen)
            if t >= levels:
                return [ck.eos_id]
            codes = vocab.ids_to_codes(gen[None])
            if (codes < 0).any():
                return [ck.eos_id]
            lo, _ = vocab.token_range(t)
            return (torch.nonzero(con.mask(codes)[0]).flatten() + lo).tolist()

        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids, attention_mask=mask, num_beams=width, num_return_sequences=width,
                max_new_tokens=levels, min_new_tokens=levels, do_sample=False, length_penalty=0.0,
                early_stopping=True, prefix_allowed_tokens_fn=allowed, pad_token_id=ck.pad_id,
                eos_token_id=ck.eos_id,
            )
        gen = out[:, plen : plen + levels].reshape(len(prompts), width, levels).cpu()
        return [vocab.ids_to_codes(g).numpy() for g in gen]


class VllmStock:
    """vLLM's own `LLM.beam_search` (no trie: vLLM has no way to express one)."""

    name = "vllm-stock"

    def __init__(self, ckpt, max_width: int):
        from vllm import LLM

        from server.vllm_engine import checkpoint_dtype

        self.ckpt = ckpt
        self.llm = LLM(model=str(Path(ckpt.path).resolve()), dtype=checkpoint_dtype(ckpt.path), max_model_len=1024,
                       max_num_seqs=max_width * 8, max_logprobs=2 * max_width, enable_prefix_caching=True,
                       block_size=32 if not torch.cuda.is_available() else 16, enforce_eager=True,
                       kv_cache_memory_bytes=1 << 30, seed=0)

    def run(self, prompts: list[list[int]], width: int) -> list[np.ndarray]:
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import BeamSearchParams

        levels = self.ckpt.vocab.levels
        outs = self.llm.beam_search([TokensPrompt(prompt_token_ids=p) for p in prompts],
                                    BeamSearchParams(beam_width=width, max_tokens=levels, ignore_eos=True),
                                    use_tqdm=False)
        result = []
        for p, o in zip(prompts, outs, strict=True):
            rows = [s.tokens[len(p) : len(p) + levels] for s in o.sequences if np.isfinite(s.cum_logprob)]
            rows = [r for r in rows if len(r) == levels]
            codes = self.ckpt.vocab.ids_to_codes(np.asarray(rows, dtype=np.int64).reshape(-1, levels))
            result.append(codes)
        return result

    def close(self):
        del self.llm


class Ours:
    """One of our engines, driven through its request batcher like the server does."""

    def __init__(self, engine: BatchingEngine):
        self.engine = engine
        self.name = engine.name
        engine.start()


def measure(runner, prompts_pool, width: int, conc: int, rounds: int, index: SidIndex) -> dict:
    lat, n_sids, n_invalid, wall = [], 0, 0, 0.0

    def answered_since(start):
        return lambda _future: lat.append(time.perf_counter() - start)

    for r in range(rounds):
        batch = [prompts_pool[(r * conc + i) % len(prompts_pool)] for i in range(conc)]
        t0 = time.perf_counter()
        if isinstance(runner, Ours):  # the c requests arrive at once; each is timed until its own answer
            futures = [runner.engine.submit(p, width, 3600) for p in batch]
            for f in futures:
                f.add_done_callback(answered_since(t0))
            codes = [f.result().codes for f in futures]
        else:
            codes = runner.run(batch, width)
            lat += [time.perf_counter() - t0] * conc
        wall += time.perf_counter() - t0
        for c in codes:
            n_sids += len(c)
            n_invalid += int((~is_valid(index, c)).sum()) if len(c) else 0
    lat.sort()
    return {
        "median_s": statistics.median(lat),
        "p99_s": lat[min(len(lat) - 1, int(np.ceil(0.99 * len(lat))) - 1)],
        "req_per_s": rounds * conc / wall,
        "invalid": n_invalid / max(n_sids, 1),
        "requests": rounds * conc,
    }


def rounds_for(engine: str, size: str, width: int, conc: int, quick: bool) -> int:
    """Enough requests for a stable median, fewer for the slow peers (HF generate: tens of seconds each)."""
    if quick:
        return 2
    slow = engine == "hf" and width >= 32 or engine == "vllm-stock" and width == 128
    if conc == 1:
        return 3 if slow else 10
    return 1 if slow else 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/bench_beam")
    ap.add_argument("--sids", type=int, default=60_000)
    ap.add_argument("--widths", default="8,32,128")
    ap.add_argument("--models", default="demo,cpu-realistic")
    ap.add_argument("--engines", default="native,vllm,vllm-stock,hf")
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--prompt-align", type=int, default=32, help="prompt alignment of the checkpoints (1 = none)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 rounds per cell")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    concs = [int(c) for c in args.concurrency.split(",")]
    engines = args.engines.split(",")
    work = Path(args.work)
    index = build_index(work / f"index_{args.sids}", args.sids)
    print(f"index: {index.num_sids:,} valid SIDs, codebooks {list(index.codebook_sizes)}; "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs", flush=True)
    rows = []
    for size in args.models.split(","):
        suffix = "" if args.prompt_align == 32 else f"_align{args.prompt_align}"
        path = build_model(work / f"model_{size}{suffix}", index, size, args.prompt_align)
        ckpt = load_checkpoint(path, dtype=torch.float32)
        nparams = sum(p.numel() for p in ckpt.model.parameters()) / 1e6
        prompts = make_prompts(ckpt, index, 64)
        print(f"model {size}: {nparams:.1f}M params, prompts {min(map(len, prompts))}-{max(map(len, prompts))} "
              "tokens", flush=True)
        settings = ServerSettings(model=str(path), index=str(index.root), max_beam_width=max(widths),
                                  beam_width=max(widths), max_batch_requests=max(concs), dtype="float32")
        for name in engines:
            if name == "native":
                from server.native_engine import NativeEngine

                runner = Ours(NativeEngine(ckpt, index, max_batch=max(concs), max_pending=10_000))
            elif name == "vllm":
                from server.vllm_engine import VllmEngine

                runner = Ours(VllmEngine(load_checkpoint(path, with_model=False), index, settings,
                                         max_batch=max(concs), max_pending=10_000))
            elif name == "vllm-stock":
                runner = VllmStock(ckpt, max(widths))
            else:
                runner = HFGenerate(ckpt, index)
            measure(runner, prompts, widths[0], 1, 1, index)  # warm-up
            for width in widths:
                for conc in concs:
                    r = measure(runner, prompts, width, conc, rounds_for(name, size, width, conc, args.quick), index)
                    row = {"model": size, "engine": name, "width": width, "concurrency": conc, **r}
                    rows.append(row)
                    print(f"  {size:<13} {name:<10} W={width:<3} c={conc}  median {r['median_s']:.3f} s  "
                          f"p99 {r['p99_s']:.3f} s  {r['req_per_s']:.2f} req/s  invalid {r['invalid']:.1%}",
                          flush=True)
            if isinstance(runner, Ours):
                runner.engine.close()
            elif isinstance(runner, VllmStock):
                runner.close()
    print()
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def table(rows: list[dict]) -> str:
    def get(model, engine, width, conc):
        return next((r for r in rows if (r["model"], r["engine"], r["width"], r["concurrency"])
                     == (model, engine, width, conc)), None)

    out = ["| model | W | c | engine | median s | p99 s | req/s | invalid | speed-up vs hf | vs vllm-stock |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        hf = get(r["model"], "hf", r["width"], r["concurrency"])
        st = get(r["model"], "vllm-stock", r["width"], r["concurrency"])
        ratio = lambda peer, r=r: f"{peer['median_s'] / r['median_s']:.1f}x" if peer and peer is not r else "–"  # noqa: E731
        out.append(f"| {r['model']} | {r['width']} | {r['concurrency']} | {r['engine']} | {r['median_s']:.3f} | "
                   f"{r['p99_s']:.3f} | {r['req_per_s']:.2f} | {r['invalid']:.1%} | {ratio(hf)} | {ratio(st)} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()

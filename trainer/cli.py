"""`radgr train ...` and `radgr eval`: train checkpoints and evaluate them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sid_index.errors import make_config

# ============================================================================ radgr eval


def eval_command(
    model: Annotated[
        list[Path],
        typer.Option("--model", help="Checkpoint folder or training output folder; repeat for several (one row each)."),
    ],
    index: Annotated[Path, typer.Option(help="SID index directory the checkpoints were trained for.")],
    data: Annotated[Path, typer.Option(help="Dataset directory.")],
    split: Annotated[str, typer.Option(help="Split to evaluate: train, valid or test.")] = "test",
    beam_width: Annotated[int, typer.Option(help="Beams per session (SIDs returned).")] = 128,
    batch_size: Annotated[int, typer.Option(help="Sessions decoded together.")] = 16,
    max_sessions: Annotated[int | None, typer.Option(help="Evaluate only the first N sessions.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda[:N].")] = "cpu",
    no_unconstrained: Annotated[
        bool, typer.Option("--no-unconstrained", help="Skip the free decode that measures the invalid-SID rate.")
    ] = False,
    no_baselines: Annotated[
        bool, typer.Option("--no-baselines", help="Skip the most-popular and index-only rows (same sessions).")
    ] = False,
    embedding_model: Annotated[
        Path | None, typer.Option(help="The index's text model folder, when it is not where the index says.")
    ] = None,
    index_prior: Annotated[list[float] | None, typer.Option(
        help="Fuse the index's retrieval score into the search with this weight (repeat: one row per weight; "
             "0 = the model alone; default: the weight the checkpoint was trained with, else 0).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write every model's metrics as JSON here.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the results table (markdown) here.")] = None,
    pick_prior: Annotated[str | None, typer.Option(
        help="After scoring the --index-prior weights of one model on valid, write into its checkpoint the weight "
             "surest to beat the index-only row on this metric (e.g. 'item recall@10'; the highest lower end of "
             "the paired 95% interval): radgr eval and serve then fuse it by default.")] = None,
) -> None:
    """Trie-constrained beam search over a split: SID and item Recall@K / MRR, invalid-SID rate, speed."""
    from trainer.evaluate import EvalConfig, evaluate_models, markdown_table

    cfg = make_config(
        EvalConfig, "eval", model=model, index=index, data=data, split=split, beam_width=beam_width,
        batch_size=batch_size, max_sessions=max_sessions, device=device, unconstrained=not no_unconstrained,
        baselines=not no_baselines, embedding_model=embedding_model, index_prior=index_prior or None,
        out=out, markdown=markdown, pick_prior=pick_prior,
    )
    results = evaluate_models(cfg, log=lambda msg: typer.echo(msg, err=True))
    _write_results(cfg, "models", results, markdown_table(results))
    if cfg.pick_prior is not None:
        _record_picked_prior(cfg, results)


def _record_picked_prior(cfg, results: list) -> None:
    """--pick-prior: the chosen weight (and how it was chosen) into the checkpoint's metadata, atomically."""
    from trainer.evaluate import pick_prior
    from trainer.model import update_checkpoint_meta

    weight, margins = pick_prior(results, cfg.pick_prior)
    for w, d in sorted(margins.items()):
        typer.echo(f"index prior {w:g}: {cfg.pick_prior} {d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}] "
                   "vs index only", err=True)
    picked = {"split": cfg.split, "sessions": results[0]["sessions"], "metric": cfg.pick_prior,
              "weights": sorted(margins), "margin": margins[weight]}
    path = update_checkpoint_meta(cfg.model[0], {"index_prior": weight, "index_prior_picked": picked})
    typer.echo(f"picked index prior {weight:g} ({cfg.pick_prior}); written to {path}", err=True)


def _write_results(cfg, key: str, results: list, table: str) -> None:
    """The rows as JSON at `cfg.out` (under `key`, with the index, data and split), the table as markdown at
    `cfg.markdown`, each written atomically when asked for; the table on stdout."""
    from sid_index.atomic import atomic_file, write_json

    if cfg.out is not None:
        doc = {"index": str(cfg.index), "data": str(cfg.data), "split": cfg.split, key: results}
        write_json(cfg.out, doc, indent=None)  # compact: the per-session values would take a line each
        typer.echo(f"wrote {cfg.out}", err=True)
    if cfg.markdown is not None:
        with atomic_file(cfg.markdown, "w") as fh:
            fh.write(table)
        typer.echo(f"wrote {cfg.markdown}", err=True)
    typer.echo(table, nl=False)


# ---------------------------------------------------------------- radgr train sft | pref

train_app = typer.Typer(help="Train: SFT on positive paths, then preference alignment (RAD-DPO or a baseline).",
                        no_args_is_help=True)

DataOpt = Annotated[Path, typer.Option("--data", help="Dataset directory (radgr data ...).")]
IndexOpt = Annotated[Path, typer.Option("--index", help="SID index directory (radgr index build).")]
OutOpt = Annotated[Path, typer.Option("--out", help="Output folder: model/, metrics.csv, tb/, loss.png.")]
StepsOpt = Annotated[int | None, typer.Option(help="Optimizer steps (default: --epochs over the data).")]
EpochsOpt = Annotated[float | None, typer.Option(
    help="Passes over the training data when --steps is not given (default: one, and on small data at least "
         "MIN_DEFAULT_STEPS of trainer/config.py).")]
BatchOpt = Annotated[int, typer.Option(help="Sessions per step and process.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the data order, negatives and initialisation.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu or cuda (several GPUs: accelerate launch / torchrun).")]
PrecisionOpt = Annotated[str, typer.Option(help="no, bf16 or fp16 (autocast; weights stay float32).")]
SaveOpt = Annotated[int, typer.Option(help="Steps between checkpoints (one is always written at the end).")]
LogOpt = Annotated[int, typer.Option(help="Steps between metric rows.")]
EvalEveryOpt = Annotated[int | None, typer.Option(
    help="Steps between validation runs (valid split); the best checkpoint is kept in OUT/best.")]
EvalSessionsOpt = Annotated[int, typer.Option(help="Valid sessions scored per validation (the first N).")]
EvalWidthOpt = Annotated[int, typer.Option(help="Beam width of the validation search.")]
EvalMetricOpt = Annotated[str, typer.Option(help="Metric that picks the best checkpoint, e.g. 'item recall@10', "
                                                 "'item recall@100', 'sid recall@128'.")]
PatienceOpt = Annotated[int | None, typer.Option(help="Stop after this many validations without improvement.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from OUT/model (optimizer, data position...).")]
QuietOpt = Annotated[bool, typer.Option("--no-progress", help="No progress bar.")]
MaxPosOpt = Annotated[int, typer.Option(help="Positives kept per session (best grades first).")]
WarmupOpt = Annotated[float, typer.Option(help="Share of steps with linear LR warm-up (then cosine decay).")]


def _run(cfg_cls, what: str, **options) -> None:
    from accelerate import PartialState

    from trainer.loop import train

    options["progress"] = not options.pop("no_progress")
    cfg = make_config(cfg_cls, what, **{k: v for k, v in options.items() if v is not None})
    path = train(cfg)
    if PartialState().is_main_process:
        typer.echo(f"checkpoint written to {path}")


@train_app.command("sft")
def sft(
    data: DataOpt, index: IndexOpt, out: OutOpt,
    base: Annotated[Path | None, typer.Option(help="Local HF checkpoint (e.g. Qwen3-1.7B); default: scratch Qwen3.")]
    = None,
    init: Annotated[Path | None, typer.Option(
        help="A radgr checkpoint to continue under a fresh LR schedule (e.g. annealing an early-stopped model at a "
             "low LR); its model, tokenizer, prompt and text inputs are kept.")] = None,
    steps: StepsOpt = None, epochs: EpochsOpt = None, batch_size: BatchOpt = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate (scratch 1e-3; pretrained ~1e-5).")] = 1e-3,
    warmup_ratio: WarmupOpt = 0.05, max_positives: MaxPosOpt = 8,
    index_ratio: Annotated[float | None, typer.Option(
        help="DSI indexing examples (item text -> SID) per session (default: 1 on search data, 0 on histories).")
    ] = None,
    text_inputs: Annotated[bool, typer.Option(
        "--text-inputs/--no-text-inputs",
        help="Feed the index's text embeddings to the decoder (query vector, SID centroids).")] = False,
    hidden_size: Annotated[int, typer.Option(help="Scratch model: hidden size.")] = 256,
    layers: Annotated[int, typer.Option(help="Scratch model: layers.")] = 4,
    tokenizer_vocab: Annotated[int, typer.Option(help="Scratch model: BPE vocabulary size.")] = 4096,
    max_history: Annotated[int, typer.Option(help="History items in the prompt (most recent).")] = 20,
    max_query_tokens: Annotated[int, typer.Option(
        help="Query / item-text tokens in the prompt (0 with --text-inputs: the text enters as its embedding only)."
    )] = 32,
    prompt_align: Annotated[
        int, typer.Option(help="Left-fill prompts with pad tokens to a multiple of this (32: vLLM reuses blocks).")
    ] = 1,
    seed: SeedOpt = 0, device: DeviceOpt = "auto", mixed_precision: PrecisionOpt = "no",
    save_every: SaveOpt = 200, log_every: LogOpt = 10, resume: ResumeOpt = False, no_progress: QuietOpt = False,
    eval_every: EvalEveryOpt = None, eval_sessions: EvalSessionsOpt = 300, eval_width: EvalWidthOpt = 128,
    eval_metric: EvalMetricOpt = "item recall@10", patience: PatienceOpt = None,
) -> None:
    """Stage 1: supervised fine-tuning on every positive of every session (one packed pass per session)."""
    opts = dict(locals())  # every flag, before anything else is bound here
    from trainer.config import SFTConfig

    scratch = {k: opts.pop(k) for k in ("hidden_size", "tokenizer_vocab")}
    scratch |= {"num_layers": opts.pop("layers"), "intermediate_size": 3 * scratch["hidden_size"]}
    prompt = {k: opts.pop(k) for k in ("max_history", "max_query_tokens")} | {"align": opts.pop("prompt_align")}
    _run(SFTConfig, "sft", scratch=scratch, prompt=prompt, **opts)


@train_app.command("pref")
def pref(
    data: DataOpt, index: IndexOpt, out: OutOpt,
    init: Annotated[Path, typer.Option(help="SFT checkpoint to align (and DPO's frozen reference).")],
    method: Annotated[str, typer.Option(help="rad-dpo, dpo, simpo or orpo.")] = "rad-dpo",
    steps: StepsOpt = None, epochs: EpochsOpt = None, batch_size: BatchOpt = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-4,
    warmup_ratio: WarmupOpt = 0.05, max_positives: MaxPosOpt = 8,
    num_negatives: Annotated[int, typer.Option(help="Negatives per session.")] = 16,
    negatives: Annotated[str, typer.Option(
        help="Where negatives come from: exposed (exposed-unclicked, then random) or index (the index's own "
             "nearest SIDs to the request, a random subset of --index-pool).")] = "exposed",
    index_pool: Annotated[int, typer.Option(help="Nearest SIDs the index negatives are drawn from.")] = 64,
    index_prior: Annotated[float, typer.Option(
        help="Add the index's retrieval score with this weight to every candidate's reward (rad-dpo): the model "
             "learns what its index does not know; eval and serve fuse the same prior by default.")] = 0.0,
    beta: Annotated[float | None, typer.Option(help="Default: rad-dpo 1, dpo 0.1, simpo 2, orpo 0.1 (lambda).")]
    = None,
    gamma: Annotated[float, typer.Option(help="SimPO target margin.")] = 1.0,
    form: Annotated[str, typer.Option(help="RAD-DPO list-wise loss: softmax (ours, the "
                                         "softmax-DPO form; tables: rad-dpo-softmax) or paper (eq. 7 as written; "
                                         "tables: rad-dpo-paper).")]
    = "softmax",
    no_tlgd: Annotated[bool, typer.Option("--no-tlgd", help="Ablation: no token-level gradient detachment.")]
    = False,
    no_rdrw: Annotated[bool, typer.Option("--no-rdrw", help="Ablation: no dynamic reward weighting.")] = False,
    no_multi_label_sft: Annotated[
        bool, typer.Option("--no-multi-label-sft", help="Ablation: SFT term on y_w* only.")] = False,
    sft_weight: Annotated[float, typer.Option(help="Weight of the SFT term of RAD-DPO.")] = 1.0,
    rdrw_warmup: Annotated[int, typer.Option(help="Pairs collected before RDRW weights leave 1.")] = 4096,
    rdrw_window: Annotated[int, typer.Option(help="Recent pairs whose quartiles set the RDRW weights.")] = 4096,
    rdrw_lambda: Annotated[float, typer.Option(help="Slope of the RDRW weight (paper: 12).")] = 12.0,
    rdrw_signal: Annotated[str, typer.Option(
        help="RDRW similarity: eos (the model's EOS states, eq. 5) or sid (the index's SID vectors).")] = "eos",
    seed: SeedOpt = 0, device: DeviceOpt = "auto", mixed_precision: PrecisionOpt = "no",
    save_every: SaveOpt = 200, log_every: LogOpt = 10, resume: ResumeOpt = False, no_progress: QuietOpt = False,
    eval_every: EvalEveryOpt = None, eval_sessions: EvalSessionsOpt = 300, eval_width: EvalWidthOpt = 128,
    eval_metric: EvalMetricOpt = "item recall@10", patience: PatienceOpt = None,
) -> None:
    """Stage 2: preference alignment of an SFT checkpoint, one packed forward pass per session."""
    opts = dict(locals())  # every flag, before anything else is bound here
    from trainer.config import PrefConfig

    for module in ("tlgd", "rdrw", "multi_label_sft"):  # --no-X flags -> X switches of the config
        opts[module] = not opts.pop(f"no_{module}")
    _run(PrefConfig, "pref", **opts)


# ------------------------------------------------------------------ radgr bench quality | denoise

PresetOpt = Annotated[str, typer.Option(help="run sizes: demo (make demo's), real (real data on CPU), tiny (tests)")]
SeedsOpt = Annotated[str, typer.Option(help="comma-separated seeds (one SFT run each)")]
VariantOpt = Annotated[
    list[str] | None, typer.Option("--variant", help="a row (repeatable); default the paper's methods and ablations; "
                                "also 'rad-dpo, RDRW on SID vectors'")
]


def _seeds(text: str) -> list[int]:
    from sid_index.errors import RadgrError

    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise RadgrError(f"--seeds {text!r}: expected integers like 0,1,2") from None


SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="change a preset option (repeatable): sft.steps=3600, pref.lr=5e-4, sft.scratch.hidden_size=512")]


SftFromOpt = Annotated[Path | None, typer.Option(
    help="a finished quality experiment on the same clicks and catalog (e.g. runs/quality/synthetic) whose "
         "seed<n>/sft runs to start from instead of training (checked: same SFT examples, same index)")]


def _quality_config(preset: str, overrides: list[str] | None = None, **fields):
    from sid_index.errors import RadgrError
    from trainer.quality import PRESETS, QualityConfig, with_overrides

    if preset not in PRESETS:
        raise RadgrError(f"--preset {preset!r}: one of {sorted(PRESETS)}")
    sft, pref, ev = PRESETS[preset]
    options = with_overrides({"sft": sft, "pref": pref, "eval": ev}, overrides or [])
    return make_config(QualityConfig, "quality", **options, **fields)


def peers_command(
    index: IndexOpt,
    data: DataOpt,
    model: Annotated[list[Path] | None, typer.Option(
        "--model", help="Checkpoint to evaluate on the same sessions; repeat for several.")] = None,
    index_prior: Annotated[list[float] | None, typer.Option(
        help="As radgr eval --index-prior: one row per model and weight (0 = the model alone).")] = None,
    rankings: Annotated[list[Path] | None, typer.Option(
        "--rankings", help="Rankings made elsewhere (JSON; e.g. bench/sasrec_recbole.py); repeatable.")] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate: train, valid or test.")] = "test",
    max_sessions: Annotated[int | None, typer.Option(help="Only the first N sessions (the same for every row).")
                            ] = None,
    beam_width: Annotated[int, typer.Option(help="Beams per session (SIDs returned).")] = 128,
    batch_size: Annotated[int, typer.Option(help="Sessions decoded together.")] = 8,
    device: Annotated[str, typer.Option(help="cpu or cuda[:N].")] = "cpu",
    embedding_model: Annotated[
        Path | None, typer.Option(help="The index's text model folder, when it is not where the index says.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write every row's metrics as JSON here.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the table (markdown) here.")] = None,
) -> None:
    """Our models against the peers a user would try first (popularity, BM25, dense MiniLM, co-occurrence,
    history text, SASRec rankings, published rows), on the same sessions: item Recall@K, NDCG@K, intervals."""
    from trainer.peers import PeersConfig, compare, peers_table

    cfg = make_config(
        PeersConfig, "bench peers", index=index, data=data, model=model or [], index_prior=index_prior or None,
        rankings=rankings or [], split=split, max_sessions=max_sessions, beam_width=beam_width,
        batch_size=batch_size, device=device, embedding_model=embedding_model, out=out, markdown=markdown,
    )
    results = compare(cfg, log=lambda msg: typer.echo(msg, err=True))
    _write_results(cfg, "rows", results, peers_table(results))


def quality_command(
    data: DataOpt, index: IndexOpt,
    out: Annotated[Path, typer.Option(help="experiment folder: seed*/<method>/, quality.json/.md, recall.png")],
    name: Annotated[str, typer.Option(help="table title")] = "quality",
    preset: PresetOpt = "demo", seeds: SeedsOpt = "0,1,2", variant: VariantOpt = None, set_: SetOpt = None,
    sft_from: SftFromOpt = None, device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    sft_checkpoint: Annotated[list[Path] | None, typer.Option(
        "--sft-checkpoint", help="the SFT checkpoint of each seed, in --seeds order (repeat; e.g. "
        "`make best-<name> SEED=<n>`'s): the sft row and the preference runs' start, instead of training")] = None,
) -> None:
    """Every method and ablation from one SFT checkpoint per seed; mean ± std table. Re-run to continue."""
    from trainer.quality import run_quality
    from trainer.variants import PAPER_VARIANTS

    cfg = _quality_config(preset, set_, name=name, data=data, index=index, out=out, seeds=_seeds(seeds),
                          variants=variant or list(PAPER_VARIANTS), device=device, sft_from=sft_from,
                          sft_checkpoints=sft_checkpoint or [])
    run_quality(cfg, log=lambda m: typer.echo(m, err=True))
    typer.echo((out / "quality.md").read_text(), nl=False)
    typer.echo(f"wrote {out / 'quality.json'}, {out / 'quality.md'}, {out / 'recall.png'}", err=True)


def denoise_command(
    out: Annotated[Path, typer.Option(help="experiment folder: index/, share_<s>/{data,seed*}, denoise.json/.md")
                   ] = Path("runs/quality/denoise"),
    shares: Annotated[str, typer.Option(help="pseudo-negative shares of the exposure lists' negatives")] = "0,0.1,0.3",
    preset: PresetOpt = "demo", seeds: SeedsOpt = "0,1,2", set_: SetOpt = None,
    items: Annotated[int, typer.Option(help="synthetic catalog size")] = 2000,
    sessions: Annotated[int, typer.Option(help="synthetic sessions")] = 5000,
    codebooks: Annotated[str, typer.Option(help="index codebook sizes")] = "32,32,32",
    sft_from: SftFromOpt = None,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
) -> None:
    """Synthetic data at each pseudo-negative share: SFT, RAD-DPO with and without RDRW; one table.

    The shares differ only in their unclicked slots (same clicks, same catalog), so one SFT run per
    seed serves them all: the first share's, or --sft-from's."""
    from sid_index.build import IndexConfig, build_index
    from sid_index.data.synthetic import config_from_options, write_synthetic
    from sid_index.errors import RadgrError
    from sid_index.index import MANIFEST_FILE
    from trainer.quality import finished_sft, run_quality
    from trainer.quality_report import denoise_report
    from trainer.variants import RAD_DPO

    try:
        share_list = [float(s) for s in shares.split(",")]
        sizes = [int(c) for c in codebooks.split(",")]
    except ValueError:
        raise RadgrError(f"--shares {shares!r} / --codebooks {codebooks!r}: expected comma-separated numbers") from None
    variants = ["sft", RAD_DPO, f"{RAD_DPO} w/o RDRW"]
    seed_list = _seeds(seeds)
    # the catalog is the same at every share: one index, --sft-from's when its SFT runs are reused
    index = Path(finished_sft(sft_from, seed_list[0])[1]["index"]) if sft_from else out / "index"
    for share in share_list:
        root = out / f"share_{share:g}"
        if not (root / "data" / "sessions.parquet").is_file():
            write_synthetic(root / "data", config_from_options(items=items, sessions=sessions, seed=0,
                                                               pseudo_negative_share=share), overwrite=True)
        if not (index / MANIFEST_FILE).is_file():
            build_index(IndexConfig(dataset=root / "data", out=index, codebook_sizes=sizes), progress=False)
        cfg = _quality_config(preset, set_, name=f"pseudo-negative share {share:g}", data=root / "data", index=index,
                              out=root, seeds=seed_list, variants=variants, device=device, sft_from=sft_from,
                              baseline=False)
        cfg = cfg.model_copy(update={"eval": cfg.eval | {"unconstrained": False}})  # the table shows no free decode
        run_quality(cfg, log=lambda m: typer.echo(m, err=True))
        sft_from = sft_from or root  # the next shares start from these SFT runs
    typer.echo(denoise_report(out, share_list, variants, seed_list), nl=False)

"""`radgr train ...` and `radgr eval`: train checkpoints and evaluate them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sid_index.config_cli import config_command
from sid_index.errors import make_config
from trainer.config import PREF_CONFIGS, SEEDS

# ============================================================================ radgr eval


def _evaluate(cfg) -> None:
    from trainer.evaluate import evaluate_models, markdown_table

    results = evaluate_models(cfg, log=lambda msg: typer.echo(msg, err=True))
    _write_results(cfg, "models", results, markdown_table(results))
    if cfg.pick_prior is not None:
        _record_picked_prior(cfg, results)


def _eval_command():
    from trainer.config import EvalConfig

    return config_command(EvalConfig, "eval", _evaluate, "Trie-constrained beam search over a split: SID and item "
                          "Recall@K / NDCG@K / MRR, invalid-SID rate, speed; beside the most-popular and index-only "
                          "rows on the same sessions.")


eval_command = _eval_command()


def _record_picked_prior(cfg, results: list) -> None:
    """--pick-prior: the chosen weight (and how it was chosen) into the checkpoint's metadata, atomically."""
    from trainer.evaluate import pick_prior
    from trainer.model import update_checkpoint_meta

    (weight, item), margins = pick_prior(results, cfg.pick_prior)
    for (w, v), d in sorted(margins.items()):
        typer.echo(f"index prior {w:g}, item prior {v:g}: {cfg.pick_prior} {d['mean']:+.4f} "
                   f"[{d['lo']:+.4f}, {d['hi']:+.4f}] vs index only", err=True)
    picked = {"split": cfg.split, "sessions": results[0]["sessions"], "metric": cfg.pick_prior,
              "weights": [list(p) for p in sorted(margins)], "margin": margins[(weight, item)]}
    form = next((r["index_prior_form"] for r in results if r.get("index_prior_form")), "sid")
    lexical = max((r.get("lexical_prior", 0.0) for r in results if r.get("device")), default=0.0)  # fused rows
    path = update_checkpoint_meta(cfg.model[0], {"index_prior": weight, "item_prior": item, "index_prior_form": form,
                                                 "lexical_prior": lexical, "index_prior_picked": picked})
    typer.echo(f"picked index prior {weight:g}, item prior {item:g} ({cfg.pick_prior}); written to {path}", err=True)


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


# ------------------------------------------------- radgr train sft | rad-dpo | dpo | simpo | orpo

train_app = typer.Typer(help="Train: SFT on positive paths, then preference alignment (RAD-DPO or a baseline).",
                        no_args_is_help=True)

DataOpt = Annotated[Path, typer.Option("--data", help="Dataset directory (radgr data ...).")]
IndexOpt = Annotated[Path, typer.Option("--index", help="SID index directory (radgr index build).")]


def _train(cfg) -> None:
    from accelerate import PartialState

    from trainer.loop import train

    path = train(cfg)
    if PartialState().is_main_process:
        typer.echo(f"checkpoint written to {path}")


def _sft_command():
    from trainer.config import SFTConfig

    return config_command(
        SFTConfig, "sft", _train, "Stage 1: supervised fine-tuning on every positive of every session (one packed "
        "pass per session).", flatten=("scratch", "prompt"),
        rename={"scratch.num_layers": "layers", "prompt.align": "prompt_align"})


def _pref_command(cls):
    return config_command(cls, cls.model_fields["method"].default, _train, "Stage 2, preference alignment of an "
                          f"SFT checkpoint. {cls.__doc__}", fixed=("method",))


train_app.command("sft")(_sft_command())
for _method, _cls in PREF_CONFIGS.items():  # one command per method, its options from its config class
    train_app.command(_method)(_pref_command(_cls))


# ------------------------------------------------------------------ radgr bench quality | denoise

PresetOpt = Annotated[str, typer.Option(help="run sizes: demo (make demo's), real (real data on CPU), tiny (tests)")]
SeedsOpt = Annotated[str, typer.Option(help="comma-separated seeds (one SFT run each)")]
DEFAULT_SEEDS = ",".join(map(str, SEEDS))
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


def _compare_peers(cfg) -> None:
    from trainer.peers import compare, peers_table

    results = compare(cfg, log=lambda msg: typer.echo(msg, err=True))
    _write_results(cfg, "rows", results, peers_table(results))


def _peers_command():
    from trainer.config import PeersConfig

    return config_command(PeersConfig, "bench peers", _compare_peers, "Our models against the peers a user would "
                          "try first (popularity, BM25, dense MiniLM, co-occurrence, history text, SASRec rankings, "
                          "published rows), on the same sessions: item Recall@K, NDCG@K, intervals.")


peers_command = _peers_command()


def quality_command(
    data: DataOpt, index: IndexOpt,
    out: Annotated[Path, typer.Option(help="experiment folder: seed*/<method>/, quality.json/.md, recall.png")],
    name: Annotated[str, typer.Option(help="table title")] = "quality",
    preset: PresetOpt = "demo", seeds: SeedsOpt = DEFAULT_SEEDS, variant: VariantOpt = None, set_: SetOpt = None,
    sft_from: SftFromOpt = None, device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    sft_checkpoint: Annotated[list[Path] | None, typer.Option(
        "--sft-checkpoint", help="the SFT checkpoint of each seed, in --seeds order (repeat; e.g. "
        "`make best-<name> SEED=<n>`'s): the sft row and the preference runs' start, instead of training")] = None,
    results: Annotated[Path | None, typer.Option(
        help="a second, durable home for each finished result (e.g. bench/results/grid/<name>): results found "
        "there are not run again, so one seed can run per machine or session")] = None,
) -> None:
    """Every method and ablation from one SFT checkpoint per seed; mean ± std table. Re-run to continue."""
    from trainer.quality import run_quality
    from trainer.variants import PAPER_VARIANTS

    cfg = _quality_config(preset, set_, name=name, data=data, index=index, out=out, seeds=_seeds(seeds),
                          variants=variant or list(PAPER_VARIANTS), device=device, sft_from=sft_from,
                          sft_checkpoints=sft_checkpoint or [], results=results)
    run_quality(cfg, log=lambda m: typer.echo(m, err=True))
    typer.echo((out / "quality.md").read_text(), nl=False)
    typer.echo(f"wrote {out / 'quality.json'}, {out / 'quality.md'}, {out / 'recall.png'}", err=True)


def denoise_command(
    out: Annotated[Path, typer.Option(help="experiment folder: index/, share_<s>/{data,seed*}, denoise.json/.md")
                   ] = Path("runs/quality/denoise"),
    shares: Annotated[str, typer.Option(help="pseudo-negative shares of the exposure lists' negatives")] = "0,0.1,0.3",
    preset: PresetOpt = "demo", seeds: SeedsOpt = DEFAULT_SEEDS, set_: SetOpt = None,
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

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
    out: Annotated[Path | None, typer.Option(help="Write every model's metrics as JSON here.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the results table (markdown) here.")] = None,
) -> None:
    """Trie-constrained beam search over a split: SID and item Recall@K / MRR, invalid-SID rate, speed."""
    from sid_index.atomic import atomic_file, write_json
    from trainer.evaluate import EvalConfig, evaluate_models, markdown_table

    cfg = make_config(
        EvalConfig, "eval", model=model, index=index, data=data, split=split, beam_width=beam_width,
        batch_size=batch_size, max_sessions=max_sessions, device=device, unconstrained=not no_unconstrained,
        out=out, markdown=markdown,
    )
    results = evaluate_models(cfg, log=lambda msg: typer.echo(msg, err=True))
    table = markdown_table(results)
    if cfg.out is not None:
        write_json(cfg.out, {"index": str(cfg.index), "data": str(cfg.data), "split": cfg.split, "models": results})
        typer.echo(f"wrote {cfg.out}", err=True)
    if cfg.markdown is not None:
        with atomic_file(cfg.markdown, "w") as fh:
            fh.write(table)
        typer.echo(f"wrote {cfg.markdown}", err=True)
    typer.echo(table, nl=False)


eval_app = typer.Typer(help="Evaluate checkpoints: SID/item Recall@K and MRR, invalid-SID rate.", no_args_is_help=True)
eval_app.command("eval")(eval_command)

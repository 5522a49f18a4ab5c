"""`radgr data ...`: build datasets in the interchange schema, validate and describe them."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sid_index.data.schema import load_dataset

data_app = typer.Typer(help="Datasets in the interchange schema (catalog + sessions as Parquet).", no_args_is_help=True)


@data_app.command("validate")
def validate(dataset: Path = typer.Argument(..., help="Dataset directory (catalog.parquet, sessions.parquet).")) -> None:
    """Check a dataset against the schema; prints its stats, or one line naming the file, row and problem."""
    ds = load_dataset(dataset)
    typer.echo(f"ok: {dataset}")
    typer.echo(json.dumps(ds.stats(), indent=2))


@data_app.command("stats")
def stats(dataset: Path = typer.Argument(..., help="Dataset directory.")) -> None:
    """Print a dataset's counts (SKUs, sessions per split, positives, negatives, queries)."""
    typer.echo(json.dumps(load_dataset(dataset).stats(), indent=2))

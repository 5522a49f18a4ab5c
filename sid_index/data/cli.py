"""`radgr data ...`: build datasets in the interchange schema, validate and describe them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel, ConfigDict, Field

from sid_index.config_cli import config_command
from sid_index.data import amazon as amazon_adapter
from sid_index.data import homedepot as hd_adapter
from sid_index.data.importer import ImportConfig, build
from sid_index.data.schema import load_dataset, write_dataset
from sid_index.data.synthetic import SynthConfig, write_synthetic

data_app = typer.Typer(
    help="Datasets in the interchange schema (catalog + sessions as Parquet).", no_args_is_help=True
)



@data_app.command("validate")
def validate(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory (catalog.parquet, sessions.parquet).")],
) -> None:
    """Check a dataset against the schema; prints its stats, or one line naming the file, row and problem."""
    ds = load_dataset(dataset)
    typer.echo(f"ok: {dataset}")
    typer.echo(json.dumps(ds.stats(), indent=2))


@data_app.command("stats")
def stats(dataset: Annotated[Path, typer.Argument(help="Dataset directory.")]) -> None:
    """Print a dataset's counts (SKUs, sessions per split, positives, negatives, queries)."""
    typer.echo(json.dumps(load_dataset(dataset).stats(), indent=2))


def _guard_out(out: Path, overwrite: bool) -> None:
    """Fail before any work; and since replacing --out deletes it, only ever replace an earlier dataset."""
    if not out.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{out} exists (pass --overwrite to replace it)")
    if not (out / "dataset.json").is_file() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not a dataset directory; refusing to replace it")


def _summary(path: Path, info: dict, extra: str = "") -> None:
    st = info["stats"]
    by = st["sessions_by_split"]
    typer.echo(
        f"{info['name']}: {st['skus']:,} SKUs, {st['sessions']:,} sessions "
        f"(train {by['train']:,} / valid {by['valid']:,} / test {by['test']:,}), "
        f"{st['sessions_with_positives']:,} with positives, {st['positives']:,} positives, "
        f"{st['exposed_negatives']:,} negatives, {st['ambiguous']:,} ambiguous{extra}"
    )
    typer.echo(f"wrote {path}")


class DatasetCommand(BaseModel):
    """What every `radgr data` writer takes: where to write, and whether an earlier dataset there may go."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(description="output dataset directory")
    overwrite: bool = Field(False, description="replace an existing dataset at --out")


class HomeDepotCommand(DatasetCommand):
    """`radgr data homedepot`: the file, and how grades become labels (stored in dataset.json)."""

    src: Path = Field(hd_adapter.DEFAULT_SRC, description="train.csv.zip or train.csv")
    config: hd_adapter.HomeDepotConfig = hd_adapter.HomeDepotConfig()


def _homedepot(cmd: HomeDepotCommand) -> None:
    _guard_out(cmd.out, cmd.overwrite)
    path, info = hd_adapter.convert(cmd.src, cmd.out, cmd.config, overwrite=cmd.overwrite)
    extra = f"; {info['rows_read']:,} rows read, {info['title_conflicts']} products with conflicting titles"
    _summary(path, info, extra)


data_app.command("homedepot")(config_command(
    HomeDepotCommand, "Home Depot", _homedepot, "Home Depot search relevance (Kaggle): one session per query, "
    "graded positives, split by query.", flatten=("config",)))


class AmazonCommand(DatasetCommand):
    """`radgr data amazon`: where the RecBole files are."""

    src: Path = Field(amazon_adapter.DEFAULT_SRC, description="directory of RecBole atomic files")
    name: str = Field(amazon_adapter.DEFAULT_NAME, description="file stem: {name}.text, {name}.train.inter, ...")


def _amazon(cmd: AmazonCommand) -> None:
    _guard_out(cmd.out, cmd.overwrite)
    path, info = amazon_adapter.convert(cmd.src, cmd.out, cmd.name, overwrite=cmd.overwrite)
    _summary(path, info, f"; category root '{info['category_root']}'")


data_app.command("amazon")(config_command(
    AmazonCommand, "Amazon", _amazon, "Amazon Reviews 2018 (RecBole files): one session per history -> next item, "
    "splits as given."))


class ImportCommand(DatasetCommand):
    """`radgr data import`: the log, its catalog, and how its columns map (stored in dataset.json)."""

    src: Path = Field(description="the log: .csv, .tsv, .jsonl or .parquet", json_schema_extra={"argument": True})
    catalog: Path | None = Field(None, description="an item file (item, title, text columns)")
    config: ImportConfig


def _import(cmd: ImportCommand) -> None:
    _guard_out(cmd.out, cmd.overwrite)
    cat, sessions, info = build(cmd.src, cmd.config, cmd.catalog)
    path = write_dataset(cmd.out, cat, sessions, info, overwrite=cmd.overwrite)
    info = json.loads((path / "dataset.json").read_text())
    train_pos = {p["sku_id"] for s, pos in zip(sessions["split"].to_pylist(), sessions["positives"].to_pylist(),
                                               strict=True) if s == "train" for p in pos}
    never = cat.num_rows - len(train_pos)
    extra = (f"; {info['rows_read']:,} rows read, {never:,} of {cat.num_rows:,} items never a train positive "
             "(--index-ratio in training makes them reachable)")
    _summary(path, info, extra)


data_app.command("import")(config_command(
    ImportCommand, "import", _import, "Your own logs -> a dataset: search (split by query, grades -> positives / "
    "negatives) or history (leave-one-out per user: last item test, the one before valid).", flatten=("config",)))


class SynthCommand(DatasetCommand):
    """`radgr data synth`: the generator's settings (stored in dataset.json)."""

    synth: SynthConfig = SynthConfig()


def _synth(cmd: SynthCommand) -> None:
    _guard_out(cmd.out, cmd.overwrite)
    path, info = write_synthetic(cmd.out, cmd.synth, overwrite=cmd.overwrite)
    truth = info["synthetic_stats"]
    extra = (
        f"; pseudo-negative share {truth['pseudo_negative_share']:.3f}, "
        f"false-positive share {truth['false_positive_share']:.3f}"
    )
    _summary(path, info, extra)
    cal = truth.get("pseudo_negative_calibration")
    if cal and cal["missed"]:
        typer.echo(f"warning: pseudo-negative target missed by {cal['missed']} (too few items)", err=True)


data_app.command("synth")(config_command(
    SynthCommand, "synthetic-data", _synth, "Seeded synthetic catalog + sessions that keep the truth (relevance, "
    "clicks, pseudo-negatives).", flatten=("synth",)))

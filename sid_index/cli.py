"""`radgr index ...`: build, describe and query a Semantic-ID index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sid_index.config import IndexConfig
from sid_index.config_cli import config_command
from sid_index.errors import RadgrError
from sid_index.index import load_index
from sid_index.tokens import format_sid, parse_sid

index_app = typer.Typer(help="Semantic-ID index: RQ-KMeans codes, SID<->SKU maps, decoding trie.", no_args_is_help=True)


def _build(cfg) -> None:
    from sid_index.build import build_index, collision_warnings

    path = build_index(cfg)
    manifest = load_index(path, verify=False).manifest
    chosen = "" if cfg.codebook_sizes else (f" (codebooks {','.join(map(str, manifest['codebook_sizes']))}: "
                                            f"chosen from {manifest['num_skus']:,} SKUs)")
    typer.echo(f"index written to {path}{chosen}")
    _print_stats(manifest)
    for warning in collision_warnings(manifest["stats"]):
        typer.echo(f"warning: {warning}", err=True)


index_app.command("build")(config_command(
    IndexConfig, "index", _build, "Embed the catalog, run RQ-KMeans, write the index and print its stats.",
    rename={"dataset": "data", "codebook_sizes": "codebooks"}))


@index_app.command("stats")
def stats(
    index: Annotated[Path, typer.Argument(help="Index directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest's stats as JSON.")] = False,
) -> None:
    """Print an index's stats: SKUs, SIDs, SKUs per SID, codebook use, fan-out, reconstruction error."""
    manifest = load_index(index).manifest
    if as_json:
        typer.echo(json.dumps(manifest["stats"], indent=2))
    else:
        _print_stats(manifest)


@index_app.command("lexical")
def lexical(
    index: Annotated[Path, typer.Argument(help="Index directory.")],
    data: Annotated[Path, typer.Option("--data", help="The dataset (or catalog.parquet) the index was built from.")],
    force: Annotated[bool, typer.Option("--force", help="Rebuild it when the index already has one.")] = False,
) -> None:
    """Add a BM25 index of the SKUs' text to an index built without one (the lexical term of the item-form
    index prior); the index keeps its id, so its checkpoints stay valid."""
    from sid_index.data.schema import load_catalog
    from sid_index.embed import item_texts
    from sid_index.index import attach_lexical

    if load_index(index, verify=False).has_lexical and not force:
        typer.echo(f"{index} already has a lexical index (--force rebuilds it)")
        return
    catalog = load_catalog(data / "catalog.parquet" if data.is_dir() else data)
    path = attach_lexical(index, dict(zip(catalog["sku_id"].to_pylist(), item_texts(catalog), strict=True)))
    typer.echo(f"lexical index written to {path} (index {load_index(path, verify=False).index_id})")


@index_app.command("lookup")
def lookup(
    index: Annotated[Path, typer.Argument(help="Index directory.")],
    sku: Annotated[list[str] | None, typer.Option("--sku", help="SKU id(s) -> SID.")] = None,
    sid: Annotated[list[str] | None, typer.Option("--sid", help="SID(s): '<a_1><b_2><c_3>' or '1-2-3'.")] = None,
) -> None:
    """Map SKUs to SIDs and SIDs to SKUs (most popular first)."""
    if not sku and not sid:
        raise RadgrError("give --sku and/or --sid")
    idx = load_index(index, verify=False)
    for s in sku or []:
        codes = idx.sid_of(s)
        typer.echo(f"{s}\t{format_sid(codes) if codes else 'NOT IN INDEX'}")
    for text in sid or []:
        codes = parse_sid(text, idx.levels)
        skus = idx.skus_of(codes)
        typer.echo(f"{format_sid(codes)}\t{' '.join(skus) if skus else 'NO SKU (not a valid SID)'}")


def _print_stats(m: dict) -> None:
    s = m["stats"]
    sp = s["skus_per_sid"]
    lines = [
        f"index {m['index_id']}",
        f"  levels              {m['levels']}  codebooks {'/'.join(map(str, m['codebook_sizes']))}",
        f"  SKUs                {s['skus']:,}",
        f"  distinct SIDs       {s['sids']:,}  ({s['sids'] / max(s['skus'], 1):.1%} of SKUs)",
        f"  SKUs per SID        max {sp['max']}  mean {sp['mean']:.3f}  sharing a SID {sp['skus_sharing_a_sid']:,}",
        "  histogram           " + "  ".join(f"{k}:{v:,}" for k, v in sp["histogram"].items()),
    ]
    for level, u in enumerate(s["codebook_usage"]):
        f = s["trie_fanout"][level]
        lines.append(
            f"  level {level}             codes used {u['used']:,}/{u['codebook_size']:,} ({u['used_share']:.1%})"
            f"  perplexity {u['perplexity']:.1f}  fan-out max {f['max']} mean {f['mean']:.2f}"
        )
    rec = s.get("reconstruction")
    if rec:
        rel = rec["relative_per_level"]
        lines.append("  recon. error (rel.) " + "  ".join(f"L{i}:{r:.3f}" for i, r in enumerate(rel)))
    if "embedding" in m:
        lines.append(f"  embedding           {m['embedding']['model']} (dim {m['embedding']['dim']})")
    typer.echo("\n".join(lines))

"""`radgr index ...`: build, describe and query a Semantic-ID index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sid_index.errors import RadgrError, make_config
from sid_index.index import load_index
from sid_index.tokens import format_sid, parse_sid

index_app = typer.Typer(help="Semantic-ID index: RQ-KMeans codes, SID<->SKU maps, decoding trie.", no_args_is_help=True)


def parse_sizes(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise RadgrError(f"--codebooks: expected comma-separated integers, got '{text}'") from None


@index_app.command("build")
def build(
    dataset: Annotated[Path, typer.Option("--data", help="Dataset directory (or a catalog .parquet).")],
    out: Annotated[Path, typer.Option(help="Index directory to write (atomically).")],
    codebooks: Annotated[str | None, typer.Option(
        help="Codebook size per level, e.g. 64,64,64 (paper: 8192,4096,2048); default: from the catalog size "
             "(the smallest power of two per level with 8 possible SIDs per SKU)")] = None,
    embedding_model: Annotated[
        Path | None, typer.Option(help="Local sentence-transformers folder (default: the bundled MiniLM).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Embedding batch size.")] = 128,
    seed: Annotated[int, typer.Option(help="k-means seed.")] = 0,
    niter: Annotated[int, typer.Option(help="k-means iterations per level.")] = 25,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Embedding cache (default ~/.cache/radgr/embeddings or $RADGR_CACHE).")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the embedding cache.")] = False,
    device: Annotated[str | None, typer.Option(help="Embedding device (cpu, cuda).")] = None,
    unique_sids: Annotated[bool, typer.Option(
        "--unique-sids", help="Append a level that tells apart the SKUs sharing a SID (most popular first), so "
        "every SID names one SKU (TIGER's extra code).")] = False,
) -> None:
    """Embed the catalog, run RQ-KMeans, write the index and print its stats."""
    from sid_index.build import IndexConfig, build_index, collision_warnings

    kwargs = dict(
        dataset=dataset, out=out, codebook_sizes=parse_sizes(codebooks) if codebooks else None,
        embedding_model=embedding_model,
        batch_size=batch_size, seed=seed, niter=niter, device=device, unique_sids=unique_sids,
    )
    if no_cache:
        kwargs["cache_dir"] = None
    elif cache_dir is not None:
        kwargs["cache_dir"] = cache_dir
    cfg = make_config(IndexConfig, "index", **kwargs)
    path = build_index(cfg)
    manifest = load_index(path, verify=False).manifest
    chosen = "" if codebooks else (f" (codebooks {','.join(map(str, manifest['codebook_sizes']))}: chosen from "
                                   f"{manifest['num_skus']:,} SKUs)")
    typer.echo(f"index written to {path}{chosen}")
    _print_stats(manifest)
    for warning in collision_warnings(manifest["stats"]):
        typer.echo(f"warning: {warning}", err=True)


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

"""`radgr index ...`: build, describe and query a Semantic-ID index."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from pydantic import ValidationError

from sid_index.errors import RadgrError
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
    dataset: Path = typer.Option(..., "--data", help="Dataset directory (or a catalog .parquet)."),
    out: Path = typer.Option(..., "--out", help="Index directory to write (atomically)."),
    codebooks: str = typer.Option("32,32,32", help="Codebook size per level; the paper uses 8192,4096,2048."),
    embedding_model: Path = typer.Option(None, help="Local sentence-transformers folder (default: bundled MiniLM)."),
    batch_size: int = typer.Option(128, help="Embedding batch size."),
    seed: int = typer.Option(0, help="k-means seed."),
    niter: int = typer.Option(25, help="k-means iterations per level."),
    cache_dir: Path = typer.Option(None, help="Embedding cache (default ~/.cache/radgr/embeddings or $RADGR_CACHE)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the embedding cache."),
    device: str = typer.Option(None, help="Embedding device (cpu, cuda)."),
) -> None:
    """Embed the catalog, run RQ-KMeans, write the index and print its stats."""
    from sid_index.build import IndexConfig, build_index

    kwargs = dict(
        dataset=dataset, out=out, codebook_sizes=parse_sizes(codebooks), embedding_model=embedding_model,
        batch_size=batch_size, seed=seed, niter=niter, device=device,
    )
    if no_cache:
        kwargs["cache_dir"] = None
    elif cache_dir is not None:
        kwargs["cache_dir"] = cache_dir
    try:
        cfg = IndexConfig(**kwargs)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise RadgrError(f"--{'-'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']}") from None
    path = build_index(cfg)
    typer.echo(f"index written to {path}")
    _print_stats(load_index(path, verify=False).manifest)


@index_app.command("stats")
def stats(
    index: Path = typer.Argument(..., help="Index directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest's stats as JSON."),
) -> None:
    """Print an index's stats: SKUs, SIDs, SKUs per SID, codebook use, fan-out, reconstruction error."""
    manifest = load_index(index).manifest
    if as_json:
        typer.echo(json.dumps(manifest["stats"], indent=2))
    else:
        _print_stats(manifest)


@index_app.command("lookup")
def lookup(
    index: Path = typer.Argument(..., help="Index directory."),
    sku: list[str] = typer.Option(None, "--sku", help="SKU id(s) -> SID."),
    sid: list[str] = typer.Option(None, "--sid", help="SID(s), '<a_1><b_2><c_3>' or '1-2-3' -> SKUs."),
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
        lines.append("  recon. error (rel.) " + "  ".join(f"L{i}:{r:.3f}" for i, r in enumerate(rec["relative_per_level"])))
    if "embedding" in m:
        lines.append(f"  embedding           {m['embedding']['model']} (dim {m['embedding']['dim']})")
    typer.echo("\n".join(lines))

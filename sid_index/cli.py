"""`radgr index ...`: build, describe and query a Semantic-ID index."""

from __future__ import annotations

import typer

index_app = typer.Typer(help="Semantic-ID index: RQ-KMeans codes, SID<->SKU maps, decoding trie.", no_args_is_help=True)

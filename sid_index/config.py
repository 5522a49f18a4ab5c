"""The typed config of `radgr index build` (its options are generated from it, sid_index/config_cli.py).
Light on purpose (no numpy, faiss or torch): the command line imports it when it starts."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sid_index.tokens import LEVEL_LETTERS

DEFAULT_CACHE = Path(os.environ.get("RADGR_CACHE", Path.home() / ".cache" / "radgr")) / "embeddings"


class IndexConfig(BaseModel):
    """Everything `radgr index build` needs."""

    model_config = ConfigDict(extra="forbid")

    dataset: Path = Field(description="dataset directory (its catalog.parquet is indexed) or a catalog .parquet")
    out: Path = Field(description="index directory to write (atomically)")
    codebook_sizes: list[int] | None = Field(
        None, description="codebook size per level, e.g. 64,64,64 (paper: 8192,4096,2048 for 170M SKUs); default: "
        "from the catalog size (the smallest power of two per level with 8 possible SIDs per SKU)",
        json_schema_extra={"comma_separated": True})
    embedding_model: Path | None = Field(None, description="local sentence-transformers folder (default: the "
                                         "bundled MiniLM)")
    batch_size: int = Field(128, gt=0, description="embedding batch size")
    seed: int = Field(0, ge=0, description="k-means seed")
    niter: int = Field(25, gt=0, description="k-means iterations per level")
    cache: bool = Field(True, description="read and write the embedding cache")
    cache_dir: Path = Field(DEFAULT_CACHE, description="embedding cache (default ~/.cache/radgr/embeddings or "
                            "$RADGR_CACHE)")
    device: str | None = Field(None, description="embedding device (cpu, cuda; default: what is there)")
    overwrite: bool = Field(True, description="replace an index already at `out`")
    unique_sids: bool = Field(False, description="append a level that tells apart the SKUs sharing a SID "
                              "(TIGER's extra code: the most popular SKU gets 0, the next 1, ...), so every SID "
                              "names one SKU; that level's centroids are zeros (it adds nothing to a SID's vector)")

    @field_validator("codebook_sizes")
    @classmethod
    def _sizes(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if not 1 <= len(v) <= len(LEVEL_LETTERS):
            raise ValueError(f"between 1 and {len(LEVEL_LETTERS)} levels")
        if any(k < 2 for k in v):
            raise ValueError("every codebook needs at least 2 codes")
        return v

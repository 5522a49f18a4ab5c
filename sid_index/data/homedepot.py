"""Home Depot Product Search Relevance (Kaggle 2016) -> interchange schema.

Each distinct query is one search session: its judged products are split by the
human relevance grade into positives, exposed negatives and the ambiguous middle
(the pseudo-negatives that reward weighting is meant to soften). Sessions are split
by query, so no test query is ever seen in training.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field, model_validator

from sid_index.data.schema import SESSION_SCHEMA, SPLITS, write_dataset
from sid_index.errors import DataError

COLUMNS = ("product_uid", "product_title", "search_term", "relevance")
DEFAULT_SRC = Path("../shared/data/homedepot/train.csv.zip")


class HomeDepotConfig(BaseModel):
    """How relevance grades become labels, and how queries are split."""

    pos_threshold: float = Field(2.67, description="relevance >= this is a positive")
    neg_threshold: float = Field(2.0, description="relevance <= this is an exposed negative")
    seed: int = Field(0, ge=0, description="seed of the train/valid/test split by query")
    split: tuple[float, float, float] = Field((0.8, 0.1, 0.1), description="train,valid,test fractions of the "
                                              "queries", json_schema_extra={"comma_separated": True})
    encoding: str = Field("latin-1", description="text encoding of the CSV (the Kaggle file is latin-1, not UTF-8)")

    @model_validator(mode="after")
    def _check(self) -> HomeDepotConfig:
        if not self.pos_threshold > self.neg_threshold:
            raise ValueError(
                f"pos_threshold ({self.pos_threshold}) must be > neg_threshold ({self.neg_threshold})"
            )
        if min(self.split) < 0 or not math.isclose(sum(self.split), 1.0, abs_tol=1e-6):
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {self.split}")
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(f"unknown encoding '{self.encoding}'") from None
        return self


@contextmanager
def _open_csv(src: Path) -> Iterator[IO[bytes]]:
    """The CSV as bytes: the single .csv member of a zip, or the plain file."""
    if not src.is_file():
        raise DataError(src, "file not found")
    if not zipfile.is_zipfile(src):
        with open(src, "rb") as fh:
            yield fh
        return
    try:
        zf = zipfile.ZipFile(src)
    except zipfile.BadZipFile as exc:
        raise DataError(src, f"damaged zip archive ({exc})") from None
    with zf:
        members = [n for n in zf.namelist() if n.lower().endswith(".csv") and not n.startswith("__MACOSX/")]
        if not members:
            raise DataError(src, "the zip archive holds no .csv file")
        if len(members) > 1:
            raise DataError(src, f"the zip archive holds several .csv files ({', '.join(members)}); pass one")
        with zf.open(members[0]) as fh:
            yield fh


def _decoded_lines(fh: IO[bytes], encoding: str, src: Path, counter: list[int]) -> Iterator[str]:
    """Decode line by line so a bad byte is reported with its line number."""
    for raw in fh:
        counter[0] += 1
        if counter[0] == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if b"\x00" in raw:
            raise DataError(src, f"NUL byte: not a {encoding} text file (UTF-16?)", row=counter[0])
        try:
            yield raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise DataError(
                src, f"cannot decode byte {raw[exc.start]:#04x} as {encoding}", row=counter[0]
            ) from None


def read_rows(src: Path, encoding: str = "latin-1") -> Iterator[tuple[int, str, str, str, float]]:
    """Yield (line, product_uid, title, query, relevance) per judged row, validating as it goes."""
    counter = [0]
    with _open_csv(src) as fh:
        reader = csv.reader(_decoded_lines(fh, encoding, src, counter))
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(src, "empty file (expected a header row)", row=1)
            header = [h.strip() for h in header]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise DataError(
                    src, f"missing column '{missing[0]}' (header: {', '.join(header)[:200]})", row=1
                )
            idx = [header.index(c) for c in COLUMNS]
            width = len(header)
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != width:
                    raise DataError(src, f"expected {width} fields, found {len(row)}", row=line)
                uid, title, query, rel = (row[i] for i in idx)
                uid, query = uid.strip(), query.strip()
                if not uid:
                    raise DataError(src, "empty value", row=line, column="product_uid")
                if not query:
                    raise DataError(src, "empty value", row=line, column="search_term")
                try:
                    grade = float(rel)
                except ValueError:
                    grade = math.nan
                if not math.isfinite(grade):
                    raise DataError(src, f"not a number: '{rel}'", row=line, column="relevance")
                yield line, uid, title, query, grade
        except csv.Error as exc:  # e.g. a field over the csv module's size limit
            raise DataError(src, f"malformed CSV ({exc})", row=counter[0]) from None
        except zipfile.BadZipFile as exc:
            raise DataError(src, f"damaged zip archive ({exc})", row=counter[0] + 1) from None


def split_queries(queries: list[str], fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Seeded split by query: a permutation of the sorted queries cut at the fractions."""
    order = sorted(queries)
    perm = np.random.default_rng(seed).permutation(len(order))
    cuts = np.round(np.cumsum(fractions)[:2] * len(order)).astype(int)
    out: dict[str, str] = {}
    for split, chunk in zip(SPLITS, np.split(perm, cuts), strict=True):
        for i in chunk:
            out[order[i]] = split
    return out


def search_sessions(judged: dict[str, dict[str, float]], split_of: dict[str, str], prefix: str,
                    pos_threshold: float, neg_threshold: float | None) -> dict[str, list]:
    """Session columns of graded search judgements (query -> {sku: grade}, queries in order): grade >=
    `pos_threshold` a positive (best first), <= `neg_threshold` an exposed negative (None: none), else
    ambiguous; session ids `<prefix>-000001`, ..."""
    columns = ("session_id", "split", "query", "history", "positives", "exposed_negatives", "ambiguous")
    out: dict[str, list] = {c: [] for c in columns}
    for n, (query, grades) in enumerate(judged.items(), start=1):
        items = sorted(grades.items())
        pos = sorted((it for it in items if it[1] >= pos_threshold), key=lambda it: (-it[1], it[0]))
        negative = [neg_threshold is not None and g <= neg_threshold for _, g in items]
        out["session_id"].append(f"{prefix}-{n:06d}")
        out["split"].append(split_of[query])
        out["query"].append(query)
        out["history"].append([])
        out["positives"].append([{"sku_id": s, "grade": g} for s, g in pos])
        out["exposed_negatives"].append([s for (s, _), neg in zip(items, negative, strict=True) if neg])
        out["ambiguous"].append([s for (s, g), neg in zip(items, negative, strict=True)
                                 if not neg and g < pos_threshold])
    return out


def build(
    src: str | Path, config: HomeDepotConfig | None = None
) -> tuple[pa.Table, pa.Table, dict[str, Any]]:
    """Read the CSV and return (catalog, sessions, info) in the interchange schema."""
    src, cfg = Path(src), config or HomeDepotConfig()
    titles: dict[str, str] = {}
    popularity: dict[str, int] = {}
    conflicts: dict[str, int] = {}
    judged: dict[str, dict[str, float]] = {}  # query -> {sku: relevance}, queries in first-seen order
    rows = 0
    for line, uid, title, query, grade in read_rows(src, cfg.encoding):
        rows += 1
        if uid in judged.setdefault(query, {}):
            raise DataError(src, f"product {uid} judged twice for query '{query}'", row=line)
        judged[query][uid] = grade
        if titles.setdefault(uid, title) != title:
            conflicts[uid] = conflicts.get(uid, 0) + 1
        popularity[uid] = popularity.get(uid, 0) + 1
    if rows == 0:
        raise DataError(src, "no data rows after the header", row=2)

    split_of = split_queries(list(judged), cfg.split, cfg.seed)
    sessions = search_sessions(judged, split_of, "hd", cfg.pos_threshold, cfg.neg_threshold)

    skus = sorted(titles)
    catalog = pa.table(
        {
            "sku_id": skus,
            "title": [titles[s] for s in skus],
            "popularity": pa.array([float(popularity[s]) for s in skus], pa.float64()),
        }
    )
    session_table = pa.table({k: pa.array(v, SESSION_SCHEMA.field(k).type) for k, v in sessions.items()})
    info = {
        "name": "homedepot",
        "source": str(src),
        "config": cfg.model_dump(),
        "rows_read": rows,
        "title_conflicts": len(conflicts),  # products seen with more than one title (first kept)
        "title_conflict_rows": sum(conflicts.values()),
        "title_conflict_skus": sorted(conflicts),
    }
    return catalog, session_table, info


def convert(
    src: str | Path, out: str | Path, config: HomeDepotConfig | None = None, overwrite: bool = False
) -> tuple[Path, dict[str, Any]]:
    """Build and write the dataset; returns (out path, info with stats)."""
    catalog, sessions, info = build(src, config)
    path = write_dataset(out, catalog, sessions, info, overwrite=overwrite)
    return path, json.loads((path / "dataset.json").read_text())

"""The interchange schema (Parquet) and its validating loader.

A dataset is a directory with three files:

- ``catalog.parquet``: one row per SKU (see ``CATALOG_SCHEMA``);
- ``sessions.parquet``: one row per search/recommendation session (``SESSION_SCHEMA``);
- ``dataset.json``: name, source, the adapter's parameters and row counts.

Every adapter writes through ``write_dataset`` and every consumer reads through
``load_dataset``, which checks columns, types, nulls, duplicates and that every SKU a
session names exists in the catalog, and reports the first problem as a one-line
``DataError`` naming the file and the 1-based row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sid_index.atomic import atomic_dir
from sid_index.errors import DataError

SCHEMA_VERSION = 1
SPLITS = ("train", "valid", "test")


def split_names(name: str) -> list[str]:
    """The splits a split name covers: "train" -> [train], "train+valid" -> [train, valid]."""
    return name.split("+")

CATALOG_SCHEMA = pa.schema(
    [
        pa.field("sku_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("text", pa.string()),  # optional longer description
        pa.field("category", pa.string()),  # path, levels joined by " > "
        pa.field("brand", pa.string()),
        pa.field("popularity", pa.float64()),  # higher = more popular; orders SKUs sharing a SID
    ]
)
CATALOG_REQUIRED = ("sku_id", "title")

# True relevance is graded 0-3; from this grade on an exposed item is relevant (a pseudo-negative when unclicked).
RELEVANT_GRADE = 2.0

POSITIVE_TYPE = pa.struct([pa.field("sku_id", pa.string()), pa.field("grade", pa.float32())])
# What the user was shown, with the truth where it is known (synthetic data): lets experiments
# measure how many exposed-but-unclicked items were in fact relevant (pseudo-negatives).
EXPOSURE_TYPE = pa.struct(
    [
        pa.field("sku_id", pa.string()),
        pa.field("position", pa.int32()),  # 1-based rank in the exposure list
        pa.field("relevance", pa.float32()),  # true graded relevance (null when unknown)
        pa.field("clicked", pa.bool_()),
        pa.field("ordered", pa.bool_()),
    ]
)

SESSION_SCHEMA = pa.schema(
    [
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),  # train | valid | test
        pa.field("query", pa.string()),  # may be empty (pure recommendation)
        pa.field("history", pa.list_(pa.string())),  # sku_ids, oldest first
        pa.field("user", pa.map_(pa.string(), pa.string())),  # optional user features
        pa.field("positives", pa.list_(POSITIVE_TYPE)),  # higher grade = stronger (order > click)
        pa.field("exposed_negatives", pa.list_(pa.string())),  # shown, not clicked
        pa.field("ambiguous", pa.list_(pa.string())),  # neither positive nor negative
        pa.field("exposure", pa.list_(EXPOSURE_TYPE)),  # optional: the full exposure list with truth
    ]
)
SESSION_REQUIRED = ("session_id", "split", "query", "history", "positives", "exposed_negatives")
SKU_LIST_COLUMNS = ("history", "positives", "exposed_negatives", "ambiguous", "exposure")


@dataclass
class Dataset:
    """A loaded, validated dataset."""

    root: Path
    catalog: pa.Table
    sessions: pa.Table
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.info.get("name", self.root.name)

    def split(self, name: str) -> pa.Table:
        """The sessions of one split, or of several joined by '+' ("train+valid"), in file order."""
        return self.sessions.filter(pc.is_in(self.sessions["split"], value_set=pa.array(split_names(name))))

    def stats(self) -> dict[str, Any]:
        return dataset_stats(self.catalog, self.sessions)


def write_dataset(
    out: str | Path, catalog: pa.Table, sessions: pa.Table, info: dict[str, Any], overwrite: bool = True
) -> Path:
    """Validate and write a dataset directory atomically; returns its path."""
    out = Path(out)
    catalog = conform(catalog, CATALOG_SCHEMA, out / "catalog.parquet", CATALOG_REQUIRED)
    sessions = conform(sessions, SESSION_SCHEMA, out / "sessions.parquet", SESSION_REQUIRED)
    validate_catalog(catalog, out / "catalog.parquet")
    validate_sessions(sessions, catalog, out / "sessions.parquet")
    info = {"schema_version": SCHEMA_VERSION, **info, "stats": dataset_stats(catalog, sessions)}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        pq.write_table(catalog, tmp / "catalog.parquet", compression="zstd")
        pq.write_table(sessions, tmp / "sessions.parquet", compression="zstd")
        (tmp / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def load_dataset(root: str | Path) -> Dataset:
    """Read and validate a dataset directory written by an adapter or by the user."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "not a dataset directory (expected catalog.parquet and sessions.parquet)")
    catalog = read_table(root / "catalog.parquet", CATALOG_SCHEMA, CATALOG_REQUIRED)
    validate_catalog(catalog, root / "catalog.parquet")
    sessions = read_table(root / "sessions.parquet", SESSION_SCHEMA, SESSION_REQUIRED)
    validate_sessions(sessions, catalog, root / "sessions.parquet")
    info_path = root / "dataset.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    return Dataset(root=root, catalog=catalog, sessions=sessions, info=info)


def load_catalog(path: str | Path) -> pa.Table:
    """Read and validate one catalog file (a dataset's, or any file in the catalog schema)."""
    table = read_table(Path(path), CATALOG_SCHEMA, CATALOG_REQUIRED)
    validate_catalog(table, Path(path))
    return table


def read_table(path: Path, schema: pa.Schema, required: tuple[str, ...]) -> pa.Table:
    """Read a Parquet file and conform it to `schema`, with one-line errors for what is wrong."""
    if not path.exists():
        raise DataError(path, "file not found")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(path, f"not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    return conform(table, schema, path, required)


def conform(table: pa.Table, schema: pa.Schema, path: Path, required: tuple[str, ...]) -> pa.Table:
    """Reorder/cast `table` to `schema`; missing optional columns become nulls."""
    if table.num_rows == 0:
        raise DataError(path, "no rows")
    names = set(table.column_names)
    for col in required:
        if col not in names:
            raise DataError(path, f"missing required column '{col}'")
    columns = []
    for fld in schema:
        if fld.name not in names:
            columns.append(pa.nulls(table.num_rows, fld.type))
            continue
        col = table[fld.name]
        if not col.type.equals(fld.type):
            col = _cast(col, fld, path)
        columns.append(col)
    return pa.table(dict(zip(schema.names, columns, strict=True)), schema=_nullable(schema))


def _nullable(schema: pa.Schema) -> pa.Schema:
    # Nullability is checked by the validators with row numbers, not by Arrow.
    return pa.schema([f.with_nullable(True) for f in schema])


def _cast(col: pa.ChunkedArray, fld: pa.Field, path: Path) -> pa.ChunkedArray:
    have, want = col.type, fld.type
    ok = (
        (pa.types.is_string(want) and (pa.types.is_large_string(have) or pa.types.is_null(have)))
        or (pa.types.is_floating(want) and (pa.types.is_integer(have) or pa.types.is_floating(have)))
        or (pa.types.is_integer(want) and pa.types.is_integer(have))
        or pa.types.is_null(have)
        or (pa.types.is_list(want) or pa.types.is_large_list(want) or pa.types.is_map(want))
    )
    if ok:
        try:
            return col.cast(want)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            pass
    raise DataError(path, f"wrong type: expected {want}, found {have}", column=fld.name)


def _first_row(mask: pa.ChunkedArray | pa.Array) -> int | None:
    """1-based index of the first true value of a boolean array, or None."""
    arr = np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)
    hits = np.flatnonzero(arr)
    return int(hits[0]) + 1 if hits.size else None


def _check_unique(table: pa.Table, col: str, path: Path) -> None:
    """Raise for the first repeated value of `col`, naming the row of its second occurrence."""
    values = table[col].to_numpy(zero_copy_only=False)
    _, first_idx, counts = np.unique(values, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = values[np.sort(first_idx[counts > 1])[0]]
        rows = np.flatnonzero(values == dup)[:2] + 1
        raise DataError(path, f"duplicate {col} '{dup}' (also row {rows[0]})", row=int(rows[1]), column=col)


def validate_catalog(catalog: pa.Table, path: Path) -> None:
    for col in CATALOG_REQUIRED:
        row = _first_row(pc.is_null(catalog[col]))
        if row is not None:
            raise DataError(path, "missing value", row=row, column=col)
    row = _first_row(pc.equal(pc.utf8_trim_whitespace(catalog["sku_id"]), ""))
    if row is not None:
        raise DataError(path, "empty sku_id", row=row, column="sku_id")
    _check_unique(catalog, "sku_id", path)
    pop = catalog["popularity"]
    row = _first_row(pc.or_(pc.is_nan(pop), pc.less(pop, 0))) if pop.null_count < len(pop) else None
    if row is not None:
        raise DataError(path, "popularity must be a number >= 0", row=row, column="popularity")


def validate_sessions(sessions: pa.Table, catalog: pa.Table, path: Path) -> None:
    for col in ("session_id", "split"):
        row = _first_row(pc.is_null(sessions[col]))
        if row is not None:
            raise DataError(path, "missing value", row=row, column=col)
    row = _first_row(pc.invert(pc.is_in(sessions["split"], value_set=pa.array(SPLITS))))
    if row is not None:
        bad = sessions["split"][row - 1].as_py()
        raise DataError(path, f"unknown split '{bad}' (expected one of {', '.join(SPLITS)})", row=row, column="split")
    _check_unique(sessions, "session_id", path)
    empty_query = pc.equal(pc.utf8_length(pc.fill_null(sessions["query"], "")), 0)
    empty_history = pc.equal(pc.fill_null(pc.list_value_length(sessions["history"]), 0), 0)
    row = _first_row(pc.and_(empty_query, empty_history))
    if row is not None:
        raise DataError(path, "session has neither a query nor a history", row=row)
    grades = pc.list_flatten(sessions["positives"]).combine_chunks()
    if len(grades):
        bad = pc.or_(pc.is_null(grades.field("grade")), pc.is_nan(grades.field("grade")))
        _check_list_flags(sessions, "positives", bad, path, "positive without a numeric grade")
    known = catalog["sku_id"].combine_chunks()
    for col in SKU_LIST_COLUMNS:
        values = pc.list_flatten(sessions[col]).combine_chunks()
        if len(values) == 0:
            continue
        if pa.types.is_struct(values.type):
            values = values.field("sku_id")
        unknown = pc.invert(pc.fill_null(pc.is_in(values, value_set=known), False))
        _check_list_flags(sessions, col, unknown, path, "unknown sku_id '{value}' (not in the catalog)", values)


def _check_list_flags(
    sessions: pa.Table, col: str, flags: pa.Array, path: Path, message: str, values: pa.Array | None = None
) -> None:
    """Raise for the first flagged element of list column `col`, naming its row."""
    hit = _first_row(flags)
    if hit is None:
        return
    parents = pc.list_parent_indices(sessions[col].combine_chunks())
    row = int(parents[hit - 1].as_py()) + 1
    value = values[hit - 1].as_py() if values is not None else None
    raise DataError(path, message.format(value=value), row=row, column=col)


def dataset_stats(catalog: pa.Table, sessions: pa.Table) -> dict[str, Any]:
    """Counts that adapters record and tests check."""
    splits = {s: int(pc.sum(pc.equal(sessions["split"], s)).as_py() or 0) for s in SPLITS}
    n_pos = pc.list_value_length(sessions["positives"])
    queries = pc.fill_null(sessions["query"], "")
    return {
        "skus": catalog.num_rows,
        "sessions": sessions.num_rows,
        "sessions_by_split": splits,
        "sessions_with_positives": int(pc.sum(pc.greater(pc.fill_null(n_pos, 0), 0)).as_py() or 0),
        "distinct_queries": len(pc.unique(pc.filter(queries, pc.not_equal(queries, "")))),
        "positives": int(pc.sum(n_pos).as_py() or 0),
        "exposed_negatives": int(pc.sum(pc.list_value_length(sessions["exposed_negatives"])).as_py() or 0),
        "ambiguous": int(pc.sum(pc.list_value_length(sessions["ambiguous"])).as_py() or 0),
        "mean_history": float(pc.mean(pc.fill_null(pc.list_value_length(sessions["history"]), 0)).as_py() or 0.0),
    }

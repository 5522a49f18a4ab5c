"""`radgr data import`: a user's own logs (CSV, TSV, JSONL or Parquet) -> the interchange schema.

Two shapes, the ones search and recommendation teams have:

- **search**: one row per (query, item) judgement or click: query, item, optionally a grade
  (a relevance score, or a click/order label as a number) and the item's title/text. Each
  distinct query is one session; items at grade >= `pos_threshold` are its positives (their
  grade kept), items at grade <= `neg_threshold` its exposed negatives, the rest ambiguous.
  Without a grade column every row is a positive (a click log). Sessions are split by query
  (seeded), so no test query is seen in training.
- **history**: one row per (user, item) interaction, ordered by a time column (else by file
  order). Leave-one-out per user, as RecBole and the sequential-recommendation literature do:
  the last item is the test target, the one before the valid target, and every earlier item is
  the train target of the history before it. Users with fewer than 3 interactions give train
  sessions only.

Titles (and descriptions) come from the title/text columns, or from a separate catalog file;
an item without a title gets its id as title. Duplicate (query, item) rows are resolved as
`duplicates` says: keep the max grade, the mean, or refuse. Every problem is a `DataError`
naming the file and the 1-based row.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, Field, model_validator

from sid_index.data.homedepot import search_sessions, split_queries
from sid_index.data.schema import SESSION_SCHEMA
from sid_index.errors import DataError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
MAX_ROWS = 50_000_000  # rows read from one file: an input file is untrusted


class ImportConfig(BaseModel):
    """How the columns of a user's file map onto sessions and the catalog."""

    shape: Literal["search", "history"] = Field(description="search (query -> judged/clicked items) or history "
                                                "(user -> items)")
    query_col: str = Field("query", description="search: the query column")
    item_col: str = Field("item_id", description="the item id column (log and catalog)")
    title_col: str | None = Field("title", description="the item title column (log or catalog)")
    text_col: str | None = Field(None, description="an item description column")
    grade_col: str | None = Field(None, description="search: a grade / label column (none: every row is a click, "
                                  "a positive)")
    user_col: str = Field("user_id", description="history: the user column")
    time_col: str | None = Field(None, description="history: a numeric time column (none: file order)")
    pos_threshold: float = Field(1.0, description="search: grade >= this is a positive")
    neg_threshold: float | None = Field(None, description="search: grade <= this is an exposed negative (none: no "
                                        "negatives)")
    split: tuple[float, float, float] = Field((0.8, 0.1, 0.1), description="search: train,valid,test fractions of "
                                              "the queries", json_schema_extra={"comma_separated": True})
    seed: int = Field(0, ge=0, description="search: seed of the split by query")
    duplicates: Literal["max", "mean", "error"] = Field("max", description="search: a (query, item) seen twice")
    name: str = Field("imported", description="dataset name (session ids start with it)")

    @model_validator(mode="after")
    def _check(self) -> ImportConfig:
        if self.neg_threshold is not None and not self.pos_threshold > self.neg_threshold:
            raise ValueError(f"pos_threshold ({self.pos_threshold}) must be > neg_threshold ({self.neg_threshold})")
        if min(self.split) < 0 or not math.isclose(sum(self.split), 1.0, abs_tol=1e-6):
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {self.split}")
        return self


def read_table(path: Path) -> pa.Table:
    """A CSV/TSV/JSONL/Parquet file as an Arrow table of strings (typed columns are parsed later, per row)."""
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(path, f"unknown format '{path.suffix}' (expected one of {', '.join(sorted(FORMATS))})")
    try:
        if kind == "parquet":
            table = pq.read_table(path)
        elif kind == "jsonl":
            table = pjson.read_json(path)
        else:
            table = pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter="," if kind == "csv" else "\t"),
                                  convert_options=pcsv.ConvertOptions(strings_can_be_null=False))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise DataError(path, f"cannot read as {kind}: {str(exc).splitlines()[0][:300]}") from None
    if table.num_rows > MAX_ROWS:
        raise DataError(path, f"{table.num_rows:,} rows: more than {MAX_ROWS:,}")
    return table


def _column(table: pa.Table, name: str | None, path: Path, required: bool = True) -> list | None:
    if name is None:
        return None
    if name not in table.column_names:
        if not required:
            return None
        raise DataError(path, f"no column '{name}' (columns: {', '.join(table.column_names)})", row=1)
    return table[name].to_pylist()


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _grade(value: Any, path: Path, row: int, col: str) -> float:
    try:
        grade = float(value)
    except (TypeError, ValueError):
        raise DataError(path, f"column '{col}': '{value}' is not a number", row=row) from None
    if not math.isfinite(grade):
        raise DataError(path, f"column '{col}': '{value}' is not a finite number", row=row)
    return grade


def _catalog(items: dict[str, tuple[str, str]], popularity: Counter[str]) -> pa.Table:
    skus = sorted(items)
    return pa.table({
        "sku_id": skus,
        "title": [items[s][0] or s for s in skus],
        "text": [items[s][1] or None for s in skus],
        "popularity": pa.array([float(popularity[s]) for s in skus], pa.float64()),
    })


def _items_from(table: pa.Table, cfg: ImportConfig, path: Path, items: dict[str, tuple[str, str]],
                text_required: bool) -> None:
    """Titles and texts by item id (first non-empty value wins)."""
    ids = _column(table, cfg.item_col, path)
    titles = _column(table, cfg.title_col, path, required=False) or [None] * len(ids)
    texts = _column(table, cfg.text_col, path, required=text_required and cfg.text_col is not None) or [None] * len(ids)
    for row, (item, title, text) in enumerate(zip(ids, titles, texts, strict=True), start=2):
        item = _text(item)
        if not item:
            raise DataError(path, f"column '{cfg.item_col}' is empty", row=row)
        old = items.get(item, ("", ""))
        items[item] = (old[0] or _text(title), old[1] or _text(text))


def build(src: Path, cfg: ImportConfig, catalog: Path | None = None) -> tuple[pa.Table, pa.Table, dict[str, Any]]:
    """Read `src` (and an optional catalog file) and return (catalog, sessions, info)."""
    src = Path(src)
    table = read_table(src)
    if table.num_rows == 0:
        raise DataError(src, "no data rows", row=2)
    items: dict[str, tuple[str, str]] = {}
    if catalog is not None:
        _items_from(read_table(catalog), cfg, Path(catalog), items, text_required=True)
    known = set(items)
    _items_from(table, cfg, src, items, text_required=catalog is None)
    if catalog is not None and set(items) - known:
        missing = sorted(set(items) - known)
        raise DataError(catalog, f"{len(missing)} items of {src.name} are not in the catalog (first: '{missing[0]}')")
    sessions, extra = (_search if cfg.shape == "search" else _history)(table, cfg, src)
    popularity: Counter[str] = Counter()
    for split, pos in zip(sessions["split"], sessions["positives"], strict=True):
        if split == "train":
            popularity.update(p["sku_id"] for p in pos)
    session_table = pa.table({k: pa.array(v, SESSION_SCHEMA.field(k).type) for k, v in sessions.items()})
    info = {"name": cfg.name, "source": str(src), "config": cfg.model_dump(mode="json"), "rows_read": table.num_rows,
            **extra}
    return _catalog(items, popularity), session_table, info


def _search(table: pa.Table, cfg: ImportConfig, path: Path) -> tuple[dict[str, list], dict[str, Any]]:
    queries = _column(table, cfg.query_col, path)
    ids = _column(table, cfg.item_col, path)
    grades = _column(table, cfg.grade_col, path) if cfg.grade_col else None
    judged: dict[str, dict[str, list[float]]] = {}
    duplicates = 0
    for row, (query, item) in enumerate(zip(queries, ids, strict=True), start=2):
        query, item = _text(query), _text(item)
        if not query:
            raise DataError(path, f"column '{cfg.query_col}' is empty", row=row)
        grade = _grade(grades[row - 2], path, row, cfg.grade_col) if grades else cfg.pos_threshold
        seen = judged.setdefault(query, {})
        if item in seen:
            if cfg.duplicates == "error":
                raise DataError(path, f"item '{item}' judged twice for query '{query}' (--duplicates max|mean)",
                                row=row)
            duplicates += 1
        seen.setdefault(item, []).append(grade)
    combine = max if cfg.duplicates == "max" else (lambda g: sum(g) / len(g))
    graded = {query: {item: float(combine(g)) for item, g in by_item.items()} for query, by_item in judged.items()}
    split_of = split_queries(list(judged), cfg.split, cfg.seed)
    out = search_sessions(graded, split_of, cfg.name, cfg.pos_threshold, cfg.neg_threshold)
    return out, {"duplicate_rows": duplicates}


def _history(table: pa.Table, cfg: ImportConfig, path: Path) -> tuple[dict[str, list], dict[str, Any]]:
    users = _column(table, cfg.user_col, path)
    ids = _column(table, cfg.item_col, path)
    times = _column(table, cfg.time_col, path) if cfg.time_col else None
    events: dict[str, list[tuple[float, int, str]]] = {}
    for row, (user, item) in enumerate(zip(users, ids, strict=True), start=2):
        user = _text(user)
        if not user:
            raise DataError(path, f"column '{cfg.user_col}' is empty", row=row)
        t = _grade(times[row - 2], path, row, cfg.time_col) if times else 0.0
        events.setdefault(user, []).append((t, row, _text(item)))  # ties keep the file's order
    columns = ("session_id", "split", "query", "history", "user", "positives", "exposed_negatives")
    out: dict[str, list] = {c: [] for c in columns}
    short = 0
    for user, evs in events.items():
        seq = [item for _, _, item in sorted(evs)]
        short += len(seq) < 3
        for k in range(1, len(seq)):  # target seq[k] after history seq[:k]
            split = "train"
            if len(seq) >= 3:
                split = "test" if k == len(seq) - 1 else "valid" if k == len(seq) - 2 else "train"
            out["session_id"].append(f"{cfg.name}-{split}-{len(out['session_id']) + 1:06d}")
            out["split"].append(split)
            out["query"].append("")
            out["history"].append(seq[:k])
            out["user"].append([("user_id", user)])
            out["positives"].append([{"sku_id": seq[k], "grade": 1.0}])
            out["exposed_negatives"].append([])
    if not out["session_id"]:
        raise DataError(path, "no user has two or more interactions: nothing to predict")
    return out, {"users": len(events), "users_under_3_interactions": short}

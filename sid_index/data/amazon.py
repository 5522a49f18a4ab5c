"""Amazon Reviews 2018 in RecBole atomic files (history -> next item) -> interchange schema.

Each row of `{name}.{train,valid,test}.inter` is one recommendation session with an
empty query: the user's history (oldest first) and the next item as the one positive.
Item indices are mapped back to the original ASINs so every dataset speaks SKUs.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from sid_index.data.schema import SESSION_SCHEMA, SPLITS, write_dataset
from sid_index.errors import DataError

DEFAULT_SRC = Path("../shared/data/amazon-scientific")
DEFAULT_NAME = "Scientific"  # the RecBole files' stem
INTER_HEADER = ("user_id:token", "item_id_list:token_seq", "item_id:token")
TEXT_HEADER = ("item_id:token", "text:token_seq")


def read_tsv(
    path: Path, width: int, header: tuple[str, ...] | None = None
) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) of a UTF-8 tab-separated file, checking the header and the width."""
    if not path.is_file():
        raise DataError(path, "file not found")
    with open(path, "rb") as fh:
        line = 0
        for line, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise DataError(path, f"not UTF-8 (byte {raw[exc.start]:#04x})", row=line) from None
            fields = text.split("\t")
            if line == 1 and header is not None:
                if tuple(f.strip() for f in fields) != header:
                    raise DataError(
                        path, f"expected header '{chr(9).join(header)}', found '{text[:80]}'", row=1
                    )
                continue
            if not text:
                continue
            if len(fields) != width:
                raise DataError(
                    path, f"expected {width} tab-separated columns, found {len(fields)}", row=line
                )
            yield line, fields
        if line == 0:
            raise DataError(path, "empty file", row=1)


def read_index(path: Path) -> dict[str, str]:
    """`original id TAB index` (no header) -> {index: original id}."""
    out: dict[str, str] = {}
    for line, (orig, idx) in read_tsv(path, 2):
        orig, idx = orig.strip(), idx.strip()
        if idx in out:
            raise DataError(path, f"index {idx} given twice ('{out[idx]}' and '{orig}')", row=line)
        out[idx] = orig
    return out


def split_text(text: str, root: str) -> tuple[str, str | None, str | None]:
    """'title. category path. brand. ' -> (title, category, brand).

    Titles and brands may themselves contain '. ' ("Mr. Heater", "J.V. Converting"), so the
    category is anchored on the catalog's root category when one is known, then on an empty
    category, and only then taken as the second-last part.
    """
    parts = text.strip().removesuffix(".").split(". ")
    if len(parts) < 3:
        return text.strip(), None, None
    at = [i for i, p in enumerate(parts) if i > 0 and root and p.startswith(root)]
    if not at:
        at = [i for i, p in enumerate(parts) if 0 < i < len(parts) - 1 and not p.strip()][:1]
    cat = at[-1] if at else len(parts) - 2
    title = ". ".join(parts[:cat]).strip()
    category = parts[cat].strip() or None
    brand = ". ".join(parts[cat + 1 :]).strip() or None
    return title or text.strip(), category, brand


def category_root(texts: list[str], share: float = 0.5) -> str:
    """The longest word prefix that more than `share` of the second-last parts start with ('' if none)."""
    cats = [
        p[-2].split()
        for t in texts
        if len(p := t.strip().removesuffix(".").split(". ")) >= 3 and p[-2].strip()
    ]
    root: tuple[str, ...] = ()
    for k in range(1, 20):
        counts = Counter(tuple(c[:k]) for c in cats if len(c) >= k)
        if not counts or counts.most_common(1)[0][1] <= share * len(cats):
            break
        root = counts.most_common(1)[0][0]
    return " ".join(root)


def _asin(items: dict[str, str], idx: str, path: Path, line: int, name: str) -> str:
    if idx not in items:
        raise DataError(path, f"item index '{idx}' not in {name}.item2index", row=line)
    return items[idx]


def build(src: str | Path, name: str = "Scientific") -> tuple[pa.Table, pa.Table, dict[str, Any]]:
    """Read the RecBole files under `src` and return (catalog, sessions, info)."""
    src = Path(src)
    items = read_index(src / f"{name}.item2index")
    users = read_index(src / f"{name}.user2index")
    text_path = src / f"{name}.text"
    texts: dict[str, str] = {}
    for line, (asin, text) in read_tsv(text_path, 2, TEXT_HEADER):
        asin = asin.strip()
        if asin in texts:
            raise DataError(text_path, f"item '{asin}' given twice", row=line)
        texts[asin] = text
    missing = sorted(set(items.values()) - set(texts))
    if missing:
        raise DataError(
            text_path, f"no text for {len(missing)} items of {name}.item2index (first: '{missing[0]}')"
        )

    columns = ("session_id", "split", "query", "history", "user", "positives", "exposed_negatives")
    sessions: dict[str, list] = {c: [] for c in columns}
    popularity: Counter[str] = Counter()  # train histories + train targets: no peeking at valid/test
    for split in SPLITS:
        path = src / f"{name}.{split}.inter"
        for n, (line, (user, hist, target)) in enumerate(read_tsv(path, 3, INTER_HEADER), start=1):
            user = user.strip()
            if user not in users:
                raise DataError(path, f"user index '{user}' not in {name}.user2index", row=line)
            history = [_asin(items, i, path, line, name) for i in hist.split()]
            if not history:
                raise DataError(path, "empty item_id_list (a session needs a history)", row=line)
            nxt = _asin(items, target.strip(), path, line, name)
            if split == "train":
                popularity.update(history)
                popularity[nxt] += 1
            sessions["session_id"].append(f"{name.lower()}-{split}-{n:06d}")
            sessions["split"].append(split)
            sessions["query"].append("")
            sessions["history"].append(history)
            sessions["user"].append([("user_id", users[user])])
            sessions["positives"].append([{"sku_id": nxt, "grade": 1.0}])
            sessions["exposed_negatives"].append([])

    root = category_root(list(texts.values()))
    skus = sorted(texts)
    fields = [split_text(texts[s], root) for s in skus]
    catalog = pa.table(
        {
            "sku_id": skus,
            "title": [f[0] for f in fields],
            "text": [texts[s] for s in skus],
            "category": [f[1] for f in fields],
            "brand": [f[2] for f in fields],
            "popularity": pa.array([float(popularity[s]) for s in skus], pa.float64()),
        }
    )
    session_table = pa.table({k: pa.array(v, SESSION_SCHEMA.field(k).type) for k, v in sessions.items()})
    info = {
        "name": f"amazon-{name.lower()}",
        "source": str(src),
        "config": {"name": name},
        "category_root": root,
    }
    return catalog, session_table, info


def convert(
    src: str | Path, out: str | Path, name: str = DEFAULT_NAME, overwrite: bool = False
) -> tuple[Path, dict[str, Any]]:
    """Build and write the dataset; returns (out path, info with stats)."""
    catalog, sessions, info = build(src, name)
    path = write_dataset(out, catalog, sessions, info, overwrite=overwrite)
    return path, json.loads((path / "dataset.json").read_text())

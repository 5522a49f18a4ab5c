"""The Semantic-ID index artifact: a directory written atomically, checked when loaded.

    manifest.json           format, version, levels, sizes, counts, embedding model,
                            stats, and the size + sha256 of every other file
    sku_to_sid.marisa       marisa RecordTrie: sku_id -> codes
    sid_to_skus.marisa      marisa BytesTrie: "17-4-250" -> sku_ids (tab-joined, by popularity)
    trie_l{l}_offsets.npy   CSR trie of valid SIDs, level by level (see sid_index.trie)
    trie_l{l}_codes.npy
    centroids_l{l}.npy      RQ-KMeans codebooks (when built from embeddings)
    sku_titles.marisa       marisa BytesTrie: sku_id -> catalog title, cut to TITLE_CHARS (when given):
                            what a person reads next to a result (`radgr query`, `with_titles`)
    sku_rows.marisa         marisa Trie: sku_id -> row of item_vectors.npy (when built from embeddings)
    item_vectors.npy        [SKUs, D] float16: each SKU's own text embedding, unquantised: the item prior
                            (`item_prior_scores`) ranks a beam's SKUs by it, which a SID's centroids cannot
    lexical/                BM25 index of the SKUs' text in item-vector row order (`sid_index.lexical`, bm25s's
                            own JSON + .npy files): the lexical term of the item-form index prior

`index_id` (a hash of the file checksums) names the index; checkpoints trained for it
record it, and the server refuses a checkpoint trained for another index. The lexical folder is left
out of the hash: it changes no SID, so adding one to an index (`attach_lexical`) keeps its checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import marisa_trie
import numpy as np

from sid_index import __version__
from sid_index.atomic import atomic_dir, sha256_file
from sid_index.errors import IndexFormatError, RadgrError
from sid_index.lexical import LEXICAL_DIR, LexicalScorer, write_lexical
from sid_index.trie import TrieArrays, build_trie, unique_sids

FORMAT = "radgr-sid-index"
FORMAT_VERSION = 1
SKU_SEP = "\t"
MANIFEST_FILE = "manifest.json"
TITLES_FILE = "sku_titles.marisa"
TITLE_CHARS = 200  # a title as shown next to a result; the full text stays in the catalog
ROWS_FILE = "sku_rows.marisa"
ITEM_VECTORS_FILE = "item_vectors.npy"


def sid_key(codes: Iterable[int]) -> str:
    return "-".join(str(int(c)) for c in codes)


@dataclass
class SidIndex:
    root: Path
    manifest: dict[str, Any]
    trie: TrieArrays
    sku_to_sid: marisa_trie.RecordTrie
    sid_to_skus: marisa_trie.BytesTrie
    titles: marisa_trie.BytesTrie | None = None  # indexes built without titles have none
    rows: marisa_trie.Trie | None = None  # sku_id -> row of item_vectors (indexes built from given codes: none)
    item_vectors: np.ndarray | None = None  # [SKUs, D] float16, memory-mapped
    _lexical: LexicalScorer | None = None

    @property
    def has_lexical(self) -> bool:
        return any(name.startswith(LEXICAL_DIR + "/") for name in self.manifest["files"])

    def lexical(self) -> LexicalScorer:
        """BM25 over the SKUs' text, rows as `item_vectors` (loaded on first use)."""
        if not self.has_lexical or self.item_vectors is None:
            raise RadgrError(f"index {self.root} keeps no lexical index: add one with `radgr index lexical "
                             f"{self.root} --data <dataset>` (or rebuild it with `radgr index build`)")
        if self._lexical is None:
            self._lexical = LexicalScorer.load(self.root / LEXICAL_DIR, len(self.item_vectors))
        return self._lexical

    @property
    def index_id(self) -> str:
        return self.manifest["index_id"]

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return tuple(self.manifest["codebook_sizes"])

    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    @property
    def num_sids(self) -> int:
        return self.manifest["num_sids"]

    @property
    def num_skus(self) -> int:
        return self.manifest["num_skus"]

    def sid_of(self, sku_id: str) -> tuple[int, ...] | None:
        """Codes of a SKU, or None if the SKU is not in the index."""
        if "\x00" in sku_id:  # marisa-trie misreads such a key (struct.error); no catalog SKU holds one
            return None
        hit = self.sku_to_sid.get(sku_id)
        return tuple(hit[0]) if hit else None

    def title_of(self, sku_id: str) -> str | None:
        """The SKU's catalog title (cut to TITLE_CHARS), or None: unknown SKU, or an index without titles."""
        if self.titles is None or "\x00" in sku_id:
            return None
        hit = self.titles.get(sku_id)
        return hit[0].decode("utf-8") if hit else None

    def vectors_of(self, sku_ids: Sequence[str]) -> np.ndarray:
        """The SKUs' own text embeddings [len, D] float32 (unquantised); zeros for an unknown SKU."""
        if self.item_vectors is None or self.rows is None:
            raise RadgrError(f"index {self.root} keeps no item vectors (built before they were kept, or from "
                             "given codes): rebuild it with `radgr index build` for the item prior")
        rows = [self.rows.get(s, -1) if "\x00" not in s else -1 for s in sku_ids]
        out = np.zeros((len(rows), self.item_vectors.shape[1]), dtype=np.float32)
        known = [i for i, r in enumerate(rows) if r >= 0]
        if known:
            out[known] = self.item_vectors[[rows[i] for i in known]]
        return out

    def skus_of(self, codes: Sequence[int]) -> list[str]:
        """SKUs sharing a SID, most popular first; [] for a SID not in the index."""
        hit = self.sid_to_skus.get(sid_key(codes))
        return hit[0].decode("utf-8").split(SKU_SEP) if hit else []

    def skus_of_many(self, codes: np.ndarray) -> list[list[str]]:
        return [self.skus_of(row) for row in np.asarray(codes).tolist()]

    def constraint(self, device: str = "cpu", **kwargs):
        from sid_index.constraint import SidConstraint  # torch: only the decoders need it, not data or index tools

        return SidConstraint(self.trie, device=device, **kwargs)


def scored_items(sids: Sequence[Sequence[int]], scores: Sequence[float], skus_of,
                 item_bonus: Callable[[list[str]], np.ndarray] | None = None) -> list[tuple[str, int, float]]:
    """The SKUs of a scored SID list (a beam: log-probs), best item first, as (sku, SID rank, item score).

    Every SKU on a SID is trained on the same tokens, so a SID's probability is the mass of all of its
    SKUs; each SKU gets an equal share, log p(SID) - log |SKUs(SID)|. A SID crowded with SKUs then no
    longer fills the top of the item list with its SKUs ahead of a slightly less likely SID with one.
    `item_bonus(skus)` -> one score per SKU added to its share (the weighted item prior: what tells apart
    the SKUs of a SID, and a SID's SKUs from its neighbours'). Ties keep the SID order, then the index's
    order within a SID (most popular first).
    """
    out = []
    for rank, (sid, score) in enumerate(zip(sids, scores, strict=True)):
        skus = skus_of(sid)
        if skus:
            share = float(score) - float(np.log(len(skus)))
            out.extend((sku, rank, share) for sku in skus)
    if item_bonus is not None and out:
        bonus = np.asarray(item_bonus([sku for sku, _, _ in out]), dtype=np.float64)
        out = [(sku, rank, share + float(b)) for (sku, rank, share), b in zip(out, bonus, strict=True)]
    out.sort(key=lambda item: -item[2])  # stable: ties stay in SID order, then the index's order
    return out


def write_index(
    out: str | Path,
    sku_ids: Sequence[str],
    codes: np.ndarray,
    codebook_sizes: Sequence[int],
    popularity: np.ndarray | None = None,
    centroids: Sequence[np.ndarray] | None = None,
    meta: dict[str, Any] | None = None,
    overwrite: bool = True,
    titles: Sequence[str] | None = None,
    item_vectors: np.ndarray | None = None,
    item_texts: Sequence[str] | None = None,
) -> Path:
    """Write an index for SKUs with their codes [N, L]; SKUs sharing a SID are ordered by popularity;
    `titles` (one per SKU) are kept for display, `item_vectors` [N, D] (the SKUs' text embeddings) for
    the item prior, `item_texts` (with the vectors) for its lexical term."""
    codes = np.asarray(codes, dtype=np.int64)
    n = len(sku_ids)
    if codes.shape != (n, len(codebook_sizes)):
        raise ValueError(f"codes shape {codes.shape} != ({n}, {len(codebook_sizes)})")
    popularity = np.zeros(n) if popularity is None else np.nan_to_num(np.asarray(popularity, dtype=np.float64))
    sids, sid_of_row = unique_sids(codes)
    trie = build_trie(sids, codebook_sizes)

    # SKUs grouped by SID, most popular first, ties by sku_id for determinism.
    skus = np.asarray(sku_ids, dtype=object)
    order = np.lexsort((skus, -popularity, sid_of_row))
    bounds = np.flatnonzero(np.diff(sid_of_row[order])) + 1
    groups = np.split(order, bounds) if n else []
    sid_keys = ["-".join(map(str, row)) for row in sids.tolist()]
    sid_map = marisa_trie.BytesTrie(
        (key, SKU_SEP.join(skus[g]).encode("utf-8")) for key, g in zip(sid_keys, groups, strict=True)
    )
    fmt = "<" + "i" * len(codebook_sizes)
    sku_map = marisa_trie.RecordTrie(fmt, zip(sku_ids, map(tuple, codes.tolist()), strict=True))

    per_sid = np.bincount(sid_of_row, minlength=len(sids)) if n else np.zeros(0, np.int64)
    stats = index_stats(codes, per_sid, trie, meta.get("recon") if meta else None)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        sku_map.save(str(tmp / "sku_to_sid.marisa"))
        sid_map.save(str(tmp / "sid_to_skus.marisa"))
        for level in range(trie.levels):
            np.save(tmp / f"trie_l{level}_offsets.npy", trie.offsets[level])
            np.save(tmp / f"trie_l{level}_codes.npy", trie.codes[level])
        if titles is not None:
            if len(titles) != n:
                raise ValueError(f"{len(titles)} titles for {n} SKUs")
            marisa_trie.BytesTrie((sku, str(t)[:TITLE_CHARS].encode("utf-8"))
                                  for sku, t in zip(sku_ids, titles, strict=True)).save(str(tmp / TITLES_FILE))
        for level, c in enumerate(centroids or []):
            np.save(tmp / f"centroids_l{level}.npy", np.asarray(c, dtype=np.float32))
        if item_vectors is not None:
            if len(item_vectors) != n:
                raise ValueError(f"{len(item_vectors)} item vectors for {n} SKUs")
            rows = marisa_trie.Trie(sku_ids)
            order = np.empty(n, dtype=np.int64)
            order[[rows[s] for s in sku_ids]] = np.arange(n)  # row r holds the SKU whose key id is r
            rows.save(str(tmp / ROWS_FILE))
            np.save(tmp / ITEM_VECTORS_FILE, np.asarray(item_vectors, dtype=np.float16)[order])
        if item_texts is not None:
            if item_vectors is None or len(item_texts) != n:
                raise ValueError(f"{len(item_texts)} item texts for {n} SKUs (and item vectors needed)")
            write_lexical(tmp / LEXICAL_DIR, [str(item_texts[i]) for i in order])
        files = _listing(tmp)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "index_id": _index_id(files),
            "created_by": f"radgr {__version__}",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "levels": len(codebook_sizes),
            "codebook_sizes": [int(k) for k in codebook_sizes],
            "num_skus": int(n),
            "num_sids": int(len(sids)),
            "trie_nodes": [trie.nodes(level) for level in range(trie.levels)],
            **(meta or {}),
            "stats": stats,
            "files": files,
        }
        manifest.pop("recon", None)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return Path(out)


def _listing(folder: Path) -> dict[str, dict[str, Any]]:
    """Every file under `folder` (names relative, '/'-separated) with its size and sha256."""
    return {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _index_id(files: dict[str, dict[str, Any]]) -> str:
    """The hash of the files that define the SIDs (the lexical folder left out: see the module docstring)."""
    core = {name: meta for name, meta in files.items() if not name.startswith(LEXICAL_DIR + "/")}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]


def attach_lexical(path: str | Path, texts_by_sku: dict[str, str]) -> Path:
    """Rewrite index `path` (atomically) with a lexical folder over `texts_by_sku`; same `index_id`."""
    index = load_index(path)
    if index.rows is None:
        raise RadgrError(f"index {index.root} keeps no item vectors: rebuild it with `radgr index build`")
    skus = [index.rows.restore_key(r) for r in range(len(index.rows))]
    missing = [s for s in skus if s not in texts_by_sku]
    if missing:
        raise RadgrError(f"{len(missing)} SKUs of index {index.root} have no text in the catalog "
                         f"(first: {missing[0]}): is it the catalog the index was built from?")
    with atomic_dir(index.root, overwrite=True) as tmp:
        for name in index.manifest["files"]:
            if not name.startswith(LEXICAL_DIR + "/"):
                shutil.copy2(index.root / name, tmp / name)
        write_lexical(tmp / LEXICAL_DIR, [texts_by_sku[s] for s in skus])
        files = _listing(tmp)
        if _index_id(files) != index.index_id:
            raise IndexFormatError(f"{index.root}: copying the index changed its files")
        manifest = {**index.manifest, "files": files}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return index.root


def load_index(path: str | Path, verify: bool = True, mmap: bool = True) -> SidIndex:
    """Open an index directory; refuses a missing, damaged or other-version artifact with a clear message."""
    root = Path(path)
    mpath = root / MANIFEST_FILE
    if not root.is_dir():
        raise IndexFormatError(f"{root}: no such index directory")
    if not mpath.exists():
        raise IndexFormatError(f"{root}: not a SID index (no {MANIFEST_FILE})")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{mpath}: damaged manifest ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{mpath}: not a SID index manifest (format={manifest.get('format')!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(
            f"{root}: index format version {manifest.get('format_version')} is not supported by this radgr "
            f"(expects {FORMAT_VERSION}); rebuild it with `radgr index build`"
        )
    for name, meta in manifest["files"].items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise IndexFormatError(f"{mpath}: file name {name!r} points outside the index")
        f = root / name
        if not f.exists():
            raise IndexFormatError(f"{f}: missing index file")
        if f.stat().st_size != meta["bytes"]:
            raise IndexFormatError(f"{f}: damaged ({f.stat().st_size} bytes, manifest says {meta['bytes']})")
        if verify and sha256_file(f) != meta["sha256"]:
            raise IndexFormatError(f"{f}: damaged (checksum mismatch); rebuild the index")
    levels = manifest["levels"]
    mode = "r" if mmap else None
    trie = TrieArrays(
        tuple(manifest["codebook_sizes"]),
        [np.load(root / f"trie_l{level}_offsets.npy", mmap_mode=mode) for level in range(levels)],
        [np.load(root / f"trie_l{level}_codes.npy", mmap_mode=mode) for level in range(levels)],
    )
    fmt = "<" + "i" * levels
    sku_map = marisa_trie.RecordTrie(fmt)
    sid_map = marisa_trie.BytesTrie()
    if mmap:
        sku_map.mmap(str(root / "sku_to_sid.marisa"))
        sid_map.mmap(str(root / "sid_to_skus.marisa"))
    else:
        sku_map.load(str(root / "sku_to_sid.marisa"))
        sid_map.load(str(root / "sid_to_skus.marisa"))
    titles = None
    if TITLES_FILE in manifest["files"]:
        titles = marisa_trie.BytesTrie()
        if mmap:
            titles.mmap(str(root / TITLES_FILE))
        else:
            titles.load(str(root / TITLES_FILE))
    rows = vectors = None
    if ROWS_FILE in manifest["files"] and ITEM_VECTORS_FILE in manifest["files"]:
        rows = marisa_trie.Trie()
        if mmap:
            rows.mmap(str(root / ROWS_FILE))
        else:
            rows.load(str(root / ROWS_FILE))
        vectors = np.load(root / ITEM_VECTORS_FILE, mmap_mode=mode, allow_pickle=False)
        if vectors.ndim != 2 or len(vectors) != len(rows) or len(rows) != manifest["num_skus"]:
            raise IndexFormatError(f"{root / ITEM_VECTORS_FILE}: shape {vectors.shape} does not match "
                                   f"{manifest['num_skus']} SKUs")
    return SidIndex(root=root, manifest=manifest, trie=trie, sku_to_sid=sku_map, sid_to_skus=sid_map, titles=titles,
                    rows=rows, item_vectors=vectors)


def require_index(trained_for: str | None, index: SidIndex, what: str) -> None:
    """Refuse `what` (a checkpoint, a training run) trained for another index than `index`, in one line."""
    if trained_for != index.index_id:
        raise RadgrError(f"{what} was trained for index {trained_for}, but index {index.root} is {index.index_id}")


def load_centroids(index: SidIndex) -> list[np.ndarray]:
    return [np.load(index.root / f"centroids_l{level}.npy") for level in range(index.levels)
            if (index.root / f"centroids_l{level}.npy").exists()]


def index_stats(codes: np.ndarray, per_sid: np.ndarray, trie: TrieArrays, recon: dict | None) -> dict[str, Any]:
    """SKUs, SIDs, SKUs per SID (max, mean, histogram), codebook use per level, trie fan-out, recon error."""
    bins = [(1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (17, None)]
    hist = {}
    for lo, hi in bins:
        label = str(lo) if lo == hi else (f"{lo}+" if hi is None else f"{lo}-{hi}")
        sel = per_sid >= lo if hi is None else (per_sid >= lo) & (per_sid <= hi)
        hist[label] = int(sel.sum())
    usage = []
    for level, k in enumerate(trie.codebook_sizes):
        counts = np.bincount(codes[:, level], minlength=k) if len(codes) else np.zeros(k)
        p = counts[counts > 0] / max(counts.sum(), 1)
        usage.append(
            {
                "codebook_size": int(k),
                "used": int((counts > 0).sum()),
                "used_share": float((counts > 0).mean()),
                "max_share": float(counts.max() / max(counts.sum(), 1)) if len(codes) else 0.0,
                "perplexity": float(np.exp(-(p * np.log(p)).sum())) if len(p) else 0.0,
            }
        )
    n = len(codes)
    return {
        "skus": int(n),
        "sids": int(len(per_sid)),
        "skus_per_sid": {
            "max": int(per_sid.max()) if len(per_sid) else 0,
            "mean": float(per_sid.mean()) if len(per_sid) else 0.0,
            "histogram": hist,
            "skus_sharing_a_sid": int(per_sid[per_sid > 1].sum()),
        },
        "codebook_usage": usage,
        "trie_fanout": trie.fanout_stats(),
        **({"reconstruction": recon} if recon else {}),
    }


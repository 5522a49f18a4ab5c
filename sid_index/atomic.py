"""Atomic writes: a result appears complete under its final name or not at all.

Everything is written to a hidden temporary sibling and renamed at the end, so an
interrupted run never leaves a half-written file or directory behind, and an earlier
result at the same path survives until the new one is complete.

A directory may also carry `checksums.json` (SHA-256 and size of every other file), written
last: it proves the folder complete and unaltered (`verify_checksums`). Replacing an existing
directory takes two renames (old out of the way, new in); a crash between them leaves no folder
under the final name, only complete hidden siblings, and `recover_dir` puts the newest back.
Leftover siblings of earlier interrupted writes are removed after the next successful one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sid_index.errors import RadgrError

CHECKSUMS = "checksums.json"
HASH_CHUNK = 1 << 20  # bytes read at a time: hashing never holds a whole weight file in memory


@contextlib.contextmanager
def atomic_dir(final: str | Path, overwrite: bool = True, checksums: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `final` when the block succeeds; `checksums`:
    write `checksums.json` into it last."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists (pass --overwrite to replace it)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        if checksums:
            write_checksums(tmp)
        _fsync_dir(tmp)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)  # a crash before this line: recover_dir(final) finds tmp (or old)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for stale in leftovers(final):  # this write's old copy and those of earlier interrupted writes
        shutil.rmtree(stale, ignore_errors=True)


def leftovers(final: str | Path) -> list[Path]:
    """Hidden siblings that atomic writes of `final` left behind (interrupted or not yet cleaned), newest first."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    found = [p for p in final.parent.iterdir()
             if p.is_dir() and (p.name.startswith(f".{final.name}.tmp-") or p.name.startswith(f".{final.name}.old-"))]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def complete_leftover(final: str | Path) -> Path | None:
    """The newest leftover of `final` whose checksums prove it complete, or None."""
    for candidate in leftovers(final):
        try:
            if verify_checksums(candidate):
                return candidate
        except RadgrError:
            continue
    return None


def recover_dir(final: str | Path) -> Path | None:
    """When `final` is missing after an interrupted replace, rename the newest complete leftover to it;
    returns the leftover used (None: nothing to do or nothing complete)."""
    final = Path(final)
    if final.exists():
        return None
    found = complete_leftover(final)
    if found is not None:
        os.replace(found, final)
    return found


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_checksums(folder: Path) -> None:
    """`checksums.json`: size and SHA-256 of every file under `folder` (relative POSIX paths)."""
    files = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != CHECKSUMS}
    (folder / CHECKSUMS).write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=1) + "\n")


def verify_checksums(folder: str | Path) -> bool:
    """Check every file `checksums.json` lists (streaming SHA-256); False when the folder has none (written
    before checksums existed), a one-line `RadgrError` naming the first file that is missing or differs."""
    folder = Path(folder)
    listing = folder / CHECKSUMS
    if not listing.is_file():
        return False
    try:
        files = json.loads(listing.read_text())["files"]
        expected = {str(k): (int(v["bytes"]), str(v["sha256"])) for k, v in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise RadgrError(f"{listing}: damaged checksum list") from None
    for rel, (size, digest) in expected.items():
        path = folder / rel
        if ".." in Path(rel).parts or not path.is_file():
            raise RadgrError(f"{path}: missing (listed in {CHECKSUMS})")
        if path.stat().st_size != size or sha256_file(path) != digest:
            raise RadgrError(f"{path}: damaged (its SHA-256 differs from {CHECKSUMS})")
    return True


@contextlib.contextmanager
def atomic_file(final: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary sibling of `final` for writing; rename it over `final` on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Write `obj` as JSON (indented unless `indent` is None: compact, for results with per-session lists),
    atomically."""
    with atomic_file(path, "w") as fh:
        json.dump(obj, fh, indent=indent, sort_keys=False)
        fh.write("\n")


def _fsync_dir(path: Path) -> None:
    for child in path.rglob("*"):
        if child.is_file():
            with open(child, "rb") as fh:
                os.fsync(fh.fileno())

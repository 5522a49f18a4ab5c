"""Atomic directories: checksums prove a folder complete and unaltered; a crash between the two renames of a
replace is recovered from the hidden leftovers; stale leftovers are cleaned."""

from __future__ import annotations

import json
import os

import pytest

from sid_index import atomic
from sid_index.atomic import CHECKSUMS, atomic_dir, leftovers, recover_dir, verify_checksums
from sid_index.errors import RadgrError


def write(final, text: str, **kw):
    with atomic_dir(final, checksums=True, **kw) as tmp:
        (tmp / "weights.bin").write_bytes(text.encode() * 1000)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "meta.json").write_text(json.dumps({"v": text}))


def test_checksums_catch_flipped_truncated_and_missing_files(tmp_path):
    final = tmp_path / "ck"
    write(final, "a")
    listed = json.loads((final / CHECKSUMS).read_text())["files"]
    assert set(listed) == {"weights.bin", "sub/meta.json"} and verify_checksums(final)
    data = bytearray((final / "weights.bin").read_bytes())
    data[500:504] = b"\xff\xff\xff\xff"  # same size, other bytes
    (final / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(RadgrError, match="weights.bin: damaged"):
        verify_checksums(final)
    (final / "weights.bin").write_bytes(b"a" * 10)
    with pytest.raises(RadgrError, match="damaged"):
        verify_checksums(final)
    (final / "weights.bin").unlink()
    with pytest.raises(RadgrError, match="weights.bin: missing"):
        verify_checksums(final)
    (final / CHECKSUMS).write_text('{"files": 3}')
    with pytest.raises(RadgrError, match="damaged checksum list"):
        verify_checksums(final)
    (final / CHECKSUMS).unlink()
    assert verify_checksums(final) is False  # written before checksums existed: unverified, not refused


def test_a_crash_between_the_two_renames_is_recovered(tmp_path, monkeypatch):
    final = tmp_path / "ck"
    write(final, "old")
    real = os.replace
    calls = []

    def crash_on_second(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # old moved away, new not yet in place
            raise KeyboardInterrupt("killed")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        write(final, "new")
    monkeypatch.setattr(atomic.os, "replace", real)
    assert not final.exists() and len(leftovers(final)) == 1  # the new copy was removed by the failing block...
    left = leftovers(final)[0]
    assert ".old-" in left.name  # ...and the old complete one waits under a hidden name
    assert recover_dir(final) == left and json.loads((final / "sub" / "meta.json").read_text()) == {"v": "old"}
    assert verify_checksums(final) and recover_dir(final) is None  # nothing left to do


def test_recovery_takes_the_newest_complete_leftover_and_skips_incomplete_ones(tmp_path):
    final = tmp_path / "ck"
    write(final, "v1")
    os.replace(final, tmp_path / ".ck.old-1")
    write(tmp_path / "staging", "v2")
    os.replace(tmp_path / "staging", tmp_path / ".ck.tmp-2")
    os.utime(tmp_path / ".ck.tmp-2", (2e9, 2e9))
    (tmp_path / ".ck.tmp-3").mkdir()  # a save killed while writing: no checksums
    (tmp_path / ".ck.tmp-3" / "weights.bin").write_bytes(b"half")
    os.utime(tmp_path / ".ck.tmp-3", (3e9, 3e9))
    assert recover_dir(final).name == ".ck.tmp-2"
    assert json.loads((final / "sub" / "meta.json").read_text()) == {"v": "v2"}


def test_a_successful_write_cleans_stale_leftovers(tmp_path):
    final = tmp_path / "ck"
    write(final, "v1")
    for name in (".ck.tmp-abc", ".ck.old-99"):
        (tmp_path / name).mkdir()
    (tmp_path / ".other.tmp-1").mkdir()  # another folder's: not ours to remove
    write(final, "v2")
    assert leftovers(final) == [] and (tmp_path / ".other.tmp-1").exists()

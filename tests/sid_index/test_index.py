"""The index artifact: round trips, popularity order, and refusal of damaged or mismatched artifacts."""

import json

import numpy as np
import pytest

from sid_index.errors import IndexFormatError, RadgrError
from sid_index.index import ITEM_VECTORS_FILE, TITLE_CHARS, TITLES_FILE, load_index, write_index

SIZES = (8, 4, 4)


@pytest.fixture
def built(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    codes = np.stack([rng.integers(0, k, n) for k in SIZES], 1)
    skus = [f"sku-{i}" for i in range(n)]
    pop = rng.integers(0, 5, n).astype(float)
    path = write_index(tmp_path / "idx", skus, codes, SIZES, popularity=pop, meta={"note": "t"})
    return path, skus, codes, pop


def test_lookups_round_trip(built):
    path, skus, codes, pop = built
    idx = load_index(path)
    for i in range(0, len(skus), 7):
        assert idx.sid_of(skus[i]) == tuple(codes[i])
        group = idx.skus_of(codes[i])
        assert skus[i] in group
        # every SKU of the SID, most popular first, ties by sku_id
        same = [j for j in range(len(skus)) if tuple(codes[j]) == tuple(codes[i])]
        expected = [skus[j] for j in sorted(same, key=lambda j: (-pop[j], skus[j]))]
        assert group == expected
    assert idx.sid_of("absent") is None
    for odd in ("\x00", skus[0] + "\x00", "\x00" + skus[0]):  # NUL bytes (a fuzzed request found them) are absent
        assert idx.sid_of(odd) is None
    assert idx.skus_of((7, 3, 3)) == [] or (7, 3, 3) in set(map(tuple, codes))
    assert idx.num_skus == len(skus)
    assert idx.num_sids == len(set(map(tuple, codes)))
    assert sorted(map(tuple, idx.trie.sids().tolist())) == sorted(set(map(tuple, codes.tolist())))


@pytest.mark.parametrize("mmap", [True, False])
def test_titles_round_trip_cut_and_checked(built, tmp_path, mmap):
    """Titles (any text, cut to TITLE_CHARS) come back per SKU; an index built without them answers None;
    the titles file is covered by the manifest's checksums like every other file."""
    _, skus, codes, _ = built
    titles = [f"Drill «{i}» 18 V, ünïcode" if i % 3 else "x" * (TITLE_CHARS + 50) for i in range(len(skus))]
    path = write_index(tmp_path / "titled", skus, codes, SIZES, titles=titles)
    idx = load_index(path, mmap=mmap)
    assert [idx.title_of(s) for s in skus] == [t[:TITLE_CHARS] for t in titles]
    assert idx.title_of("absent") is None and idx.title_of(skus[1] + "\x00") is None
    assert load_index(built[0]).title_of(skus[1]) is None  # no titles given
    with pytest.raises(ValueError, match="3 titles for 400 SKUs"):
        write_index(tmp_path / "bad", skus, codes, SIZES, titles=titles[:3])
    raw = bytearray((path / TITLES_FILE).read_bytes())
    raw[-1] ^= 0xFF
    (path / TITLES_FILE).write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="sku_titles.marisa: damaged"):
        load_index(path)


@pytest.mark.parametrize("mmap", [True, False])
def test_item_vectors_round_trip_by_sku(built, tmp_path, mmap):
    """Each SKU's own vector comes back by sku_id (float16, in any order asked; unknown SKUs get zeros);
    an index built without vectors refuses with a message; the file is under the manifest's checksums."""
    _, skus, codes, _ = built
    vectors = np.random.default_rng(1).normal(size=(len(skus), 6)).astype(np.float32)
    path = write_index(tmp_path / "vec", skus, codes, SIZES, item_vectors=vectors)
    idx = load_index(path, mmap=mmap)
    asked = [skus[7], "absent", skus[0], skus[399], skus[7] + "\x00"]
    got = idx.vectors_of(asked)
    want = np.stack([vectors[7], np.zeros(6), vectors[0], vectors[399], np.zeros(6)]).astype(np.float16)
    np.testing.assert_array_equal(got, want.astype(np.float32))
    assert got.dtype == np.float32
    with pytest.raises(RadgrError, match="keeps no item vectors"):
        load_index(built[0]).vectors_of(skus[:1])
    with pytest.raises(ValueError, match="3 item vectors for 400 SKUs"):
        write_index(tmp_path / "bad", skus, codes, SIZES, item_vectors=vectors[:3])
    raw = bytearray((path / ITEM_VECTORS_FILE).read_bytes())
    raw[-1] ^= 0xFF
    (path / ITEM_VECTORS_FILE).write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="checksum"):
        load_index(path)


def test_stats_are_consistent(built):
    path, skus, codes, _ = built
    s = load_index(path).manifest["stats"]
    per = {}
    for c in map(tuple, codes):
        per[c] = per.get(c, 0) + 1
    assert s["sids"] == len(per)
    assert s["skus_per_sid"]["max"] == max(per.values())
    assert sum(s["skus_per_sid"]["histogram"].values()) == len(per)
    assert s["skus_per_sid"]["skus_sharing_a_sid"] == sum(v for v in per.values() if v > 1)
    assert [u["used"] for u in s["codebook_usage"]] == [len(set(codes[:, lvl])) for lvl in range(3)]


def test_same_input_same_index_id(built, tmp_path):
    path, skus, codes, pop = built
    again = write_index(tmp_path / "again", skus, codes, SIZES, popularity=pop, meta={"note": "t"})
    assert load_index(again).index_id == load_index(path).index_id
    other = write_index(tmp_path / "other", skus, np.roll(codes, 1, axis=0), SIZES, popularity=pop)
    assert load_index(other).index_id != load_index(path).index_id


def test_flipped_byte_is_refused(built):
    path = built[0]
    f = path / "trie_l2_codes.npy"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match=r"trie_l2_codes.npy: damaged \(checksum mismatch\)"):
        load_index(path)


def test_truncated_and_missing_files_are_refused(built):
    path = built[0]
    f = path / "sid_to_skus.marisa"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(IndexFormatError, match="sid_to_skus.marisa: damaged"):
        load_index(path, verify=False)
    f.unlink()
    with pytest.raises(IndexFormatError, match="sid_to_skus.marisa: missing index file"):
        load_index(path)


def test_version_and_manifest_mismatch_are_refused(built, tmp_path):
    path = built[0]
    m = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(IndexFormatError, match="format version 99 is not supported"):
        load_index(path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="damaged manifest"):
        load_index(path)
    with pytest.raises(IndexFormatError, match="no such index directory"):
        load_index(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexFormatError, match="not a SID index"):
        load_index(tmp_path / "empty")


def test_failed_write_keeps_previous_index(built, monkeypatch):
    path, skus, codes, pop = built
    before = load_index(path).index_id
    import sid_index.index as mod

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(mod, "sha256_file", boom)
    with pytest.raises(RuntimeError):
        write_index(path, skus[:10], codes[:10], SIZES)
    monkeypatch.undo()
    assert load_index(path).index_id == before
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []

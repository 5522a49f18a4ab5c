"""catalog -> embeddings -> RQ-KMeans -> index, end to end, and the `radgr index` commands."""

import subprocess
import sys

import numpy as np
import pytest

from sid_index.build import IndexConfig, build_index, collision_warnings, default_codebooks, disambiguate
from sid_index.data.schema import write_dataset
from sid_index.data.synthetic import make_synthetic
from sid_index.index import load_index
from sid_index.tokens import format_sid

RADGR = [sys.executable, "-m", "radgr.cli"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    catalog, sessions, info = make_synthetic(items=300, sessions=200, users=50, seed=0)
    return write_dataset(tmp_path_factory.mktemp("ds") / "synthetic", catalog, sessions, info)


def test_build_is_deterministic_for_a_seed(dataset, tmp_path):
    def build(name, seed):
        cfg = IndexConfig(dataset=dataset, out=tmp_path / name, codebook_sizes=[8, 8, 8], seed=seed,
                          cache_dir=tmp_path / "cache")
        return load_index(build_index(cfg, progress=False))

    a, b, c = build("a", 0), build("b", 0), build("c", 1)
    assert a.index_id == b.index_id
    assert a.trie.sids().tolist() == b.trie.sids().tolist()
    assert a.index_id != c.index_id
    assert a.num_skus == 300
    assert b.manifest["embedding"]["cached"] is True  # the second build did not re-embed
    s = a.manifest["stats"]
    assert s["sids"] == a.num_sids and sum(s["skus_per_sid"]["histogram"].values()) == a.num_sids
    rel = s["reconstruction"]["relative_per_level"]
    assert 0 < rel[2] < rel[1] < rel[0] < 1


def test_cli_build_stats_lookup(dataset, tmp_path):
    out = tmp_path / "idx"
    run = subprocess.run(
        RADGR + ["index", "build", "--data", str(dataset), "--out", str(out), "--codebooks", "8,8,8",
                 "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "distinct SIDs" in run.stdout and "codes used" in run.stdout
    idx = load_index(out)
    sid = idx.sid_of("S0000001")
    look = subprocess.run(RADGR + ["index", "lookup", str(out), "--sku", "S0000001", "--sid", format_sid(sid)],
                          capture_output=True, text=True)
    assert look.returncode == 0, look.stderr
    lines = look.stdout.splitlines()
    assert lines[0] == f"S0000001\t{format_sid(sid)}"
    assert "S0000001" in lines[1].split("\t")[1].split()


def test_cli_lexical_adds_bm25_to_an_index_without_changing_its_id(dataset, tmp_path):
    """An index built before the lexical folder existed (simulated: the folder taken out of a fresh build,
    manifest included) gets it back from the catalog; same id; a second call is a no-op; a bad path is one line."""
    import json
    import shutil

    from sid_index.index import LEXICAL_DIR, MANIFEST_FILE

    cfg = IndexConfig(dataset=dataset, out=tmp_path / "idx", codebook_sizes=[8, 8, 8], cache_dir=tmp_path / "cache")
    built = load_index(build_index(cfg, progress=False))
    assert built.has_lexical
    want = built.lexical().scores(["teal snorkel"])
    shutil.rmtree(built.root / LEXICAL_DIR)
    manifest = json.loads((built.root / MANIFEST_FILE).read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith(LEXICAL_DIR)}
    (built.root / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert not load_index(built.root).has_lexical
    for expect in ("lexical index written", "already has a lexical index"):
        run = subprocess.run(RADGR + ["index", "lexical", str(built.root), "--data", str(dataset)],
                             capture_output=True, text=True)
        assert run.returncode == 0 and expect in run.stdout, run.stderr
    again = load_index(built.root)
    assert again.index_id == built.index_id
    np.testing.assert_array_equal(again.lexical().scores(["teal snorkel"]), want)
    assert want.max() == 1.0
    bad = subprocess.run(RADGR + ["index", "lexical", str(tmp_path / "nope"), "--data", str(dataset)],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "no such index directory" in bad.stderr and "Traceback" not in bad.stderr


def test_disambiguate_ranks_skus_inside_a_sid_by_popularity():
    codes = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [0, 1]])
    out, size = disambiguate(codes, np.array([5.0, 1.0, 9.0, 5.0, 0.0]), ["s0", "s1", "s2", "s3", "s4"])
    assert out[:, :2].tolist() == codes.tolist()
    assert out[:, 2].tolist() == [1, 0, 0, 2, 0]  # (1, 2): s2 (9) first, then s0 and s3 (5, ties by id)
    assert size == 3
    assert disambiguate(np.array([[0], [1]]), np.zeros(2), ["a", "b"])[1] == 2  # a level needs 2 codes


def test_unique_sids_name_one_sku_each(dataset, tmp_path):
    """--unique-sids: one more level; every SID holds one SKU, the index's order inside a SID becomes that
    code; the level's centroids are zeros, so SID vectors (index prior, text inputs) are the 3-level ones."""
    from sid_index.index import load_centroids

    def build(name, **kw):
        cfg = IndexConfig(dataset=dataset, out=tmp_path / name, codebook_sizes=[4, 4, 4],
                          cache_dir=tmp_path / "cache", **kw)
        return load_index(build_index(cfg, progress=False))

    shared, unique = build("shared"), build("unique", unique_sids=True)
    assert shared.num_sids < shared.num_skus and unique.levels == 4 and unique.num_sids == unique.num_skus == 300
    for sku in ("S0000001", "S0000002", "S0000150"):
        sid = unique.sid_of(sku)
        assert unique.skus_of(sid) == [sku] and sid[:3] == shared.sid_of(sku)
        assert shared.skus_of(sid[:3]).index(sku) == sid[3]  # the shared index's order inside the SID
    assert unique.codebook_sizes[3] == max(len(shared.skus_of(s)) for s in shared.trie.sids().tolist())
    cents = load_centroids(unique)
    assert len(cents) == 4 and not cents[3].any() and all(np.array_equal(a, b) for a, b in
                                                           zip(cents[:3], load_centroids(shared), strict=True))
    run = subprocess.run(RADGR + ["index", "build", "--data", str(dataset), "--out", str(tmp_path / "cli"),
                                  "--codebooks", "4,4,4", "--unique-sids", "--cache-dir", str(tmp_path / "cache")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert load_index(tmp_path / "cli").index_id == unique.index_id


def test_default_codebooks_leave_room_for_unique_sids():
    assert default_codebooks(2000) == [32] * 3 and default_codebooks(4385) == [64] * 3
    assert default_codebooks(54_667) == [128] * 3 and default_codebooks(10) == [16] * 3
    assert default_codebooks(10**12) == [4096] * 3 and default_codebooks(1000, levels=2) == [128] * 2
    for n in (300, 5000, 123_456):
        k = default_codebooks(n)[0]
        assert k**3 >= 8 * n and (k // 2) ** 3 < 8 * n  # the smallest power of two that does


def test_collision_warnings_name_the_numbers(dataset, tmp_path):
    crowded = load_index(build_index(IndexConfig(dataset=dataset, out=tmp_path / "c", codebook_sizes=[4, 2],
                                                 cache_dir=tmp_path / "cache"), progress=False)).manifest["stats"]
    warnings = collision_warnings(crowded)
    assert any("of the SKUs share their SID with another (up to" in w for w in warnings)
    roomy = load_index(build_index(IndexConfig(dataset=dataset, out=tmp_path / "r", cache_dir=tmp_path / "cache"),
                                   progress=False))
    assert list(roomy.codebook_sizes) == default_codebooks(300) == [16, 16, 16]
    stats = roomy.manifest["stats"]
    shared = stats["skus_per_sid"]["skus_sharing_a_sid"] / stats["skus"]
    assert (shared > 0.2) == any("share their SID" in w for w in collision_warnings(stats))
    lopsided = {**stats, "codebook_usage": [{**u, "max_share": 0.4} for u in stats["codebook_usage"]]}
    assert any("one code of level 0 holds 40% of the SKUs" in w for w in collision_warnings(lopsided))


def test_cli_build_chooses_codebooks_and_warns(dataset, tmp_path):
    run = subprocess.run(RADGR + ["index", "build", "--data", str(dataset), "--out", str(tmp_path / "a"),
                                  "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "(codebooks 16,16,16: chosen from 300 SKUs)" in run.stdout
    run = subprocess.run(RADGR + ["index", "build", "--data", str(dataset), "--out", str(tmp_path / "b"),
                                  "--codebooks", "2,2", "--cache-dir", str(tmp_path / "cache")],
                         capture_output=True, text=True)
    assert run.returncode == 0 and "warning: " in run.stderr and "share their SID" in run.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["index", "build", "--data", "{tmp}/none", "--out", "{tmp}/i"], "{tmp}/none: file not found"),
        (["index", "build", "--data", "{ds}", "--out", "{tmp}/i", "--codebooks", "8,x"],
         "--codebooks: Input should be a valid integer"),
        (["index", "build", "--data", "{ds}", "--out", "{tmp}/i", "--codebooks", "8,1"], "at least 2 codes"),
        (["index", "stats", "{tmp}"], "not a SID index (no manifest.json)"),
        (["index", "lookup", "{tmp}/x"], "give --sku and/or --sid"),
    ],
)
def test_cli_errors_are_one_line(dataset, tmp_path, args, message):
    args = [a.format(tmp=tmp_path, ds=dataset) for a in args]
    run = subprocess.run(RADGR + args, capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and len(run.stderr.strip().splitlines()) == 1
    assert message.format(tmp=tmp_path) in run.stderr
    assert not (tmp_path / "i").exists()

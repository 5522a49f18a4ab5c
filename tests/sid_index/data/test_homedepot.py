"""Home Depot adapter: labels from relevance grades, split by query, one-line errors with CSV lines."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow.compute as pc
import pytest

from sid_index.data.homedepot import HomeDepotConfig, build, convert, split_queries
from sid_index.data.schema import load_dataset
from sid_index.errors import DataError, RadgrError

REPO = Path(__file__).resolve().parents[3]
HEADER = '"id","product_uid","product_title","search_term","relevance"\n'
ROWS = [
    '1,100001,"Angle Bracket","angle bracket",3\n',
    '2,100002,"L Bracket","angle bracket",2.67\n',
    '3,100003,"Shelf","angle bracket",2.33\n',
    '4,100004,"Drill","angle bracket",1\n',
    '5,100001,"Angle Bracket","l bracket",2\n',
    '6,100002,"L Bracket Steel","l bracket",3\n',  # second title for 100002: first one kept
    '7,100005,"Caf\xe9 Table","  table ",2.5\n',  # latin-1 byte; query whitespace stripped
    '8,100003,"Shelf","shelf",2.67\n',
    '9,100000,"Bracket Kit","angle bracket",3\n',  # ties with 100001 at 3: sku breaks the tie
]


def write_csv(path: Path, text: str, encoding: str = "latin-1") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def write_zip(path: Path, text: str | None, member: str = "train.csv") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        if text is not None:
            zf.writestr(member, text.encode("latin-1"))
    return path


@pytest.fixture
def hd_zip(tmp_path: Path) -> Path:
    return write_zip(tmp_path / "train.csv.zip", HEADER + "".join(ROWS))


def test_sessions_labels_and_catalog(hd_zip: Path) -> None:
    catalog, sessions, info = build(hd_zip)
    got = sessions.select(["session_id", "query", "positives", "exposed_negatives", "ambiguous"]).to_pylist()
    for s in got:
        s["positives"] = [(p["sku_id"], round(p["grade"], 2)) for p in s["positives"]]
    assert got == [
        {
            "session_id": "hd-000001",
            "query": "angle bracket",
            "positives": [("100000", 3.0), ("100001", 3.0), ("100002", 2.67)],
            "exposed_negatives": ["100004"],
            "ambiguous": ["100003"],
        },
        {
            "session_id": "hd-000002",
            "query": "l bracket",
            "positives": [("100002", 3.0)],
            "exposed_negatives": ["100001"],
            "ambiguous": [],
        },
        {
            "session_id": "hd-000003",
            "query": "table",
            "positives": [],
            "exposed_negatives": [],
            "ambiguous": ["100005"],
        },
        {
            "session_id": "hd-000004",
            "query": "shelf",
            "positives": [("100003", 2.67)],
            "exposed_negatives": [],
            "ambiguous": [],
        },
    ]
    assert sessions["history"].to_pylist() == [[]] * 4
    assert catalog.select(["sku_id", "title", "popularity"]).to_pylist() == [
        {"sku_id": "100000", "title": "Bracket Kit", "popularity": 1.0},
        {"sku_id": "100001", "title": "Angle Bracket", "popularity": 2.0},
        {"sku_id": "100002", "title": "L Bracket", "popularity": 2.0},
        {"sku_id": "100003", "title": "Shelf", "popularity": 2.0},
        {"sku_id": "100004", "title": "Drill", "popularity": 1.0},
        {"sku_id": "100005", "title": "Café Table", "popularity": 1.0},
    ]
    assert info["rows_read"] == 9
    assert (info["title_conflicts"], info["title_conflict_skus"]) == (1, ["100002"])
    assert info["config"]["pos_threshold"] == 2.67


def test_thresholds_move_labels(hd_zip: Path) -> None:
    _, sessions, _ = build(hd_zip, HomeDepotConfig(pos_threshold=3.0, neg_threshold=2.33))
    first = sessions.to_pylist()[0]
    assert [p["sku_id"] for p in first["positives"]] == ["100000", "100001"]
    assert first["exposed_negatives"] == ["100003", "100004"]
    assert first["ambiguous"] == ["100002"]


def test_plain_csv_matches_zip(tmp_path: Path, hd_zip: Path) -> None:
    plain = write_csv(tmp_path / "train.csv", HEADER + "".join(ROWS))
    assert build(plain)[1].equals(build(hd_zip)[1])


def test_split_fixture_is_seeded(hd_zip: Path) -> None:
    splits = build(hd_zip)[1]["split"].to_pylist()
    assert splits == build(hd_zip)[1]["split"].to_pylist()
    assert sorted(splits) == ["train", "train", "train", "valid"]  # round(0.8*4)=3, round(0.9*4)=4


def test_split_by_query_property_and_determinism(tmp_path: Path) -> None:
    rows = [f'{i},{100000 + i % 37},"P{i % 37}","query {i % 100}",{1 + (i % 3)}\n' for i in range(1000)]
    src = write_csv(tmp_path / "many.csv", HEADER + "".join(rows))
    _, sessions, _ = build(src, HomeDepotConfig(seed=7))
    by_split = {
        s: set(pc.filter(sessions["query"], pc.equal(sessions["split"], s)).to_pylist())
        for s in ("train", "valid", "test")
    }
    assert [len(v) for v in by_split.values()] == [80, 10, 10]
    assert not (
        by_split["train"] & by_split["valid"]
        or by_split["train"] & by_split["test"]
        or by_split["valid"] & by_split["test"]
    )
    assert sessions.num_rows == len(set(sessions["query"].to_pylist())) == 100
    again = build(src, HomeDepotConfig(seed=7))[1]
    assert again.equals(sessions)
    other = build(src, HomeDepotConfig(seed=8))[1]
    assert other["split"].to_pylist() != sessions["split"].to_pylist()


def test_split_queries_ignores_input_order() -> None:
    qs = [f"q{i}" for i in range(50)]
    assert split_queries(qs, (0.8, 0.1, 0.1), 3) == split_queries(qs[::-1], (0.8, 0.1, 0.1), 3)


def test_convert_round_trips(tmp_path: Path, hd_zip: Path) -> None:
    out, info = convert(hd_zip, tmp_path / "ds")
    ds = load_dataset(out)
    assert ds.name == "homedepot"
    assert info["stats"]["sessions"] == 4 and info["stats"]["skus"] == 6


@pytest.mark.parametrize(
    "kw",
    [dict(pos_threshold=2.0, neg_threshold=2.0), dict(split=(0.5, 0.5, 0.5)), dict(encoding="no-such-codec")],
)
def test_config_rejects(kw: dict) -> None:
    with pytest.raises(ValueError):
        HomeDepotConfig(**kw)


BAD_CASES = {
    "missing column": (
        "bad.csv",
        '"id","product_uid","product_title","search_term"\n1,100001,"A","a"\n',
        1,
        "missing column 'relevance'",
    ),
    "non-numeric relevance": (
        "bad.csv",
        HEADER + ROWS[0] + ROWS[1] + '3,100003,"Shelf","shelf",high\n',
        4,
        "not a number: 'high'",
    ),
    "nan relevance": ("bad.csv", HEADER + ROWS[0] + '2,100003,"Shelf","shelf",nan\n', 3, "not a number"),
    "short row": ("bad.csv", HEADER + ROWS[0] + '2,100003,"Shelf"\n', 3, "expected 5 fields, found 3"),
    "empty query": ("bad.csv", HEADER + ROWS[0] + '2,100003,"Shelf","  ",3\n', 3, "search_term"),
    "judged twice": (
        "bad.csv",
        HEADER + ROWS[0] + ROWS[1] + '3,100001,"Angle Bracket","angle bracket ",1\n',
        4,
        "product 100001 judged twice for query 'angle bracket'",
    ),
    "field too large": (
        "bad.csv",
        HEADER + ROWS[0] + f'2,100003,"{"x" * 200_000}","shelf",3\n',
        3,
        "malformed CSV",
    ),
    "empty file": ("bad.csv", "", 1, "empty file"),
    "header only": ("bad.csv", HEADER, 2, "no data rows"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_csv(tmp_path: Path, case: str) -> None:
    name, text, line, words = BAD_CASES[case]
    src = write_csv(tmp_path / name, text)
    assert_data_error(src, tmp_path / "out", line, words)


def test_bad_csv_inside_zip_names_zip_and_line(tmp_path: Path) -> None:
    src = write_zip(tmp_path / "t.zip", HEADER + ROWS[0] + ROWS[1] + '3,100003,"Shelf","shelf",x\n')
    assert_data_error(src, tmp_path / "out", 4, "relevance")


def test_empty_zip(tmp_path: Path) -> None:
    src = write_zip(tmp_path / "empty.zip", None)
    err = assert_data_error(src, tmp_path / "out", None, "no .csv file")
    assert str(err).startswith(f"{src}: ")


def test_zip_with_empty_csv(tmp_path: Path) -> None:
    assert_data_error(write_zip(tmp_path / "e.zip", ""), tmp_path / "out", 1, "empty file")


def test_wrong_encoding_names_line(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "latin.csv", HEADER + ROWS[0] + ROWS[6])  # é as a latin-1 byte on line 3
    assert_data_error(
        src, tmp_path / "out", 3, "cannot decode byte 0xe9 as utf-8", HomeDepotConfig(encoding="utf-8")
    )


def test_utf16_file_is_rejected(tmp_path: Path) -> None:
    src = tmp_path / "u16.csv"
    src.write_bytes((HEADER + ROWS[0]).encode("utf-16"))
    assert_data_error(src, tmp_path / "out", 1, "NUL byte")


def test_missing_file(tmp_path: Path) -> None:
    assert_data_error(tmp_path / "nope.zip", tmp_path / "out", None, "file not found")


def assert_data_error(
    src: Path, out: Path, line: int | None, words: str, config: HomeDepotConfig | None = None
):
    before = set(out.parent.iterdir())
    with pytest.raises(DataError) as info:
        convert(src, out, config)
    err = info.value
    assert err.path == str(src) and err.row == line, str(err)
    assert str(err).startswith(f"{src}:{line}: " if line else f"{src}: ")
    assert words in str(err) and "\n" not in str(err)
    assert not out.exists() and set(out.parent.iterdir()) == before  # nothing partial, no temp dirs
    return err


def radgr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "radgr.cli", *args], capture_output=True, text=True, cwd=REPO
    )


def test_cli_writes_dataset(tmp_path: Path, hd_zip: Path) -> None:
    out = tmp_path / "ds"
    res = radgr("data", "homedepot", "--src", str(hd_zip), "--out", str(out), "--seed", "1")
    assert res.returncode == 0, res.stderr
    assert "6 SKUs, 4 sessions" in res.stdout and f"wrote {out}" in res.stdout
    assert load_dataset(out).info["config"]["seed"] == 1
    again = radgr("data", "homedepot", "--src", str(hd_zip), "--out", str(out))
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert radgr("data", "homedepot", "--src", str(hd_zip), "--out", str(out), "--overwrite").returncode == 0


def test_cli_refuses_to_replace_other_directories(tmp_path: Path, hd_zip: Path) -> None:
    from typer.testing import CliRunner

    from radgr.cli import cli

    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    res = CliRunner().invoke(
        cli, ["data", "homedepot", "--src", str(hd_zip), "--out", str(keep), "--overwrite"]
    )
    assert isinstance(res.exception, FileExistsError) and "not a dataset directory" in str(res.exception)
    assert (keep / "notes.txt").read_text() == "precious"
    res = CliRunner().invoke(
        cli, ["data", "homedepot", "--src", str(hd_zip), "--out", str(keep), "--split", "1,0"]
    )
    assert isinstance(res.exception, RadgrError) and "--split" in str(res.exception)


def test_cli_bad_file_one_line_exit_2(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "bad.csv", HEADER + ROWS[0] + '2,100003,"Shelf","shelf",high\n')
    out = tmp_path / "ds"
    res = radgr("data", "homedepot", "--src", str(src), "--out", str(out))
    assert res.returncode == 2
    assert res.stderr == f"error: {src}:3: column 'relevance': not a number: 'high'\n"
    assert not out.exists()


@pytest.mark.realdata
def test_real_homedepot(shared_data: Path, tmp_path: Path) -> None:
    out, info = convert(shared_data / "homedepot" / "train.csv.zip", tmp_path / "hd")
    st = info["stats"]
    assert info["rows_read"] == 74_067
    assert st["sessions"] == st["distinct_queries"] == 11_795
    assert st["skus"] == 54_667
    assert st["sessions_with_positives"] == 9_716
    assert st["sessions_by_split"] == {"train": 9_436, "valid": 1_180, "test": 1_179}
    assert st["positives"] + st["exposed_negatives"] + st["ambiguous"] == 74_067
    # The README says one product carries two titles; the file has 15 such products (24 rows).
    assert (info["title_conflicts"], info["title_conflict_rows"]) == (15, 24)
    sessions = load_dataset(out).sessions
    with_neg = pc.greater(pc.list_value_length(sessions["exposed_negatives"]), 0)
    with_pos = pc.greater(pc.list_value_length(sessions["positives"]), 0)
    assert pc.sum(with_neg).as_py() == 8_156
    assert pc.sum(pc.and_(with_neg, with_pos)).as_py() == 6_471

"""`radgr data import`: both shapes from small files written here, every format, and the error paths."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sid_index.data.importer import ImportConfig, build
from sid_index.data.schema import load_dataset
from sid_index.errors import DataError

RADGR = [sys.executable, "-m", "radgr.cli"]

SEARCH = """query,item_id,title,grade
red shoes,A,Red running shoe,3
red shoes,B,Blue sandal,1
red shoes,C,Red heel,2
red shoes,A,Red running shoe,2
green lamp,D,Green desk lamp,3
green lamp,E,Lamp shade,2.5
"""


def test_search_log_by_hand(tmp_path):
    src = tmp_path / "log.csv"
    src.write_text(SEARCH)
    cfg = ImportConfig(shape="search", grade_col="grade", pos_threshold=2.5, neg_threshold=1.0, split=(1, 0, 0))
    catalog, sessions, info = build(src, cfg)
    rows = sessions.to_pylist()
    assert [r["query"] for r in rows] == ["red shoes", "green lamp"] and {r["split"] for r in rows} == {"train"}
    shoes = rows[0]
    assert shoes["positives"] == [{"sku_id": "A", "grade": 3.0}]  # duplicate A: max(3, 2) by default
    assert shoes["exposed_negatives"] == ["B"] and shoes["ambiguous"] == ["C"]
    assert rows[1]["positives"] == [{"sku_id": "D", "grade": 3.0}, {"sku_id": "E", "grade": 2.5}]
    assert catalog["sku_id"].to_pylist() == list("ABCDE") and catalog["title"].to_pylist()[0] == "Red running shoe"
    assert catalog["popularity"].to_pylist() == [1.0, 0.0, 0.0, 1.0, 1.0] and info["duplicate_rows"] == 1
    mean = build(src, cfg.model_copy(update={"duplicates": "mean"}))[1].to_pylist()[0]
    assert mean["positives"] == [{"sku_id": "A", "grade": 2.5}]
    with pytest.raises(DataError, match=r"log.csv:5: item 'A' judged twice"):
        build(src, cfg.model_copy(update={"duplicates": "error"}))
    clicks = build(src, ImportConfig(shape="search", split=(1, 0, 0)))[1].to_pylist()[1]  # no grades: all positive
    assert {p["sku_id"] for p in clicks["positives"]} == {"D", "E"} and clicks["exposed_negatives"] == []


def test_history_log_leave_one_out_by_time(tmp_path):
    src = tmp_path / "log.jsonl"
    events = [("u1", "A", 3), ("u1", "B", 1), ("u1", "C", 2), ("u1", "D", 4), ("u2", "A", 1), ("u2", "B", 2)]
    src.write_text("".join(json.dumps({"user_id": u, "item_id": i, "ts": t}) + "\n" for u, i, t in events))
    catalog, sessions, info = build(src, ImportConfig(shape="history", time_col="ts", title_col=None))
    got = [(r["split"], r["history"], r["positives"][0]["sku_id"], dict(r["user"])["user_id"])
           for r in sessions.to_pylist()]
    assert got == [("train", ["B"], "C", "u1"), ("valid", ["B", "C"], "A", "u1"), ("test", ["B", "C", "A"], "D", "u1"),
                   ("train", ["A"], "B", "u2")]  # u2 has 2 interactions: train only
    assert catalog["title"].to_pylist() == list("ABCD")  # no titles given: the ids
    assert info["users"] == 2 and info["users_under_3_interactions"] == 1


def test_every_format_and_a_separate_catalog(tmp_path):
    rows = {"q": ["a b", "a b", "c"], "sku": ["1", "2", "3"]}
    pq.write_table(pa.table(rows), tmp_path / "log.parquet")
    (tmp_path / "log.tsv").write_text("q\tsku\na b\t1\na b\t2\nc\t3\n")
    (tmp_path / "items.csv").write_text("sku,name,desc\n1,One,first\n2,Two,\n3,Three,third\n")
    cfg = ImportConfig(shape="search", query_col="q", item_col="sku", title_col="name", text_col="desc",
                       split=(1, 0, 0))
    a = build(tmp_path / "log.parquet", cfg, tmp_path / "items.csv")
    b = build(tmp_path / "log.tsv", cfg, tmp_path / "items.csv")
    assert a[0].equals(b[0]) and a[1].equals(b[1])
    assert a[0]["title"].to_pylist() == ["One", "Two", "Three"] and a[0]["text"].to_pylist() == ["first", None, "third"]
    (tmp_path / "items.csv").write_text("sku,name,desc\n1,One,first\n")
    with pytest.raises(DataError, match="2 items of log.tsv are not in the catalog"):
        build(tmp_path / "log.tsv", cfg, tmp_path / "items.csv")


@pytest.mark.parametrize("text, cfg, message", [
    ("query,item_id\nx,1\n", {"grade_col": "g"}, "no column 'g' .columns: query, item_id."),
    ("query,item_id,g\nx,1,high\n", {"grade_col": "g"}, "log.csv:2: column 'g': 'high' is not a number"),
    ("query,item_id\n,1\n", {}, "log.csv:2: column 'query' is empty"),
    ("query,item_id\n", {}, "no data rows"),
    ('query,item_id\n"x,1\n', {}, "cannot read as csv"),
])
def test_bad_input_is_one_line_naming_file_and_row(tmp_path, text, cfg, message):
    src = tmp_path / "log.csv"
    src.write_text(text)
    with pytest.raises(DataError, match=message):
        build(src, ImportConfig(shape="search", split=(1, 0, 0), **cfg))
    (tmp_path / "log.xlsx").write_text("x")
    with pytest.raises(DataError, match="unknown format '.xlsx'"):
        build(tmp_path / "log.xlsx", ImportConfig(shape="search"))


def test_cli_writes_a_valid_dataset_and_a_summary(tmp_path):
    src = tmp_path / "log.csv"
    src.write_text(SEARCH)
    out = tmp_path / "ds"
    run = subprocess.run(RADGR + ["data", "import", str(src), "--out", str(out), "--shape", "search",
                                  "--grade-col", "grade", "--pos-threshold", "2.5", "--split", "0.5,0,0.5"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "2 sessions" in run.stdout and "items never a train positive" in run.stdout
    ds = load_dataset(out)
    assert ds.sessions.num_rows == 2 and ds.catalog.num_rows == 5
    bad = subprocess.run(RADGR + ["data", "import", str(src), "--out", str(tmp_path / "x"), "--shape", "nope"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "shape" in bad.stderr

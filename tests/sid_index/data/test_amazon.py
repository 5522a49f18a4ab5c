"""Amazon RecBole adapter: history -> next item sessions, ASIN catalog, one-line errors with file lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from sid_index.data.amazon import build, category_root, convert, split_text
from sid_index.data.schema import load_dataset
from sid_index.errors import DataError

INTER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
FILES = {
    "Toy.item2index": "A1\t0\nA2\t1\nA3\t2\nA4\t3\nA5\t4\nA6\t5\nA7\t6\nA8\t7\n",
    "Toy.user2index": "U1\t0\nU2\t1\n",
    "Toy.text": (
        "item_id:token\ttext:token_seq\n"
        "A1\tRed Widget. Industrial & Scientific Widgets. Acme. \n"
        "A2\tBlue Gadget, 2 oz. Tube. Industrial & Scientific Gadgets. Mr. Heater. \n"
        "A3\tPlain thing\n"
        "A4\tTube. . . \n"
        "A5\tCafé Lamp. Industrial & Scientific Lamps. Lumière. \n"
        "A6\tBolt. Industrial & Scientific Fasteners. J.V. Converting. \n"
        "A7\tNut. . Nut Co. \n"
        "A8\tGear. Industrial & Scientific Gears. Acme. \n"
    ),
    "Toy.train.inter": INTER + "0\t0\t1\n0\t0 1\t2\n1\t3\t0\n",
    "Toy.valid.inter": INTER + "0\t0 1 2\t3\n",
    "Toy.test.inter": INTER + "1\t3 0\t4\n",
}


def write_files(root: Path, **changes: str | bytes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in {**FILES, **changes}.items():
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        (root / name).write_bytes(data)
    return root


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    return write_files(tmp_path / "src")


def test_sessions(toy: Path) -> None:
    _, sessions, info = build(toy, "Toy")
    assert sessions.to_pylist() == [
        s("toy-train-000001", "train", ["A1"], "U1", "A2"),
        s("toy-train-000002", "train", ["A1", "A2"], "U1", "A3"),
        s("toy-train-000003", "train", ["A4"], "U2", "A1"),
        s("toy-valid-000001", "valid", ["A1", "A2", "A3"], "U1", "A4"),
        s("toy-test-000001", "test", ["A4", "A1"], "U2", "A5"),
    ]
    assert info["name"] == "amazon-toy" and info["category_root"] == "Industrial & Scientific"


def s(sid: str, split: str, history: list[str], user: str, nxt: str) -> dict:
    return {
        "session_id": sid,
        "split": split,
        "query": "",
        "history": history,
        "user": [("user_id", user)],
        "positives": [{"sku_id": nxt, "grade": 1.0}],
        "exposed_negatives": [],
    }


def test_catalog(toy: Path) -> None:
    catalog, _, _ = build(toy, "Toy")
    rows = {
        r["sku_id"]: (r["title"], r["category"], r["brand"], r["popularity"]) for r in catalog.to_pylist()
    }
    assert rows == {
        "A1": ("Red Widget", "Industrial & Scientific Widgets", "Acme", 3.0),  # 2 histories + 1 target
        "A2": ("Blue Gadget, 2 oz. Tube", "Industrial & Scientific Gadgets", "Mr. Heater", 2.0),
        "A3": ("Plain thing", None, None, 1.0),
        "A4": ("Tube", None, None, 1.0),  # valid/test occurrences do not count
        "A5": ("Café Lamp", "Industrial & Scientific Lamps", "Lumière", 0.0),
        "A6": ("Bolt", "Industrial & Scientific Fasteners", "J.V. Converting", 0.0),
        "A7": ("Nut", None, "Nut Co", 0.0),
        "A8": ("Gear", "Industrial & Scientific Gears", "Acme", 0.0),
    }
    assert catalog["text"].to_pylist()[0] == "Red Widget. Industrial & Scientific Widgets. Acme. "


@pytest.mark.parametrize(
    ("text", "root", "want"),
    [
        ("T. C. B. ", "", ("T", "C", "B")),
        ("T. x. C. B. ", "", ("T. x", "C", "B")),  # no root known: category is the second-last part
        ("T. Root C. Mr. B. ", "Root", ("T", "Root C", "Mr. B")),
        ("T. . Mr. B. ", "Root", ("T", None, "Mr. B")),
        ("T. . . ", "Root", ("T", None, None)),
        ("just a title", "Root", ("just a title", None, None)),
        ("T. C. ", "", ("T. C. ", None, None)),
    ],
)
def test_split_text(text: str, root: str, want: tuple) -> None:
    got = split_text(text, root)
    assert (got[0].strip(), got[1], got[2]) == (want[0].strip(), want[1], want[2])


def test_category_root() -> None:
    texts = [f"T{i}. Home & Garden Tools {i}. B{i}. " for i in range(8)] + ["T. Mr. B. ", "T. . B. "]
    assert category_root(texts) == "Home & Garden Tools"
    assert category_root(["a. b c. d. ", "a. e f. g. "]) == ""


def test_convert_round_trips(tmp_path: Path, toy: Path) -> None:
    out, info = convert(toy, tmp_path / "ds", "Toy")
    assert load_dataset(out).stats()["sessions_by_split"] == {"train": 3, "valid": 1, "test": 1}
    assert info["stats"]["skus"] == 8 and info["stats"]["mean_history"] == pytest.approx(9 / 5)


BAD_CASES = {
    "undecodable byte": (
        "Toy.text",
        FILES["Toy.text"].encode().replace(b"Caf\xc3\xa9", b"Caf\xe9"),
        6,
        "not UTF-8",
    ),
    "unknown history index": ("Toy.train.inter", INTER + "0\t0\t1\n0\t0 9\t2\n", 3, "item index '9' not in"),
    "unknown target index": ("Toy.valid.inter", INTER + "0\t0 1 2\t77\n", 2, "item index '77' not in"),
    "unknown user index": ("Toy.test.inter", INTER + "5\t3 0\t4\n", 2, "user index '5' not in"),
    "missing header": ("Toy.test.inter", "1\t3 0\t4\n", 1, "expected header"),
    "wrong column count": (
        "Toy.train.inter",
        INTER + "0\t0 1\n",
        2,
        "expected 3 tab-separated columns, found 2",
    ),
    "item2index width": (
        "Toy.item2index",
        "A1\t0\nA2\t1\t9\n",
        2,
        "expected 2 tab-separated columns, found 3",
    ),
    "index given twice": ("Toy.item2index", "A1\t0\nA2\t0\n", 2, "index 0 given twice"),
    "item text twice": ("Toy.text", FILES["Toy.text"] + "A1\tagain. . . \n", 10, "item 'A1' given twice"),
    "empty history": ("Toy.train.inter", INTER + "0\t0\t1\n0\t \t2\n", 3, "empty item_id_list"),
    "empty inter": ("Toy.valid.inter", "", 1, "empty file"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input(tmp_path: Path, case: str) -> None:
    name, content, line, words = BAD_CASES[case]
    src = write_files(tmp_path / "src", **{name: content})
    assert_data_error(src, tmp_path / "out", src / name, line, words)


def test_missing_file(tmp_path: Path) -> None:
    src = write_files(tmp_path / "src")
    (src / "Toy.user2index").unlink()
    assert_data_error(src, tmp_path / "out", src / "Toy.user2index", None, "file not found")


def test_item_without_text(tmp_path: Path) -> None:
    src = write_files(tmp_path / "src", **{"Toy.item2index": FILES["Toy.item2index"] + "A9\t8\n"})
    assert_data_error(src, tmp_path / "out", src / "Toy.text", None, "no text for 1 items")


def assert_data_error(src: Path, out: Path, path: Path, line: int | None, words: str) -> None:
    with pytest.raises(DataError) as info:
        convert(src, out, "Toy")
    err = info.value
    assert err.path == str(path) and err.row == line, str(err)
    assert str(err).startswith(f"{path}:{line}: " if line else f"{path}: ")
    assert words in str(err) and "\n" not in str(err)
    assert sorted(p.name for p in out.parent.iterdir()) == ["src"]  # nothing written, no temp dirs


@pytest.mark.realdata
def test_real_amazon(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "amazon-scientific"
    out, info = convert(src, tmp_path / "az")
    st = info["stats"]
    assert st["skus"] == 4_385
    assert st["sessions_by_split"] == {"train": 34_101, "valid": 8_442, "test": 8_442}
    assert st["positives"] == st["sessions"] == 50_985
    assert info["category_root"] == "Industrial & Scientific"
    ds = load_dataset(out)
    train = ds.split("train")
    hist_len = sum(len(h) for h in train["history"].to_pylist())
    assert sum(ds.catalog["popularity"].to_pylist()) == hist_len + train.num_rows
    brands = dict(zip(ds.catalog["sku_id"].to_pylist(), ds.catalog["brand"].to_pylist(), strict=True))
    assert brands["B0000223SI"] == "PORTER-CABLE"
    assert brands["B000AMC5WY"] == "Mr. Heater"


def test_cli(tmp_path: Path, toy: Path) -> None:
    from typer.testing import CliRunner

    from radgr.cli import cli

    out = tmp_path / "ds"
    res = CliRunner().invoke(cli, ["data", "amazon", "--src", str(toy), "--out", str(out), "--name", "Toy"])
    assert res.exit_code == 0, res.output
    assert "8 SKUs, 5 sessions (train 3 / valid 1 / test 1)" in res.output and f"wrote {out}" in res.output
    assert load_dataset(out).name == "amazon-toy"

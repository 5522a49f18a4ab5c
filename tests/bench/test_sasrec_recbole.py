"""bench/sasrec_recbole.py's split files (RecBole itself lives in its own virtual environment, not in the suite):
the refit's training file is every train row, then every valid row, under one header."""

from __future__ import annotations

import os

from .conftest import bench_module

HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token"


def write_splits(folder, name="X"):
    rows = {"train": ["0\t1 2\t3", "0\t1\t2"], "valid": ["0\t1 2 3\t4", "1\t5\t6"], "test": ["0\t1 2 3 4\t7"]}
    folder.mkdir()
    for split, lines in rows.items():
        (folder / f"{name}.{split}.inter").write_text("\n".join([HEADER, *lines]) + "\n")
    return rows


def test_refit_trains_on_train_then_valid_rows(tmp_path):
    rows = write_splits(tmp_path / "data")
    (tmp_path / "refit").mkdir(), (tmp_path / "plain").mkdir()
    with bench_module("sasrec_recbole") as bench:
        bench.stage_split_files(tmp_path / "data", tmp_path / "refit", "X", refit=True)
        bench.stage_split_files(tmp_path / "data", tmp_path / "plain", "X", refit=False)
    train = (tmp_path / "refit" / "X" / "X.train.inter").read_text().splitlines()
    assert train == [HEADER, *rows["train"], *rows["valid"]]
    for split in ("valid", "test"):  # evaluated on the given files, unchanged
        assert (tmp_path / "refit" / "X" / f"X.{split}.inter").read_text().splitlines() == [HEADER, *rows[split]]
    for split in ("train", "valid", "test"):  # the train-only run reads the given files themselves
        staged = tmp_path / "plain" / "X" / f"X.{split}.inter"
        assert os.path.islink(staged) and staged.resolve() == (tmp_path / "data" / f"X.{split}.inter").resolve()

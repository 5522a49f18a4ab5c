"""The README's "Bring your own data" recipe, run as written on ~50-line CSV files of both shapes:
`radgr data import` -> `radgr index build` -> `radgr train sft` (its defaults) -> `radgr eval`; the trained
model must beat the most-popular row on the test split."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

RADGR = [sys.executable, "-m", "radgr.cli"]

# Ten product families, four products each: the words a query shares with its products.
FAMILIES = {
    "drill": ["cordless drill 18v", "hammer drill kit", "drill bit set", "right angle drill"],
    "lamp": ["brass desk lamp", "floor lamp with shade", "clip lamp led", "table lamp linen"],
    "paint": ["white interior paint", "exterior paint gallon", "spray paint black", "paint primer grey"],
    "faucet": ["kitchen faucet chrome", "bathroom faucet brushed", "faucet aerator", "pull down faucet"],
    "mulch": ["red cedar mulch", "black mulch bag", "rubber mulch nuggets", "pine bark mulch"],
    "ladder": ["step ladder aluminium", "extension ladder 24ft", "folding ladder", "ladder stabilizer"],
    "hose": ["garden hose 50ft", "expandable hose", "hose reel cart", "soaker hose"],
    "shelf": ["floating shelf oak", "wire shelf unit", "corner shelf white", "shelf brackets steel"],
    "toilet": ["elongated toilet white", "toilet seat soft close", "toilet flapper", "dual flush toilet"],
    "fan": ["ceiling fan 52 inch", "box fan", "bathroom exhaust fan", "tower fan remote"],
}
MODIFIERS = ["best", "cheap", "new", "small", "heavy duty", "quality", "home", "large", "easy", "strong",
             "modern", "outdoor"]


def items() -> list[tuple[str, str, str]]:
    """(item id, title, family) of the 40 products."""
    return [(f"{fam[:3].upper()}{k}", title, fam) for fam, titles in FAMILIES.items() for k, title in enumerate(titles)]


def write_search_log(path: Path, rng: np.random.Generator) -> None:
    """One judged pair per line: a query about a family, a product of it (grade 3) or of another (grade 1)."""
    catalog = items()
    rows = []
    for q in range(25):
        fam = list(FAMILIES)[q % len(FAMILIES)]
        query = f"{MODIFIERS[(q * 7) % len(MODIFIERS)]} {fam}"
        good = [it for it in catalog if it[2] == fam]
        bad = [it for it in catalog if it[2] != fam]
        for item_id, title, _ in [good[rng.integers(len(good))], bad[rng.integers(len(bad))]]:
            rows.append({"search_term": query, "product_id": item_id, "product_title": title,
                         "relevance": 3 if item_id[:3] == fam[:3].upper() else 1})
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_history_log(events: Path, catalog: Path) -> None:
    """6 users, each buying 9 products along one fixed chain through the catalog (a catalog file carries the
    titles). User u starts where u-1 bought its 8th product, so the step each user takes last (its test item)
    is a step another user took in training: what a sequential model learns and popularity does not know."""
    all_items = items()
    rows = []
    for user in range(6):
        for t in range(9):
            item_id = all_items[(7 * user + t) % len(all_items)][0]
            rows.append({"user": f"u{user}", "sku": item_id, "ts": t})
    with open(events, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["user", "sku", "ts"])
        writer.writeheader()
        writer.writerows(rows)
    with open(catalog, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["sku", "name", "description"])
        writer.writeheader()
        writer.writerows({"sku": i, "name": t, "description": f"{f} for the home"} for i, t, f in all_items)


def radgr(*args) -> str:
    run = subprocess.run(RADGR + [str(a) for a in args], capture_output=True, text=True)
    assert run.returncode == 0, (args, run.stderr[-2000:])
    return run.stderr


def recipe(root: Path, import_args: list) -> dict[str, dict]:
    """The README's recipe after the import line; the item metrics of each row of the eval table."""
    radgr("data", "import", *import_args, "--out", root / "data")
    radgr("index", "build", "--data", root / "data", "--out", root / "index")
    log = radgr("train", "sft", "--data", root / "data", "--index", root / "index", "--out", root / "sft")
    assert "300 steps" in log  # a small dataset still trains for a while (trainer/config.py MIN_DEFAULT_STEPS)
    radgr("eval", "--model", root / "sft", "--index", root / "index", "--data", root / "data",
          "--out", root / "eval.json")
    rows = json.loads((root / "eval.json").read_text())["models"]
    return {r["name"]: r for r in rows}


@pytest.mark.slow
def test_a_search_log_csv_trains_a_model_that_beats_popularity(tmp_path):
    src = tmp_path / "logs.csv"
    write_search_log(src, np.random.default_rng(0))
    assert len(src.read_text().splitlines()) == 51
    rows = recipe(tmp_path, [src, "--shape", "search", "--query-col", "search_term", "--item-col", "product_id",
                             "--title-col", "product_title", "--grade-col", "relevance", "--pos-threshold", "2.5",
                             "--neg-threshold", "1.5", "--split", "0.5,0.1,0.4"])
    model, popular = rows[str(tmp_path / "sft")], rows["most popular (train)"]
    assert model["sessions"] >= 8 and model["constrained"]["invalid_rate"] == 0
    assert model["item"]["recall@10"] > popular["item"]["recall@10"] + 0.2, (model["item"], popular["item"])


@pytest.mark.slow
def test_a_history_log_trains_a_model_that_beats_popularity(tmp_path):
    events, catalog = tmp_path / "events.csv", tmp_path / "items.csv"
    write_history_log(events, catalog)
    assert len(events.read_text().splitlines()) == 55  # a header and 54 events
    rows = recipe(tmp_path, [events, "--shape", "history", "--user-col", "user", "--item-col", "sku",
                             "--time-col", "ts", "--catalog", catalog, "--title-col", "name",
                             "--text-col", "description"])
    model, popular = rows[str(tmp_path / "sft")], rows["most popular (train)"]
    assert model["sessions"] == 6 and model["constrained"]["invalid_rate"] == 0
    assert model["item"]["recall@10"] > popular["item"]["recall@10"], (model["item"], popular["item"])  # 6 sessions

"""Quality experiments: a tiny grid run end to end (resumable), its SFT sources, its options and CLI errors."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sid_index.errors import RadgrError
from trainer.quality import PRESETS, QualityConfig, run_quality, sft_fingerprint, with_overrides
from trainer.quality_report import collect, markdown
from trainer.variants import POPULAR, slug

RADGR = str(Path(sys.executable).with_name("radgr"))


@pytest.mark.slow
def test_tiny_grid_runs_resumes_and_reports(tiny_dataset, tiny_index, tmp_path):
    variants = ["sft", "rad-dpo-softmax", "rad-dpo-softmax w/o RDRW", "dpo"]
    sft, pref, ev = PRESETS["tiny"]
    cfg = QualityConfig(sft=sft, pref=pref, eval=ev, name="tiny", data=tiny_dataset.root, index=tiny_index.root,
                        out=tmp_path / "q", seeds=[0, 1], variants=variants)
    logs: list[str] = []
    rows = run_quality(cfg, log=logs.append)
    assert set(rows) == {POPULAR, *variants} and all(r["seeds"] == [0, 1] for r in rows.values())
    popular = rows[POPULAR]  # one ranking for every seed: no spread, and no free decode to measure
    assert popular["std"]["SID R@128"] == 0 and math.isnan(popular["mean"]["invalid, free decode"])
    assert f"| {POPULAR} | 2 |" in (tmp_path / "q" / "quality.md").read_text()
    for seed in (0, 1):
        for v in variants:
            res = json.loads((tmp_path / "q" / f"seed{seed}" / slug(v) / "eval.json").read_text())
            assert res["seed"] == seed and res["variant"] == v and res["constrained"]["invalid_rate"] == 0.0
            assert res["sessions"] == 12 and set(res["curves"]["sid"]) == {"1", "2", "4", "8", "16"}
            assert res["train_s"] > 0  # the SFT run's time for the sft row, the variant's own otherwise
    # every preference run started from its seed's SFT checkpoint
    for seed in (0, 1):
        meta = json.loads((tmp_path / "q" / f"seed{seed}" / "rad-dpo-softmax" / "model" / "radgr.json").read_text())
        assert [s["stage"] for s in meta["stages"]] == ["sft", "pref"]
    assert (tmp_path / "q" / "recall.png").stat().st_size > 1000
    assert "truth SID MRR" in (tmp_path / "q" / "quality.md").read_text()  # synthetic data: the truth is known
    written = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert written["rows"]["rad-dpo-softmax"]["mean"]["SID R@128"] == pytest.approx(
        np.mean([json.loads((tmp_path / "q" / f"seed{s}" / "rad-dpo-softmax" / "eval.json").read_text())["sid"]
                 ["recall@128"] for s in (0, 1)]))

    # a second run does nothing; a lost result is evaluated again without retraining
    (tmp_path / "q" / "seed1" / "dpo" / "eval.json").unlink()
    logs.clear()
    again = run_quality(cfg, log=logs.append)
    assert not any(m.startswith(("training", "resuming")) for m in logs)
    assert again["dpo"]["seeds"] == [0, 1] and collect(tmp_path / "q", ["dpo"], [0, 1])["dpo"][1]["seed"] == 1

    # an experiment on the same SFT examples starts from these SFT runs: only its preference run trains
    twin = cfg.model_copy(update={"out": tmp_path / "q2", "sft_from": tmp_path / "q", "seeds": [1],
                                  "variants": ["sft", "rad-dpo-softmax"]})
    logs.clear()
    twin_rows = run_quality(twin, log=logs.append)
    trained = [m for m in logs if m.startswith("training")]
    assert trained == [f"training {tmp_path / 'q2' / 'seed1' / 'rad-dpo-softmax'}"]
    assert twin_rows["sft"]["values"]["SID MRR"] == [rows["sft"]["values"]["SID MRR"][1]]  # the same model
    meta = json.loads((tmp_path / "q2" / "seed1" / "rad-dpo-softmax" / "model" / "radgr.json").read_text())
    assert [s["stage"] for s in meta["stages"]] == ["sft", "pref"]
    assert not (tmp_path / "q2" / "seed1" / "sft" / "model").exists()

    # ... and refuses SFT runs trained on other positives or for another index, before training anything
    other = tmp_path / "other"
    shutil.copytree(tiny_dataset.root, other)
    sessions = pq.read_table(other / "sessions.parquet")
    pq.write_table(sessions.slice(1), other / "sessions.parquet")
    with pytest.raises(RadgrError, match="whose catalog or positives differ"):
        run_quality(twin.model_copy(update={"data": other, "out": tmp_path / "q3"}))
    index = tmp_path / "index"
    shutil.copytree(tiny_index.root, index)
    manifest = json.loads((index / "manifest.json").read_text())
    (index / "manifest.json").write_text(json.dumps(manifest | {"index_id": "0" * 16}))
    with pytest.raises(RadgrError, match="was trained for index"):
        run_quality(twin.model_copy(update={"index": index, "out": tmp_path / "q3"}))
    with pytest.raises(RadgrError, match="no finished SFT run"):
        run_quality(twin.model_copy(update={"sft_from": tmp_path / "q3", "out": tmp_path / "q4"}))
    assert not (tmp_path / "q3" / "seed1" / "rad-dpo-softmax").exists()

    # checkpoints trained elsewhere, one per seed: the sft row is that checkpoint, the preference runs start there
    given = [tmp_path / "q" / f"seed{s}" / "sft" / "model" for s in (0, 1)]
    elsewhere = cfg.model_copy(update={"out": tmp_path / "q5", "variants": ["sft", "dpo"], "sft_checkpoints": given})
    logs.clear()
    given_rows = run_quality(elsewhere, log=logs.append)
    assert [m for m in logs if m.startswith("training")] == [f"training {tmp_path / 'q5' / f'seed{s}' / 'dpo'}"
                                                              for s in (0, 1)]
    assert given_rows["sft"]["values"]["SID MRR"] == rows["sft"]["values"]["SID MRR"]
    assert json.loads((tmp_path / "q5" / "seed0" / "sft" / "eval.json").read_text())["train_s"] is None
    with pytest.raises(RadgrError, match="was trained for index"):
        run_quality(elsewhere.model_copy(update={"index": index, "out": tmp_path / "q6"}))
    with pytest.raises(ValueError, match="one per seed"):
        QualityConfig(**{**elsewhere.model_dump(), "seeds": [0]})

    # runs made with other settings are neither reused nor resumed into a changed experiment
    changed = cfg.model_copy(update={"pref": pref | {"steps": 3}})
    with pytest.raises(RadgrError,
                       match=r"seed0/rad-dpo-softmax/eval.json was trained with other settings \(steps 2 -> 3\)"):
        run_quality(changed)
    with pytest.raises(RadgrError, match=r"seed0/most-popular-train/eval.json was measured with other eval settings "
                                         r"\(sessions 12 -> 10\)"):
        run_quality(cfg.model_copy(update={"eval": ev | {"max_sessions": 10}}))


def test_sft_fingerprint_reads_what_sft_reads(tiny_dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dataset.root, copy)
    assert sft_fingerprint(copy) == sft_fingerprint(tiny_dataset.root)
    sessions = pq.read_table(copy / "sessions.parquet")
    pq.write_table(sessions.drop_columns(["exposed_negatives"]).append_column(  # negatives: not SFT's input
        "exposed_negatives", sessions["exposed_negatives"].take(list(range(sessions.num_rows))[::-1])),
        copy / "sessions.parquet")
    assert sft_fingerprint(copy) == sft_fingerprint(tiny_dataset.root)
    pq.write_table(sessions.drop_columns(["user"]), copy / "sessions.parquet")  # an optional column, absent
    assert sft_fingerprint(copy) != sft_fingerprint(tiny_dataset.root)


def test_overrides_change_copies_of_the_preset():
    sft, pref, ev = PRESETS["tiny"]
    options = {"sft": sft, "pref": pref, "eval": ev}
    got = with_overrides(options, ["sft.steps=7", "sft.scratch.hidden_size=96", "pref.method=simpo",
                                   "eval.max_sessions=null", "pref.lr=5e-4"])
    assert got["sft"]["steps"] == 7 and got["sft"]["scratch"]["hidden_size"] == 96
    assert got["sft"]["scratch"]["num_layers"] == sft["scratch"]["num_layers"]  # the rest of the group kept
    assert got["pref"]["method"] == "simpo" and got["pref"]["lr"] == 5e-4 and got["eval"]["max_sessions"] is None
    assert PRESETS["tiny"][0]["steps"] == 3 and PRESETS["tiny"][0]["scratch"]["hidden_size"] == 64  # untouched
    for bad in ("steps=3", "model.steps=3", "sft.=3", "sft.steps", "sft.steps.x=1"):
        with pytest.raises(RadgrError, match="--set"):
            with_overrides(options, [bad])


def test_cli_rejects_unknown_variants_and_seeds(tiny_dataset, tiny_index, tmp_path):
    base = [RADGR, "bench", "quality", "--data", str(tiny_dataset.root), "--index", str(tiny_index.root),
            "--out", str(tmp_path / "q"), "--preset", "tiny"]
    res = subprocess.run(base + ["--variant", "magic"], capture_output=True, text=True)
    assert res.returncode == 2 and "unknown variants ['magic']" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run(base + ["--seeds", "0,x"], capture_output=True, text=True)
    assert res.returncode == 2 and "--seeds '0,x'" in res.stderr
    res = subprocess.run(base + ["--preset", "huge"], capture_output=True, text=True)
    assert res.returncode == 2 and "--preset 'huge': one of" in res.stderr
    res = subprocess.run(base + ["--set", "sft.stepz=3"], capture_output=True, text=True)  # before any training
    assert res.returncode == 2 and "invalid sft settings: --stepz: Extra inputs" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "q" / "seed0").exists()
    res = subprocess.run(base + ["--sft-from", str(tmp_path / "elsewhere")], capture_output=True, text=True)
    assert res.returncode == 2 and "elsewhere/seed0/sft: no finished SFT run to start from" in res.stderr
    res = subprocess.run(base + ["--seeds", "0,1", "--sft-checkpoint", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2 and "1 sft_checkpoints for 2 seeds: one per seed" in res.stderr
    res = subprocess.run(base + ["--seeds", "0", "--sft-checkpoint", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2 and "not a radgr checkpoint" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_denoise_command_builds_each_share_and_one_table(tmp_path):
    out = tmp_path / "dn"
    res = subprocess.run([RADGR, "bench", "denoise", "--out", str(out), "--shares", "0,0.3", "--preset", "tiny",
                          "--seeds", "0", "--items", "300", "--sessions", "600", "--codebooks", "8,8,8"],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    for share in (0.0, 0.3):
        info = json.loads((out / f"share_{share:g}" / "data" / "dataset.json").read_text())
        assert info["synthetic_stats"]["pseudo_negative_share"] == pytest.approx(share, abs=0.01)
    # the shares differ only in unclicked slots: one index, one SFT run (the first share's) for both
    assert sft_fingerprint(out / "share_0" / "data") == sft_fingerprint(out / "share_0.3" / "data")
    assert (out / "index" / "manifest.json").is_file() and not (out / "share_0" / "index").exists()
    assert (out / "share_0" / "seed0" / "sft" / "model").is_dir()
    assert not (out / "share_0.3" / "seed0" / "sft" / "model").exists()
    table = json.loads((out / "denoise.json").read_text())
    assert set(table["rows"]) == {"0", "0.3"}
    sft = [table["rows"][s]["sft"]["values"] for s in ("0", "0.3")]
    assert sft[0]["SID MRR"] == sft[1]["SID MRR"]  # the same model on the same test clicks
    assert all(set(rows) == {"sft", "rad-dpo-softmax", "rad-dpo-softmax w/o RDRW"} for rows in table["rows"].values())
    md = (out / "denoise.md").read_text()
    assert md.count("| 0% |") == 3 and md.count("| 30% |") == 3 and md == res.stdout


def test_results_kept_elsewhere_are_not_run_again(tiny_dataset, tiny_index, tiny_ckpt, tmp_path):
    from trainer.model import save_checkpoint

    save_checkpoint(tiny_ckpt, tmp_path / "start")
    sft, pref, ev = PRESETS["tiny"]
    cfg = QualityConfig(sft=sft, pref=pref, eval=ev, name="kept", data=tiny_dataset.root, index=tiny_index.root,
                        out=tmp_path / "runs", seeds=[0], variants=["sft", "dpo"], results=tmp_path / "kept",
                        sft_checkpoints=[tmp_path / "start"])
    logs: list[str] = []
    rows = run_quality(cfg, log=logs.append)
    for row in (POPULAR, "sft", "dpo"):  # every result in both homes, the same bytes
        kept = tmp_path / "kept" / "seed0" / slug(row) / "eval.json"
        assert kept.read_bytes() == (tmp_path / "runs" / "seed0" / slug(row) / "eval.json").read_bytes()
    assert json.loads((tmp_path / "kept" / "seed0" / "dpo" / "eval.json").read_text())["train_config"]["steps"] == 2

    # a fresh machine: no runs, no SFT checkpoint; the kept results make the same table without training
    shutil.rmtree(tmp_path / "runs")
    shutil.rmtree(tmp_path / "start")
    logs.clear()
    again = run_quality(cfg, log=logs.append)
    assert not any(m.startswith(("training", "resuming")) for m in logs)
    assert again["dpo"]["values"] == rows["dpo"]["values"] and again["sft"]["values"] == rows["sft"]["values"]
    assert (tmp_path / "runs" / "quality.md").read_text() == markdown(rows, "kept")
    # ... but not into an experiment with other settings
    with pytest.raises(RadgrError, match=r"seed0/dpo/eval.json was trained with other settings \(steps 2 -> 3\)"):
        run_quality(cfg.model_copy(update={"pref": pref | {"steps": 3}, "out": tmp_path / "runs2"}))
    with pytest.raises(RadgrError, match=r"measured with other eval settings \(sessions 12 -> 10\)"):
        run_quality(cfg.model_copy(update={"eval": ev | {"max_sessions": 10}, "out": tmp_path / "runs3"}))

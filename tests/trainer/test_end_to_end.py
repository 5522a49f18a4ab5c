"""End to end on synthetic data: SFT then RAD-DPO on a tiny model retrieves far better than chance; CLI errors."""

import subprocess
import sys

import pytest

from trainer.config import RadDPOConfig, SFTConfig
from trainer.evaluate import evaluate
from trainer.loop import train
from trainer.model import load_checkpoint

from .conftest import TINY_MODEL

RADGR = [sys.executable, "-m", "radgr.cli"]


@pytest.mark.slow
def test_sft_then_rad_dpo_beats_random(tiny_dataset, tiny_index, tmp_path):
    common = dict(data=tiny_dataset.root, index=tiny_index.root, device="cpu", progress=False, log_every=20)
    sft = train(SFTConfig(out=tmp_path / "sft", scratch=TINY_MODEL, epochs=8, batch_size=16, lr=3e-3,
                          save_every=10_000, **common))
    rad = train(RadDPOConfig(out=tmp_path / "rad", init=sft, steps=20, batch_size=8, lr=3e-4, num_negatives=8,
                             rdrw_warmup=256, save_every=10_000, **common))
    width = 16
    chance = width / tiny_index.num_sids  # SID recall of a random ranking of `width` SIDs
    for path in (sft, rad):
        m = evaluate(load_checkpoint(path), tiny_index, tiny_dataset, split="valid", width=width, unconstrained=False)
        assert m["constrained"]["invalid_rate"] == 0.0
        assert m["sid"][f"recall@{8}"] > 3 * (8 / tiny_index.num_sids), m["sid"]
        assert m["sid"]["mrr"] > 0.15, m["sid"]
        assert chance < 0.2


def test_cli_errors_are_one_line(tiny_dataset, tiny_index, tmp_path):
    cases = [
        (["train", "sft", "--data", str(tmp_path / "nope"), "--index", str(tiny_index.root), "--out", str(tmp_path)],
         "not a dataset directory"),
        (["train", "dpo", "--data", str(tiny_dataset.root), "--index", str(tiny_index.root), "--out", str(tmp_path),
          "--init", str(tmp_path), "--beta", "0"], "--beta"),
        (["train", "sft", "--data", str(tiny_dataset.root), "--index", str(tiny_index.root), "--out", str(tmp_path),
          "--batch-size", "0"], "--batch-size"),
    ]
    for args, needle in cases:
        run = subprocess.run(RADGR + args, capture_output=True, text=True)
        assert run.returncode == 2, (args, run.stderr)
        lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], run.stderr
        assert "Traceback" not in run.stderr

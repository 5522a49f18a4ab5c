"""bench/beam.py at a tiny size, as a subprocess (it sets vLLM's environment before importing anything)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "beam.py"


@pytest.mark.slow
def test_tiny_run_has_every_row_and_only_valid_sids_from_constrained_engines(tmp_path):
    engines = ["native", "hf"]
    try:
        import vllm  # noqa: F401

        engines += ["vllm", "vllm-stock"]
    except ImportError:
        pass
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--sids", "2000", "--models", "tiny", "--widths", "4,8",
         "--concurrency", "1,2", "--engines", ",".join(engines), "--work", str(tmp_path / "work"),
         "--json", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert {(r["engine"], r["width"], r["concurrency"]) for r in rows} == {
        (e, w, c) for e in engines for w in (4, 8) for c in (1, 2)
    }
    for r in rows:
        assert r["requests"] == 2 * r["concurrency"]
        assert 0 < r["median_s"] <= r["p99_s"] and r["req_per_s"] > 0
        if r["engine"] != "vllm-stock":  # the only unconstrained decoder
            assert r["invalid"] == 0.0, r
    assert "| model | W | c | engine | median s |" in proc.stdout

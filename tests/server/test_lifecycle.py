"""server/lifecycle.py: which engine "auto" picks, the JSON log lines (loading and draining are exercised
through the app in test_app.py)."""

from __future__ import annotations

import json
import logging

from server.lifecycle import JsonFormatter, configure_logging, log, resolve_engine


def test_auto_engine_is_vllm_only_for_block_aligned_prompts():
    import importlib.util

    has_vllm = importlib.util.find_spec("vllm") is not None
    assert resolve_engine("native", 32) == "native" and resolve_engine("vllm", 1) == "vllm"
    assert resolve_engine("auto", 1) == "native"
    assert resolve_engine("auto", 32) == ("vllm" if has_vllm else "native")
    assert resolve_engine("auto", 64) == ("vllm" if has_vllm else "native")


def test_log_lines_are_one_json_object_each(capsys):
    configure_logging("info")
    log.info("request", extra={"fields": {"request_id": "abc", "status": 200, "ms": 1.5}})
    log.debug("not shown at info")
    try:
        raise ValueError("boom")
    except ValueError:
        log.error("start-up failed", exc_info=True, extra={"fields": {"error": "boom"}})
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    first, second = map(json.loads, lines)
    assert {k: first[k] for k in ("level", "msg", "request_id", "status", "ms")} == {
        "level": "info", "msg": "request", "request_id": "abc", "status": 200, "ms": 1.5}
    assert second["level"] == "error" and second["error"] == "boom" and "ValueError: boom" in second["exc"]
    assert isinstance(logging.getLogger("radgr.server").handlers[0].formatter, JsonFormatter)

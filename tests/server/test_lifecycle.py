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


def test_the_lexical_term_is_refused_where_it_cannot_apply(served, tiny_index, tmp_path):
    """A lexical weight with the SID form, or on an index without a lexical folder, fails at start-up in one
    line (before any engine starts), not at the first request."""
    import json as _json
    import shutil

    import pytest

    from server.retriever import Retriever
    from sid_index.errors import RadgrError
    from sid_index.index import LEXICAL_DIR, MANIFEST_FILE, load_index

    with pytest.raises(RadgrError, match="term of the item-form index prior"):
        Retriever(served, tiny_index, index_prior=1.0, index_prior_form="sid", lexical_prior=2.0)
    bare = tmp_path / "bare"
    shutil.copytree(tiny_index.root, bare)
    shutil.rmtree(bare / LEXICAL_DIR)
    manifest = _json.loads((bare / MANIFEST_FILE).read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith(LEXICAL_DIR)}
    (bare / MANIFEST_FILE).write_text(_json.dumps(manifest))
    with pytest.raises(RadgrError, match="radgr index lexical"):
        Retriever(served, load_index(bare), index_prior=1.0, index_prior_form="item", lexical_prior=2.0)
    assert Retriever(served, load_index(bare), index_prior=1.0, index_prior_form="item").lexical_prior == 0.0

"""`radgr serve`: the retrieval server. Flags override the RADGR_* environment variables."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError

from sid_index.errors import RadgrError


def serve_command(
    model: str = typer.Option(None, help="checkpoint folder [RADGR_MODEL]"),
    index: str = typer.Option(None, help="SID index folder [RADGR_INDEX]"),
    engine: str = typer.Option(None, help="native | vllm [RADGR_ENGINE, default native]"),
    host: str = typer.Option(None, help="[RADGR_HOST, default 127.0.0.1]"),
    port: int = typer.Option(None, help="[RADGR_PORT, default 8000]"),
    device: str = typer.Option(None, help="cpu | cuda, native engine [RADGR_DEVICE]"),
    beam_width: int = typer.Option(None, help="default beam width [RADGR_BEAM_WIDTH, default 128]"),
    graceful_s: float = typer.Option(30.0, help="on SIGTERM/SIGINT, wait this long for in-flight requests"),
) -> None:
    """Serve a checkpoint and its SID index over HTTP (POST /v1/retrieve; docs at /docs).

    Every setting is also an environment variable (see server/settings.py); flags win.
    """
    import uvicorn

    from server.app import configure_logging, create_app
    from server.settings import ServerSettings

    given = dict(model=model, index=index, engine=engine, host=host, port=port, device=device, beam_width=beam_width)
    try:
        settings = ServerSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise RadgrError(f"bad server settings: {msgs}") from None
    preflight(settings)
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=graceful_s,
        access_log=False,  # one JSON line per request comes from the app itself
    )


def preflight(settings) -> None:
    """Fail before binding the port when the checkpoint and index do not belong together."""
    from server.retriever import check_compatible
    from sid_index.index import load_index
    from trainer.model import load_checkpoint

    for what, path in (("model", settings.model), ("index", settings.index)):
        if not Path(path).exists():
            raise RadgrError(f"{what} {path}: no such folder")
    check_compatible(load_checkpoint(settings.model, with_model=False), load_index(settings.index))

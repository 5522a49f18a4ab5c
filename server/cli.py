"""`radgr serve`: the retrieval server. Flags override the RADGR_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from sid_index.errors import RadgrError
from sid_index.trie import BEAM_WIDTH


def serve_command(
    model: Annotated[str | None, typer.Option(help="checkpoint folder [RADGR_MODEL]")] = None,
    index: Annotated[str | None, typer.Option(help="SID index folder [RADGR_INDEX]")] = None,
    engine: Annotated[
        str | None, typer.Option(help="vllm | native | auto [RADGR_ENGINE; auto: vllm for 32-aligned prompts]")
    ] = None,
    host: Annotated[str | None, typer.Option(help="[RADGR_HOST, default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="[RADGR_PORT, default 8000]")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda, native engine [RADGR_DEVICE]")] = None,
    beam_width: Annotated[int | None, typer.Option(
        help=f"default beam width [RADGR_BEAM_WIDTH, default {BEAM_WIDTH}]")] = None,
    index_prior: Annotated[float | None, typer.Option(
        help="fuse the index's retrieval score into the search with this weight, as radgr eval --index-prior "
             "[RADGR_INDEX_PRIOR, default: the weight the checkpoint was trained with, else 0]")] = None,
    item_prior: Annotated[float | None, typer.Option(
        help="add the item prior (query or history text embedding against each decoded SKU's own) with this "
             "weight, as radgr eval --item-prior [RADGR_ITEM_PRIOR, default: the checkpoint's, else 0]")] = None,
    index_prior_form: Annotated[str | None, typer.Option(
        help="what the index prior scores, as radgr eval --index-prior-form: sid | item "
             "[RADGR_INDEX_PRIOR_FORM, default: the checkpoint's, else sid]")] = None,
    lexical_prior: Annotated[float | None, typer.Option(
        help="with the item form: add the query's BM25 score x this to every SKU's score in the index prior, as "
             "radgr eval --lexical-prior [RADGR_LEXICAL_PRIOR, default: the checkpoint's, else 0]")] = None,
    graceful_s: Annotated[float | None, typer.Option(
        help="on SIGTERM/SIGINT, wait this long for in-flight requests [RADGR_SHUTDOWN_GRACE_S, default 30]")] = None,
) -> None:
    """Serve a checkpoint and its SID index over HTTP (POST /v1/retrieve; docs at /docs).

    Every setting is also an environment variable (see server/settings.py); flags win.
    """
    import uvicorn

    from server.app import create_app
    from server.lifecycle import configure_logging
    from server.protocol import with_header_timeout
    from server.settings import ServerSettings

    given = dict(model=model, index=index, engine=engine, host=host, port=port, device=device, beam_width=beam_width,
                 index_prior=index_prior, item_prior=item_prior, index_prior_form=index_prior_form,
                 lexical_prior=lexical_prior, shutdown_grace_s=graceful_s)
    try:
        settings = ServerSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise RadgrError(f"bad server settings: {msgs}") from None
    preflight(settings)
    configure_logging(settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        limit_concurrency=settings.max_connections,  # slow or idle clients cannot hold every worker slot
        timeout_keep_alive=settings.keep_alive_s,
        http=with_header_timeout(settings.header_timeout_s),  # slow-header (slowloris) clients are cut
        h11_max_incomplete_event_size=16 * 1024,  # request line + headers: a larger header block is refused
        access_log=False,  # one JSON line per request comes from the app itself
    )
    life = app.state.lifecycle
    server = draining_server(config, life.begin_drain)
    life.on_fatal = lambda: setattr(server, "should_exit", True)
    server.run()
    if life.error is not None:  # one line and exit 2, never a half-up server
        raise RadgrError(f"start-up failed: {life.error}")


def draining_server(config, on_exit):
    """uvicorn's server, told of a shutdown signal before it stops listening, so the app can turn /readyz
    and new requests to 503 at once and answer requests still running before the grace period ends."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            on_exit()
            super().handle_exit(sig, frame)

    return DrainingServer(config)


def preflight(settings) -> None:
    """Fail before binding the port when the checkpoint and index do not belong together."""
    from server.retriever import check_compatible
    from sid_index.index import load_index
    from trainer.model import load_checkpoint

    for what, path in (("model", settings.model), ("index", settings.index)):
        if not Path(path).exists():
            raise RadgrError(f"{what} {path}: no such folder")
    check_compatible(load_checkpoint(settings.model, with_model=False), load_index(settings.index))


def query_command(
    query: Annotated[str | None, typer.Argument(help="search query text")] = None,
    history: Annotated[
        list[str] | None, typer.Option("--history", "-H", help="a history SKU id (repeatable, oldest first)")
    ] = None,
    user: Annotated[list[str] | None, typer.Option("--user", "-u", help="a user feature name=value (repeatable)")] = (
        None
    ),
    top_k: Annotated[int, typer.Option(help="SKUs to return")] = 10,
    beam_width: Annotated[int | None, typer.Option(help="beam width (server default when omitted)")] = None,
    titles: Annotated[bool, typer.Option(help="show each item's catalog title (indexes built with titles)")] = True,
    url: Annotated[str, typer.Option(help="server URL")] = "http://127.0.0.1:8000",
    wait_s: Annotated[float, typer.Option(help="wait up to this long for the server to be ready")] = 0.0,
    token: Annotated[str | None, typer.Option(envvar="RADGR_API_TOKEN", help="bearer token")] = None,
) -> None:
    """Send one retrieval request to a running server and print the ranked SKUs (with their titles)."""
    from server.client import RetrievalClient

    if not (query and query.strip()) and not history:
        raise RadgrError("give a query, or at least one --history SKU (or both)")
    features = {}
    for item in user or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise RadgrError(f"--user {item!r}: expected name=value")
        features[name] = value
    client = RetrievalClient(url, token)
    client.wait_ready(wait_s)
    out = client.retrieve(query, history, features, top_k, beam_width, with_titles=titles)
    typer.echo(f"query {query!r}" + (f"  history {history}" if history else "") + (f"  user {features}" if features
                                                                                     else ""))
    typer.echo(f"model {out['model']}  index {out['index']}  engine {out['engine']}  beam width {out['beam_width']}  "
               f"{out['timing_ms']['total']:.1f} ms")
    typer.echo(results_table(out["items"]))
    if out.get("reachable", top_k) < top_k:
        typer.echo(f"(only {out['reachable']} SKUs were reachable from {out['beam_width']} beams; "
                   "a wider --beam-width reaches more)")


def results_table(items: list[dict]) -> str:
    """Ranked items as aligned columns: rank, SKU, SID, score, and the title where there is one."""
    sku_w = max([len("SKU")] + [len(i["sku_id"]) for i in items])
    sid_w = max([len("SID")] + [len(i["sid"]) for i in items])
    has_titles = any(i.get("title") for i in items)
    lines = [f"{'#':>4}  {'SKU':<{sku_w}}  {'SID':<{sid_w}}  {'score':>9}" + ("  title" if has_titles else "")]
    for n, i in enumerate(items, 1):
        title = f"  {i.get('title') or ''}" if has_titles else ""
        lines.append(f"{n:4d}  {i['sku_id']:<{sku_w}}  {i['sid']:<{sid_w}}  {i['score']:9.3f}{title}")
    return "\n".join(lines)

"""`radgr`: the project's one command line. Each package contributes a sub-command group."""

from __future__ import annotations

import sys

import typer

from loadtest.cli import bench_app
from server.cli import query_command, serve_command
from sid_index.cli import index_app
from sid_index.data.cli import data_app
from sid_index.errors import RadgrError
from trainer.cli import denoise_command, eval_command, peers_command, quality_command, train_app

cli = typer.Typer(
    name="radgr",
    help="Generative retrieval for e-commerce search: data, Semantic-ID index, training, serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
cli.add_typer(data_app, name="data")
cli.add_typer(index_app, name="index")
cli.add_typer(train_app, name="train")
cli.command("eval")(eval_command)
cli.command("serve")(serve_command)
cli.command("query")(query_command)
bench_app.command("quality")(quality_command)
bench_app.command("denoise")(denoise_command)
bench_app.command("peers")(peers_command)
cli.add_typer(bench_app, name="bench")


def app() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        code = cli(standalone_mode=False)  # click returns a command's `typer.Exit` code instead of raising it
    except RadgrError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except FileExistsError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        # Usage errors of the click that typer bundles: show the usage line, no traceback.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    app()

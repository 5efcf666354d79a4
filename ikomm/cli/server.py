"""`ikomm server start|stop|status`: the local Prefect server the waves report to."""

from __future__ import annotations

import typer

from ikomm import server
from ikomm.cli.console import console, fail
from ikomm.errors import IkommError

app = typer.Typer(help="The local Prefect server the waves report to.", no_args_is_help=True)


@app.command("start")
def server_start() -> None:
    """Start the local Prefect server (SQLite under the state folder, batched task-run recorder)."""
    try:
        state = server.start()
    except IkommError as exc:
        raise fail(exc) from None
    console.print(f"Prefect server {state}: UI at {server.ui_url()}")


@app.command("stop")
def server_stop() -> None:
    """Stop the local Prefect server; safe to repeat."""
    console.print("stopped" if server.stop() else "was not running")


@app.command("status")
def server_status() -> None:
    """Whether the local Prefect server answers; exit 1 if not."""
    ok = server.healthy()
    console.print(f"Prefect server at {server.api_url()}: {'answers' if ok else 'not answering'}")
    raise typer.Exit(0 if ok else 1)

"""`ikomm server start|stop|status`: the local Prefect server the waves report to; `ikomm serve`: the wave and
rollback deployments, so a lead starts a wave and an operator a rollback from the UI."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ikomm import server
from ikomm.cli.console import InventoryDir, console, err, fail, load, styled, use_local_server
from ikomm.errors import IkommError

app = typer.Typer(help="The local Prefect server the waves report to.", no_args_is_help=True)


@app.command("start")
def server_start(
    production: Annotated[
        bool,
        typer.Option(
            "--production",
            help="PostgreSQL (Prefect's database and the ledger) and Redis (Prefect's broker and cache), started "
            "here too; remembered for this state folder.",
        ),
    ] = False,
) -> None:
    """Start the local Prefect server (SQLite under the state folder, batched task-run recorder; or production mode)."""
    from ikomm import production as prod

    try:
        state = server.start(production=production)
    except IkommError as exc:
        raise fail(exc) from None
    mode = ""
    if prod.enabled(server.state_dir()):
        mode = f" on PostgreSQL 127.0.0.1:{prod.pg_port()} and Redis 127.0.0.1:{prod.redis_port()} (production mode)"
    console.print(f"Prefect server {state}{mode}: UI at {server.ui_url()}")


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


def serve_cmd(
    inventory: InventoryDir = Path("inventory"),
    waves: Annotated[Path, typer.Option(help="The folder of wave files the UI may start.")] = Path("waves"),
    detach: Annotated[
        bool, typer.Option("--detach", help="Serve in the background (log under the state folder).")
    ] = False,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the deployments served in the background.")] = False,
) -> None:
    """Serve the wave and rollback flows as deployments (start-wave/wave, start-rollback/rollback) until stopped."""
    if stop:
        console.print("stopped" if server.stop_spawned("serve") else "was not being served")
        return
    load(inventory)  # a broken inventory is refused here, not in the first run from the UI
    if not waves.is_dir():
        err.print(styled(("error:", "red"), f" --waves {waves}: no such folder"))
        raise typer.Exit(2)
    try:
        use_local_server()
    except IkommError as exc:
        raise fail(exc) from None
    import flows

    home = Path(flows.__file__).resolve().parents[1]  # the deployments' entrypoints are relative to it
    argv = [
        sys.executable,
        "-m",
        "flows.served",
        "--inventory",
        str(inventory.resolve()),
        "--waves",
        str(waves.resolve()),
    ]
    deployments = f"{server.ui_base()}/deployments"
    if detach:
        if server.spawned("serve"):
            console.print(f"already served: {deployments}")
            return
        server.spawn("serve", argv, dict(os.environ), cwd=home)
        log = server.state_dir() / "prefect" / "serve.log"
        console.print(f"serving start-wave/wave and start-rollback/rollback: {deployments} (log: {log})")
        return
    console.print(f"serving start-wave/wave and start-rollback/rollback: {deployments} (Ctrl-C stops)")
    os.chdir(home)
    os.execv(sys.executable, argv)

"""`ikomm worker start|stop|list`: Prefect process workers of the pool `ikomm`, which run a wave's batches
(flows.batch) when the wave is run with `--workers N` or `options.workers: N` (docs/scale-out.md)."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from ikomm import server
from ikomm.cli.console import console, err, fail, use_local_server
from ikomm.errors import FatalError, IkommError

app = typer.Typer(help="Workers that run waves' batches (Prefect process workers of the pool ikomm).")

ONLINE_SECONDS = 60.0
# How often a worker asks for a batch to run: Prefect's default is every 10 s, so a worker that ended a batch
# sat idle 5 s on average before the next (several times a phase). The query is one small request a second.
QUERY_SECONDS = "1"


def _argv(name: str, limit: int) -> list[str]:
    from flows.batch import POOL

    prefect = Path(sys.executable).with_name("prefect")
    return [str(prefect), "worker", "start", "--pool", POOL, "--type", "process", "--name", name, "--limit", str(limit)]


@app.command("start")
def worker_start(
    name: Annotated[str, typer.Option(help="The worker's name in the pool (default: host-N).")] = "",
    limit: Annotated[int, typer.Option(min=1, help="Batches this worker runs at once.")] = 1,
    detach: Annotated[
        bool, typer.Option("--detach", help="Run in the background (log under the state folder); wait till online.")
    ] = False,
) -> None:
    """Start a worker of the pool `ikomm` on this machine: it runs the batches of waves run with workers."""
    try:
        use_local_server()
        from flows.batch import ensure_deployment, online_workers

        ensure_deployment()  # the pool and the batch deployment, so the worker has something to poll
        online = online_workers()
        running = [n for n in _names() if server.spawned(f"worker-{n}")]
        host = socket.gethostname()
        name = name or next(f"{host}-{i}" for i in range(1, 1000) if f"{host}-{i}" not in running)
        if name in running:
            console.print(f"worker {name} is running already")
            return
        env = {"PREFECT_WORKER_QUERY_SECONDS": QUERY_SECONDS, **os.environ}
        env["IKOMM_STATE"] = str(server.private_state_dir())
        home = Path(__file__).resolve().parents[2]  # the project: the flow runs' working folder
        if not detach:
            console.print(f"worker {name} of pool ikomm (Ctrl-C stops); {len(online)} other(s) online")
            os.chdir(home)
            os.execve(_argv(name, limit)[0], _argv(name, limit), env)
        server.spawn(f"worker-{name}", _argv(name, limit), env, cwd=home)
        deadline = time.monotonic() + ONLINE_SECONDS
        while name not in online_workers():
            if not server.spawned(f"worker-{name}"):
                raise FatalError(f"worker {name} exited at once; see {_log(name)}")
            if time.monotonic() > deadline:
                raise FatalError(f"worker {name} not online within {ONLINE_SECONDS:.0f} s; see {_log(name)}")
            time.sleep(0.5)
    except IkommError as exc:
        raise fail(exc) from None
    console.print(f"worker {name} online in pool ikomm (log: {_log(name)})")


@app.command("stop")
def worker_stop(
    name: Annotated[str, typer.Option(help="Stop this worker only (default: every one started here).")] = "",
) -> None:
    """Stop the workers started here with --detach; a batch running on one is resumed by another or a rerun."""
    names = [name] if name else _names()
    stopped = [n for n in names if server.stop_spawned(f"worker-{n}")]
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "no worker was running")


@app.command("list")
def worker_list() -> None:
    """The workers Prefect sees online in the pool `ikomm`, and those started here."""
    try:
        use_local_server()
        from flows.batch import online_workers

        online = online_workers()
    except IkommError as exc:
        raise fail(exc) from None
    here = [n for n in _names() if server.spawned(f"worker-{n}")]
    for n in sorted(set(online) | set(here)):
        where = "started here" if n in here else "elsewhere"
        console.print(f"{n}: {'online' if n in online else 'not online'} ({where})")
    if not online and not here:
        err.print("no worker: ikomm worker start --detach")
        raise typer.Exit(1)


def _names() -> list[str]:
    """The workers this state folder started (pid files prefect/worker-<name>.pid)."""
    folder = server.state_dir() / "prefect"
    return sorted(p.stem.removeprefix("worker-") for p in folder.glob("worker-*.pid"))


def _log(name: str) -> Path:
    return server.state_dir() / "prefect" / f"worker-{name}.log"

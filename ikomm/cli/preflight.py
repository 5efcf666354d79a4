"""`ikomm preflight FILE`: everything the wave needs, checked before it writes anything (also run by `wave run`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ikomm import server
from ikomm.cli.console import InventoryDir, JsonFlag, console, existing_ledger, fail, load, styled, use_local_server
from ikomm.errors import IkommError
from ikomm.inventory import Inventory
from ikomm.ledger import Ledger
from ikomm.preflight import Check, problems
from ikomm.waves import Wave, load_wave

OutsideWindowOpt = Annotated[
    bool, typer.Option("--outside-window", help="Run although the wave's window has ended (recorded on the wave).")
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=0,
        help="Move the users in batches on this many workers of the pool ikomm (ikomm worker start); 0: in this "
        "process. Default: the wave file's options.workers.",
    ),
]


def run_checks(
    inv: Inventory, wave: Wave, ledger: Ledger | None, outside_window: bool = False, workers: int | None = None
) -> list[Check]:
    """Every preflight check of the wave, the Prefect ones included (the server must be chosen already);
    Prefect is imported only here, when a check needs it. workers: None, as the wave file says."""
    from flows.limits import wave_checks

    return wave_checks(inv, wave, ledger, server.state_dir(), outside_window, workers)


def print_checks(checks: list[Check]) -> None:
    table = Table(title="preflight")
    for col in ("check", "", "found"):
        table.add_column(col, overflow="fold")
    for c in checks:
        table.add_row(c.name, styled(("ok", "green")) if c.ok else styled(("FAILED", "bold red")), c.detail)
    console.print(table)


def preflight_cmd(
    wave_file: Annotated[Path, typer.Argument(help="waves/<id>.yaml")],
    inventory: InventoryDir = Path("inventory"),
    outside_window: OutsideWindowOpt = False,
    workers: WorkersOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Check servers, TLS, host keys, binds, Prefect, limits, workers, names, seats, space and window; exit 1 on a
    problem."""
    inv = load(inventory)
    try:
        wave = load_wave(wave_file, inv)
        use_local_server()
        checks = run_checks(inv, wave, existing_ledger(), outside_window, workers)
    except IkommError as exc:
        raise fail(exc) from None
    failed = problems(checks)
    if as_json:
        console.print_json(json.dumps({"ok": not failed, "checks": [c.as_dict() for c in checks]}))
    else:
        print_checks(checks)
        console.print(f"wave {wave.id}: " + (f"{len(failed)} problem(s)" if failed else "ready to run"))
    raise typer.Exit(1 if failed else 0)

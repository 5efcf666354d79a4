"""`ikomm lab generate|up|down|status`: the local lab of real servers on loopback."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ikomm.cli.console import InventoryDir, JsonFlag, console, fail, load, styled
from ikomm.errors import IkommError, InvalidInputError

if TYPE_CHECKING:
    from lab.manager import Lab

app = typer.Typer(help="The local lab: real servers on loopback, seeded from the inventory.", no_args_is_help=True)


@app.command("generate")
def lab_generate(
    users: Annotated[int, typer.Option(min=3, help="How many users (split 70/16/14 by ownership).")] = 2500,
    seed: Annotated[int, typer.Option(help="Random seed: same seed and size, same bytes.")] = 2026,
    out: Annotated[Path, typer.Option(help="Folder to write the inventory into.")] = Path("inventory"),
    lab_dir: Annotated[str, typer.Option(help="Lab folder, relative to --out (or absolute).")] = "../.lab",
    tenant: Annotated[
        list[str] | None,
        typer.Option(help="A neighbour's tenant kit too (tenants/<id>/, for `ikomm tenant add`), e.g. ringebu."),
    ] = None,
) -> None:
    """Write a deterministic synthetic inventory of the three municipalities (and tenant kits of neighbours)."""
    from lab.synthetic import TENANTS, generate

    known = [t[0] for t in TENANTS]
    for name in tenant or []:
        if name not in known:
            raise fail(InvalidInputError(f"--tenant {name}: no such neighbour (known: {', '.join(known)})"))
    try:
        result = generate(out, users=users, seed=seed, lab_dir=lab_dir, tenants=tenant or [])
    except InvalidInputError as exc:
        raise fail(exc) from None
    kits = f", tenant kits: {', '.join(tenant)}" if tenant else ""
    console.print(
        f"wrote {out}: users {result.users}, {result.devices} thin clients, "
        f"{result.applications} applications, {result.servers} servers{kits}"
    )


@app.command("up")
def lab_up(inventory: InventoryDir = Path("inventory"), as_json: JsonFlag = False) -> None:
    """Build (first time) or copy (later) the lab, then start every server and wait until each answers."""
    from lab.manager import Lab

    inv = load(inventory)
    t0 = time.monotonic()
    try:
        lab = Lab(inv, progress=None if as_json else lambda msg: console.print(styled((msg, "dim"))))
        mode = lab.up()
    except IkommError as exc:
        raise fail(exc) from None
    seconds = time.monotonic() - t0
    memory = lab.memory_kib()
    if as_json:
        console.print_json(json.dumps({"mode": mode, "seconds": round(seconds, 2), "pss_kib": memory}))
        return
    _print_status(lab)
    console.print(
        styled(
            (f"lab up ({mode}) in {seconds:.1f} s", "green"),
            f", {memory / 1024:.0f} MB of memory (PSS); folder {lab.dir}",
        )
    )


@app.command("down")
def lab_down(inventory: InventoryDir = Path("inventory")) -> None:
    """Stop exactly the servers `lab up` started (safe to run twice)."""
    from lab.manager import Lab

    try:
        stopped = Lab(load(inventory)).down()
    except IkommError as exc:
        raise fail(exc) from None
    console.print(f"stopped {len(stopped)} servers" + (f": {', '.join(stopped)}" if stopped else " (none running)"))


@app.command("status")
def lab_status(inventory: InventoryDir = Path("inventory"), as_json: JsonFlag = False) -> None:
    """Show each lab server, whether it runs and whether it answers; exit 1 unless all answer."""
    from lab.manager import Lab

    try:
        lab = Lab(load(inventory))
        rows = lab.status()
    except IkommError as exc:
        raise fail(exc) from None
    if as_json:
        console.print_json(
            json.dumps(
                [
                    {"name": s.name, "role": s.role, "address": f"{s.host}:{s.port}", "running": r, "answers": a}
                    for s, r, a in rows
                ]
            )
        )
    else:
        _print_status(lab)
    if not all(a for _, _, a in rows):
        raise typer.Exit(1)


def _print_status(lab: Lab) -> None:
    table = Table(title=f"Lab servers ({lab.dir})")
    for col in ("server", "role", "address", "running", "answers"):
        table.add_column(col)
    for s, running, answers in lab.status():
        table.add_row(
            s.name,
            s.role,
            f"{s.host}:{s.port}",
            "yes" if running else styled(("no", "red")),
            "yes" if answers else styled(("no", "red")),
        )
    console.print(table)

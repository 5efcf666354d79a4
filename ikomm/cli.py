"""The `ikomm` command line: inventory and lab (waves, status and rollback come with their issues)."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ikomm.errors import IkommError, InvalidInputError
from ikomm.inventory import Inventory, load_inventory

if TYPE_CHECKING:
    from lab.manager import Lab

app = typer.Typer(help="ikomm-migrate: move users onto the Ikomm platform in waves.", no_args_is_help=True)
inventory_app = typer.Typer(help="Validate and show the inventory.", no_args_is_help=True)
lab_app = typer.Typer(help="The local lab: real servers on loopback, seeded from the inventory.", no_args_is_help=True)
app.add_typer(inventory_app, name="inventory")
app.add_typer(lab_app, name="lab")

# Data (names, paths, reasons) is printed as it is, never read as markup: a municipality called
# "Gausdal [/bold]" must print, not crash. Styles come only from `styled`.
console = Console(markup=False, highlight=False)
err = Console(stderr=True, markup=False, highlight=False)


def styled(*parts: str | tuple[str, str]) -> Text:
    """A line of plain parts and (text, style) parts; no part is read as markup."""
    return Text.assemble(*parts)


InventoryDir = Annotated[
    Path, typer.Option("--inventory", "-i", envvar="IKOMM_INVENTORY", help="The inventory folder.")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _fail(exc: IkommError) -> typer.Exit:
    err.print(styled(("error:", "bold red"), f" {exc}"), soft_wrap=True)
    return typer.Exit(2 if isinstance(exc, InvalidInputError) else 1)


def _load(path: Path) -> Inventory:
    try:
        return load_inventory(path)
    except IkommError as exc:
        raise _fail(exc) from None


@inventory_app.command("validate")
def inventory_validate(inventory: InventoryDir = Path("inventory"), as_json: JsonFlag = False) -> None:
    """Check every inventory file and the links between them; exit 2 on any problem."""
    from ikomm.errors import InventoryError

    try:
        inv = load_inventory(inventory)
    except InventoryError as exc:
        if as_json:
            console.print_json(json.dumps({"ok": False, "problems": [p.__dict__ for p in exc.problems]}))
        else:
            err.print(str(exc), soft_wrap=True)  # one problem a line, never wrapped: greppable
        raise typer.Exit(2) from None
    summary = {m: len(u) for m, u in inv.users.items()}
    if as_json:
        console.print_json(
            json.dumps(
                {"ok": True, "users": summary, "applications": len(inv.applications), "servers": len(inv.servers)}
            )
        )
        return
    console.print(
        styled(
            (f"inventory {inventory} is valid:", "green"),
            f" {inv.user_count()} users "
            f"({', '.join(f'{inv.municipalities[m].name} {n}' for m, n in summary.items())}), "
            f"{len(inv.applications)} applications, {len(inv.servers)} servers, "
            f"{sum(len(d) for d in inv.devices.values())} thin clients",
        )
    )


@inventory_app.command("show")
def inventory_show(inventory: InventoryDir = Path("inventory")) -> None:
    """Print users per municipality and department, applications per zone, servers per role."""
    inv = _load(inventory)
    users = Table(title="Users per municipality and department")
    users.add_column("municipality")
    users.add_column("department")
    users.add_column("users", justify="right")
    users.add_column("disabled", justify="right")
    users.add_column("no thin client", justify="right")
    for muni_id, rows in inv.users.items():
        muni = inv.municipalities[muni_id]
        by_dept = Counter(u.department for u in rows)
        for i, (dept, count) in enumerate(sorted(by_dept.items())):
            in_dept = [u for u in rows if u.department == dept]
            users.add_row(
                f"{muni.name} ({muni.ownership_pct:g} %)" if i == 0 else "",
                dept,
                str(count),
                str(sum(not u.enabled for u in in_dept)),
                str(sum(u.device is None for u in in_dept)),
            )
        users.add_section()
    console.print(users)

    apps = Table(title="Applications per zone")
    apps.add_column("zone")
    apps.add_column("applications", justify="right")
    apps.add_column("seats", justify="right")
    apps.add_column("not ready yet")
    for zone in inv.platform.zones:
        in_zone = [a for a in inv.applications.values() if a.zone == zone.id]
        later = [f"{a.name} ({a.ready_from})" for a in in_zone if a.ready_from > date.today()]
        apps.add_row(
            f"{zone.name} ({zone.id})",
            str(len(in_zone)),
            str(sum(a.seat_limit for a in in_zone)),
            ", ".join(later) or "-",
        )
    console.print(apps)

    servers = Table(title="Platform servers per role")
    servers.add_column("role")
    servers.add_column("servers", justify="right")
    servers.add_column("zones")
    servers.add_column("reached by")
    roles = sorted({s.role for s in inv.servers})
    for role in roles:
        of_role = [s for s in inv.servers if s.role == role]
        servers.add_row(
            role,
            str(len(of_role)),
            ", ".join(sorted({s.zone for s in of_role})),
            ", ".join(sorted({s.access for s in of_role})),
        )
    console.print(servers)


@lab_app.command("generate")
def lab_generate(
    users: Annotated[int, typer.Option(min=3, help="How many users (split 70/16/14 by ownership).")] = 2500,
    seed: Annotated[int, typer.Option(help="Random seed: same seed and size, same bytes.")] = 2026,
    out: Annotated[Path, typer.Option(help="Folder to write the inventory into.")] = Path("inventory"),
    lab_dir: Annotated[str, typer.Option(help="Lab folder, relative to --out (or absolute).")] = "../.lab",
) -> None:
    """Write a deterministic synthetic inventory of the three municipalities."""
    from ikomm.synthetic import generate

    result = generate(out, users=users, seed=seed, lab_dir=lab_dir)
    console.print(
        f"wrote {out}: users {result.users}, {result.devices} thin clients, "
        f"{result.applications} applications, {result.servers} servers"
    )


@lab_app.command("up")
def lab_up(inventory: InventoryDir = Path("inventory"), as_json: JsonFlag = False) -> None:
    """Build (first time) or copy (later) the lab, then start every server and wait until each answers."""
    from lab.manager import Lab

    inv = _load(inventory)
    t0 = time.monotonic()
    try:
        lab = Lab(inv, progress=None if as_json else lambda msg: console.print(styled((msg, "dim"))))
        mode = lab.up()
    except IkommError as exc:
        raise _fail(exc) from None
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


@lab_app.command("down")
def lab_down(inventory: InventoryDir = Path("inventory")) -> None:
    """Stop exactly the servers `lab up` started (safe to run twice)."""
    from lab.manager import Lab

    try:
        stopped = Lab(_load(inventory)).down()
    except IkommError as exc:
        raise _fail(exc) from None
    console.print(f"stopped {len(stopped)} servers" + (f": {', '.join(stopped)}" if stopped else " (none running)"))


@lab_app.command("status")
def lab_status(inventory: InventoryDir = Path("inventory"), as_json: JsonFlag = False) -> None:
    """Show each lab server, whether it runs and whether it answers; exit 1 unless all answer."""
    from lab.manager import Lab

    try:
        lab = Lab(_load(inventory))
        rows = lab.status()
    except IkommError as exc:
        raise _fail(exc) from None
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


def main() -> None:
    """Entry point of the `ikomm` console script."""
    import ikomm.cli_campaign  # registers campaign
    import ikomm.cli_rollback  # registers rollback and verify
    import ikomm.cli_wave  # noqa: F401  (registers wave, server and status)

    app()

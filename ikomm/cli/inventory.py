"""`ikomm inventory validate|show`: the inventory checked and summed up."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path

import typer
from rich.table import Table

from ikomm.cli.console import InventoryDir, JsonFlag, console, err, load, styled
from ikomm.inventory import load_inventory

app = typer.Typer(help="Validate and show the inventory.", no_args_is_help=True)


@app.command("validate")
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


@app.command("show")
def inventory_show(inventory: InventoryDir = Path("inventory")) -> None:
    """Print users per municipality and department, applications per zone, servers per role."""
    inv = load(inventory)
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

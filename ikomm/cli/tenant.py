"""`ikomm tenant add|remove|list` and `ikomm audit isolation`: customers that do not weaken each other."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ikomm import server
from ikomm.cli.console import InventoryDir, JsonFlag, console, err, fail, load, styled
from ikomm.connectors import Connectors
from ikomm.errors import IkommError, InvalidInputError
from ikomm.inventory.load import load_tenant_kit, tenant_kits

app = typer.Typer(help="Municipalities as tenants: onboard, remove, list.", no_args_is_help=True)
audit_app = typer.Typer(help="Audits of the platform as it is.", no_args_is_help=True)

Yes = Annotated[bool, typer.Option("--yes", help="Answer yes to the question (for scripts).")]


@app.command("add")
def tenant_add(
    tenant: Annotated[str, typer.Argument(help="The municipality's id, e.g. ringebu.")],
    name: Annotated[str, typer.Option(help="Its name as people write it, e.g. Ringebu (the OU's name).")],
    legacy: Annotated[
        Path | None,
        typer.Option(help="Its tenant kit: tenant.yaml (legacy systems), users.csv, devices.csv. Default: tenants/ID."),
    ] = None,
    inventory: InventoryDir = Path("inventory"),
) -> None:
    """Onboard a municipality: its OU, delegated account and rights, application groups, folders, inventory entry.

    Safe to run again: it writes only what is missing. The administrator's bind is used here and
    nowhere else; the municipality's waves bind as its own delegated account.
    """
    from ikomm.tenancy import SecretStore, onboard

    inv = load(inventory)
    folder = legacy if legacy is not None else inv.root / "tenants" / tenant
    try:
        kit = load_tenant_kit(folder)
        if kit.spec.id != tenant:
            raise InvalidInputError(f"{folder}/tenant.yaml is the kit of {kit.spec.id!r}, not of {tenant!r}")
        if kit.spec.name != name:
            raise InvalidInputError(f"--name {name!r} differs from the kit's name {kit.spec.name!r} ({folder})")
        t0 = time.monotonic()
        made = Connectors(inv)
        try:
            steps = onboard(inv, kit, made, SecretStore(inv, server.private_state_dir()), _say)
        finally:
            made.close()
    except IkommError as exc:
        raise fail(exc) from None
    verdict = "onboarded" if steps.changed else "already onboarded: nothing to do"
    console.print(styled((f"{name}: {verdict}", "bold green"), f" ({time.monotonic() - t0:.1f} s)"))
    console.print(
        f"its waves bind as its own account; check that the others are untouched: ikomm audit isolation -i {inventory}"
    )


@app.command("remove")
def tenant_remove(
    tenant: Annotated[str, typer.Argument(help="The municipality's id.")],
    yes: Yes = False,
    inventory: InventoryDir = Path("inventory"),
) -> None:
    """Undo an onboarding that has no users yet (no accounts, group members or files); refuse otherwise."""
    from ikomm.tenancy import SecretStore, remove

    inv = load(inventory)
    if not yes:
        if not console.is_terminal:
            raise fail(InvalidInputError("tenant remove asks first: answer with --yes when no one is at a terminal"))
        typer.confirm(f"Remove {tenant}'s OU, account, groups, folders and inventory entry?", abort=True)
    made = Connectors(inv)
    try:
        remove(inv, tenant, made, SecretStore(inv, server.private_state_dir()), _say)
    except IkommError as exc:
        raise fail(exc) from None
    finally:
        made.close()
    console.print(styled((f"{tenant}: removed", "bold green")), " (its kit stays in tenants/)")


@app.command("list")
def tenant_list(inventory: InventoryDir = Path("inventory"), as_json: JsonFlag = False) -> None:
    """Municipalities with their own delegated account, and tenant kits not yet onboarded."""
    inv = load(inventory)
    try:
        kits = tenant_kits(inv.root)
    except IkommError as exc:
        raise fail(exc) from None
    rows: list[dict[str, str]] = [
        {
            "id": m.id,
            "name": m.name,
            "state": "onboarded" if m.delegation else "owner (administrator's bind)",
            "account": m.delegation.account_upn if m.delegation else "",
            "users": str(len(inv.users.get(m.id, []))),
        }
        for m in inv.municipalities.values()
    ]
    rows += [
        {"id": k, "name": kit.spec.name, "state": "kit, not onboarded", "account": "", "users": str(len(kit.users))}
        for k, kit in kits.items()
        if k not in inv.municipalities
    ]
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    table = Table("id", "name", "state", "waves bind as", "users")
    for row in rows:
        table.add_row(row["id"], row["name"], row["state"], row["account"], row["users"])
    console.print(table)


@audit_app.command("isolation")
def audit_isolation(inventory: InventoryDir = Path("inventory"), as_json: JsonFlag = False) -> None:
    """Report every crossing between municipalities on the platform (ACEs, groups, accounts, folders); exit 1 if any."""
    from ikomm.isolation import audit, unread

    inv = load(inventory)
    t0 = time.monotonic()
    made = Connectors(inv)
    try:
        findings = audit(inv, made)
    except IkommError as exc:
        raise fail(exc) from None
    finally:
        made.close()
    seconds = time.monotonic() - t0
    if as_json:
        said = {"findings": [f.as_dict() for f in findings], "acls_not_read": unread(inv), "seconds": round(seconds, 2)}
        print(json.dumps(said, indent=1))
    elif findings:
        table = Table("kind", "where", "what", title=f"{len(findings)} crossing(s) between municipalities")
        for f in findings:
            table.add_row(f.kind, f.where, f.what)
        console.print(table)
    else:
        munis = ", ".join(inv.municipalities)
        console.print(styled(("isolation holds", "bold green"), f": no crossing between {munis} ({seconds:.1f} s)"))
    blind = unread(inv)
    if blind and not as_json:
        err.print(
            styled(("note:", "yellow"), f" POSIX ACLs not read on {', '.join(blind)} (no acl_port in the inventory)")
        )
    if findings:
        raise typer.Exit(1)


def _say(line: str) -> None:
    err.print(styled(("  " + line, "dim")))

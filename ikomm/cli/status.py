"""`ikomm status USER`: the helpdesk's question, what happened to this user, and when."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ikomm import server
from ikomm.cli.console import InventoryDir, JsonFlag, console, err, ledger_to_read, styled
from ikomm.errors import IkommError
from ikomm.inventory import load_inventory
from ikomm.naming import account_names, fold


def named(inventory: Path, text: str) -> list[str]:
    """Keys of the inventory's users whose name holds text, whatever the case and the letters æ, ø, å
    ("kari nordmann", "Nordmann", "jorgen tofte" for Jørgen Tøfte), or whose account name is text (as the UI
    shows it in every task run's name, also for a user held before the account was made); none if the
    inventory cannot be read."""
    wanted = fold(" ".join(text.split())).casefold()
    if len(wanted) < 3 or "/" in wanted:
        return []
    try:
        inv = load_inventory(inventory)
    except IkommError as exc:
        err.print(styled(("note:", "yellow"), f" not searching by name: {exc}"), soft_wrap=True)
        return []
    accounts = [f"{muni}/{legacy_id}" for (muni, legacy_id), a in account_names(inv).items() if a.casefold() == wanted]
    return accounts + [
        f"{muni}/{u.legacy_id}"
        for muni, u in inv.all_users()
        if wanted in fold(f"{u.given_name} {u.surname}").casefold()
    ]


def user_status(
    user: Annotated[
        str, typer.Argument(help="municipality/legacy_id, legacy id, account name, or the person's name (any case)")
    ],
    inventory: InventoryDir = Path("inventory"),
    as_json: JsonFlag = False,
) -> None:
    """What happened to a user, and when: state, stage, every event from the ledger, and the page in the UI."""
    ledger = ledger_to_read()
    found = ledger.find_users(user, named(inventory, user))
    if not found:
        err.print(styled(("error:", "red"), f" no user {user!r} in the ledger {ledger.shown}"))
        raise typer.Exit(2)
    out: list[dict[str, Any]] = []
    for u in found:
        task_run = ledger.task_run_of(u.key, u.wave)
        out.append(
            {
                "user": u.__dict__,
                "ui": server.task_run_url(task_run) if task_run else None,
                "waves": [{"wave": h.wave, "state": h.state, "reason": h.reason} for h in ledger.history(u.key)],
                "events": ledger.events(u.key),
            }
        )
    if as_json:
        console.print_json(json.dumps(out))
        return
    for item in out:
        u = item["user"]
        console.print(
            styled(
                (u["key"], "bold"),
                f" ({u['account'] or 'no account yet'}), wave {u['wave']}: "
                f"{u['state']} {u['stage']} {u['reason']}".rstrip(),
            )
        )
        table = Table()
        for col in ("when (UTC)", "state", "stage", "what"):
            table.add_column(col, overflow="fold")
        if item["ui"]:
            console.print(f"  in the Prefect UI: {item['ui']}", soft_wrap=True)
        if len(item["waves"]) > 1:
            console.print("  waves: " + "; ".join(f"{h['wave']}: {h['state']}" for h in item["waves"]))
        table.add_column("wave", overflow="fold")
        for e in item["events"]:
            table.add_row(e["at"][:23].replace("T", " "), e["state"], e["stage"], e["message"], e["wave"])
        console.print(table)

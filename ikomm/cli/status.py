"""`ikomm status USER`: the helpdesk's question, what happened to this user, and when."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from ikomm.cli.console import JsonFlag, console, err, ledger_url, styled
from ikomm.ledger import Ledger


def user_status(
    user: Annotated[str, typer.Argument(help="municipality/legacy_id, legacy id or account name")],
    as_json: JsonFlag = False,
) -> None:
    """What happened to a user, and when: state, stage, and every event from the ledger."""
    ledger = Ledger(ledger_url())
    found = ledger.find_users(user)
    if not found:
        err.print(styled(("error:", "red"), f" no user {user!r} in the ledger {ledger.shown}"))
        raise typer.Exit(2)
    out: list[dict[str, Any]] = [
        {
            "user": u.__dict__,
            "waves": [{"wave": h.wave, "state": h.state, "reason": h.reason} for h in ledger.history(u.key)],
            "events": ledger.events(u.key),
        }
        for u in found
    ]
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
        if len(item["waves"]) > 1:
            console.print("  waves: " + "; ".join(f"{h['wave']}: {h['state']}" for h in item["waves"]))
        table.add_column("wave", overflow="fold")
        for e in item["events"]:
            table.add_row(e["at"], e["state"], e["stage"], e["message"], e["wave"])
        console.print(table)

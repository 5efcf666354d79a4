"""`ikomm credentials handed-over WAVE`: the initial passwords delivered, their file deleted, the handover recorded."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from ikomm import server
from ikomm.cli.console import console, err, ledger_url
from ikomm.ledger import FINAL, Ledger

app = typer.Typer(help="The waves' initial passwords: hand over, then delete.", no_args_is_help=True)


@app.command("handed-over")
def credentials_handed_over(
    wave_id: str,
    by: Annotated[str, typer.Option(help="Who handed the passwords over (name or e-mail).")] = os.environ.get(
        "USER", "lead"
    ),
) -> None:
    """Delete a wave's file of initial passwords once they are delivered, and record it in the ledger."""
    from ikomm.credentials import CredentialFile

    ledger = Ledger(ledger_url())
    if ledger.wave(wave_id) is None:
        err.print(f"error: no wave {wave_id!r} in the ledger {ledger.shown}")
        raise typer.Exit(2)
    busy = [u.key for u in ledger.users(wave_id) if u.state not in FINAL]
    if busy:
        err.print(
            f"error: wave {wave_id} still has {len(busy)} user(s) on the way (e.g. {busy[0]}); the wave checks "
            "each new password before it is done. Hand the passwords over when the wave has ended.",
        )
        raise typer.Exit(1)
    path = server.state_dir() / "credentials" / f"{wave_id}.csv"
    if not path.is_file():
        done = ledger.handover(wave_id)
        said = f"handed over by {done['by']} at {done['at']}" if done else "no passwords were written for it"
        console.print(f"wave {wave_id}: no password file ({said})")
        return
    users = len(CredentialFile(path).keys())
    path.unlink()
    ledger.record_handover(wave_id, by, users)
    console.print(
        f"wave {wave_id}: the initial passwords of {users} user(s) were handed over by {by}; {path} is deleted",
    )

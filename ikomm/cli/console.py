"""What every command shares: the consoles (data never read as markup), options, errors, the ledger and the server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from ikomm import server
from ikomm.errors import IkommError, InvalidInputError
from ikomm.inventory import Inventory, load_inventory
from ikomm.ledger import Ledger, existing, url_for

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


def fail(exc: IkommError) -> typer.Exit:
    """Print the error (never a traceback) and the exit to raise: 2 for input to fix, 1 otherwise."""
    err.print(styled(("error:", "bold red"), f" {exc}"), soft_wrap=True)
    return typer.Exit(2 if isinstance(exc, InvalidInputError) else 1)


def load(path: Path) -> Inventory:
    """The inventory, or exit 2 with every problem."""
    try:
        return load_inventory(path)
    except IkommError as exc:
        raise fail(exc) from None


def ledger_url() -> str:
    """IKOMM_LEDGER_URL (any SQLAlchemy URL), or SQLite in the state folder (made 0700 first)."""
    return url_for(server.private_state_dir())


def existing_ledger() -> Ledger | None:
    """The ledger if there is one: reading (status, plans) never creates state."""
    return existing(url_for(server.state_dir()))


def ledger_to_read() -> Ledger:
    """The ledger a reading command (status, wave status, verify) reads; exit 2 if there is none here, creating
    nothing (a command run in the wrong folder must not leave an empty ledger behind)."""
    if server.state_dir().is_dir():
        server.private_state_dir()  # one made by hand, too loose, is made root's alone: nothing is created
    ledger = existing_ledger()
    if ledger is None:
        err.print(
            styled(
                ("error:", "red"),
                f" no ledger in {server.state_dir()}: no wave has run with this state folder (run from the folder "
                "the waves ran in, or set IKOMM_STATE or IKOMM_LEDGER_URL)",
            )
        )
        raise typer.Exit(2)
    return ledger


def use_local_server() -> None:
    """Point Prefect at the local server (started if needed) unless PREFECT_API_URL says otherwise; a process that
    talks to the local server carries the service's credential (never sent to another server)."""
    if "PREFECT_API_URL" not in os.environ:
        if server.start() == "started":  # said loudly: a server that was down may be down for a reason
            err.print(
                styled(
                    ("warning:", "bold yellow"),
                    f" the Prefect server was not running: started it at {server.ui_url()} (every run reports "
                    "there; `ikomm server status` shows it, `ikomm server stop` stops it)",
                )
            )
        os.environ.update(server.client_env())
    elif os.environ["PREFECT_API_URL"].rstrip("/") == server.api_url():  # this state folder's server
        credential = server.client_env().get("PREFECT_API_AUTH_STRING")
        if credential is not None:
            os.environ["PREFECT_API_AUTH_STRING"] = credential

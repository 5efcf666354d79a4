"""`ikomm access add|list|remove`: who may sign in to the Prefect UI and API, and in which role (ikomm.access)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ikomm import access, server
from ikomm.cli.console import JsonFlag, console, fail
from ikomm.errors import IkommError

app = typer.Typer(help="Who may sign in to the Prefect UI and API, and in which role.", no_args_is_help=True)


@app.command("add")
def access_add(
    name: Annotated[str, typer.Argument(help="The person's sign-in name, e.g. kari.helpdesk")],
    role: Annotated[str, typer.Option(help=f"One of {', '.join(access.ROLES)}.")],
) -> None:
    """Let NAME sign in with ROLE: a new random password in a 0600 file to hand over (again: a new password)."""
    try:
        handover = access.add_person(server.private_state_dir(), name, role)
    except IkommError as exc:
        raise fail(exc) from None
    running = server.reload_proxy()
    console.print(
        f"{name} may sign in as {role}; the password is in {handover} (root only): hand it over, then delete the "
        f"file. In the UI's sign-in page, enter it as {name}:<password>."
        + ("" if running else " The proxy is not running: `ikomm server start` starts it.")
    )


@app.command("remove")
def access_remove(name: str) -> None:
    """Take NAME's sign-in away at once; safe to repeat."""
    removed = access.remove_person(server.private_state_dir(), name)
    server.reload_proxy()
    console.print(f"{name} may no longer sign in" if removed else f"{name} had no sign-in")


@app.command("list")
def access_list(as_json: JsonFlag = False) -> None:
    """Everyone who may sign in, with their role (never a password)."""
    found = access.people(server.state_dir())
    if as_json:
        console.print_json(data=[{"name": p.name, "role": p.role} for p in found])
        return
    table = Table(title="who may sign in to the Prefect UI")
    table.add_column("name")
    table.add_column("role")
    for person in found:
        table.add_row(person.name, person.role)
    console.print(table)

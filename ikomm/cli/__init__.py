"""The `ikomm` command line. Every command group lives in a module of its own and is registered here,
explicitly: no module registers itself by being imported, and none imports another's commands.

    inventory    validate, show                      ikomm.cli.inventory
    lab          generate, up, down, status          ikomm.cli.lab
    server       start, stop, status                 ikomm.cli.server
    serve        the wave and rollback deployments   ikomm.cli.server
    wave         check, plan, run, list, status, approve  ikomm.cli.wave
    preflight    FILE: before a wave writes anything  ikomm.cli.preflight
    status USER  the helpdesk's question             ikomm.cli.status
    credentials  handed-over                         ikomm.cli.credentials
    rollback     user, wave; verify rollback         ikomm.cli.rollback
    campaign     plan, status, report                ikomm.cli.campaign
    tenant       add, remove, list                   ikomm.cli.tenant
    audit        isolation                           ikomm.cli.tenant
    worker       start, stop, list                   ikomm.cli.worker
    access       add, list, remove (UI sign-ins)     ikomm.cli.access
"""

from __future__ import annotations

import typer

from ikomm.cli import (
    access,
    campaign,
    credentials,
    inventory,
    lab,
    preflight,
    rollback,
    server,
    status,
    tenant,
    wave,
    worker,
)

app = typer.Typer(help="ikomm-migrate: move users onto the Ikomm platform in waves.", no_args_is_help=True)
app.add_typer(inventory.app, name="inventory")
app.add_typer(lab.app, name="lab")
app.add_typer(server.app, name="server")
app.command("serve")(server.serve_cmd)
app.add_typer(wave.app, name="wave")
app.command("status")(status.user_status)
app.command("preflight")(preflight.preflight_cmd)
app.add_typer(credentials.app, name="credentials")
app.add_typer(rollback.app, name="rollback")
app.add_typer(rollback.verify_app, name="verify")
app.add_typer(campaign.app, name="campaign")
app.add_typer(tenant.app, name="tenant")
app.add_typer(tenant.audit_app, name="audit")
app.add_typer(worker.app, name="worker")
app.add_typer(access.app, name="access")


def main() -> None:
    """Entry point of the `ikomm` console script."""
    app()

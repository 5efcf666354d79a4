"""`ikomm wave run|status|approve`: run waves, follow them, approve their cutover."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from ikomm import server
from ikomm.cli.console import InventoryDir, JsonFlag, console, err, fail, ledger_url, load, styled, use_local_server
from ikomm.errors import IkommError
from ikomm.ledger import TAKEABLE, Ledger

app = typer.Typer(help="Run waves, follow them, approve their cutover.", no_args_is_help=True)


def _stage_table(ledger: Ledger, wave_id: str) -> Group:
    users = ledger.users(wave_id)
    by: dict[tuple[str, str], int] = {}
    for u in users:
        by[(u.state, u.stage)] = by.get((u.state, u.stage), 0) + 1
    table = Table(title=f"wave {wave_id}: {len(users)} users")
    for col in ("state", "stage", "users"):
        table.add_column(col)
    for (state, stage), n in sorted(by.items()):
        table.add_row(state, stage, str(n))
    failed = [u for u in users if u.state in ("failed", "held")]
    fails = Table(title=f"not moved ({len(failed)})")
    fails.add_column("user")
    fails.add_column("reason", overflow="fold")
    for u in failed[-10:]:
        fails.add_row(u.key, u.reason)
    wave = ledger.wave(wave_id) or {}
    note = Table.grid()
    note.add_row(f"wave state: {wave.get('state', 'starting')} {wave.get('detail', '')}")
    return Group(table, fails, note) if failed else Group(table, note)


@app.command("run")
def wave_run(
    wave_file: Annotated[Path, typer.Argument(help="waves/<id>.yaml")],
    inventory: InventoryDir = Path("inventory"),
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Approve the cutover (lab and tests).")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Same as --include failed.")] = False,
    include: Annotated[
        str, typer.Option(help="Take this wave's users in these states again, e.g. held,rolled_back,failed.")
    ] = "",
    take_from_open_waves: Annotated[
        bool, typer.Option("--take-from-open-waves", help="Take users another (not running) wave left open.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run (or resume) a wave: prepare, approval gate, cutover; a live view of users per stage."""
    from ikomm.waves import load_wave

    inv = load(inventory)
    try:
        wave = load_wave(wave_file, inv)
    except IkommError as exc:
        raise fail(exc) from None
    states = tuple(s.strip() for s in include.split(",") if s.strip()) + (("failed",) if retry_failed else ())
    wrong = [s for s in states if s not in TAKEABLE]
    if wrong:
        err.print(f"error: --include {','.join(wrong)}: choose from {', '.join(TAKEABLE)}")
        raise typer.Exit(2)
    window = wave.spec.window
    if window is not None and not window.contains():
        err.print(styled(("warning:", "yellow"), f" now is outside the wave's window ({window.start} to {window.end})"))
    try:
        use_local_server()
    except IkommError as exc:
        raise fail(exc) from None
    from flows.wave import run_wave

    ledger = Ledger(ledger_url())  # before the worker opens its own: one creates the tables, not both at once
    outcome: dict[str, Any] = {}
    failure: list[BaseException] = []

    def work() -> None:
        try:
            outcome.update(
                run_wave(wave_file, inventory, server.state_dir(), auto_approve, states, take_from_open_waves)
            )
        except BaseException as exc:  # shown by the main thread
            failure.append(exc)

    worker = threading.Thread(target=work, name=f"wave-{wave.id}", daemon=True)
    worker.start()
    if as_json or not console.is_terminal:
        worker.join()
    else:
        with Live(console=console, refresh_per_second=2) as live:
            while worker.is_alive():
                if ledger.wave(wave.id):
                    live.update(_stage_table(ledger, wave.id))
                worker.join(0.5)
            live.update(_stage_table(ledger, wave.id))
    if failure:
        if isinstance(failure[0], IkommError):
            raise fail(failure[0])
        raise failure[0]
    counts = {f"{m}/{s}": n for (m, s), n in sorted(ledger.counts(wave.id).items())}
    result = {
        "wave": wave.id,
        **outcome,
        "users": counts,
        "credentials": str(server.state_dir() / "credentials" / f"{wave.id}.csv"),
        "ui": f"{server.ui_url()}runs",
    }
    if as_json:
        console.print_json(json.dumps(result))
    else:
        console.print(f"wave {wave.id}: {outcome.get('state')} {outcome.get('reason', '')}".rstrip())
        opening = outcome.get("opening") or {}
        said = {
            "skipped": "skipped (already moved by another wave)",
            "taken": "taken from earlier waves (held, failed, rolled back or left out there)",
            "requeued": "taken again in this wave",
            "left_out": "left out by policy (disabled in the legacy system)",
        }
        for key, text in said.items():
            if opening.get(key):
                console.print(f"  {opening[key]} user(s) {text}")
        if opening.get("took_over_from"):
            console.print(f"  resumed after an earlier run that ended without closing ({opening['took_over_from']})")
        if outcome.get("changed") is False:
            console.print("nothing changed: every user was already in a final state")
        console.print(f"initial passwords (root only): {result['credentials']}")
        console.print(f"Prefect UI: {result['ui']} (flow run '{wave.id}'; search task runs by municipality/legacy_id)")
    raise typer.Exit(0 if outcome.get("state") == "done" else 1)


@app.command("status")
def wave_status(wave_id: str, as_json: JsonFlag = False) -> None:
    """Users of a wave per municipality and state, and the wave's own state."""
    ledger = Ledger(ledger_url())
    wave = ledger.wave(wave_id)
    if wave is None:
        err.print(styled(("error:", "red"), f" no wave {wave_id!r} in the ledger {ledger.shown}"))
        raise typer.Exit(2)
    if as_json:
        counts = {f"{m}/{s}": n for (m, s), n in sorted(ledger.counts(wave_id).items())}
        failed = [
            {"user": u.key, "state": u.state, "reason": u.reason}
            for u in ledger.users(wave_id)
            if u.state in ("failed", "held")
        ]
        console.print_json(json.dumps({"wave": {k: v for k, v in wave.items()}, "users": counts, "not_moved": failed}))
        return
    console.print(_stage_table(ledger, wave_id))


@app.command("approve")
def wave_approve(
    wave_id: str,
    approver: Annotated[str, typer.Option(help="Who approves (name or e-mail).")] = os.environ.get("USER", "lead"),
    comment: Annotated[str, typer.Option(help="Why, or anything the record should say.")] = "",
    reject: Annotated[bool, typer.Option("--reject", help="Refuse the cutover instead.")] = False,
) -> None:
    """Answer the wave's approval gate (as the Prefect UI's resume form does)."""
    use_local_server()
    from flows.wave import approve_wave

    try:
        run_id = approve_wave(wave_id, {"approved": not reject, "approver": approver, "comment": comment})
    except IkommError as exc:
        raise fail(exc) from None
    console.print(f"wave {wave_id}: cutover {'rejected' if reject else 'approved'} (flow run {run_id})")

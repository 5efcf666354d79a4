"""`ikomm rollback user|wave` and `ikomm verify rollback`: undo from the ledger, then prove it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ikomm import server
from ikomm.changes import ALREADY
from ikomm.cli.console import (
    InventoryDir,
    JsonFlag,
    console,
    err,
    fail,
    ledger_to_read,
    ledger_url,
    load,
    styled,
    use_local_server,
)
from ikomm.errors import IkommError
from ikomm.inventory import Inventory
from ikomm.ledger import Ledger
from ikomm.rollback import STAGES, UserRollback, plan_rollback, recorded_run, select_users
from ikomm.wave_run import WaveRun

app = typer.Typer(help="Undo a user, a stage or a wave from the ledger.", no_args_is_help=True)
verify_app = typer.Typer(help="Prove that a rollback restored what was there.", no_args_is_help=True)

StageOpt = Annotated[
    list[str] | None,
    typer.Option("--stage", help=f"Only these stages ({', '.join(STAGES)}): repeatable, or comma-separated."),
]
PurgeOpt = Annotated[bool, typer.Option("--purge", help="Delete the platform account instead of parking it.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Undo even what changed after the migration (drift).")]


def _stages(stages: list[str] | None) -> list[str]:
    """The stages named, each --stage taking one or several (`--stage cutover,retire`); exit 2 for an unknown one."""
    named = [s.strip() for value in stages or [] for s in value.split(",") if s.strip()]
    for s in named:
        if s not in STAGES:
            err.print(styled(("error:", "red"), f" --stage {s!r}: choose one of {', '.join(STAGES)}"))
            raise typer.Exit(2)
    return list(dict.fromkeys(named))


def _wave_of(ledger: Ledger, user: str) -> tuple[str, str]:
    found = ledger.find_users(user)
    if len(found) != 1:
        err.print(
            styled(
                ("error:", "red"),
                f" {'no' if not found else 'more than one'} user {user!r} in the ledger {ledger.shown}",
            )
        )
        raise typer.Exit(2)
    return found[0].wave, found[0].key


DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print every undo the rollback would make; change nothing.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask (scripts): the undo list is still printed.")]


def _wave_run(inv: Inventory, ledger: Ledger, wave_id: str) -> WaveRun:
    """The wave's run context from the wave file the ledger recorded, or exit 2."""
    try:
        return recorded_run(ledger, inv, wave_id, server.state_dir())
    except IkommError as exc:
        raise fail(exc) from None


def _ask_first(
    inventory: Path,
    wave_id: str,
    keys: list[str],
    stages: list[str],
    purge: bool,
    dry_run: bool,
    yes: bool,
    ask: bool,
    as_json: bool,
) -> None:
    """Show what the rollback would undo; for --dry-run stop there; where asked for, ask (or take --yes)."""
    if not (dry_run or ask):
        return
    inv = load(inventory)
    ledger = Ledger(ledger_url())
    run = _wave_run(inv, ledger, wave_id)
    try:
        plan = plan_rollback(run, keys, tuple(stages) or None, purge)
    except IkommError as exc:
        raise fail(exc) from None
    finally:
        run.c.close()
    changes = sum(len(f.undo) for f in plan)
    if as_json and dry_run:
        console.print_json(json.dumps([{"user": f.user, "undo": f.undo} for f in plan]))
        raise typer.Exit(0)
    kinds: dict[str, int] = {}
    for f in plan:
        for u in f.undo:
            kinds[u["kind"]] = kinds.get(u["kind"], 0) + 1
    if dry_run:
        for f in plan:
            if f.undo:
                console.print(styled((f.user, "bold")))
                for u in f.undo:
                    left = (
                        f"  [drift: {u['drift']}; left alone unless --force]"
                        if u["drift"] and u["drift"] != ALREADY
                        else ""
                    )
                    console.print(f"  {u['stage']:8} {u['kind']:15} {u['what']}{left}")
    conflicts = sum(f.conflicts for f in plan)
    console.print(
        f"rollback of wave {wave_id}: {changes} change(s) of {sum(1 for f in plan if f.undo)} user(s) to undo, "
        f"newest first ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items())) or 'none'})"
        + (f"; {conflicts} changed since the wave (drift)" if conflicts else "")
        + ("; platform accounts DELETED (--purge)" if purge else "")
    )
    if dry_run:
        console.print("dry run: nothing was changed")
        raise typer.Exit(0)
    if yes or changes == 0:
        return
    if not sys.stdin.isatty():
        err.print("error: a rollback of a wave or with --purge asks first; no terminal to ask on: rerun with --yes")
        raise typer.Exit(2)
    if not typer.confirm("Undo these changes?", default=False):
        console.print("nothing was changed")
        raise typer.Exit(1)


def _run(wave_id: str, inventory: Path, as_json: bool, **kwargs: object) -> None:
    use_local_server()
    from flows.rollback import run_rollback

    try:
        reports = run_rollback(
            wave_id,
            inventory=str(inventory.resolve()),
            state_dir=str(server.private_state_dir()),
            **kwargs,
        )
    except IkommError as exc:
        raise fail(exc) from None
    _print(reports, as_json)
    raise typer.Exit(1 if any(r.problems or r.conflicts for r in reports) else 0)


def _print(reports: list[UserRollback], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps([r.__dict__ for r in reports]))
        return
    if all(r.nothing_to_do for r in reports):
        console.print("nothing to undo: every change of these users is already undone")
        return
    table = Table(title="rollback")
    for col in ("user", "undone", "conflicts (left alone)", "problems", "quarantined data"):
        table.add_column(col, overflow="fold")
    for r in reports:
        if not r.nothing_to_do:
            table.add_row(
                r.user, str(len(r.undone)), "\n".join(r.conflicts), "\n".join(r.problems), "\n".join(r.quarantined)
            )
    console.print(table)


@app.command("user")
def rollback_user_cmd(
    user: Annotated[str, typer.Argument(help="municipality/legacy_id (or legacy id, or account name)")],
    stage: StageOpt = None,
    purge: PurgeOpt = False,
    force: ForceOpt = False,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    inventory: InventoryDir = Path("inventory"),
    as_json: JsonFlag = False,
) -> None:
    """Undo one user's changes (or one stage's), newest first; safe to repeat. With --purge it asks first."""
    load(inventory)
    ledger = Ledger(ledger_url())
    wave_id, key = _wave_of(ledger, user)
    stages = _stages(stage)
    try:
        keys = select_users(ledger, wave_id, [key], None, stages)
    except IkommError as exc:
        raise fail(exc) from None
    _ask_first(inventory, wave_id, keys, stages, purge, dry_run, yes, purge, as_json)
    _run(wave_id, inventory, as_json, users=keys, stages=stages, purge=purge, force=force)


@app.command("wave")
def rollback_wave_cmd(
    wave_id: str,
    municipality: Annotated[str | None, typer.Option(help="Only this municipality's users.")] = None,
    stage: StageOpt = None,
    purge: PurgeOpt = False,
    force: ForceOpt = False,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    inventory: InventoryDir = Path("inventory"),
    as_json: JsonFlag = False,
) -> None:
    """Undo a wave (or one municipality, or some stages), newest change first; shows the undo list and asks first."""
    load(inventory)
    ledger = Ledger(ledger_url())
    if ledger.wave(wave_id) is None:
        err.print(styled(("error:", "red"), f" no wave {wave_id!r} in the ledger"))
        raise typer.Exit(2)
    stages = _stages(stage)
    try:
        keys = select_users(ledger, wave_id, None, municipality, stages)
    except IkommError as exc:
        raise fail(exc) from None
    _ask_first(inventory, wave_id, keys, stages, purge, dry_run, yes, True, as_json)
    _run(wave_id, inventory, as_json, users=keys, stages=stages, purge=purge, force=force)


@verify_app.command("rollback")
def verify_rollback_cmd(
    wave_id: str,
    user: Annotated[str | None, typer.Option(help="Only this user.")] = None,
    municipality: Annotated[str | None, typer.Option(help="Only this municipality's users.")] = None,
    stage: StageOpt = None,
    inventory: InventoryDir = Path("inventory"),
    as_json: JsonFlag = False,
) -> None:
    """Compare the users the wave's rollback undid with the snapshot taken before the wave wrote anything; exit 1
    on any difference or a rollback left incomplete. Users moved again since (the wave run again, or another wave)
    and users never rolled back are not compared, and are counted as such."""
    from ikomm.rollback import verify_user
    from ikomm.snapshot import OPERATIONAL

    inv = load(inventory)
    ledger = ledger_to_read()
    run = _wave_run(inv, ledger, wave_id)
    rows = {u.key: u for u in ledger.users(wave_id)}
    try:
        key = _wave_of(ledger, user)[1] if user else None
        checked, diffs = 0, {}
        not_compared: dict[str, list[str]] = {"moved again since": [], "not rolled back": []}
        for wu in run.wave.users:
            if (key and wu.key != key) or (municipality and wu.muni != municipality):
                continue
            row = rows.get(wu.key)
            if row is not None and row.state == "failed" and row.stage == "rollback":
                diffs[wu.key] = [row.reason]  # "rollback incomplete: ..."
                continue
            if row is None or row.state != "rolled_back":
                again = any(e["wave"] == wave_id and e["state"] == "rolled_back" for e in ledger.events(wu.key))
                not_compared["moved again since" if again else "not rolled back"].append(wu.key)
                continue
            found = verify_user(run, wu, tuple(_stages(stage)) or None)
            if found is None:
                continue
            checked += 1
            if found:
                diffs[wu.key] = found
        run.c.close()
    except IkommError as exc:
        raise fail(exc) from None
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "checked": checked,
                    "differences": diffs,
                    "not_compared": {k: len(v) for k, v in not_compared.items()},
                    "excluded": sorted(OPERATIONAL),
                }
            )
        )
    else:
        for k, found in diffs.items():
            console.print(styled((k, "bold")))
            for d in found:
                console.print(f"  {d}")
        console.print(
            f"{checked} rolled-back user(s) compared with their snapshot from before the wave: "
            f"{sum(len(d) for d in diffs.values())} difference(s). Not compared (servers change them on their own): "
            f"{', '.join(sorted(OPERATIONAL))}; legacy terminal-server sessions."
        )
        if not_compared["moved again since"]:
            console.print(
                f"{len(not_compared['moved again since'])} user(s) rolled back and moved again since (the wave run "
                "again, or another wave): not compared; `ikomm wave status` says where they stand"
            )
        if not_compared["not rolled back"]:
            console.print(f"{len(not_compared['not rolled back'])} user(s) of the wave not rolled back: not compared")
    raise typer.Exit(1 if diffs else 0)

"""`ikomm wave run|status|approve`: run waves, follow them, approve their cutover.

`wave run` exits 0 when the wave is done and no user failed (held and left-out users are no failure: they
wait, untouched); 1 when it stopped (failure budget, no approval, an error); 2 when it was refused before
writing anything (bad input, preflight); 3 when it is done but some users failed (each undone, with the
reason in `wave status`); 4 when every user it moves is held (run it again once their applications are
ready); 130 when interrupted with Ctrl-C. `wave approve` exits 1 when the wave's process has ended (the
answer is kept for the rerun) and 2 for an answer without who decides, or a refusal without why.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ikomm import server
from ikomm.cli.console import (
    InventoryDir,
    JsonFlag,
    console,
    err,
    existing_ledger,
    fail,
    ledger_to_read,
    ledger_url,
    load,
    styled,
    use_local_server,
)
from ikomm.cli.preflight import OutsideWindowOpt, WorkersOpt, print_checks, run_checks
from ikomm.errors import IkommError, InventoryError
from ikomm.inventory import Inventory, load_inventory
from ikomm.leases import as_it_is
from ikomm.ledger import TAKEABLE, Ledger
from ikomm.preflight import problems
from ikomm.report import downtime_words, outcome_words, runbook_for
from ikomm.wave_run import INTERRUPTED, STOPPING
from ikomm.waves import Wave, load_wave

EXIT_STOPPED, EXIT_FAILED_USERS, EXIT_HELD, EXIT_INTERRUPTED = 1, 3, 4, 130

if TYPE_CHECKING:
    from ikomm.dryrun import WavePlan

app = typer.Typer(help="Run waves, follow them, approve their cutover.", no_args_is_help=True)


SHOWN = 10  # not-moved users the live view shows; `wave status --all` shows every one


def _stage_table(ledger: Ledger, wave_id: str, shown: int | None = SHOWN) -> Group:
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
    listed = failed if shown is None else failed[-shown:]
    title = f"not moved ({len(failed)})" + (f", the last {len(listed)} shown" if len(listed) < len(failed) else "")
    fails = Table(title=title)
    fails.add_column("user")
    fails.add_column("reason", overflow="fold")
    fails.add_column("runbook", overflow="fold")
    for u in listed:
        fails.add_row(u.key, u.reason, runbook_for(None, u.reason) if u.state == "failed" else "")
    wave = as_it_is(ledger, ledger.wave(wave_id) or {"id": wave_id, "state": "starting"})
    note = Table.grid()
    note.add_row(f"wave state: {wave.get('state', 'starting')} {wave.get('detail', '')}")
    down = downtime_words(ledger.downtimes(wave_id))
    if down:
        note.add_row(down)
    if len(listed) < len(failed):
        note.add_row(f"{len(failed) - len(listed)} more not moved: ikomm wave status {wave_id} --all (or --json)")
    for said in ledger.notes(wave_id):
        note.add_row(f"note ({said['at']}): {said['note']}")
    return Group(table, fails, note) if failed else Group(table, note)


def _wave(wave_file: Path, inventory: Path) -> tuple[Inventory, Wave]:
    """The inventory and the wave file, or exit 2 with every problem."""
    inv = load(inventory)
    try:
        return inv, load_wave(wave_file, inv)
    except IkommError as exc:
        raise fail(exc) from None


def _include(include: str, retry_failed: bool = False) -> tuple[str, ...]:
    """--include's states (and --retry-failed's), or exit 2 naming the ones that cannot be taken."""
    states = tuple(s.strip() for s in include.split(",") if s.strip()) + (("failed",) if retry_failed else ())
    wrong = [s for s in states if s not in TAKEABLE]
    if wrong:
        err.print(f"error: --include {','.join(wrong)}: choose from {', '.join(TAKEABLE)}")
        raise typer.Exit(2)
    return states


IncludeOpt = Annotated[
    str, typer.Option(help="Take this wave's users in these states again, e.g. held,rolled_back,failed.")
]
TakeOpenOpt = Annotated[
    bool, typer.Option("--take-from-open-waves", help="Take users another (not running) wave left open.")
]


@app.command("check")
def wave_check(
    wave_file: Annotated[Path, typer.Argument(help="waves/<id>.yaml")],
    inventory: InventoryDir = Path("inventory"),
    as_json: JsonFlag = False,
) -> None:
    """Validate the inventory and the wave file, touching no server; exit 2 with every problem."""
    try:
        inv = load_inventory(inventory)
        wave = load_wave(wave_file, inv)
    except InventoryError as exc:
        if as_json:
            console.print_json(json.dumps({"ok": False, "problems": [p.__dict__ for p in exc.problems]}))
        else:
            err.print(str(exc), soft_wrap=True)  # one problem a line: greppable
        raise typer.Exit(2) from None
    except IkommError as exc:
        raise fail(exc) from None
    per_muni = {m: sum(1 for wu in wave.users if wu.muni == m) for m in wave.spec.municipalities}
    left_out = sum(1 for wu in wave.users if not wu.user.enabled and not wave.spec.options.include_disabled)
    w = wave.spec.window
    summary = {
        "ok": True,
        "wave": wave.id,
        "users": per_muni,
        "left_out_by_policy": left_out,
        "window": {"start": w.start.isoformat(), "end": w.end.isoformat()} if w else None,
        "approval_required": wave.spec.options.approval_required,
    }
    if as_json:
        console.print_json(json.dumps(summary))
        return
    console.print(
        styled(
            (f"wave {wave.id} is valid:", "green"),
            f" {len(wave.users)} users ({', '.join(f'{m} {n}' for m, n in per_muni.items())}), "
            f"{left_out} left out by policy, "
            + (f"window {w.start.isoformat()} to {w.end.isoformat()}" if w else "no window")
            + (", approval before cutover" if wave.spec.options.approval_required else ", no approval gate"),
        )
    )


@app.command("plan")
def wave_plan(
    wave_file: Annotated[Path, typer.Argument(help="waves/<id>.yaml")],
    inventory: InventoryDir = Path("inventory"),
    include: IncludeOpt = "",
    take_from_open_waves: TakeOpenOpt = False,
    changes: Annotated[bool, typer.Option("--changes", help="Every change of every user, not only totals.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Dry run: read the live systems and print the changes the wave would make; nothing is written anywhere."""
    from ikomm.dryrun import plan_wave

    inv, wave = _wave(wave_file, inventory)
    states = _include(include)
    show = None if as_json or not err.is_terminal else err.status(f"reading the live systems for {wave.id}")
    try:
        if show is not None:
            show.start()
        plan = plan_wave(
            inv,
            wave,
            existing_ledger(),
            server.state_dir(),
            states,
            take_from_open_waves,
            progress=(lambda n, total: show.update(f"reading the live systems: {n} of {total} users"))
            if show
            else None,
        )
    except IkommError as exc:
        raise fail(exc) from None
    finally:
        if show is not None:
            show.stop()
    if as_json:
        console.print_json(json.dumps(plan.as_dict()))
        return
    _print_plan(plan, changes)


def _print_plan(plan: WavePlan, every_change: bool) -> None:
    if every_change:
        for f in plan.users:
            if f.changes:
                console.print(styled((f"{f.user}", "bold"), f" -> {f.account}"))
                for c in f.changes:
                    console.print(f"  {c.stage:8} {c.kind:15} {c.describe()}")
    totals = Table(title=f"wave {plan.wave}: what a run would do now (dry run, nothing written)")
    columns = ("moves", "held", "fails", "skipped", "left_out", "refused", "unchanged")
    written = ("accounts", "groups", "files", "bytes", "devices", "broker")
    for col in ("municipality", *columns, *written):
        totals.add_column(col, justify="left" if col == "municipality" else "right")
    for muni, t in plan.totals().items():
        totals.add_row(muni, *(str(t[c]) for c in columns), *(f"{t[k]:,}" for k in written))
    console.print(totals)
    seats = Table(title="seats per application (in use, this wave, limit)")
    for col in ("application", "in use", "this wave", "limit", "note"):
        seats.add_column(col, justify="left" if col in ("application", "note") else "right")
    for s in plan.seats.values():
        over = s["used"] + s["planned"] >= s["limit"]
        seats.add_row(s["name"], str(s["used"]), str(s["planned"]), str(s["limit"]), "full" if over else "")
    if plan.seats:
        console.print(seats)
    not_moving = [f for f in plan.users if f.outcome != "moves"]
    if not_moving:
        table = Table(title=f"users the run would not move ({len(not_moving)})")
        for col in ("user", "outcome", "why"):
            table.add_column(col, overflow="fold")
        for f in not_moving:
            table.add_row(f.user, f.outcome, f.reason)
        console.print(table)
    if not every_change:
        console.print("every change of every user: --changes (or --json)")


@app.command("run")
def wave_run(
    wave_file: Annotated[Path, typer.Argument(help="waves/<id>.yaml")],
    inventory: InventoryDir = Path("inventory"),
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Approve the cutover (lab and tests).")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Same as --include failed.")] = False,
    include: IncludeOpt = "",
    take_from_open_waves: TakeOpenOpt = False,
    skip_preflight: Annotated[
        bool, typer.Option("--skip-preflight", help="Emergencies only: start without preflight (recorded).")
    ] = False,
    outside_window: OutsideWindowOpt = False,
    workers: WorkersOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Run (or resume) a wave: preflight, prepare, approval gate, cutover; a live view of users per stage."""
    inv, wave = _wave(wave_file, inventory)
    states = _include(include, retry_failed)
    window = wave.spec.window
    if window is not None and not window.contains():
        err.print(styled(("warning:", "yellow"), f" now is outside the wave's window ({window.start} to {window.end})"))
    try:
        use_local_server()
    except IkommError as exc:
        raise fail(exc) from None
    if skip_preflight:
        err.print(styled(("warning:", "yellow"), " preflight skipped; recorded on the wave"))
    else:
        try:  # on the ledger as it is (or none yet), so a refusal writes nothing at all
            checks = run_checks(inv, wave, existing_ledger(), outside_window, workers)
        except IkommError as exc:
            raise fail(exc) from None
        failed = problems(checks)
        if failed:
            print_checks(failed)
            err.print(
                styled(("refused:", "bold red"), f" preflight found {len(failed)} problem(s); nothing was written. ")
                + f"Fix them (ikomm preflight {wave_file}) or, in an emergency, --skip-preflight."
            )
            raise typer.Exit(1)
    ledger = Ledger(ledger_url())  # before the worker opens its own: one creates the tables, not both at once
    who = getpass.getuser()
    if outside_window and window is not None and not window.contains():
        ledger.note(wave.id, f"run outside its window ({window.start} to {window.end}, --outside-window) by {who}")
    if skip_preflight:
        ledger.note(wave.id, f"preflight skipped (--skip-preflight) by {who}")
    from flows.wave import run_wave

    outcome: dict[str, Any] = {}
    failure: list[BaseException] = []

    def work() -> None:
        try:
            outcome.update(
                run_wave(
                    wave_file, inventory, server.state_dir(), auto_approve, states, take_from_open_waves, workers, inv
                )
            )
        except BaseException as exc:  # shown by the main thread
            failure.append(exc)

    worker = threading.Thread(target=work, name=f"wave-{wave.id}", daemon=True)
    signal.signal(signal.SIGINT, _interrupts(ledger, wave, wave_file))
    worker.start()
    if as_json or not console.is_terminal:
        worker.join()
    else:
        with Live(console=console, refresh_per_second=2) as live, _logs_above_the_table():
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
    passwords = server.state_dir() / "credentials" / f"{wave.id}.csv"
    failed_users = sum(n for (_, state), n in ledger.counts(wave.id).items() if state == "failed")
    result = {
        "wave": wave.id,
        **outcome,
        "users": counts,
        "credentials": str(passwords) if passwords.is_file() else None,  # none set: no file to point at
        "ui": f"{server.ui_url()}runs",
    }
    if as_json:
        console.print_json(json.dumps(result))
    else:
        ending = f"{outcome_words(str(outcome.get('state')), failed_users)} {outcome.get('reason', '')}".rstrip()
        if outcome.get("reason") == INTERRUPTED:
            ending = f"stopped, {INTERRUPTED}. To go on: ikomm wave run {wave_file}"
        elif outcome.get("state") == "held":
            ending = f"held: {outcome.get('reason')}"
        console.print(f"wave {wave.id}: {ending}")
        down = downtime_words(ledger.downtimes(wave.id))
        if down:
            console.print(f"  {down}")
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
        if outcome.get("unrecorded"):
            console.print(
                f"  {outcome['unrecorded']} user(s)' task runs not yet shown finished in the Prefect UI "
                "(the server records them a moment later; the ledger and `ikomm status` are already right)"
            )
        if result["credentials"]:
            console.print(f"initial passwords (root only): {result['credentials']}")
        console.print(f"Prefect UI: {result['ui']} (flow run '{wave.id}'; search task runs by old id, account or name)")
    if outcome.get("reason") == INTERRUPTED:
        raise typer.Exit(EXIT_INTERRUPTED)
    if outcome.get("state") == "held":
        raise typer.Exit(EXIT_HELD)
    raise typer.Exit(EXIT_STOPPED if outcome.get("state") != "done" else EXIT_FAILED_USERS if failed_users else 0)


class _AboveTheTable:
    """Stands in for a Prefect console handler's own console while the live table shows: each log line is printed
    through the table's console, which puts it above the table (as plain text: no markup read into it)."""

    def print(self, message: str, soft_wrap: bool = False) -> None:
        console.print(Text(message), soft_wrap=soft_wrap)


@contextmanager
def _logs_above_the_table() -> Iterator[None]:
    """While the live table shows, Prefect's log lines print above it. Written by Prefect's handlers to the
    terminal straight (their console bypasses the Live's stand-in for stderr) they tore the table."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    handlers = {h for lg in loggers for h in lg.handlers if isinstance(h, PrefectConsoleHandler)}
    saved = [(h, h.console) for h in handlers]
    for handler, _ in saved:
        handler.console = _AboveTheTable()  # type: ignore[assignment]
    try:
        yield
    finally:
        for handler, own in saved:
            handler.console = own


def _interrupts(ledger: Ledger, wave: Wave, wave_file: Path) -> Callable[[int, FrameType | None], None]:
    """Ctrl-C on `wave run`: the first lets the users in the middle of a step finish it and starts no new one
    (the wave ends Interrupted, exit 130); at the gate, or a second time, it stops at once, marking the wave's
    runs Crashed first (a rerun goes on: every step reads before it writes)."""
    pressed: list[float] = []

    def at_once(why: str) -> None:
        from flows.wave import crash_open_runs

        message = f"{why}; nothing runs the wave now. To go on: ikomm wave run {wave_file}"
        try:
            crash_open_runs(wave.id, message)
            ledger.set_wave(wave.id, "stopped", message, ended=True)
        finally:
            err.print(f"\nwave {wave.id}: stopped at once ({why}). To go on: ikomm wave run {wave_file}")
            os._exit(EXIT_INTERRUPTED)

    def handle(signum: int, frame: FrameType | None) -> None:
        pressed.append(time.monotonic())
        if len(pressed) > 1:
            at_once("Ctrl-C twice: users in the middle of a step were left there")
        if (ledger.wave(wave.id) or {}).get("state") == "awaiting-approval":
            at_once("Ctrl-C at the approval gate: every user prepared, none cut over")
        STOPPING.set()
        err.print(
            f"\nwave {wave.id}: stopping: users in the middle of a step finish it, no new one starts "
            "(Ctrl-C again to stop at once)"
        )

    return handle


@app.command("status")
def wave_status(
    wave_id: str,
    show_all: Annotated[bool, typer.Option("--all", help="Every user not moved, not only the last ten.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Users of a wave per municipality and state, and the wave's own state."""
    ledger = ledger_to_read()
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
        notes = ledger.notes(wave_id)
        console.print_json(
            json.dumps(
                {
                    "wave": as_it_is(ledger, wave),
                    "downtime_seconds": ledger.downtimes(wave_id),
                    "users": counts,
                    "not_moved": failed,
                    "notes": notes,
                }
            )
        )
        return
    console.print(_stage_table(ledger, wave_id, None if show_all else SHOWN))


@app.command("approve")
def wave_approve(
    wave_id: str,
    approver: Annotated[str, typer.Option(help="Who approves (name or e-mail).")] = os.environ.get("USER", "lead"),
    comment: Annotated[str, typer.Option(help="Why, or anything the record should say.")] = "",
    reject: Annotated[bool, typer.Option("--reject", help="Refuse the cutover instead.")] = False,
) -> None:
    """Answer the wave's approval gate (as the Prefect UI's resume form does); a refusal says why (--comment)."""
    if len(approver.strip()) < 2:
        err.print(styled(("error:", "red"), " --approver: who decides, a name or an e-mail (kept with the answer)"))
        raise typer.Exit(2)
    if reject and len(comment.strip()) < 3:
        err.print(styled(("error:", "red"), " --reject needs --comment: why the cutover is refused (kept with it)"))
        raise typer.Exit(2)
    use_local_server()
    from flows.wave import approve_wave

    try:
        answer = {"approved": not reject, "approver": approver, "comment": comment}
        run_id = approve_wave(wave_id, answer, Ledger(ledger_url()))
    except IkommError as exc:
        raise fail(exc) from None
    console.print(f"wave {wave_id}: cutover {'rejected' if reject else 'approved'} (flow run {run_id})")


@app.command("list")
def wave_list(
    waves: Annotated[Path, typer.Option("--waves", help="The folder of wave files.")] = Path("waves"),
    inventory: InventoryDir = Path("inventory"),
    as_json: JsonFlag = False,
) -> None:
    """Every wave: the files in the waves folder and the waves the ledger knows, with state and users."""
    from ikomm.campaign import wave_files

    inv = load(inventory)
    try:
        files = {w.id: w for w in wave_files(waves, inv)}
    except IkommError as exc:
        raise fail(exc) from None
    ledger = existing_ledger()
    known = {w["id"]: as_it_is(ledger, w) for w in ledger.waves()} if ledger else {}
    rows = []
    for wave_id in [*files, *sorted(set(known) - set(files))]:
        w, row = files.get(wave_id), known.get(wave_id)
        counts: dict[str, int] = {}
        if ledger and row:
            for (_muni, state), n in ledger.counts(wave_id).items():
                counts[state] = counts.get(state, 0) + n
        window = w.spec.window if w else None
        rows.append(
            {
                "wave": wave_id,
                "file": str(w.path) if w else (row or {}).get("file"),
                "window": window.start.isoformat() if window else None,
                "users": len(w.users) if w else sum(counts.values()),
                "state": row["state"] if row else "not run",
                "started": row["started"] if row else None,
                "ended": row["ended"] if row else None,
                "by_state": counts,
            }
        )
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(title=f"waves ({len(rows)})")
    for col in ("wave", "window", "users", "state", "started", "outcome"):
        table.add_column(col, overflow="fold")
    for r in rows:
        outcome = ", ".join(f"{n} {s}" for s, n in sorted(r["by_state"].items()))
        table.add_row(
            r["wave"], r["window"] or "-", str(r["users"]), r["state"], (r["started"] or "-")[:16], outcome or "-"
        )
    console.print(table)

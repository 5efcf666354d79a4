"""Moving one user through a wave, start to end, and undoing a user who cannot be moved.

    prepare (before the approval gate)       cutover (after it)
      plan       legacy entry, apps, seats     files      final delta copy, then verify
      account    create or adopt, password     cutover    device config, broker, legacy log-off
      entitle    application groups            verify     bind, groups, files, device, broker
      preseed    first copy of profile, home   retire     disable the legacy account

The stages live in `ikomm.stages`, the change kinds in `ikomm.changes`. `undo_user` reverses a
user's changes from the ledger, newest first; a failed user is undone that way while the others go
on. Nothing here knows Prefect.
"""

from __future__ import annotations

import time

from ikomm.changes import from_record
from ikomm.errors import FatalError, HeldError, IkommError, TransientError
from ikomm.ledger import FINAL
from ikomm.report import UNMAPPED, plain_reason
from ikomm.snapshot import take
from ikomm.stages import (
    platform_dn,
    read_user,
    stage_account,
    stage_cutover,
    stage_entitlements,
    stage_files,
    stage_retire,
    stage_verify,
)
from ikomm.wave_run import STOPPING, WaveRun, set_state
from ikomm.waves import WaveUser

PHASES = ("prepare", "cutover", "migrate")


def prepare(run: WaveRun, wu: WaveUser) -> None:
    """Everything before the approval gate: plan, account, entitlements, pre-seed copy."""
    set_state(run, wu, "running", "plan", "reading the legacy account and groups")
    up = read_user(run, wu)
    if run.ledger.snapshot(wu.key) is None:  # the proof a rollback is checked against: before any write
        with run.gate.hold(run.systems(wu, "ad", "devices", "broker", "zone-fs")):
            run.ledger.save_snapshot(wu.key, run.wave.id, take(run, wu, up.legacy_state()))
    if up.unmapped:
        set_state(run, wu, "running", "plan", UNMAPPED + ", ".join(up.unmapped))
    set_state(run, wu, "running", "account", f"platform account {run.account(wu)}", account=run.account(wu))
    dn = stage_account(run, wu, up)
    set_state(run, wu, "running", "entitle", f"{len(up.apps)} application group(s)")
    stage_entitlements(run, wu, up, dn)
    if run.wave.spec.options.preseed:
        set_state(run, wu, "running", "preseed", "copying profile and home (pre-seed)")
        stage_files(run, wu, dn)
    set_state(run, wu, "running", "prepared", "ready for cutover")


def cutover(run: WaveRun, wu: WaveUser) -> None:
    """Everything after the approval gate: final delta, cutover, verify, retire."""
    dn = platform_dn(run, wu)
    set_state(run, wu, "running", "files", "final delta of profile and home")
    stage_files(run, wu, dn)
    set_state(run, wu, "running", "cutover", "device, broker, legacy session")
    down = time.monotonic()  # from here the user can work nowhere: logged off the legacy desktop, device repointed
    stage_cutover(run, wu)
    set_state(run, wu, "migrated", "verify", "moved; verifying")
    stage_verify(run, wu, dn)
    set_state(run, wu, "running", "retire", "verified; disabling the legacy account")
    stage_retire(run, wu)
    took = time.monotonic() - down
    set_state(run, wu, "verified", "done", f"migrated and verified; legacy account disabled; downtime {took:.1f} s")


# --- failure and undo ---------------------------------------------------------------------------


def fail_user(run: WaveRun, wu: WaveUser, error: Exception) -> None:
    """A user who cannot be moved: undo what was done (newest first), then record why."""
    reason = plain_reason(run.inv, error)
    if isinstance(error, HeldError):
        undo_user(run, wu)
        set_state(run, wu, "held", "plan", str(error))
        return
    run.budget.fail()
    problems = undo_user(run, wu)
    if problems:
        reason += " | undo incomplete: " + "; ".join(problems)
    set_state(run, wu, "failed", "undone", reason)


def undo_user(run: WaveRun, wu: WaveUser, stages: tuple[str, ...] | None = None, purge: bool = False) -> list[str]:
    """Reverse the user's recorded changes, newest first; return what could not be undone."""
    problems = []
    for row in run.ledger.changes(wu.key, stages):
        try:
            from_record(row).undo(run, purge)
        except IkommError as exc:
            problems.append(f"{row.kind} {row.target}: {exc}")
            continue
        run.ledger.mark_undone(row.id)
    return problems


# --- one user, start to end ---------------------------------------------------------------------


def run_user(run: WaveRun, wu: WaveUser, phase: str, final_attempt: bool = True) -> str:
    """Move one user through a phase, undo and record the failure when it is final.

    Phases: 'prepare' (up to the approval gate), 'cutover' (after it), or 'migrate' (both, for a
    wave whose gate is already open: no approval required, or given). A user who must wait for an
    application returns 'held' (undone, recorded), not an error. A TransientError on a
    non-final attempt is raised as it is, for the caller to retry; the stages are idempotent, so the
    retry starts the phase again.
    """
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}")
    row = run.ledger.user(wu.key)
    if row is not None and row.wave != run.wave.id:
        return "skipped"  # another wave owns this user now: never write to them from here
    if row is not None and row.state in FINAL:
        return row.state
    prepared = row is not None and row.stage == "prepared"
    if phase == "prepare" and prepared:
        return "prepared"
    if STOPPING.is_set():
        return "not started"  # interrupted: the user stays where they are (pending, or prepared)
    if phase != "cutover" and (row is None or row.state == "pending") and not run.budget.start():
        return "not started"  # the failure budget has tripped: leave the user pending
    try:
        if phase != "cutover" and not prepared:
            prepare(run, wu)
            if phase == "prepare" or STOPPING.is_set():
                return "prepared"  # interrupted between the phases: prepared, the cutover waits for the rerun
        cutover(run, wu)
        return "verified"
    except TransientError as exc:
        if not final_attempt:
            raise
        fail_user(run, wu, TransientError(f"gave up after retries: {exc}"))
        raise
    except HeldError as exc:  # not a failure: nothing changed for them, and they keep working as before
        fail_user(run, wu, exc)
        return "held"
    except IkommError as exc:
        fail_user(run, wu, exc)
        raise
    except Exception as exc:  # a bug must not leave a user half made
        fail_user(run, wu, FatalError(f"internal error: {type(exc).__name__}: {exc}"))
        raise

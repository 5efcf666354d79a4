"""Rollback: undo a user's (or a stage's) recorded changes from the ledger, newest first, and prove it.

Every undo is idempotent and marked in the ledger as it is done, so a rollback killed half-way is
finished by running it again, and a second rollback finds nothing left and says so. Before undoing a
change, the present value is compared with what the migration wrote: if someone changed it since
(drift), the change is reported as a conflict and left alone, unless `force` (which then overwrites
the later change with the value from before the migration).

User data is never deleted: copied folders move to `.quarantine/<wave>/` on the platform file server
and are listed in the report. The platform account is disabled and moved to OU=Deaktivert; deleted
only with `purge`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ikomm.changes import ALREADY, from_record
from ikomm.errors import IkommError, InvalidInputError, TransientError
from ikomm.inventory import Inventory
from ikomm.ledger import RECORDED, Ledger, UserRow
from ikomm.snapshot import differences, take
from ikomm.wave_run import WaveRun, set_state
from ikomm.waves import WaveUser, load_wave

STAGES = ("account", "entitle", "files", "cutover", "retire")


def select_users(
    ledger: Ledger,
    wave_id: str,
    users: Sequence[str] | None = None,
    municipality: str | None = None,
    stages: Sequence[str] | None = None,
) -> list[str]:
    """The keys of the users a rollback of this wave takes: the one choice behind the command line, the UI and
    both their dry runs, so what a dry run shows is what the real run touches.

    The wave's users now (not those it skipped, nor those a later wave took), narrowed to the named users (key,
    legacy id or account name, any case) and to one municipality. A filter that matches nobody is refused
    (InvalidInputError), never read as "everyone"; so is a stage of which none of them has a recorded change.
    """
    if ledger.wave(wave_id) is None:
        raise InvalidInputError(f"no wave {wave_id!r} in the ledger {ledger.shown}")
    wrong = [s for s in stages or () if s not in STAGES]
    if wrong:
        raise InvalidInputError(f"stage {', '.join(map(repr, wrong))}: choose from {', '.join(STAGES)}")
    owned = ledger.owned(wave_id)
    chosen = owned
    if users is not None:
        if not users:
            raise InvalidInputError("users: the list is empty; name at least one user, or leave it out for all")
        keys = {_user_key(ledger, wave_id, name) for name in users}
        chosen = [u for u in owned if u.key in keys]
    if municipality is not None:
        chosen = [u for u in chosen if u.muni == municipality]
        if not chosen:
            among = ", ".join(sorted({u.muni for u in owned})) or "none"
            raise InvalidInputError(
                f"municipality {municipality!r}: no user of wave {wave_id} "
                + ("among those named " if users else "")
                + f"is of it (the wave's municipalities: {among})"
            )
    if stages:
        _refuse_lockouts(ledger, wave_id, chosen, tuple(stages))
    if stages and chosen and not any(ledger.changes(u.key, tuple(stages), RECORDED) for u in chosen):
        raise InvalidInputError(
            f"stage {', '.join(stages)}: no change of it is recorded for the {len(chosen)} user(s) chosen in wave "
            f"{wave_id}; nothing to undo"
        )
    return [u.key for u in chosen]


def _refuse_lockouts(ledger: Ledger, wave_id: str, chosen: Sequence[UserRow], stages: tuple[str, ...]) -> None:
    """Refuse to undo a stage whose undo, without a later stage's, leaves a user able to log on nowhere.

    Undoing cutover points the thin client back at the legacy terminal server: the legacy account must be
    enabled again too (retire undone). Undoing account disables the platform account: the thin client must point
    back at the legacy server (cutover undone) with its account enabled (retire undone). The others can be undone
    alone: retire alone re-enables the legacy account beside the platform's; entitle and files leave a logon.
    """
    for stage in stages:
        needed = [later for later in LOGON_NEEDS.get(stage, ()) if later not in stages]
        stuck = [u for u in chosen if needed and ledger.changes(u.key, tuple(needed))]
        if stuck:
            names = ", ".join(u.key for u in stuck[:5]) + (f" and {len(stuck) - 5} more" if len(stuck) > 5 else "")
            also = ",".join((*stages, *needed))
            raise InvalidInputError(
                f"stage {stage} of wave {wave_id}: undoing it while {' and '.join(needed)} stays would leave "
                f"{len(stuck)} user(s) able to log on nowhere ({names}): "
                + LOCKOUT[stage]
                + f"; undo them together: --stage {also}"
            )


LOGON_NEEDS = {"cutover": ("retire",), "account": ("cutover", "retire")}  # what must go with a stage's undo
LOCKOUT = {
    "cutover": "the thin client would point back at the legacy terminal server, where the account stays disabled",
    "account": "the platform account would be disabled while the thin client still points at the platform",
}


def _user_key(ledger: Ledger, wave_id: str, name: str) -> str:
    """The key of the wave's user named by key, legacy id or account name; refused if none or several."""
    found = ledger.find_users(name)
    ours = [u for u in found if u.wave == wave_id]
    if len(ours) == 1:
        return ours[0].key
    if len(ours) > 1:
        raise InvalidInputError(f"user {name!r}: more than one in wave {wave_id}; give the key (municipality/id)")
    if found:
        elsewhere = ", ".join(sorted({u.wave for u in found}))
        raise InvalidInputError(f"user {name!r}: not in wave {wave_id} now (wave {elsewhere} took them); undo it there")
    raise InvalidInputError(f"user {name!r}: not in wave {wave_id} (no such key, legacy id or account name)")


@dataclass
class UndoForecast:
    """What rolling back one user would do: each change's undo, newest first, and any drift found now."""

    user: str
    undo: list[dict[str, str]] = field(default_factory=list)

    @property
    def conflicts(self) -> int:
        return sum(1 for u in self.undo if u["drift"] and u["drift"] != ALREADY)


def recorded_run(ledger: Ledger, inv: Inventory, wave_id: str, state_dir: Path) -> WaveRun:
    """The wave's run context from the wave file the ledger recorded (what a rollback undoes against);
    InvalidInputError if the ledger knows no such wave."""
    row = ledger.wave(wave_id)
    if row is None or not row.get("file"):
        raise InvalidInputError(f"no wave {wave_id!r} in the ledger {ledger.shown}")
    return WaveRun(inv, load_wave(Path(row["file"]), inv), ledger, state_dir)


def plan_rollback(
    run: WaveRun, keys: list[str], stages: tuple[str, ...] | None = None, purge: bool = False
) -> list[UndoForecast]:
    """The rollback's dry run: every undo it would make, read-only (drift is read from the systems)."""
    out = []
    for key in keys:
        forecast = UndoForecast(key)
        for row in run.ledger.changes(key, stages):
            change = from_record(row)
            try:
                why = change.drift(run) or ""
            except IkommError as exc:
                why = f"could not read: {exc}"
            what = change.describe_undo()
            if purge and row.kind == "create-account":
                what = f"delete {row.target} (--purge)"
            forecast.undo.append(
                {"stage": row.stage, "kind": row.kind, "target": row.target, "what": what, "drift": why}
            )
        out.append(forecast)
    return out


@dataclass
class UserRollback:
    """What one user's rollback did."""

    user: str
    undone: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)

    @property
    def nothing_to_do(self) -> bool:
        return not (self.undone or self.conflicts or self.problems)


def rollback_user(
    run: WaveRun,
    wu: WaveUser,
    stages: tuple[str, ...] | None = None,
    purge: bool = False,
    force: bool = False,
    final_attempt: bool = True,
) -> UserRollback:
    """Undo the user's changes (of the given stages, or all), newest first; state rolled_back when all are undone.

    A TransientError on a non-final attempt is raised as it is, for the caller to retry: what was
    undone is marked in the ledger, and an undo done but not yet marked is recognised (ALREADY).
    On the final attempt it is reported as a problem, like any other error.
    """
    report = UserRollback(wu.key)
    changes = run.ledger.changes(wu.key, stages)
    if not changes:
        row = run.ledger.user(wu.key)
        if row is not None and row.state == "running" and row.stage == "rollback":
            _finish(run, wu, report, stages)  # killed after its last undo, before it said so
        return report
    set_state(run, wu, "running", "rollback", f"rolling back {len(changes)} change(s)")
    if not stages or "cutover" in stages:
        try:
            ended = run.c.broker().log_off(run.broker_name(wu))
            if ended:
                report.undone.append(f"logged off {len(ended)} platform session(s)")
        except IkommError as exc:
            _unless_retrying(exc, final_attempt)
            report.problems.append(f"log off platform sessions: {exc}")
    for ch in changes:
        change = from_record(ch)
        try:
            why = change.drift(run)
            if why and why != ALREADY and not force:
                report.conflicts.append(f"{ch.kind}: {why} (left alone; --force restores the value from before)")
                continue
            if why != ALREADY:
                change.undo(run, purge)
        except IkommError as exc:
            _unless_retrying(exc, final_attempt)
            report.problems.append(f"{ch.kind} {ch.target}: {exc}")
            continue
        run.ledger.mark_undone(ch.id)
        report.undone.append(f"{ch.kind} {ch.target}")
        kept = change.kept_data(run)
        if kept:
            report.quarantined.append(kept)
    _finish(run, wu, report, stages)
    return report


def _unless_retrying(exc: IkommError, final_attempt: bool) -> None:
    """Raise a transient fault again while there are retries left."""
    if isinstance(exc, TransientError) and not final_attempt:
        raise exc


def _finish(run: WaveRun, wu: WaveUser, report: UserRollback, stages: tuple[str, ...] | None) -> None:
    """The user's state once the rollback has done what it could."""
    if report.problems or report.conflicts:
        set_state(
            run, wu, "failed", "rollback", "rollback incomplete: " + "; ".join(report.problems + report.conflicts)
        )
    elif not run.ledger.changes(wu.key):
        set_state(run, wu, "rolled_back", "done", f"rolled back ({len(report.undone)} change(s) undone)")
    else:
        set_state(run, wu, "rolled_back", "+".join(stages or ()), f"stage(s) {', '.join(stages or ())} rolled back")


STAGE_PARTS = {
    "account": ("platform",),
    "entitle": ("platform",),
    "files": ("folders",),
    "cutover": ("device", "broker"),
    "retire": ("legacy",),
}


def verify_user(run: WaveRun, wu: WaveUser, stages: tuple[str, ...] | None = None) -> list[str] | None:
    """Differences between now and the snapshot taken before the wave wrote anything (None: no snapshot).

    With stages, only the objects those stages change are compared (entitle: the platform account's
    groups; account: the platform account).
    """
    before = run.ledger.snapshot(wu.key)
    if before is None:
        return None
    found = differences(before, take(run, wu))
    if not stages:
        return found
    prefixes = tuple(p for s in stages for p in STAGE_PARTS[s])
    kept = [d for d in found if d.startswith(prefixes)]
    if "account" not in stages:
        kept = [d for d in kept if not d.startswith("platform") or ": groups" in d]
    return kept

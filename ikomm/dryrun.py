"""The dry run (`ikomm wave plan`): the exact changes a wave would make, read from the live systems.

It calls the stages' own planners (`ikomm.stages`) for every user the wave would take, so the plan
and the run cannot disagree on what a change is: the same classes, the same targets. Nothing is
written anywhere: no server, no ledger (one that does not exist yet is not created), no credential
file. Per user: the changes in the order the run makes them, or why the user would be held,
skipped, left out or fail; per application: seats in use, to be used, and the limit; totals per
municipality.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ikomm.changes import AddMember, Change, CopyTree
from ikomm.errors import ConflictError, HeldError, IkommError
from ikomm.inventory import Inventory
from ikomm.inventory.models import Application
from ikomm.ledger import FINAL, Ledger
from ikomm.opening import preview
from ikomm.stages import (
    plan_account,
    plan_broker,
    plan_device,
    plan_entitlements,
    plan_files,
    plan_retire,
    read_user,
)
from ikomm.wave_run import WaveRun
from ikomm.waves import Wave, WaveUser

OUTCOMES = ("moves", "held", "fails", "skipped", "left_out", "refused", "unchanged")


@dataclass
class UserForecast:
    """What the wave would do with one user."""

    user: str
    municipality: str
    account: str
    outcome: str  # one of OUTCOMES
    reason: str = ""
    changes: list[Change] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        files = [c.estimate for c in self.changes if isinstance(c, CopyTree) and c.estimate]
        return {
            "user": self.user,
            "municipality": self.municipality,
            "account": self.account,
            "outcome": self.outcome,
            "reason": self.reason,
            "changes": [c.as_dict() for c in self.changes],
            "files": sum(f for f, _ in files),
            "bytes": sum(b for _, b in files),
        }


@dataclass
class WavePlan:
    """The whole dry run: every user's forecast and the seats per application."""

    wave: str
    users: list[UserForecast]
    seats: dict[str, dict[str, Any]]

    def totals(self) -> dict[str, dict[str, int]]:
        """Per municipality: users per outcome, and the changes and data the wave would write."""
        out: dict[str, dict[str, int]] = {}
        for f in self.users:
            t = out.setdefault(f.municipality, {o: 0 for o in OUTCOMES})
            t[f.outcome] += 1
            for key in ("accounts", "groups", "files", "bytes", "devices", "broker"):
                t.setdefault(key, 0)
            data = f.as_dict()
            t["accounts"] += sum(c.kind == "create-account" for c in f.changes)
            t["groups"] += sum(c.kind == "add-member" for c in f.changes)
            t["devices"] += sum(c.kind == "device-config" for c in f.changes)
            t["broker"] += sum(c.kind == "broker-add" for c in f.changes)
            t["files"] += data["files"]
            t["bytes"] += data["bytes"]
        return out

    def bytes_per_server(self) -> dict[str, int]:
        """Bytes the wave would copy to each platform file server (preflight compares them with free space)."""
        out: dict[str, int] = {}
        for f in self.users:
            for c in f.changes:
                if isinstance(c, CopyTree) and c.estimate:
                    out[c.server] = out.get(c.server, 0) + c.estimate[1]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "wave": self.wave,
            "totals": self.totals(),
            "seats": self.seats,
            "users": [f.as_dict() for f in self.users],
        }


def plan_wave(
    inv: Inventory,
    wave: Wave,
    ledger: Ledger | None,
    state_dir: Path,
    include: tuple[str, ...] = (),
    take_open: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> WavePlan:
    """Forecast the wave against the live systems, writing nothing (ledger None: no wave has run yet)."""
    ledger = ledger or Ledger("sqlite://")  # in memory: nothing to find, nothing written
    chosen, decided = preview(ledger, inv, wave, include, take_open)
    run = WaveRun(inv, wave, ledger, state_dir)
    try:
        users: list[UserForecast] = []
        with ThreadPoolExecutor(max_workers=wave.spec.options.concurrency) as pool:
            each = pool.map(
                lambda wu: _forecast(run, wu, decided.get(wu.key, ("new", None)), chosen.left_out.get(wu.key)),
                wave.users,
            )
            for forecast in each:
                users.append(forecast)
                if progress:
                    progress(len(users), len(wave.users))
        seats = _seats(run, users)
    finally:
        run.c.close()
    return WavePlan(wave.id, users, seats)


def _forecast(run: WaveRun, wu: WaveUser, decided: tuple[str, Any], left_out: str | None) -> UserForecast:
    action, row = decided
    f = UserForecast(wu.key, wu.muni, run.account(wu), "moves")
    if action == "skip":
        f.outcome, f.reason = "skipped", f"already moved by wave {row.wave}"
        return f
    if action == "theirs":
        f.outcome, f.reason = "skipped", f"wave {row.wave} works on this user now"
        return f
    if action == "refused":
        f.outcome, f.reason = "refused", f"{row.state} in wave {row.wave}, which is still open"
        return f
    if left_out is not None and action != "resume":
        f.outcome, f.reason = "left_out", left_out
        return f
    if action == "resume" and row is not None and row.state in FINAL:
        f.outcome = "unchanged"
        f.reason = f"already {row.state} in this wave" + (
            "" if row.state == "verified" else f" (take again: --include {row.state})"
        )
        return f
    try:
        f.changes = _changes(run, wu)
    except HeldError as exc:
        f.outcome, f.reason = "held", str(exc)
    except IkommError as exc:
        f.outcome, f.reason = "fails", f"{type(exc).__name__}: {exc}"
    return f


def _changes(run: WaveRun, wu: WaveUser) -> list[Change]:
    """Every change the run would make for this user, in its order (as if each earlier one were made)."""
    up = read_user(run, wu)
    account = plan_account(run, wu, up)
    changes: list[Change] = [*account.changes]
    changes += plan_entitlements(run, wu, up, account.dn)
    changes += plan_files(run, wu, None, count=True)
    later = (plan_device(run, wu), plan_broker(run, wu, cached=True), plan_retire(run, wu, up.legacy))
    changes += [c for c in later if c is not None]
    return changes


def _seats(run: WaveRun, users: list[UserForecast]) -> dict[str, dict[str, Any]]:
    """Seats per application, taken in the wave's order; a user past a limit would fail (nothing undone)."""
    planned: dict[str, int] = {}
    before: dict[str, int] = {}
    for f in users:
        taken: list[Application] = []
        for c in f.changes:
            if not isinstance(c, AddMember) or c.application is None:
                continue
            before.setdefault(c.app, run.seats.used(c.application))
            try:
                run.seats.reserve(c.application)
            except ConflictError as exc:
                f.outcome, f.reason = "fails", f"ConflictError: {exc}"
                for app in taken:  # the run undoes a failed user: their other seats come free
                    run.seats.release(app.id)
                    planned[app.id] -= 1
                break
            taken.append(c.application)
            planned[c.app] = planned.get(c.app, 0) + 1
    apps = run.inv.applications
    return {
        app_id: {
            "name": apps[app_id].name,
            "used": used,
            "planned": planned.get(app_id, 0),
            "limit": apps[app_id].seat_limit,
        }
        for app_id, used in sorted(before.items())
    }

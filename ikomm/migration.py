"""Moving one user, stage by stage, with every change recorded in the ledger before it is made.

    prepare (before the approval gate)       cutover (after it)
      plan       legacy entry, apps, seats     files      final delta copy, then verify
      account    create or adopt, password     cutover    device config, broker, legacy log-off
      entitle    application groups            verify     bind, groups, files, device, broker
      preseed    first copy of profile, home   retire     disable the legacy account

Each stage reads what is, computes what should be, and writes only the difference, so every stage
can run again after a crash. `set_state` is the one way a user's state changes: it writes the
ledger, the log and the progress view together. `undo_user` reverses a user's changes from the
ledger, newest first; a failed user is undone that way while the others go on.

Nothing here knows Prefect: the flow hands in a `Gate` (its concurrency limits) and a progress
callback.
"""

from __future__ import annotations

import base64
import csv
import io
import logging
import os
import secrets
import string
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

from ikomm.connectors import Connectors
from ikomm.connectors.devices import settings
from ikomm.connectors.directory import (
    DirectoryConnector,
    EntryState,
    Snapshot,
    child_dn,
    equality_filter,
    plan_modifications,
)
from ikomm.connectors.files import FileServer, copy_tree, verify_tree
from ikomm.errors import ConflictError, FatalError, IkommError, InvalidInputError, TransientError
from ikomm.inventory import Inventory
from ikomm.inventory.models import Application
from ikomm.ledger import FINAL, Ledger
from ikomm.naming import account_names, netbios_domain, platform_domain
from ikomm.report import UNMAPPED
from ikomm.snapshot import take
from ikomm.waves import Wave, WaveUser

log = logging.getLogger("ikomm.wave")
PARKED_OU = "OU=Deaktivert"
ID_BASE = 100000  # platform uid/gid = ID_BASE + RID, as Samba's idmap_rid maps them
DOMAIN_USERS_RID = 513
ACCOUNT_ATTRS = ("givenName", "sn", "displayName", "mail", "department", "title")


class HeldError(IkommError):
    """The user cannot move yet (an application is not ready on the platform); nothing was written."""


class Gate(Protocol):
    """Concurrency limits per outside system: hold(systems) occupies one slot of each while inside."""

    def hold(self, systems: Sequence[str]) -> AbstractContextManager[None]: ...


class LocalGate:
    """Per-system semaphores inside this process: the gate for the floor benchmark and plain scripts."""

    def __init__(self, limits: Mapping[str, int]) -> None:
        self._sems = {name: threading.BoundedSemaphore(n) for name, n in limits.items()}

    @contextmanager
    def hold(self, systems: Sequence[str]) -> Iterator[None]:
        taken = [self._sems[s] for s in sorted(systems) if s in self._sems]
        for sem in taken:
            sem.acquire()
        try:
            yield
        finally:
            for sem in reversed(taken):
                sem.release()


class CredentialFile:
    """The wave's initial passwords: a CSV readable by root alone (0600), rewritten atomically.

    Read once and kept in memory (the wave's process is its only writer); reading it again for every
    user made a 2,500-user wave spend 6 % of its CPU parsing this file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cache: dict[str, list[str]] | None = None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _rows(self) -> dict[str, list[str]]:
        if self._cache is None:
            self._cache = {}
            if self.path.is_file():
                with self.path.open(encoding="utf-8", newline="") as fh:
                    self._cache = {row[0]: row for row in csv.reader(fh) if row and row[0] != "user"}
        return self._cache

    def keys(self) -> list[str]:
        """The users (municipality/legacy_id) the file holds a password for."""
        with self._lock:
            return sorted(self._rows())

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._rows().get(key)
        return row[3] if row else None

    def put(self, key: str, account: str, upn: str, password: str) -> None:
        with self._lock:
            rows = self._rows()
            rows[key] = [key, account, upn, password]
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(["user", "account", "upn", "initial_password"])
            writer.writerows(rows[k] for k in sorted(rows))
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(out.getvalue())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)


def new_password(length: int = 18) -> str:
    """A random password meeting AD complexity (upper, lower, digit, symbol)."""
    alphabet = string.ascii_letters + string.digits + "!#%+-=?@_"
    while True:
        pw = "".join(secrets.choice(alphabet) for _ in range(length))
        if (
            any(c.islower() for c in pw)
            and any(c.isupper() for c in pw)
            and any(c.isdigit() for c in pw)
            and any(not c.isalnum() for c in pw)
        ):
            return pw


class SeatBook:
    """Seats in use per application (members of its groups), counted once, then kept under a lock."""

    def __init__(self, ad: DirectoryConnector, groups_dn: str) -> None:
        self._ad, self._groups_dn = ad, groups_dn
        self._used: dict[str, int] = {}
        self._lock = threading.Lock()

    def _count(self, app: Application) -> int:
        total = 0
        for group in app.groups.values():
            entry = self._ad.read(child_dn("CN", group, self._groups_dn), ["member"])
            total += len(entry.get("member")) if entry else 0
        return total

    def reserve(self, app: Application) -> None:
        with self._lock:
            if app.id not in self._used:
                self._used[app.id] = self._count(app)
            if self._used[app.id] >= app.seat_limit:
                raise ConflictError(f"application {app.name}: seat limit of {app.seat_limit} reached")
            self._used[app.id] += 1

    def release(self, app_id: str) -> None:
        with self._lock:
            if app_id in self._used:
                self._used[app_id] -= 1


@dataclass
class Budget:
    """The wave's failure budget: trips when failures exceed the share allowed (and a minimum count)."""

    share: float
    minimum: int
    started: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> bool:
        """Count a user as started; False (start nothing) once the budget has tripped."""
        with self.lock:
            if self.tripped:
                return False
            self.started += 1
            return True

    def fail(self) -> None:
        with self.lock:
            self.failed += 1

    @property
    def tripped(self) -> bool:
        return self.failed >= self.minimum and self.failed > self.share * max(self.started, 1)


@dataclass(frozen=True)
class Plan:
    """What prepare found before writing anything: the legacy entry, apps to grant, groups that map to nothing."""

    legacy: Snapshot
    legacy_groups: tuple[str, ...]
    apps: tuple[Application, ...]
    unmapped: tuple[str, ...]
    legacy_group_dns: tuple[str, ...] = ()

    def legacy_state(self) -> EntryState:
        """The legacy entry and its groups as read for the plan (the snapshot reuses it)."""
        return EntryState(self.legacy, self.legacy_group_dns)


class WaveRun:
    """Everything a wave's stages share: inventory, wave, ledger, connectors, gate, credentials, progress."""

    def __init__(
        self,
        inv: Inventory,
        wave: Wave,
        ledger: Ledger,
        state_dir: Path,
        gate: Gate | None = None,
        connectors: Connectors | None = None,
        progress: Callable[[str, str, str], None] | None = None,
        today: date | None = None,
    ) -> None:
        self.inv, self.wave, self.ledger = inv, wave, ledger
        self.c = connectors or Connectors(inv, sftp_pool=wave.spec.options.concurrency)
        self.names = account_names(inv)
        self.credentials = CredentialFile(state_dir / "credentials" / f"{wave.id}.csv")
        self.gate: Gate = gate or LocalGate(self.limits())
        self.progress = progress
        self.today = today or datetime.now(UTC).date()
        self.budget = Budget(wave.spec.options.failure_budget, wave.spec.options.min_failures)
        self.seats = SeatBook(self.c.platform(), inv.platform.directory.groups_dn)
        self.domain = platform_domain(inv.platform.directory)
        self._broker_users: dict[str, set[str]] = {}
        self._broker_lock = threading.Lock()

    def broker_lists(self, wu: WaveUser) -> bool:
        """Whether the broker allowed this user's platform name on the zone's collection when first asked.

        Read once per collection and run (users join a collection only at their own cutover).
        """
        collection = self.inv.zone(wu.user.zone).terminal_farm.collection
        with self._broker_lock:
            if collection not in self._broker_users:
                self._broker_users[collection] = {u.lower() for u in self.c.broker().collection_users(collection)}
            return f"{self.domain}\\{self.account(wu)}".lower() in self._broker_users[collection]

    def limits(self) -> dict[str, int]:
        """Concurrency limit name -> slots, for every outside system the wave touches."""
        lim = self.wave.spec.options.limits
        out = {"platform-ad": lim.platform_ad, "config-host": lim.config_host, "broker": lim.broker}
        for muni in self.wave.spec.municipalities:
            m = self.inv.municipalities[muni]
            out[f"legacy-dir-{muni}"] = lim.legacy_directory
            out[f"fs-{m.legacy.file_server.name}"] = lim.file_server
        for zone in self.inv.platform.zones:
            out[f"fs-{zone.file_server.name}"] = lim.file_server
        return {f"ikomm-{k}": v for k, v in out.items()}

    def systems(self, wu: WaveUser, *names: str) -> list[str]:
        """Limit names of the systems a stage of this user touches."""
        m = self.inv.municipalities[wu.muni]
        table = {
            "ad": "platform-ad",
            "legacy": f"legacy-dir-{wu.muni}",
            "legacy-fs": f"fs-{m.legacy.file_server.name}",
            "zone-fs": f"fs-{self.inv.zone(wu.user.zone).file_server.name}",
            "devices": "config-host",
            "broker": "broker",
        }
        return [f"ikomm-{table[n]}" for n in names]

    def user(self, key: str) -> WaveUser:
        """The wave's user with this key (municipality/legacy_id)."""
        if not hasattr(self, "_by_key"):
            self._by_key = {wu.key: wu for wu in self.wave.users}
        return self._by_key[key]

    def account(self, wu: WaveUser) -> str:
        return self.names[(wu.muni, wu.user.legacy_id)]

    def upn(self, wu: WaveUser) -> str:
        return f"{self.account(wu)}@{self.inv.municipalities[wu.muni].upn_suffix}"


# --- the one way a user's state changes ---------------------------------------------------------


def set_state(run: WaveRun, wu: WaveUser, state: str, stage: str, message: str, account: str | None = None) -> None:
    """Change a user's state: the ledger, the log and the progress view, together."""
    run.ledger.set_user(wu.key, state, stage, message, account, wave=run.wave.id)
    log.log(
        logging.WARNING if state in ("failed", "held") else logging.INFO, "%s: %s %s: %s", wu.key, state, stage, message
    )
    if run.progress is not None:
        run.progress(wu.key, state, stage)


# --- ledger-recorded writes ---------------------------------------------------------------------


def _record(run: WaveRun, wu: WaveUser, stage: str, system: str, kind: str, target: str, undo: dict[str, Any]) -> int:
    return run.ledger.plan_change(wu.key, run.wave.id, stage, system, kind, target, undo)


def apply_modify(
    run: WaveRun,
    wu: WaveUser,
    stage: str,
    system: str,
    ldap: DirectoryConnector,
    dn: str,
    wanted: Mapping[str, Sequence[str]],
    kind: str = "modify",
) -> bool:
    """Make dn's named attributes equal wanted, recording the values before; False if nothing differed."""
    current = ldap.read(dn, list(wanted))
    if current is None:
        raise InvalidInputError(f"{dn}: no such entry")
    changes = plan_modifications(current, wanted)
    if not changes:
        return False
    undo = {
        "dn": dn,
        "before": {k: list(current.get(k)) for k in changes},
        "after": {k: sorted(str(v) for v in wanted[k]) for k in changes},  # to notice drift before an undo
    }
    change = _record(run, wu, stage, system, kind, dn, undo)
    ldap.modify(dn, wanted)
    run.ledger.confirm(change)
    return True


# --- prepare ------------------------------------------------------------------------------------


def plan_user(run: WaveRun, wu: WaveUser) -> Plan:
    """Read the legacy side and decide what the user gets; raise before anything is written if they cannot move."""
    with run.gate.hold(run.systems(wu, "legacy")):
        legacy_dir = run.c.legacy(wu.muni)
        legacy = legacy_dir.find_user(wu.user.legacy_id)
        if legacy is None:
            raise InvalidInputError(f"no account {wu.user.legacy_id!r} in {wu.muni}'s legacy directory")
        group_dns = legacy_dir.groups_of(legacy.dn)
        groups = tuple(sorted(g.split(",", 1)[0].split("=", 1)[1] for g in group_dns))
    apps = tuple(a for a in run.inv.applications.values() if set(a.granted_by.get(wu.muni, ())) & set(groups))
    mapped = {g for a in apps for g in a.granted_by.get(wu.muni, ())}
    late = [a for a in apps if a.ready_from > run.today]
    if late:
        names = ", ".join(f"{a.name} (ready {a.ready_from})" for a in late)
        raise HeldError(f"held back: not ready on the platform yet: {names}")
    return Plan(legacy, groups, apps, tuple(g for g in groups if g not in mapped), group_dns)


def stage_account(run: WaveRun, wu: WaveUser, plan: Plan) -> str:
    """Create (or adopt) the platform account, set its initial password once, enable it; return its DN."""
    d = run.inv.platform.directory
    muni = run.inv.municipalities[wu.muni]
    sam, upn = run.account(wu), run.upn(wu)
    link = f"{wu.muni}:{wu.user.legacy_id}"
    attr_map = muni.legacy.directory.attribute_map
    wanted: dict[str, list[str]] = {
        "givenName": [wu.user.given_name],
        "sn": [wu.user.surname],
        "displayName": [f"{wu.user.given_name} {wu.user.surname}"],
        "mail": list(plan.legacy.get(attr_map.get("email", "mail"))) or [wu.user.email],
        "department": [wu.user.department],
        "title": [wu.user.title] if wu.user.title else [],
        "userPrincipalName": [upn],
    }
    ad = run.c.platform()
    with run.gate.hold(run.systems(wu, "ad")):
        found = list(ad.search(d.base_dn, equality_filter("employeeNumber", link), ["sAMAccountName"]))
        if len(found) > 1:
            raise ConflictError(f"{len(found)} platform accounts carry employeeNumber {link}")
        if found:
            dn = found[0].dn
            if found[0].get("sAMAccountName") != (sam,):
                raise ConflictError(f"{dn} carries employeeNumber {link} but is named {found[0].get('sAMAccountName')}")
            if "," + PARKED_OU.lower() + "," in dn.lower():  # set aside by an earlier rollback: bring it back
                change = _record(run, wu, "account", "ldap:platform", "unpark", dn, {"dn": dn})
                dn = ad.move(dn, muni.target_ou)
                run.ledger.confirm(change, {"moved_to": dn})
            apply_modify(run, wu, "account", "ldap:platform", ad, dn, wanted)
        else:
            taken = list(ad.search(d.base_dn, equality_filter("sAMAccountName", sam), ["employeeNumber"]))
            if taken:
                raise ConflictError(f"the account name {sam} is taken by {taken[0].dn}, which is not this user's")
            dn = child_dn("CN", sam, muni.target_ou)
            change = _record(run, wu, "account", "ldap:platform", "create-account", dn, {"dn": dn, "link": link})
            attrs = {k: v for k, v in wanted.items() if v}
            ad.add(dn, ["user"], {**attrs, "sAMAccountName": sam, "employeeNumber": link, "userAccountControl": "514"})
            run.ledger.confirm(change)
        password_change = _record(run, wu, "account", "ldap:platform", "set-password", dn, {"dn": dn})
        if run.credentials.get(wu.key) is None or run.ledger.change_status(password_change) != "done":
            password = new_password()
            run.credentials.put(wu.key, sam, upn, password)  # kept before it is set: a crash cannot lose it
            ad.set_password(dn, password, must_change=True)
            run.ledger.confirm(password_change)
        current = ad.read(dn, ["userAccountControl"])
        if current is not None and not ad.is_enabled(current):
            uac = int(current.get("userAccountControl")[0])
            apply_modify(
                run,
                wu,
                "account",
                "ldap:platform",
                ad,
                dn,
                {"userAccountControl": [str(uac & ~2)]},
                kind="enable-account",
            )
    return dn


def stage_entitlements(run: WaveRun, wu: WaveUser, plan: Plan, dn: str) -> list[str]:
    """Add the user to each planned application's group (seat limits respected); return the group DNs."""
    d = run.inv.platform.directory
    ad = run.c.platform()
    wanted = {child_dn("CN", a.groups[wu.muni], d.groups_dn): a for a in plan.apps if wu.muni in a.groups}
    with run.gate.hold(run.systems(wu, "ad")):
        have = {g.lower() for g in ad.groups_of(dn)}
        for group, app in sorted(wanted.items()):
            if group.lower() in have:
                continue
            run.seats.reserve(app)
            try:
                change = _record(
                    run,
                    wu,
                    "entitle",
                    "ldap:platform",
                    "add-member",
                    group,
                    {"group": group, "member": dn, "app": app.id},
                )
                ad.add_member(group, dn)
            except BaseException:
                run.seats.release(app.id)
                raise
            run.ledger.confirm(change)
    return sorted(wanted)


def _trees(run: WaveRun, wu: WaveUser) -> list[tuple[str, str, str]]:
    """(kind, legacy path, platform path) for the profile and home trees."""
    fs = run.inv.zone(wu.user.zone).file_server
    sam = run.account(wu)
    return [
        ("profile", wu.user.profile_path, f"{fs.profile_root}/{sam}"),
        ("home", wu.user.home_path, f"{fs.home_root}/{sam}"),
    ]


def stage_files(run: WaveRun, wu: WaveUser, dn: str) -> int:
    """Copy profile and home (pre-seed, or the final delta at cutover); return the files moved."""
    zone_fs = run.inv.zone(wu.user.zone).file_server
    source, target = run.c.legacy_files(wu.muni), run.c.zone_files(wu.user.zone)
    owner = _owner(run, dn)
    moved = 0
    with run.gate.hold(run.systems(wu, "legacy-fs", "zone-fs")):
        for kind, src_root, dst_root in _trees(run, wu):
            target_id = f"{zone_fs.name}:{dst_root}"
            existed = target.exists(dst_root)
            change = _record(
                run,
                wu,
                "files",
                f"sftp:{zone_fs.host}:{zone_fs.port}",
                "copy-tree",
                target_id,
                {"server": zone_fs.name, "root": dst_root, "existed_before": existed, "kind": kind},
            )
            report = copy_tree(source, src_root, target, dst_root, owner)
            run.ledger.confirm(change)
            moved += report.copied
            if report.failed:  # in the user's history too: the helpdesk sees what was left behind, by name
                listed = "; ".join(f"{p}: {why}" for p, why in sorted(report.failed.items())[:5])
                more = f" (and {len(report.failed) - 5} more)" if len(report.failed) > 5 else ""
                set_state(run, wu, "running", "files", f"{kind}: {len(report.failed)} not copied: {listed}{more}")
            if report.replaced:
                replaced = ", ".join(report.replaced[:5])
                set_state(run, wu, "running", "files", f"{kind}: platform-side links replaced by folders: {replaced}")
    return moved


def _owner(run: WaveRun, dn: str) -> tuple[int, int]:
    entry = run.c.platform().read(dn, ["objectSid"])
    sid = (entry.get("objectSid") if entry else ()) or ("",)
    rid = _rid(sid[0])
    return ID_BASE + rid, ID_BASE + DOMAIN_USERS_RID


def _rid(sid: str) -> int:
    raw = base64.b64decode(sid.removeprefix("base64:")) if sid.startswith("base64:") else b""
    if len(raw) < 8:
        raise FatalError("platform account without an objectSid")
    return int.from_bytes(raw[-4:], "little")


def prepare(run: WaveRun, wu: WaveUser) -> None:
    """Everything before the approval gate: plan, account, entitlements, pre-seed copy."""
    set_state(run, wu, "running", "plan", "reading the legacy account and groups")
    plan = plan_user(run, wu)
    if run.ledger.snapshot(wu.key) is None:  # the proof a rollback is checked against: before any write
        with run.gate.hold(run.systems(wu, "ad", "devices", "broker", "zone-fs")):
            run.ledger.save_snapshot(wu.key, run.wave.id, take(run, wu, plan.legacy_state()))
    if plan.unmapped:
        set_state(run, wu, "running", "plan", UNMAPPED + ", ".join(plan.unmapped))
    set_state(run, wu, "running", "account", f"platform account {run.account(wu)}", account=run.account(wu))
    dn = stage_account(run, wu, plan)
    set_state(run, wu, "running", "entitle", f"{len(plan.apps)} application group(s)")
    stage_entitlements(run, wu, plan, dn)
    if run.wave.spec.options.preseed:
        set_state(run, wu, "running", "preseed", "copying profile and home (pre-seed)")
        stage_files(run, wu, dn)
    set_state(run, wu, "running", "prepared", "ready for cutover")


# --- cutover ------------------------------------------------------------------------------------


def _platform_dn(run: WaveRun, wu: WaveUser) -> str:
    d = run.inv.platform.directory
    found = list(
        run.c.platform().search(
            d.users_dn, equality_filter("employeeNumber", f"{wu.muni}:{wu.user.legacy_id}"), ["1.1"]
        )
    )
    if len(found) != 1:
        raise FatalError(f"{wu.key}: expected one platform account, found {len(found)}; run prepare again")
    return found[0].dn


def device_settings(run: WaveRun, wu: WaveUser) -> dict[str, str]:
    """What the user's thin client should say after cutover."""
    zone = run.inv.zone(wu.user.zone)
    return {
        "rdp_server": run.inv.platform.broker.host,
        "rdp_collection": zone.terminal_farm.collection,
        "rdp_domain": run.domain,
        "user": run.account(wu),
    }


def stage_cutover(run: WaveRun, wu: WaveUser) -> None:
    """Point the device at the zone's farm, let the broker know the user, log off the legacy session."""
    broker = run.c.broker()
    if wu.user.device:
        devices = run.c.devices()
        with run.gate.hold(run.systems(wu, "devices")):
            before = devices.read(wu.user.device)
            if before is None:
                raise InvalidInputError(f"device {wu.user.device}: no config on the config host")
            wanted = device_settings(run, wu)
            if any(settings(before).get(k) != v for k, v in wanted.items()):
                change = _record(
                    run,
                    wu,
                    "cutover",
                    "devices",
                    "device-config",
                    wu.user.device,
                    {"device": wu.user.device, "before": before, "previous": devices.backup(wu.user.device)},
                )
                written = devices.update(wu.user.device, wanted)
                run.ledger.confirm(change, {"after": written.after})
    collection = run.inv.zone(wu.user.zone).terminal_farm.collection
    name = f"{run.domain}\\{run.account(wu)}"
    muni = run.inv.municipalities[wu.muni]
    with run.gate.hold(run.systems(wu, "broker")):
        if name.lower() not in (u.lower() for u in broker.collection_users(collection)):
            change = _record(
                run,
                wu,
                "cutover",
                "broker",
                "broker-add",
                f"{collection}:{name}",
                {"collection": collection, "user": name},
            )
            broker.add_user(collection, name)
            run.ledger.confirm(change)
        ended = broker.log_off(f"{netbios_domain(muni)}\\{wu.user.legacy_id}", muni.legacy.terminal_server.name)
    if ended:
        set_state(run, wu, "running", "cutover", f"logged off {len(ended)} legacy session(s)")


def stage_verify(run: WaveRun, wu: WaveUser, dn: str) -> None:
    """Check the result in the systems themselves: bind, groups, files, device, broker."""
    problems = []
    ad = run.c.platform()
    with run.gate.hold(run.systems(wu, "ad")):
        password = run.credentials.get(wu.key)
        if password is None or not ad.check_password(run.upn(wu), password):
            problems.append("the initial password does not bind")
        have = {g.lower() for g in ad.groups_of(dn)}
        planned = {ch.target.lower() for ch in run.ledger.changes(wu.key, ("entitle",)) if ch.kind == "add-member"}
        if planned - have:
            problems.append(f"missing groups: {sorted(planned - have)}")
    source, target = run.c.legacy_files(wu.muni), run.c.zone_files(wu.user.zone)
    with run.gate.hold(run.systems(wu, "legacy-fs", "zone-fs")):
        for kind, src_root, dst_root in _trees(run, wu):
            check = verify_tree(source, src_root, target, dst_root)
            if not check.ok:
                problems.append(f"{kind}: {len(check.missing)} missing, {len(check.different)} different")
    if wu.user.device:
        with run.gate.hold(run.systems(wu, "devices")):
            now = settings(run.c.devices().read(wu.user.device) or "")
            if any(now.get(k) != v for k, v in device_settings(run, wu).items()):
                problems.append(f"device {wu.user.device} config is not as planned")
    collection = run.inv.zone(wu.user.zone).terminal_farm.collection
    with run.gate.hold(run.systems(wu, "broker")):
        if f"{run.domain}\\{run.account(wu)}".lower() not in (
            u.lower() for u in run.c.broker().collection_users(collection)
        ):
            problems.append(f"the broker does not list the user on {collection}")
    if problems:
        raise ConflictError("verify failed: " + "; ".join(problems))


def stage_retire(run: WaveRun, wu: WaveUser) -> None:
    """Disable (never delete) the legacy account."""
    legacy = run.c.legacy(wu.muni)
    with run.gate.hold(run.systems(wu, "legacy")):
        entry = legacy.find_user(wu.user.legacy_id)
        if entry is None:
            raise InvalidInputError(f"the legacy account {wu.user.legacy_id} is gone")
        if legacy.config.kind == "ad":
            uac = int((entry.get("userAccountControl") or ("512",))[0])
            wanted = {"userAccountControl": [str(uac | 2)]}
        else:
            wanted = {"shadowExpire": ["1"]}
        apply_modify(run, wu, "retire", f"ldap:legacy:{wu.muni}", legacy, entry.dn, wanted, kind="disable-legacy")


def cutover(run: WaveRun, wu: WaveUser) -> None:
    """Everything after the approval gate: final delta, cutover, verify, retire."""
    dn = _platform_dn(run, wu)
    set_state(run, wu, "running", "files", "final delta of profile and home")
    stage_files(run, wu, dn)
    set_state(run, wu, "running", "cutover", "device, broker, legacy session")
    stage_cutover(run, wu)
    set_state(run, wu, "migrated", "verify", "moved; verifying")
    stage_verify(run, wu, dn)
    set_state(run, wu, "running", "retire", "verified; disabling the legacy account")
    stage_retire(run, wu)
    set_state(run, wu, "verified", "done", "migrated and verified; legacy account disabled")


# --- failure and undo ---------------------------------------------------------------------------


def fail_user(run: WaveRun, wu: WaveUser, error: Exception) -> None:
    """A user who cannot be moved: undo what was done (newest first), then record why."""
    reason = f"{type(error).__name__}: {error}"
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
    for ch in run.ledger.changes(wu.key, stages):
        try:
            _undo_one(run, wu, ch.kind, ch.system, ch.undo, purge)
        except IkommError as exc:
            problems.append(f"{ch.kind} {ch.target}: {exc}")
            continue
        run.ledger.mark_undone(ch.id)
    return problems


def _ldap_for(run: WaveRun, system: str) -> DirectoryConnector:
    if system == "ldap:platform":
        return run.c.platform()
    return run.c.legacy(system.removeprefix("ldap:legacy:"))


def _undo_one(run: WaveRun, wu: WaveUser, kind: str, system: str, undo: dict[str, Any], purge: bool) -> None:
    if kind in ("modify", "enable-account", "disable-legacy"):
        _ldap_for(run, system).modify(undo["dn"], undo["before"])
    elif kind == "create-account":
        ad = run.c.platform()
        if ad.read(undo["dn"], ["1.1"]) is None:
            return
        if purge:
            ad.delete(undo["dn"])
            return
        current = ad.read(undo["dn"], ["userAccountControl"])
        uac = int((current.get("userAccountControl") if current else ("512",))[0] or 512)
        ad.modify(undo["dn"], {"userAccountControl": [str(uac | 2)]})
        ad.move(undo["dn"], f"{PARKED_OU},{run.inv.platform.directory.base_dn}")
    elif kind == "unpark":
        ad = run.c.platform()
        if undo.get("moved_to") and ad.read(undo["moved_to"], ["1.1"]) is not None:
            ad.move(undo["moved_to"], f"{PARKED_OU},{run.inv.platform.directory.base_dn}")
    elif kind == "add-member":
        if run.c.platform().remove_member(undo["group"], undo["member"]):
            run.seats.release(undo["app"])
    elif kind == "copy-tree":
        zone_fs = next(z.file_server for z in run.inv.platform.zones if z.file_server.name == undo["server"])
        server: FileServer = run.c.sftp(zone_fs.host, zone_fs.port)
        if server.exists(undo["root"]):
            root = undo["root"]
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            server.rename(root, f"{os.path.dirname(root)}/.quarantine/{run.wave.id}/{os.path.basename(root)}-{stamp}")
    elif kind == "device-config":
        run.c.devices().restore(undo["device"], undo["before"], undo.get("previous"))
    elif kind == "broker-add":
        run.c.broker().remove_user(undo["collection"], undo["user"])
    # set-password: nothing to restore (the account is disabled or removed with create-account)


# --- one user, start to end ---------------------------------------------------------------------


PHASES = ("prepare", "cutover", "migrate")


def run_user(run: WaveRun, wu: WaveUser, phase: str, final_attempt: bool = True) -> str:
    """Move one user through a phase, undo and record the failure when it is final.

    Phases: 'prepare' (up to the approval gate), 'cutover' (after it), or 'migrate' (both, for a
    wave whose gate is already open: no approval required, or given). A TransientError on a
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
    if phase != "cutover" and (row is None or row.state == "pending") and not run.budget.start():
        return "not started"  # the failure budget has tripped: leave the user pending
    try:
        if phase != "cutover" and not prepared:
            prepare(run, wu)
            if phase == "prepare":
                return "prepared"
        cutover(run, wu)
        return "verified"
    except TransientError as exc:
        if not final_attempt:
            raise
        fail_user(run, wu, TransientError(f"gave up after retries: {exc}"))
        raise
    except IkommError as exc:
        fail_user(run, wu, exc)
        raise
    except Exception as exc:  # a bug must not leave a user half made
        fail_user(run, wu, FatalError(f"internal error: {type(exc).__name__}: {exc}"))
        raise

"""The stages of moving one user: each reads what is, plans the changes it wants, and applies them.

    read_user         the legacy entry, its groups, the applications they grant (held if one is not ready)
    plan_account      create or adopt the platform account, its initial password, enable it
    plan_entitlements the application groups the user lacks
    plan_files        the profile and home folders to copy (pre-seed, then the final delta)
    plan_device       the thin client's config lines
    plan_broker       the zone's collection on the broker
    plan_retire       the legacy account disabled
    verify            bind, groups, files, device, broker: checked in the systems themselves

A `plan_*` function only reads; `stage_*` holds the systems' concurrency slots, plans and makes each
change (`ikomm.changes.make`), so every stage writes only where what is and what should be differ,
and runs again safely after a crash. The dry run (`ikomm.dryrun`) calls the same planners.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from ikomm.changes import (
    PARKED_OU,
    AddMember,
    BrokerAdd,
    Change,
    CopyTree,
    CreateAccount,
    DeviceConfig,
    DisableLegacy,
    EnableAccount,
    ModifyEntry,
    SetPassword,
    Unpark,
    make,
    parked_ou,
)
from ikomm.connectors.devices import settings
from ikomm.connectors.directory import (
    EntryState,
    Snapshot,
    child_dn,
    equality_filter,
    moved_dn,
    parent_dn,
    plan_modifications,
    same_rdn,
)
from ikomm.connectors.files import CopyReport, pending_copy, verify_tree
from ikomm.errors import ConflictError, FatalError, HeldError, InvalidInputError
from ikomm.inventory.models import Application
from ikomm.ledger import RECORDED
from ikomm.naming import netbios_domain
from ikomm.wave_run import WaveRun, set_state
from ikomm.waves import WaveUser

ID_BASE = 100000  # platform uid/gid = ID_BASE + RID, as Samba's idmap_rid maps them
DOMAIN_USERS_RID = 513


@dataclass(frozen=True)
class UserPlan:
    """What the legacy side holds for the user, read before anything is written: entry, apps, unmapped groups."""

    legacy: Snapshot
    legacy_groups: tuple[str, ...]
    apps: tuple[Application, ...]
    unmapped: tuple[str, ...]
    legacy_group_dns: tuple[str, ...] = ()

    def legacy_state(self) -> EntryState:
        """The legacy entry and its groups as read for the plan (the snapshot reuses it)."""
        return EntryState(self.legacy, self.legacy_group_dns)


@dataclass(frozen=True)
class AccountPlan:
    """The platform account's DN (as it will be) and the changes that make it so."""

    dn: str
    exists: bool
    changes: tuple[Change, ...]


def read_user(run: WaveRun, wu: WaveUser) -> UserPlan:
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
    return UserPlan(legacy, groups, apps, tuple(g for g in groups if g not in mapped), group_dns)


# --- account ------------------------------------------------------------------------------------


def account_attributes(run: WaveRun, wu: WaveUser, up: UserPlan) -> dict[str, list[str]]:
    """The platform account's attributes as they should be."""
    attr_map = run.inv.municipalities[wu.muni].legacy.directory.attribute_map
    return {
        "givenName": [wu.user.given_name],
        "sn": [wu.user.surname],
        "displayName": [f"{wu.user.given_name} {wu.user.surname}"],
        "mail": list(up.legacy.get(attr_map.get("email", "mail"))) or [wu.user.email],
        "department": [wu.user.department],
        "title": [wu.user.title] if wu.user.title else [],
        "userPrincipalName": [run.upn(wu)],
    }


def plan_account(run: WaveRun, wu: WaveUser, up: UserPlan) -> AccountPlan:
    """Create the platform account, or adopt the one linked to this user (bringing it back if parked)."""
    d = run.inv.platform.directory
    muni = run.inv.municipalities[wu.muni]
    sam, link = run.account(wu), f"{wu.muni}:{wu.user.legacy_id}"
    wanted = account_attributes(run, wu, up)
    ad = run.c.platform()
    found = list(
        ad.search(d.base_dn, equality_filter("employeeNumber", link), ["sAMAccountName", "userAccountControl", *wanted])
    )
    if len(found) > 1:
        raise ConflictError(f"{len(found)} platform accounts carry employeeNumber {link}")
    changes: list[Change] = []
    if not found:
        taken = list(ad.search(d.base_dn, equality_filter("sAMAccountName", sam), ["employeeNumber"]))
        if taken:
            raise ConflictError(f"the account name {sam} is taken by {taken[0].dn}, which is not this user's")
        dn = child_dn("CN", sam, muni.target_ou)
        attrs = {k: v for k, v in wanted.items() if v}
        changes.append(
            CreateAccount(
                "account",
                dn,
                link,
                {**attrs, "sAMAccountName": sam, "employeeNumber": link, "userAccountControl": "514"},
            )
        )
        enable = EnableAccount("account", "ldap:platform", dn)  # read just before: as the server made it
    else:
        entry = found[0]
        dn = entry.dn
        if entry.get("sAMAccountName") != (sam,):
            raise ConflictError(f"{dn} carries employeeNumber {link} but is named {entry.get('sAMAccountName')}")
        refused = not_ours(run, wu, dn)
        if refused:
            raise ConflictError(refused)
        if "," + PARKED_OU.lower() + "," in dn.lower():  # set aside by an earlier rollback: bring it back
            changes.append(Unpark("account", dn, muni.target_ou))
            dn = moved_dn(dn, muni.target_ou)
        differ = plan_modifications(entry, wanted)
        if differ:
            before = {k: list(entry.get(k)) for k in differ}
            changes.append(ModifyEntry("account", "ldap:platform", dn, before, {k: wanted[k] for k in differ}))
        uac = int((entry.get("userAccountControl") or ("512",))[0])
        enable = EnableAccount(
            "account", "ldap:platform", dn, {"userAccountControl": [str(uac)]}, {"userAccountControl": [str(uac & ~2)]}
        )
        if not uac & 2:
            enable = None
    status = run.ledger.change_status_of(wu.key, "account", "set-password", dn)
    if run.credentials.get(wu.key) is None or status != "done":
        changes.append(SetPassword("account", dn, wu.key, sam, run.upn(wu)))
    if enable is not None:
        changes.append(enable)
    return AccountPlan(dn, bool(found), tuple(changes))


def not_ours(run: WaveRun, wu: WaveUser, dn: str) -> str | None:
    """Why the platform account at dn, which carries this user's link, may not be adopted (None: it may).

    A link (employeeNumber) is only a claim: anyone who may create accounts (a municipality's delegate, in its
    own OU) can write any value. So an account is adopted only where no one else can put it, directly in the
    user's own municipality's OU or in the OU where our rollbacks park accounts, and only if a wave of ours
    recorded creating it (in this ledger, under this user, by any attempt). Anything else is a conflict for a
    person to look at; adopting it would hand this user's groups, files and password to whoever made it.
    """
    home = run.inv.municipalities[wu.muni].target_ou
    if parent_dn(dn).lower() not in (home.lower(), parked_ou(run).lower()):
        return (
            f"{dn} carries this user's link (employeeNumber {wu.muni}:{wu.user.legacy_id}) but lies outside "
            f"{home}: not adopted; someone outside this municipality may have made it (ikomm audit isolation)"
        )
    made = run.ledger.changes(wu.key, ("account",), RECORDED)
    if not any(c.kind == "create-account" and same_rdn(c.target, dn) for c in made):
        return (
            f"{dn} carries this user's link but no wave of ours created it (the ledger {run.ledger.shown} has no "
            "record): not adopted; check who made it, then move or delete it and run the wave again"
        )
    return None


def stage_account(run: WaveRun, wu: WaveUser, up: UserPlan) -> str:
    """Create (or adopt) the platform account, set its initial password once, enable it; return its DN."""
    with run.gate.hold(run.systems(wu, "ad")):
        planned = plan_account(run, wu, up)
        for change in planned.changes:
            make(run, wu, change)
    return planned.dn


# --- entitlements -------------------------------------------------------------------------------


def plan_entitlements(run: WaveRun, wu: WaveUser, up: UserPlan, dn: str) -> list[AddMember]:
    """The application groups (one per planned application) the account is not a member of yet."""
    groups_dn = run.inv.platform.directory.groups_dn
    wanted = {child_dn("CN", a.groups[wu.muni], groups_dn): a for a in up.apps if wu.muni in a.groups}
    have = {g.lower() for g in run.c.platform().groups_of(dn)}
    return [
        AddMember("entitle", group, dn, app.id, app)
        for group, app in sorted(wanted.items())
        if group.lower() not in have
    ]


def stage_entitlements(run: WaveRun, wu: WaveUser, up: UserPlan, dn: str) -> None:
    """Add the user to each planned application's group (seat limits respected)."""
    with run.gate.hold(run.systems(wu, "ad")):
        for change in plan_entitlements(run, wu, up, dn):
            make(run, wu, change)


# --- files --------------------------------------------------------------------------------------


def trees(run: WaveRun, wu: WaveUser) -> list[tuple[str, str, str]]:
    """(kind, legacy path, platform path) for the profile and home trees."""
    fs = run.inv.zone(wu.user.zone).file_server
    sam = run.account(wu)
    return [
        ("profile", wu.user.profile_path, f"{fs.profile_root}/{sam}"),
        ("home", wu.user.home_path, f"{fs.home_root}/{sam}"),
    ]


def plan_files(run: WaveRun, wu: WaveUser, owner: tuple[int, int] | None, count: bool = False) -> list[CopyTree]:
    """The profile and home copies; count: also how many files and bytes are still to copy (the dry run)."""
    zone_fs = run.inv.zone(wu.user.zone).file_server
    source, target = run.c.legacy_files(wu.muni), run.c.zone_files(wu.user.zone)
    return [
        CopyTree(
            "files",
            zone_fs.name,
            zone_fs.host,
            zone_fs.port,
            dst_root,
            tree,
            target.exists(dst_root),
            wu.muni,
            src_root,
            owner,
            pending_copy(source, src_root, target, dst_root) if count else None,
        )
        for tree, src_root, dst_root in trees(run, wu)
    ]


def stage_files(run: WaveRun, wu: WaveUser, dn: str) -> int:
    """Copy profile and home (pre-seed, or the final delta at cutover); return the files moved."""
    owner = owner_of(run, dn)
    moved = 0
    with run.gate.hold(run.systems(wu, "legacy-fs", "zone-fs")):
        for change in plan_files(run, wu, owner):
            report: CopyReport = make(run, wu, change)
            moved += report.copied
            if report.failed:  # in the user's history too: the helpdesk sees what was left behind, by name
                listed = "; ".join(f"{p}: {why}" for p, why in sorted(report.failed.items())[:5])
                more = f" (and {len(report.failed) - 5} more)" if len(report.failed) > 5 else ""
                set_state(
                    run, wu, "running", "files", f"{change.tree}: {len(report.failed)} not copied: {listed}{more}"
                )
            if report.replaced:
                replaced = ", ".join(report.replaced[:5])
                set_state(
                    run, wu, "running", "files", f"{change.tree}: platform-side links replaced by folders: {replaced}"
                )
    return moved


def owner_of(run: WaveRun, dn: str) -> tuple[int, int]:
    """The platform account's uid and gid on the file servers (from its objectSid, as idmap_rid maps it)."""
    entry = run.c.platform().read(dn, ["objectSid"])
    sid = (entry.get("objectSid") if entry else ()) or ("",)
    rid = _rid(sid[0])
    return ID_BASE + rid, ID_BASE + DOMAIN_USERS_RID


def _rid(sid: str) -> int:
    raw = base64.b64decode(sid.removeprefix("base64:")) if sid.startswith("base64:") else b""
    if len(raw) < 8:
        raise FatalError("platform account without an objectSid")
    return int.from_bytes(raw[-4:], "little")


# --- cutover ------------------------------------------------------------------------------------


def platform_dn(run: WaveRun, wu: WaveUser) -> str:
    """The DN of the user's one platform account (made by prepare)."""
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


def plan_device(run: WaveRun, wu: WaveUser) -> DeviceConfig | None:
    """The thin client's new lines, if its config does not say them yet (None: no device, or nothing to change)."""
    if not wu.user.device:
        return None
    devices = run.c.devices()
    before = devices.read(wu.user.device)
    if before is None:
        raise InvalidInputError(f"device {wu.user.device}: no config on the config host")
    wanted = device_settings(run, wu)
    if all(settings(before).get(k) == v for k, v in wanted.items()):
        return None
    return DeviceConfig("cutover", wu.user.device, before, devices.backup(wu.user.device), wanted)


def plan_broker(run: WaveRun, wu: WaveUser, cached: bool = False) -> BrokerAdd | None:
    """The user on the zone's collection, unless the broker lists them already.

    cached: as the broker listed the collection when first asked in this run (the dry run: one read a
    collection, not one a user); otherwise read now, as the cutover must.
    """
    collection = run.inv.zone(wu.user.zone).terminal_farm.collection
    name = run.broker_name(wu)
    if cached:
        listed = run.broker_lists(wu)
    else:
        listed = name.lower() in (u.lower() for u in run.c.broker().collection_users(collection))
    return None if listed else BrokerAdd("cutover", collection, name)


def legacy_session_user(run: WaveRun, wu: WaveUser) -> tuple[str, str]:
    """(DOMAIN\\legacy_id, legacy terminal server): whose sessions the cutover logs off, and where."""
    muni = run.inv.municipalities[wu.muni]
    return f"{netbios_domain(muni)}\\{wu.user.legacy_id}", muni.legacy.terminal_server.name


def stage_cutover(run: WaveRun, wu: WaveUser) -> None:
    """Point the device at the zone's farm, let the broker know the user, log off the legacy session."""
    if wu.user.device:
        with run.gate.hold(run.systems(wu, "devices")):
            device = plan_device(run, wu)
            if device is not None:
                make(run, wu, device)
    with run.gate.hold(run.systems(wu, "broker")):
        broker = plan_broker(run, wu)
        if broker is not None:
            make(run, wu, broker)
        ended = run.c.broker().log_off(*legacy_session_user(run, wu))
    if ended:
        set_state(run, wu, "running", "cutover", f"logged off {len(ended)} legacy session(s)")


# --- verify and retire --------------------------------------------------------------------------


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
        for kind, src_root, dst_root in trees(run, wu):
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
        if run.broker_name(wu).lower() not in (u.lower() for u in run.c.broker().collection_users(collection)):
            problems.append(f"the broker does not list the user on {collection}")
    if problems:
        raise ConflictError("verify failed: " + "; ".join(problems))


def plan_retire(run: WaveRun, wu: WaveUser, entry: Snapshot | None = None) -> DisableLegacy | None:
    """The legacy account disabled (never deleted), unless it is already (entry: as just read, if it was)."""
    legacy = run.c.legacy(wu.muni)
    entry = entry or legacy.find_user(wu.user.legacy_id)
    if entry is None:
        raise InvalidInputError(f"the legacy account {wu.user.legacy_id} is gone")
    if legacy.config.kind == "ad":
        uac = int((entry.get("userAccountControl") or ("512",))[0])
        wanted = {"userAccountControl": [str(uac | 2)]}
    else:
        wanted = {"shadowExpire": ["1"]}
    differ = plan_modifications(entry, wanted)
    if not differ:
        return None
    before = {k: list(entry.get(k)) for k in differ}
    return DisableLegacy("retire", f"ldap:legacy:{wu.muni}", entry.dn, before, {k: wanted[k] for k in differ})


def stage_retire(run: WaveRun, wu: WaveUser) -> None:
    """Disable (never delete) the legacy account."""
    with run.gate.hold(run.systems(wu, "legacy")):
        retire = plan_retire(run, wu)
        if retire is not None:
            make(run, wu, retire)

"""Proof that a rollback restored the world: a snapshot of everything a wave will touch, taken before it
writes anything, and a comparison of the present state with it.

Per user: the legacy entry (every attribute, and its groups), the platform account in the
municipality's OU (none, before a first migration) with its groups, the thin client's config, whether
the broker lists the user on the zone's collection, and whether the target folders exist.
Operational attributes that the servers change on their own (modifyTimestamp, uSNChanged,
whenChanged...) are listed and left out of the comparison. Legacy terminal-server sessions are not
compared: a session logged off at cutover cannot be brought back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ikomm.connectors.directory import EntryState, equality_filter

if TYPE_CHECKING:
    from ikomm.wave_run import WaveRun
    from ikomm.waves import WaveUser

OPERATIONAL = frozenset(
    a.lower()
    for a in (
        "modifyTimestamp",
        "createTimestamp",
        "whenChanged",
        "whenCreated",
        "uSNChanged",
        "uSNCreated",
        "entryCSN",
        "modifiersName",
        "creatorsName",
        "entryUUID",
        "structuralObjectClass",
        "subschemaSubentry",
        "hasSubordinates",
        "entryDN",
        "dSCorePropagationData",
        "lastLogon",
        "lastLogonTimestamp",
        "logonCount",
        "badPwdCount",
        "badPasswordTime",
        "replPropertyMetaData",
        "msDS-RevealedDSAs",
        "objectGUID",
    )
)


def _entry(state: Any) -> dict[str, Any] | None:
    if state is None:
        return None
    data: dict[str, Any] = state.as_dict()
    data["attributes"] = {k: v for k, v in data["attributes"].items() if k not in OPERATIONAL}
    return data


def take(run: WaveRun, wu: WaveUser, legacy_state: EntryState | None = None) -> dict[str, Any]:
    """Everything of this user that the wave may change, as it is now (legacy_state: as just read, if it was)."""
    if legacy_state is None:
        legacy_dir = run.c.legacy(wu.muni)
        legacy = legacy_dir.find_user(wu.user.legacy_id)
        legacy_state = legacy_dir.state(legacy.dn) if legacy else None
    ad = run.c.platform()
    link = f"{wu.muni}:{wu.user.legacy_id}"
    target_ou = run.inv.municipalities[wu.muni].target_ou
    platform = [ad.state(s.dn) for s in ad.search(target_ou, equality_filter("employeeNumber", link), ["1.1"])]
    zone = run.inv.zone(wu.user.zone)
    files = run.c.zone_files(wu.user.zone)
    sam = run.account(wu)
    folders = [f"{zone.file_server.profile_root}/{sam}", f"{zone.file_server.home_root}/{sam}"]
    return {
        "legacy": _entry(legacy_state),
        "platform": sorted((_entry(p) for p in platform if p is not None), key=lambda e: str(e and e["dn"])),
        "device": run.c.devices().read(wu.user.device) if wu.user.device else None,
        "device_backup": run.c.devices().backup(wu.user.device) if wu.user.device else None,
        "broker": run.broker_lists(wu),
        "folders": {f: files.exists(f) for f in folders},
    }


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Every difference between two snapshots of one user, in words."""
    out: list[str] = []
    for part in ("device", "device_backup", "broker", "folders"):
        if before.get(part) != now.get(part):
            out.append(f"{part}: was {before.get(part)!r}, is {now.get(part)!r}")
    out += _entry_diff("legacy", before.get("legacy"), now.get("legacy"))
    b_platform = {e["dn"]: e for e in before.get("platform", [])}
    n_platform = {e["dn"]: e for e in now.get("platform", [])}
    for dn in sorted(set(b_platform) | set(n_platform)):
        out += _entry_diff(f"platform {dn}", b_platform.get(dn), n_platform.get(dn))
    return out


def _entry_diff(what: str, before: dict[str, Any] | None, now: dict[str, Any] | None) -> list[str]:
    if before is None or now is None:
        return [] if before == now else [f"{what}: {'created' if before is None else 'gone'}"]
    out = []
    b_attrs, n_attrs = before["attributes"], now["attributes"]
    for name in sorted(set(b_attrs) | set(n_attrs)):
        if b_attrs.get(name) != n_attrs.get(name):
            out.append(f"{what}: {name} was {b_attrs.get(name)!r}, is {n_attrs.get(name)!r}")
    if sorted(before["groups"]) != sorted(now["groups"]):
        out.append(f"{what}: groups were {sorted(before['groups'])}, are {sorted(now['groups'])}")
    return out

"""Checks across inventory files: ids that must exist, be unique, or agree between files."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath
from typing import TypeVar

from ikomm.errors import Problem
from ikomm.inventory.load import CsvRows, Source
from ikomm.inventory.models import (
    ApplicationsFile,
    Device,
    MunicipalitiesFile,
    PlatformFile,
    ServersFile,
    User,
)

CORE_ZONE = "core"
R = TypeVar("R", User, Device)


def _known(values: Iterable[object]) -> str:
    return ", ".join(sorted(str(v) for v in values))


def _nested_folders(folders: dict[tuple[str, int, PurePosixPath], Problem], problems: list[Problem]) -> None:
    """A user's folder inside another user's folder (on the same file server) is a problem where it is named."""
    for (host, port, path), here in folders.items():
        outer = next((p for p in path.parents if (host, port, p) in folders), None)
        if outer is not None:
            there = folders[(host, port, outer)]
            problems.append(
                Problem(here.file, here.row, here.field, f"inside {outer}, the folder named at {there.where()}")
            )


def _readable(
    folder: str, files: dict[str, CsvRows[R] | None], known_munis: set[str], problems: list[Problem]
) -> Iterator[tuple[str, str, CsvRows[R]]]:
    """Yield (municipality, file name, rows) for each readable CSV of a known municipality; report unknown ones."""
    for muni, found in files.items():
        rel = f"{folder}/{muni}.csv"
        if muni not in known_munis:
            problems.append(Problem(rel, None, "", f"unknown municipality '{muni}' (known: {_known(known_munis)})"))
        elif found is not None:
            yield muni, rel, found


def check_links(
    platform: tuple[PlatformFile, Source],
    munis: tuple[MunicipalitiesFile, Source],
    apps: tuple[ApplicationsFile, Source],
    servers: tuple[ServersFile, Source],
    users: dict[str, CsvRows[User] | None],
    devices: dict[str, CsvRows[Device] | None],
    problems: list[Problem],
) -> None:
    """Add a problem for every broken link between the inventory files."""
    plat, psrc = platform
    mfile, msrc = munis
    afile, asrc = apps
    sfile, ssrc = servers

    zones = {z.id for z in plat.zones}
    for i, zone in enumerate(plat.zones):
        if [z.id for z in plat.zones].index(zone.id) != i:
            problems.append(psrc.problem(("zones", i, "id"), f"duplicate zone id '{zone.id}'"))

    muni_ids: list[str] = []
    base = plat.directory.base_dn.lower()
    for i, m in enumerate(mfile.municipalities):
        if m.id in muni_ids:
            problems.append(msrc.problem(("municipalities", i, "id"), f"duplicate municipality id '{m.id}'"))
        muni_ids.append(m.id)
        if not m.target_ou.lower().endswith(base):
            problems.append(
                msrc.problem(("municipalities", i, "target_ou"), f"must lie under the platform base DN {base}")
            )
    total = sum(m.ownership_pct for m in mfile.municipalities)
    if abs(total - 100) > 0.01:
        problems.append(msrc.problem(("municipalities",), f"ownership shares add up to {total:g} %, not 100 %"))
    known_munis = set(muni_ids)

    app_ids: set[str] = set()
    for i, app in enumerate(afile.applications):
        if app.id in app_ids:
            problems.append(asrc.problem(("applications", i, "id"), f"duplicate application id '{app.id}'"))
        app_ids.add(app.id)
        if app.zone not in zones:
            problems.append(
                asrc.problem(("applications", i, "zone"), f"unknown zone '{app.zone}' (known: {_known(zones)})")
            )
        for key in ("groups", "granted_by"):
            for muni in getattr(app, key):
                if muni not in known_munis:
                    problems.append(
                        asrc.problem(
                            ("applications", i, key, muni),
                            f"unknown municipality '{muni}' (known: {_known(known_munis)})",
                        )
                    )

    names: set[str] = set()
    for i, server in enumerate(sfile.servers):
        if server.name in names:
            problems.append(ssrc.problem(("servers", i, "name"), f"duplicate server name '{server.name}'"))
        names.add(server.name)
        if server.zone not in zones and server.zone != CORE_ZONE:
            problems.append(
                ssrc.problem(
                    ("servers", i, "zone"), f"unknown zone '{server.zone}' (known: {_known(zones | {CORE_ZONE})})"
                )
            )

    by_muni = {m.id: m for m in mfile.municipalities}
    folders: dict[tuple[str, int, PurePosixPath], Problem] = {}  # (host, port, path) -> where first named
    seen_ids: dict[str, str] = {}
    seen_emails: dict[str, str] = {}
    for muni, rel, found in _readable("users", users, known_munis, problems):
        fs = by_muni[muni].legacy.file_server
        device_file = devices.get(muni, CsvRows([], set()))  # None: unreadable, so not checked against
        for line, user in found.rows:
            key = user.legacy_id.lower()
            if key in seen_ids:
                problems.append(Problem(rel, line, "legacy_id", f"duplicate legacy_id (also at {seen_ids[key]})"))
            else:
                seen_ids[key] = f"{rel}:{line}"
            email = user.email.lower()
            if email in seen_emails:
                other = seen_emails[email]
                where = "a user in two municipalities" if not other.startswith(rel) else "duplicate email"
                problems.append(Problem(rel, line, "email", f"{where}: same email as {other}"))
            else:
                seen_emails[email] = f"{rel}:{line}"
            if user.zone not in zones:
                problems.append(Problem(rel, line, "zone", f"unknown zone '{user.zone}' (known: {_known(zones)})"))
            for field, root in (("home_path", fs.home_root), ("profile_path", fs.profile_root)):
                path = PurePosixPath(getattr(user, field))
                if not path.is_relative_to(PurePosixPath(root)):
                    name = field.replace("_path", "_root")
                    problems.append(Problem(rel, line, field, f"must lie under the file server's {name} {root}"))
                elif path == PurePosixPath(root):
                    problems.append(Problem(rel, line, field, f"is the {root} itself, not a folder of one user"))
                else:
                    here = Problem(rel, line, field, "")
                    first = folders.setdefault((fs.host, fs.port, path), here)
                    if first is not here:
                        problems.append(Problem(rel, line, field, f"the same folder as {first.where()}"))
            if user.device is not None and device_file is not None and user.device not in device_file.keys:
                problems.append(
                    Problem(rel, line, "device", f"unknown device '{user.device}' (not in devices/{muni}.csv)")
                )

    _nested_folders(folders, problems)

    for muni, rel, dfound in _readable("devices", devices, known_munis, problems):
        user_file = users.get(muni, CsvRows([], set()))  # None: unreadable, so not checked against
        ids: dict[str, int] = {}
        macs: dict[str, int] = {}
        for line, dev in dfound.rows:
            if dev.device_id in ids:
                problems.append(
                    Problem(rel, line, "device_id", f"duplicate device_id (also at row {ids[dev.device_id]})")
                )
            ids.setdefault(dev.device_id, line)
            mac = dev.mac.lower()
            if mac in macs:
                problems.append(Problem(rel, line, "mac", f"duplicate MAC address (also at row {macs[mac]})"))
            macs.setdefault(mac, line)
            if dev.assigned_user is not None and user_file is not None and dev.assigned_user not in user_file.keys:
                problems.append(
                    Problem(rel, line, "assigned_user", f"unknown user '{dev.assigned_user}' (not in users/{muni}.csv)")
                )

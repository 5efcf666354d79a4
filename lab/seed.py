"""What the lab's servers hold before a migration: directory entries, file trees, device configs, broker state.

Everything here is derived from the inventory alone, deterministically, so that two labs built from
the same inventory hold the same data.
"""

from __future__ import annotations

import base64
import json
import os
import random
from collections.abc import Collection
from pathlib import Path, PurePosixPath
from typing import Any

from ldap3.utils.dn import escape_rdn

from ikomm.inventory import Inventory
from ikomm.inventory.models import Municipality, User
from ikomm.naming import netbios_domain

AD_GROUP_GLOBAL_SECURITY = "-2147483646"
UAC_NORMAL = 512
UAC_DISABLED = 2
UAC_PASSWD_NOTREQD = 32
POSIX_GID = 10000
# mtimes of seeded files spread over 2020-01-01 .. 2026-06-01
MTIME_FROM, MTIME_TO = 1577836800, 1780272000


def _cn_for(user: User, taken: set[str]) -> str:
    cn = f"{user.given_name} {user.surname}"
    if cn.lower() in taken:
        cn = f"{cn} {user.legacy_id}"
    taken.add(cn.lower())
    return cn


def _legacy_groups(rows: list[tuple[User, str]]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for user, dn in rows:
        for group in user.legacy_groups:
            groups.setdefault(group, []).append(dn)
    return groups


def ad_legacy_entries(inv: Inventory, muni: Municipality) -> list[dict[str, Any]]:
    """Entries of a legacy Active Directory: OUs, users (disabled where the inventory says), groups."""
    d = muni.legacy.directory
    entries: list[dict[str, Any]] = [
        {"dn": d.users_dn, "objectClass": "organizationalUnit"},
        {"dn": d.groups_dn, "objectClass": "organizationalUnit"},
    ]
    taken: set[str] = set()
    rows: list[tuple[User, str]] = []
    for user in inv.users.get(muni.id, []):
        dn = f"CN={escape_rdn(_cn_for(user, taken))},{d.users_dn}"
        rows.append((user, dn))
        uac = UAC_NORMAL | UAC_PASSWD_NOTREQD | (0 if user.enabled else UAC_DISABLED)
        entries.append(
            {
                "dn": dn,
                "objectClass": "user",
                "sAMAccountName": user.legacy_id,
                "userPrincipalName": f"{user.legacy_id}@{muni.upn_suffix}",
                "givenName": user.given_name,
                "sn": user.surname,
                "displayName": f"{user.given_name} {user.surname}",
                "mail": user.email,
                "department": user.department,
                "title": user.title,
                "homeDirectory": user.home_path,
                "profilePath": user.profile_path,
                "userAccountControl": str(uac),
            }
        )
    for group, members in sorted(_legacy_groups(rows).items()):
        entries.append(
            {
                "dn": f"CN={escape_rdn(group)},{d.groups_dn}",
                "objectClass": "group",
                "sAMAccountName": group,
                "groupType": AD_GROUP_GLOBAL_SECURITY,
                "member": members,
            }
        )
    return entries


def platform_entries(inv: Inventory, leave_out: Collection[str] = ()) -> list[dict[str, Any]]:
    """Entries of the platform AD as it stands before migration: OUs and the applications' groups.

    leave_out: municipalities not yet onboarded (tenant kits), of which the platform holds nothing.
    """
    d = inv.platform.directory
    entries: list[dict[str, Any]] = [
        {"dn": d.users_dn, "objectClass": "organizationalUnit"},
        {"dn": d.groups_dn, "objectClass": "organizationalUnit"},
        {
            "dn": f"OU=Deaktivert,{d.base_dn}",
            "objectClass": "organizationalUnit",
            "description": "Accounts set aside by a rollback",
        },
    ]
    for muni in inv.municipalities.values():
        if muni.id not in leave_out:
            entries.append({"dn": muni.target_ou, "objectClass": "organizationalUnit", "description": muni.name})
    for app in inv.applications.values():
        for muni_id, group in app.groups.items():
            if muni_id in leave_out:
                continue
            entries.append(
                {
                    "dn": f"CN={escape_rdn(group)},{d.groups_dn}",
                    "objectClass": "group",
                    "sAMAccountName": group,
                    "groupType": AD_GROUP_GLOBAL_SECURITY,
                    "description": f"{app.name} ({app.zone})",
                }
            )
    return entries


def _ldif_line(attr: str, value: str) -> str:
    safe = value.isascii() and value.isprintable() and not value.startswith((" ", ":", "<")) and value == value.strip()
    if safe:
        return f"{attr}: {value}"
    return f"{attr}:: {base64.b64encode(value.encode('utf-8')).decode('ascii')}"


def _ldif(entries: list[dict[str, Any]]) -> str:
    out = []
    for entry in entries:
        lines = [_ldif_line("dn", entry["dn"])]
        for attr, value in entry.items():
            if attr == "dn":
                continue
            for v in value if isinstance(value, list) else [value]:
                lines.append(_ldif_line(attr, str(v)))
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def openldap_ldif(inv: Inventory, muni: Municipality) -> str:
    """LDIF of a legacy OpenLDAP directory: posix users (shadowExpire=1 when disabled), groupOfNames groups."""
    d = muni.legacy.directory
    base_rdn = d.base_dn.split(",")[0].split("=")[1]
    entries: list[dict[str, Any]] = [
        {"dn": d.base_dn, "objectClass": ["dcObject", "organization"], "dc": base_rdn, "o": muni.name},
        {"dn": d.users_dn, "objectClass": "organizationalUnit", "ou": d.users_dn.split(",")[0].split("=")[1]},
        {"dn": d.groups_dn, "objectClass": "organizationalUnit", "ou": d.groups_dn.split(",")[0].split("=")[1]},
    ]
    rows: list[tuple[User, str]] = []
    for i, user in enumerate(inv.users.get(muni.id, [])):
        dn = f"uid={escape_rdn(user.legacy_id)},{d.users_dn}"
        rows.append((user, dn))
        entry: dict[str, Any] = {
            "dn": dn,
            "objectClass": ["inetOrgPerson", "posixAccount", "shadowAccount"],
            "uid": user.legacy_id,
            "cn": f"{user.given_name} {user.surname}",
            "givenName": user.given_name,
            "sn": user.surname,
            "mail": user.email,
            "ou": user.department,
            "title": user.title,
            "uidNumber": str(20000 + i),
            "gidNumber": str(POSIX_GID),
            "homeDirectory": user.home_path,
            "loginShell": "/bin/bash",
        }
        if not user.enabled:
            entry["shadowExpire"] = "1"
        entries.append(entry)
    for group, members in sorted(_legacy_groups(rows).items()):
        entries.append(
            {
                "dn": f"cn={escape_rdn(group)},{d.groups_dn}",
                "objectClass": "groupOfNames",
                "cn": group,
                "member": members,
            }
        )
    return _ldif(entries)


def _mtime(rng: random.Random) -> int:
    return rng.randrange(MTIME_FROM, MTIME_TO)


def _write(path: Path, data: bytes, rng: random.Random) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    t = _mtime(rng)
    os.utime(path, (t, t))
    return len(data)


def write_user_trees(root: Path, user: User) -> tuple[int, int]:
    """Write the user's profile and home trees under root (a file server's chroot); return (files, bytes)."""
    rng = random.Random(f"tree:{user.legacy_id}")
    profile = root / PurePosixPath(user.profile_path).relative_to("/")
    home = root / PurePosixPath(user.home_path).relative_to("/")
    files = total = 0

    def put(path: Path, data: bytes) -> None:
        nonlocal files, total
        files += 1
        total += _write(path, data, rng)

    name = f"{user.given_name} {user.surname}"
    put(profile / "NTUSER.DAT", rng.randbytes(rng.randrange(4096, 16384)))
    put(
        profile / "AppData/Roaming/Microsoft/Signatures/signatur.htm",
        f"<p>Med vennlig hilsen<br>{name}<br>{user.title}, {user.department}</p>".encode(),
    )
    put(profile / "Desktop/Snarvei til intranett.url", b"[InternetShortcut]\nURL=https://intranett.ikomm.no/\n")
    put(profile / "AppData/Local/Temp/~wrd0001.tmp", rng.randbytes(512))  # junk a copy should skip
    (profile / "AppData/Local/Microsoft/Windows/INetCache").mkdir(parents=True, exist_ok=True)
    put(
        home / "Dokumenter" / f"Møtereferat {2025 - rng.randrange(3)}-0{rng.randrange(1, 10)}-1{rng.randrange(10)}.txt",
        f"Referat skrevet av {name}.\nSaker: budsjett, turnus, æøå ÆØÅ.\n".encode(),
    )
    for i in range(rng.randrange(1, 5)):
        put(
            home / "Dokumenter" / "Arkiv" / f"{2019 + i}" / f"notat {i + 1}.txt",
            rng.randbytes(rng.randrange(200, 4000)),
        )
    put(home / "Bilder" / "tur på Hafjell.jpg", rng.randbytes(rng.randrange(8000, 40000)))
    put(home / "Bilder" / "Thumbs.db", rng.randbytes(1024))  # junk a copy should skip
    (home / "Tomt arkiv").mkdir(parents=True, exist_ok=True)  # an empty folder must survive a copy
    if rng.random() < 0.004:
        put(home / "Video" / "opplæring i Gerica.mp4", rng.randbytes(4 * 1024 * 1024))
    return files, total


def device_config(muni: Municipality, device_id: str, mac: str, site: str, user: str | None) -> str:
    """The config file of a thin client before cutover: it points at the legacy terminal server."""
    ts = muni.legacy.terminal_server
    return (
        f"# Thin-client configuration for {device_id}\n"
        f"device_id={device_id}\nmac={mac}\nsite={site}\nuser={user or ''}\n"
        f"rdp_server={ts.address}\nrdp_domain={netbios_domain(muni)}\n"
    )


def broker_state(inv: Inventory) -> dict[str, Any]:
    """The broker's state before migration: empty platform collections, sessions on legacy terminal servers."""
    collections = {
        z.terminal_farm.collection: {"hosts": list(z.terminal_farm.hosts), "users": []} for z in inv.platform.zones
    }
    sessions: list[dict[str, Any]] = []
    rng = random.Random("broker-sessions")
    for muni_id, user in inv.all_users():
        if user.enabled and user.device and rng.random() < 0.4:
            muni = inv.municipalities[muni_id]
            sessions.append(
                {
                    "id": len(sessions) + 1,
                    "user": f"{netbios_domain(muni)}\\{user.legacy_id}",
                    "host": muni.legacy.terminal_server.name,
                    "state": "Active" if rng.random() < 0.7 else "Disconnected",
                }
            )
    return {"collections": collections, "sessions": sessions, "next_session_id": len(sessions) + 1}


def write_json(path: Path, data: Any) -> None:
    """Write data as pretty JSON, keeping non-ASCII letters readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")

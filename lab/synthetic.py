"""Generate a deterministic synthetic inventory of the Ikomm world: same users and seed, same bytes."""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from ikomm.errors import InvalidInputError
from ikomm.naming import fold

GIVEN = [
    "Kari",
    "Ola",
    "Ingrid",
    "Lars",
    "Åse",
    "Øystein",
    "Bjørn",
    "Sølvi",
    "Kjersti",
    "Håkon",
    "Marte",
    "Jørgen",
    "Astrid",
    "Torbjørn",
    "Sigrid",
    "Pål",
    "Ragnhild",
    "Ståle",
    "Gudrun",
    "Eirik",
    "Tone",
    "Ådne",
    "Hanne",
    "Synnøve",
    "Trond",
    "Liv",
    "Geir",
    "Berit",
    "Jon",
    "Kristin",
    "Terje",
    "Randi",
    "Anders",
    "Mari",
    "Ørjan",
    "Anne-Marthe",
    "Hans Petter",
    "Bodil",
    "Solveig",
    "Arne",
    "Gro",
    "Aslak",
    "Marius",
    "Nora",
    "Emma",
    "Jakob",
    "Ingvild",
    "Sindre",
    "Frøydis",
    "Vegard",
    "Tuva",
    "Åsmund",
    "Helga",
    "Mathias",
    "Øydis",
    "Jens",
    "Line",
]
SURNAMES = [
    "Nordmann",
    "Hansen",
    "Johansen",
    "Olsen",
    "Larsen",
    "Haugen",
    "Bakken",
    "Sæther",
    "Løkken",
    "Brøndbo",
    "Fjærestad",
    "Kvåle",
    "Rønning",
    "Mæhlum",
    "Myhre",
    "Holmen",
    "Strømmen",
    "Dæhlen",
    "Kolstad",
    "Grønvold",
    "Aasheim",
    "Lie",
    "Sveen",
    "Skåden",
    "Høibakk",
    "Bjørnstad",
    "Tøfte",
    "Ødegård",
    "Skjærvold",
    "Granum",
    "Kristiansen-Bjørnstad",
    "Haugerud-Fjellstad",
    "Vold",
    "Brenna",
    "Nyhus",
    "Øverby",
    "Åsgård",
    "Mork",
]
DEPARTMENTS: list[tuple[str, str, list[str], int]] = [
    # (department, zone, titles, weight)
    ("helse", "health", ["sykepleier", "helsefagarbeider", "lege", "fysioterapeut", "avdelingsleder"], 30),
    ("oppvekst/skole", "school", ["lærer", "rektor", "assistent", "spesialpedagog"], 28),
    ("oppvekst/barnehage", "school", ["pedagogisk leder", "barnehagelærer", "fagarbeider"], 10),
    ("teknisk", "office", ["ingeniør", "driftsoperatør", "byggesaksbehandler"], 10),
    ("administrasjon", "office", ["rådgiver", "konsulent", "sekretær", "økonomisjef"], 12),
    ("kultur", "office", ["bibliotekar", "kulturkonsulent"], 4),
    ("nav", "health", ["veileder", "saksbehandler"], 6),
]
APPS: list[tuple[str, str, str, int]] = [
    # (id, name, zone, popularity 1..100)
    ("gerica", "Gerica", "health", 60),
    ("profil", "Profil", "health", 25),
    ("cosdoc", "CosDoc", "health", 20),
    ("helsenett", "Norsk Helsenett-portal", "health", 15),
    ("dips-front", "DIPS Front", "health", 8),
    ("medicus", "Medicus", "health", 5),
    ("familia", "Familia", "health", 6),
    ("socio", "Socio", "health", 5),
    ("iplos", "IPLOS-rapportering", "health", 10),
    ("mobil-omsorg", "Mobil Omsorg", "health", 30),
    ("visma-flyt-skole", "Visma Flyt Skole", "school", 60),
    ("ist-everyday", "IST Everyday", "school", 30),
    ("vigilo", "Vigilo", "school", 35),
    ("oppad", "Oppad", "school", 12),
    ("itslearning", "itslearning", "school", 55),
    ("kikora", "Kikora", "school", 15),
    ("salaby", "Salaby", "school", 20),
    ("skooler", "Skooler", "school", 8),
    ("visma-flyt-bhg", "Visma Flyt Barnehage", "school", 20),
    ("pedagogisk-psyk", "PPT-fagsystem", "school", 4),
    ("visma-enterprise", "Visma Enterprise", "office", 70),
    ("agresso", "Unit4 ERP (Agresso)", "office", 15),
    ("websak", "ACOS WebSak", "office", 25),
    ("public360", "Public 360", "office", 12),
    ("ephorte", "ePhorte", "office", 8),
    ("elements", "Elements", "office", 10),
    ("komtek", "Komtek", "office", 9),
    ("gisline", "Gisline", "office", 6),
    ("isy-park", "ISY Park", "office", 4),
    ("compilo", "Compilo", "office", 12),
    ("kvalitetslosen", "Kvalitetsløsen", "office", 15),
    ("tidbank", "Tidbank", "office", 25),
    ("min-turnus", "MinTurnus", "office", 30),
    ("gat", "GAT turnus", "office", 20),
    ("office-suite", "Office-pakken", "office", 95),
    ("outlook-web", "E-post (webklient)", "office", 90),
    ("intranett", "Intranett", "office", 85),
    ("arkivplan", "Arkivplan", "office", 3),
    ("ssb-kostra", "KOSTRA-rapportering", "office", 4),
    ("tenk", "TENK eiendomsskatt", "office", 3),
    ("matrikkel", "Matrikkelklient", "office", 5),
    ("ebyggesak", "eByggesak", "office", 6),
    ("landbruk", "Landbruksforvaltning", "office", 3),
    ("innkjop", "Innkjøpsportalen", "office", 10),
    ("kontrakt", "Kontraktsarkiv", "office", 4),
    ("budsjett", "Framsikt budsjett", "office", 7),
    ("bibliotek", "Bibliofil", "office", 4),
    ("kulturskole", "Speedadmin kulturskole", "school", 5),
    ("nav-modia", "Modia (NAV)", "health", 6),
    ("varsling", "UMS varsling", "office", 5),
]
OWNERS = [
    # id, name, share %, legacy directory kind, domain, short prefix
    ("lillehammer", "Lillehammer", 70, "ad", "lillehammer.kommune.no", "LHMR"),
    ("gausdal", "Gausdal", 16, "openldap", "gausdal.kommune.no", "gd"),
    ("oyer", "Øyer", 14, "openldap", "oyer.kommune.no", "oy"),
]
# Neighbours that may join as customers (`ikomm tenant add`): the generator writes their tenant kit.
TENANTS = [
    # id, name, legacy directory kind, domain, short prefix
    ("ringebu", "Ringebu", "openldap", "ringebu.kommune.no", "rb"),
]
SITES = {
    "lillehammer": ["Rådhuset", "Lillehammer helsehus", "Kringsjå skole", "Søre Ål skole", "Hovemoen drift"],
    "gausdal": ["Gausdal rådhus", "Forset skole", "Follebu skole", "Gausdal helsetun"],
    "oyer": ["Øyer rådhus", "Tretten skole", "Øyer helsetun"],
    "ringebu": ["Ringebu rådhus", "Fåvang skole", "Ringebu sjukeheim"],
}
ZONES = [("office", "Kontor", 21), ("health", "Helse", 22), ("school", "Skole", 23)]
LEGACY_FS_OCTET = {"lillehammer": 11, "gausdal": 12, "oyer": 13, "ringebu": 14}
LEGACY_DIR_OCTET = {"lillehammer": 3, "gausdal": 4, "oyer": 5, "ringebu": 6}
SSH_PORT = 2222
ACL_PORT = 2223  # the zone file servers' read-only ACL reader (audit isolation)
PLATFORM_BASE = "DC=plattform,DC=ikomm,DC=no"


def _slug(text: str) -> str:
    return "".join(c for c in fold(text).lower() if c.isalnum())


@dataclass(frozen=True)
class Generated:
    """What generate() wrote: where, and how many of each."""

    out: Path
    users: dict[str, int]
    devices: int
    applications: int
    servers: int


def _split(total: int) -> dict[str, int]:
    counts = {m: round(total * share / 100) for m, _, share, *_ in OWNERS}
    counts["lillehammer"] += total - sum(counts.values())
    return counts


def _dump_yaml(path: Path, data: Any, header: str) -> None:
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)
    path.write_text(f"# {header}\n# Generated by `ikomm lab generate`; safe to edit by hand.\n{text}", encoding="utf-8")


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def _legacy_group_for_app(muni: str, prefix: str, app_id: str, app_name: str) -> str:
    if muni == "lillehammer":
        return f"{prefix}-App-{fold(app_name).replace(' ', '')}"
    return f"{prefix}-{app_id}"


def _platform(lab_dir: str) -> dict[str, Any]:
    zones = []
    for zid, zname, octet in ZONES:
        zones.append(
            {
                "id": zid,
                "name": zname,
                "file_server": {
                    "name": f"fs-{zid}",
                    "host": f"127.0.0.{octet}",
                    "port": SSH_PORT,
                    "profile_root": "/data/profiles",
                    "home_root": "/data/home",
                    "acl_port": ACL_PORT,
                },
                "terminal_farm": {"collection": f"{zname}-farm", "hosts": [f"ts-{zid}-{i:02d}" for i in (1, 2)]},
            }
        )
    return {
        "lab": {"dir": lab_dir},
        "secrets_file": f"{lab_dir}/secrets.env",
        "directory": {
            "kind": "ad",
            "host": "127.0.0.2",
            "port": 636,
            "security": "ldaps",
            "base_dn": PLATFORM_BASE,
            "users_dn": f"OU=Kommuner,{PLATFORM_BASE}",
            "groups_dn": f"OU=Applikasjoner,{PLATFORM_BASE}",
            "bind_dn": "Administrator@plattform.ikomm.no",
            "password": {"env": "IKOMM_PLATFORM_AD_PASSWORD"},
            "ca_file": f"{lab_dir}/tls/lab-ca.pem",
            "tls_name": "DC1.PLATTFORM.IKOMM.NO",
            "realm": "PLATTFORM.IKOMM.NO",
        },
        "zones": zones,
        "ssh": {"user": "root", "key_file": f"{lab_dir}/ssh/id_ed25519", "known_hosts": f"{lab_dir}/ssh/known_hosts"},
        "thin_client_config_host": {"host": "127.0.0.30", "port": SSH_PORT, "config_root": "/srv/thinclient"},
        "broker": {
            "host": "127.0.0.40",
            "port": 5986,
            "scheme": "https",
            "user": "IKOMM\\svc-migrate",
            "password": {"env": "IKOMM_BROKER_PASSWORD"},
            "ca_file": f"{lab_dir}/tls/lab-ca.pem",
        },
    }


def _municipality(muni: str, name: str, share: int, kind: str, domain: str, lab_dir: str) -> dict[str, Any]:
    octet = LEGACY_DIR_OCTET[muni]
    dc = ",".join(f"DC={p}" for p in domain.split("."))
    if kind == "ad":
        directory = {
            "kind": "ad",
            "host": f"127.0.0.{octet}",
            "port": 636,
            "security": "ldaps",
            "base_dn": dc,
            "users_dn": f"OU=Ansatte,{dc}",
            "groups_dn": f"OU=Grupper,{dc}",
            "bind_dn": f"Administrator@{domain}",
            "password": {"env": f"IKOMM_LEGACY_{muni.upper()}_PASSWORD"},
            "ca_file": f"{lab_dir}/tls/lab-ca.pem",
            "tls_name": f"DC1.{domain.upper()}",
            "realm": domain.upper(),
            "attribute_map": {
                "legacy_id": "sAMAccountName",
                "given_name": "givenName",
                "surname": "sn",
                "email": "mail",
                "department": "department",
                "title": "title",
            },
        }
    else:
        dc = dc.lower()
        directory = {
            "kind": "openldap",
            "host": f"127.0.0.{octet}",
            "port": 636,
            "security": "ldaps",
            "base_dn": dc,
            "users_dn": f"ou=people,{dc}",
            "groups_dn": f"ou=groups,{dc}",
            "bind_dn": f"cn=admin,{dc}",
            "password": {"env": f"IKOMM_LEGACY_{muni.upper()}_PASSWORD"},
            "ca_file": f"{lab_dir}/tls/lab-ca.pem",
            "tls_name": f"ldap.{domain}",
            "attribute_map": {
                "legacy_id": "uid",
                "given_name": "givenName",
                "surname": "sn",
                "email": "mail",
                "department": "ou",
                "title": "title",
            },
        }
    return {
        "id": muni,
        "name": name,
        "ownership_pct": share,
        "target_ou": f"OU={name},OU=Kommuner,{PLATFORM_BASE}",
        "upn_suffix": domain,
        "legacy": {
            "directory": directory,
            "file_server": {
                "name": f"fs-{muni}",
                "host": f"127.0.0.{LEGACY_FS_OCTET[muni]}",
                "port": SSH_PORT,
                "profile_root": "/srv/profiles",
                "home_root": "/srv/home",
            },
            "terminal_server": {"name": f"ts01.{domain}", "address": f"ts01.{domain}"},
        },
    }


def _servers(rng: random.Random) -> list[dict[str, str]]:
    plan = [
        ("domain-controller", "core", 2, "winrm"),
        ("broker", "core", 2, "winrm"),
        ("config-host", "core", 1, "ssh"),
        ("monitoring", "core", 2, "ssh"),
        ("backup", "core", 2, "ssh"),
        ("print", "office", 2, "winrm"),
    ]
    for zid, _, _ in ZONES:
        plan += [("file-server", zid, 2, "ssh"), ("app-server", zid, 7, "winrm"), ("database", zid, 2, "winrm")]
    plan += [
        ("terminal-server", "office", 30, "winrm"),
        ("terminal-server", "health", 14, "winrm"),
        ("terminal-server", "school", 20, "winrm"),
    ]
    servers = []
    subnet = {"core": 10, "office": 21, "health": 22, "school": 23}
    host_no = {k: 10 for k in subnet}
    for role, zone, count, access in plan:
        for i in range(1, count + 1):
            host_no[zone] += 1
            servers.append(
                {
                    "name": f"ikm-{role.split('-')[0]}-{zone}-{i:02d}",
                    "role": role,
                    "zone": zone,
                    "address": f"10.20.{subnet[zone]}.{host_no[zone]}",
                    "access": access,
                }
            )
    return servers


def generate(
    out: Path, users: int = 2500, seed: int = 2026, lab_dir: str = "../.lab", tenants: Sequence[str] = ()
) -> Generated:
    """Write a complete synthetic inventory into out (platform, municipalities, apps, servers, users, devices).

    tenants: neighbours (ids of TENANTS) whose tenant kit goes to tenants/<id>/, users in proportion to
    their size; the owners' files are the same bytes with or without them.
    """
    unknown = sorted(set(tenants) - {t[0] for t in TENANTS})
    if unknown:
        raise ValueError(f"no tenant named {', '.join(unknown)} (known: {', '.join(t[0] for t in TENANTS)})")
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {out}: not a folder (give the folder to write the inventory into)")
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "users").mkdir(exist_ok=True)
    (out / "devices").mkdir(exist_ok=True)

    _dump_yaml(
        out / "platform.yaml", _platform(lab_dir), "The Ikomm platform: AD, zones, SSH access, config host, broker."
    )
    _dump_yaml(
        out / "municipalities.yaml",
        {"municipalities": [_municipality(m, n, s, k, d, lab_dir) for m, n, s, k, d, _ in OWNERS]},
        "The owner municipalities and their legacy systems.",
    )

    counts = _split(users)
    app_rows = []
    for i, (app_id, name, zone, pop) in enumerate(APPS):
        ready = date(2026, 1, 5) if i % 17 != 16 else date(2027, 3, 1)
        app_rows.append(
            {
                "id": app_id,
                "name": name,
                "zone": zone,
                "seat_limit": max(5, int(users * pop / 100 * 1.25) + 5),
                "groups": {m: f"APP-{fold(name).replace(' ', '')}-{m.capitalize()}"[:64] for m, *_ in OWNERS},
                "granted_by": {m: [_legacy_group_for_app(m, p, app_id, name)] for m, _, _, _, _, p in OWNERS},
                "ready_from": ready,
            }
        )
    _dump_yaml(out / "applications.yaml", {"applications": app_rows}, "The 50 ASP applications of the platform.")
    servers = _servers(rng)
    _dump_yaml(out / "servers.yaml", {"servers": servers}, "The platform's servers.")

    dept_weights = [w for *_, w in DEPARTMENTS]
    macs: set[str] = set()
    device_total = 0
    for muni, _name, _share, _kind, domain, prefix in OWNERS:
        user_rows, dev_rows = _people(rng, muni, domain, prefix, counts[muni], dept_weights, macs)
        _write_csv(out / "users" / f"{muni}.csv", USER_COLS, user_rows)
        _write_csv(out / "devices" / f"{muni}.csv", DEV_COLS, dev_rows)
        device_total += len(dev_rows)
    for tenant, name, kind, domain, prefix in TENANTS:
        if tenant not in tenants:
            continue
        kit = out / "tenants" / tenant
        kit.mkdir(parents=True, exist_ok=True)
        spec = _municipality(tenant, name, 0, kind, domain, lab_dir)
        _dump_yaml(
            kit / "tenant.yaml",
            {
                "id": tenant,
                "name": name,
                "upn_suffix": domain,
                "legacy": spec["legacy"],
                "granted_by": {app_id: [f"{prefix}-{app_id}"] for app_id, *_ in APPS},
            },
            f"{name}: a neighbour's legacy side, onboarded with `ikomm tenant add {tenant} --legacy tenants/{tenant}`.",
        )
        tenant_rng = random.Random(f"{seed}:{tenant}")
        size = max(10, round(users * 0.05))  # about Ringebu's size beside Lillehammer's
        user_rows, dev_rows = _people(tenant_rng, tenant, domain, prefix, size, dept_weights, macs)
        _write_csv(kit / "users.csv", USER_COLS, user_rows)
        _write_csv(kit / "devices.csv", DEV_COLS, dev_rows)
    return Generated(out, counts, device_total, len(app_rows), len(servers))


USER_COLS = [
    "legacy_id",
    "given_name",
    "surname",
    "email",
    "department",
    "title",
    "zone",
    "legacy_groups",
    "home_path",
    "profile_path",
    "device",
    "enabled",
]
DEV_COLS = ["device_id", "mac", "site", "assigned_user"]


def _people(
    rng: random.Random,
    muni: str,
    domain: str,
    prefix: str,
    count: int,
    dept_weights: list[int],
    macs: set[str],
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The users and thin clients of one municipality (rows of users/ and devices/)."""
    used_ids: set[str] = set()
    used_mail: set[str] = set()
    user_rows: list[dict[str, str]] = []
    dev_rows: list[dict[str, str]] = []
    for n in range(count):
        if n == 0:
            given, surname = "Kari", "Nordmann"  # the same person's name in every municipality
        else:
            given, surname = rng.choice(GIVEN), rng.choice(SURNAMES)
            if rng.random() < 0.05:
                surname = f"{rng.choice(SURNAMES)} {surname}"
        dept, zone, titles, _ = rng.choices(DEPARTMENTS, weights=dept_weights)[0]
        if muni == "lillehammer":
            base = (_slug(given)[:3] + _slug(surname)[:3]) or "user"
            legacy_id, k = base, 1
            while legacy_id in used_ids:
                k += 1
                legacy_id = f"{base}{k}"
        else:
            legacy_id = f"{prefix}{10001 + n}"
        used_ids.add(legacy_id)
        local = f"{_slug(given)}.{_slug(surname)}"
        mail, k = local, 1
        while mail in used_mail:
            k += 1
            mail = f"{local}{k}"
        used_mail.add(mail)
        wanted = [a for a in APPS if a[2] in (zone, "office")]
        picks = {a for a in wanted if rng.random() < a[3] / 100 * (1.0 if a[2] == zone else 0.5)}
        groups = [f"{prefix}-{_slug(dept.split('/')[-1])}"] + [
            _legacy_group_for_app(muni, prefix, a[0], a[1]) for a in sorted(picks)
        ]
        if rng.random() < 0.03:
            groups.append(f"{prefix}-gammel-skanner")  # maps to no application
        device = ""
        if rng.random() < 0.92:
            device = f"tc-{muni[:4]}-{len(dev_rows) + 1:05d}"
            dev_rows.append(_device(rng, device, SITES[muni], legacy_id, macs))
        user_rows.append(
            {
                "legacy_id": legacy_id,
                "given_name": given,
                "surname": surname,
                "email": f"{mail}@{domain}",
                "department": dept,
                "title": rng.choice(titles),
                "zone": zone,
                "legacy_groups": ";".join(groups),
                "home_path": f"/srv/home/{legacy_id}",
                "profile_path": f"/srv/profiles/{legacy_id}",
                "device": device,
                "enabled": "false" if rng.random() < 0.01 else "true",
            }
        )
    for _ in range(max(1, count // 100)):  # spare thin clients, assigned to nobody
        dev_rows.append(_device(rng, f"tc-{muni[:4]}-{len(dev_rows) + 1:05d}", SITES[muni], "", macs))
    return user_rows, dev_rows


def _device(rng: random.Random, device_id: str, sites: list[str], user: str, macs: set[str]) -> dict[str, str]:
    while True:
        mac = "00:1e:c9:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(3))
        if mac not in macs:
            macs.add(mac)
            break
    return {"device_id": device_id, "mac": mac, "site": rng.choice(sites), "assigned_user": user}

"""Who may do what in the Prefect UI and API: people with roles, checked by a reverse proxy in front of Prefect.

    helpdesk   reads: every page of the UI works; nothing can be started, resumed, cancelled or deleted
    lead       also starts waves and rollbacks (deployment runs), answers gates, cancels and deletes runs
    operator   the same rights as a lead today (rollbacks are deployments too); kept apart for the audit trail
    service    ikomm's own processes (waves, the served runner, workers): everything

Prefect's open-source server knows one credential and no roles (PREFECT_SERVER_API_AUTH_STRING). So:

    person (browser, UI sign-in "name:password")        ikomm processes (PREFECT_API_AUTH_STRING)
                       \\                                   /
            nginx on 127.0.0.1:<port>: Basic auth against access/htpasswd, the role's rule (403 if not
            allowed), then the request forwarded with the service credential in place of the person's
                                          |
            Prefect on 127.0.0.1:<port + 1000>, its own Basic auth on (the service credential only)

No person's password reaches Prefect, and Prefect's own check stays on behind the proxy. A read is a GET (and the
UI's websockets) or a POST to one of the search endpoints the UI reads with (`/filter`, `/count`, `/paginate`,
`/history`, ...: READ_POSTS); everything else writes. The health probe is open (it says only "true").

Passwords are never chosen by hand: `ikomm access add` makes a random one (about 140 bits), writes it once to
access/<name>.password (0600) for handover, and keeps only its bcrypt hash. Their strength, not the hash's cost,
is the defence, so the hash is cheap to check (cost 6, about 4 ms a request: nginx checks every request). The
service's token (256 bits) is kept as a salted SHA-1, which nginx checks in microseconds: waves make thousands of
calls. Every file here is 0600 in a 0700 folder; nothing is logged but the name of who made a request.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from ikomm.errors import InvalidInputError

ROLES = ("helpdesk", "lead", "operator")
SERVICE = "ikomm"  # the service account's name: not a person's
NAME = re.compile(r"[a-z][a-z0-9._-]{0,31}")
INTERNAL_OFFSET = 1000  # Prefect listens at the public port + this, on 127.0.0.1 only
PEOPLE_COST = 6
REFUSED = (
    "$http_x_ikomm_user may only read (helpdesk): starting, resuming, cancelling or deleting needs a lead or operator"
)

# POSTs that only read: what the UI searches, counts and draws with (Prefect 3.9's API).
READ_POSTS = (
    r"filter|count|paginate|history|lateness|count-task-runs|count-deployments|next-runs|validate|counts"
    r"|concurrency_status|count-by/[a-z_]+"
)


@dataclass(frozen=True)
class Person:
    name: str
    role: str


def folder(state: Path) -> Path:
    """The access folder of the state folder, made 0700."""
    made = state / "access"
    made.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(made, 0o700)
    return made


def _write_private(path: Path, text: str) -> None:
    """Write text to path, 0600 from the first byte, replacing it whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, path)


def service_credential(state: Path) -> str:
    """The service's credential ("ikomm:<token>"), made once: Prefect's auth string and ikomm's processes' key."""
    path = folder(state) / "service"
    if not path.is_file():
        _write_private(path, f"{SERVICE}:{secrets.token_urlsafe(32)}\n")
    return path.read_text(encoding="utf-8").strip()


def existing_service_credential(state: Path) -> str | None:
    """The service's credential if this state folder has one (reading never creates it)."""
    path = state / "access" / "service"
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def people(state: Path) -> list[Person]:
    """Everyone who may sign in, with their role."""
    return [person for person, _ in _entries(state)]


def add_person(state: Path, name: str, role: str) -> Path:
    """Let name sign in with role: a new random password (also for someone already there: a rotation), written
    to access/<name>.password (0600); its path. InvalidInputError for a bad name or role."""
    if not NAME.fullmatch(name) or name == SERVICE:
        raise InvalidInputError(f"name {name!r}: a-z first, then a-z, 0-9, '.', '_' or '-' (32 at most), not {SERVICE}")
    if role not in ROLES:
        raise InvalidInputError(f"role {role!r}: choose from {', '.join(ROLES)}")
    where = folder(state)
    password = secrets.token_urlsafe(18)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=PEOPLE_COST)).decode()
    lines = [f"{p.name} {p.role} {h}" for p, h in _entries(state) if p.name != name]
    _write_private(where / "people", "".join(f"{line}\n" for line in [*lines, f"{name} {role} {hashed}"]))
    handover = where / f"{name}.password"
    _write_private(handover, f"{name}:{password}\n")
    return handover


def remove_person(state: Path, name: str) -> bool:
    """Take name's sign-in away (and their handover file); False if they had none."""
    kept = [(p, h) for p, h in _entries(state) if p.name != name]
    if len(kept) == len(_entries(state)):
        return False
    _write_private(folder(state) / "people", "".join(f"{p.name} {p.role} {h}\n" for p, h in kept))
    (state / "access" / f"{name}.password").unlink(missing_ok=True)
    return True


def _entries(state: Path) -> list[tuple[Person, str]]:
    """Each person with the hash of their password, as access/people keeps them ("name role hash" a line)."""
    path = state / "access" / "people"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name, role, hashed = line.split(" ", 2)
        out.append((Person(name, role), hashed))
    return out


def _ssha(secret: str) -> str:
    """secret as nginx's {SSHA} scheme stores it: base64(sha1(secret + salt) + salt)."""
    salt = secrets.token_bytes(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(secret.encode() + salt).digest() + salt).decode()


def basic(credential: str) -> str:
    """The Authorization header's value for a "name:password" credential."""
    return "Basic " + base64.b64encode(credential.encode()).decode()


def write_proxy_config(state: Path, public_port: int, host: str = "127.0.0.1") -> Path:
    """The proxy's files (nginx.conf, htpasswd, roles.map, 0600), rewritten whole from people and the service
    credential; the path of nginx.conf."""
    where = folder(state)
    service = service_credential(state)
    name, token = service.split(":", 1)
    entries = _entries(state)
    _write_private(where / "htpasswd", f"{name}:{_ssha(token)}\n" + "".join(f"{p.name}:{h}\n" for p, h in entries))
    _write_private(where / "roles.map", f"{name} service;\n" + "".join(f"{p.name} {p.role};\n" for p, _ in entries))
    for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (where / "tmp" / temp).mkdir(parents=True, exist_ok=True, mode=0o700)
    internal = public_port + INTERNAL_OFFSET
    conf = f"""# Made by ikomm (ikomm/access.py) from access/people; rewritten on every change. Do not edit.
daemon off;
user root;  # the workers read the 0600 password hashes at every request
worker_processes 2;
pid {where}/nginx.pid;
error_log {where}/proxy-error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {where}/proxy-access.log;
    client_body_temp_path {where}/tmp/body;
    proxy_temp_path {where}/tmp/proxy;
    fastcgi_temp_path {where}/tmp/fastcgi;
    uwsgi_temp_path {where}/tmp/uwsgi;
    scgi_temp_path {where}/tmp/scgi;
    client_max_body_size 64m;
    map $remote_user $role {{
        default "";
        include {where}/roles.map;
    }}
    map "$request_method:$uri" $reads {{
        default 0;
        "~^(GET|HEAD|OPTIONS):" 1;
        "~^POST:/api/(.+/)?({READ_POSTS})$" 1;
    }}
    map "$role:$reads" $backend {{  # chosen when the request is passed on: after auth_basic checked the password
        default refuse;
        "~^(service|lead|operator):" prefect;
        "helpdesk:1" prefect;
    }}
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        "" close;
    }}
    upstream prefect {{
        server 127.0.0.1:{internal};
        keepalive 16;
    }}
    upstream refuse {{
        server unix:{where}/refuse.sock;
    }}
    server {{  # what a role may not do ends here
        listen unix:{where}/refuse.sock;
        default_type application/json;
        location / {{
            return 403 '{{"detail": "{REFUSED}"}}';
        }}
    }}
    upstream gate {{
        server unix:{where}/gate.sock;
        keepalive 16;
    }}
    server {{  # the gate: who signs in (auth_basic), what their role may do, then Prefect with the service's key
        listen unix:{where}/gate.sock;
        proxy_http_version 1.1;
        proxy_read_timeout 3600s;
        location = /api/health {{
            proxy_pass http://prefect;
        }}
        location /api/ {{
            auth_basic "Ikomm migration";
            auth_basic_user_file {where}/htpasswd;
            proxy_set_header Authorization "{basic(service)}";
            proxy_set_header X-Ikomm-User $remote_user;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_pass http://$backend;
        }}
    }}
    server {{  # the public side
        listen {host}:{public_port};
        proxy_http_version 1.1;
        proxy_read_timeout 3600s;
        proxy_set_header Host $host;
        location /api/ {{
            proxy_hide_header WWW-Authenticate;  # the UI's sign-in page asks, not the browser's own dialog
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_pass http://gate;
        }}
        location / {{
            proxy_set_header Connection "";
            proxy_pass http://prefect;
        }}
    }}
}}
"""
    _write_private(where / "nginx.conf", conf)
    return where / "nginx.conf"

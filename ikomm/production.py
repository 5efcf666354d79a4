"""Production mode on one machine, started by the project: PostgreSQL and Redis under Prefect and the ledger.

`ikomm server start --production` starts, before the Prefect server, and keeps using afterwards:

    PostgreSQL   Debian's, its own cluster in /var/lib/ikomm-postgres/<digest of the state folder> (owned
                 by the postgres user, which the server must run as), on 127.0.0.1:IKOMM_PG_PORT (5433);
                 databases `prefect` (Prefect's own) and `ikomm` (the ledger), role `ikomm`, scram-sha-256
    Redis        Debian's redis-server on 127.0.0.1:IKOMM_REDIS_PORT (6380), password from a 0600 config
                 file, no persistence (Prefect's messages and cache only); prefect-redis as the broker

The passwords are made once and kept in <state>/production/secrets.env (0600); they reach the servers
through files and the environment, never a command line, and are never printed. Once production mode
has been started for a state folder, `server start` starts it again, and the ledger of that folder is
the PostgreSQL one (unless IKOMM_LEDGER_URL says otherwise). SQLite stays the default.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from ikomm.credentials import new_password
from ikomm.errors import FatalError
from ikomm.secrets import read_secrets_file

PG_ROOT = Path("/var/lib/ikomm-postgres")
PG_VERSIONS = Path("/usr/lib/postgresql")
REDIS_SERVER = Path("/usr/bin/redis-server")
HOST = "127.0.0.1"
ROLE = "ikomm"


def pg_port() -> int:
    return int(os.environ.get("IKOMM_PG_PORT", "5433"))


def redis_port() -> int:
    return int(os.environ.get("IKOMM_REDIS_PORT", "6380"))


def folder(state: Path) -> Path:
    return state / "production"


def enabled(state: Path) -> bool:
    """Whether production mode was started for this state folder (its secrets exist)."""
    return (folder(state) / "secrets.env").is_file()


def pg_data(state: Path) -> Path:
    """The cluster's folder: outside the state folder (0700, root's), which the postgres user may not enter."""
    return PG_ROOT / hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:12]


def _pg_bin(name: str) -> Path:
    versions = sorted(PG_VERSIONS.glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not versions or not (versions[-1] / name).is_file():
        raise FatalError("PostgreSQL is not installed (apt-get install postgresql redis-server; make setup does it)")
    return versions[-1] / name


def _secrets(state: Path) -> dict[str, str]:
    path = folder(state) / "secrets.env"
    if path.is_file():
        return read_secrets_file(path)
    values = {"IKOMM_PG_PASSWORD": new_password(24), "IKOMM_REDIS_PASSWORD": new_password(24)}
    for key, value in values.items():  # '=' and '#' stay out of URLs and config files
        values[key] = value.replace("=", "x").replace("#", "y")
    folder(state).mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("".join(f"{k}={v}\n" for k, v in values.items()))
    return values


def prefect_env(state: Path) -> dict[str, str]:
    """The Prefect server's settings for production mode: PostgreSQL, and Redis as broker, cache and leases."""
    s = _secrets(state)
    return {
        "PREFECT_API_DATABASE_CONNECTION_URL": (
            f"postgresql+asyncpg://{ROLE}:{quote(s['IKOMM_PG_PASSWORD'])}@{HOST}:{pg_port()}/prefect"
        ),
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_HOST": HOST,
        "PREFECT_REDIS_MESSAGING_PORT": str(redis_port()),
        "PREFECT_REDIS_MESSAGING_PASSWORD": s["IKOMM_REDIS_PASSWORD"],
    }


def ledger_url(state: Path) -> str:
    """The ledger's SQLAlchemy URL in production mode (psycopg), password inside: never print it (masked())."""
    password = quote(_secrets(state)["IKOMM_PG_PASSWORD"])
    return f"postgresql+psycopg://{ROLE}:{password}@{HOST}:{pg_port()}/ikomm"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(port: int, what: str, alive: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not _answers(port):
        if alive.poll() is not None:
            raise FatalError(f"{what} exited at once; see {log}")
        if time.monotonic() > deadline:
            raise FatalError(f"{what} did not answer on {HOST}:{port} within {timeout:.0f} s; see {log}")
        time.sleep(0.2)


def _as_postgres(argv: list[str]) -> list[str]:
    """argv run as the postgres user. setpriv executes it in its own place (runuser would stay as its parent, and
    on SIGTERM it waits two seconds before it kills its child, however fast that child exits)."""
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *argv]


def _init_cluster(state: Path, data: Path) -> None:
    """initdb the cluster once, the role's password read from a file only postgres can read."""
    PG_ROOT.mkdir(mode=0o755, exist_ok=True)
    data.mkdir(mode=0o700)
    shutil.chown(data, "postgres", "postgres")
    pwfile = data / ".pw"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(_secrets(state)["IKOMM_PG_PASSWORD"] + "\n")
    shutil.chown(pwfile, "postgres", "postgres")
    cluster = data / "cluster"
    try:
        done = subprocess.run(
            _as_postgres(
                [
                    str(_pg_bin("initdb")),
                    "-D",
                    str(cluster),
                    "-U",
                    ROLE,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
            ),
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        raise FatalError(f"initdb failed: {done.stderr.strip()[-400:]}")


def start(state: Path) -> list[str]:
    """Start PostgreSQL and Redis for this state folder (made the first time); return what was done."""
    from ikomm.server import spawn, spawned  # the server module spawns and tracks background processes

    if not REDIS_SERVER.is_file():
        raise FatalError("redis-server is not installed (apt-get install postgresql redis-server; make setup does it)")
    said: list[str] = []
    secrets = _secrets(state)
    data = pg_data(state)
    if not (data / "cluster" / "PG_VERSION").is_file():
        _init_cluster(state, data)
        said.append(f"PostgreSQL cluster made in {data}")
    if spawned("postgres") is None:
        log = state / "prefect" / "postgres.log"
        proc = spawn(
            "postgres",
            _as_postgres(
                [
                    str(_pg_bin("postgres")),
                    "-D",
                    str(data / "cluster"),
                    "-p",
                    str(pg_port()),
                    "-c",
                    f"listen_addresses={HOST}",
                    "-c",
                    f"unix_socket_directories={data}",
                    "-c",
                    "max_connections=200",
                ]
            ),
            dict(os.environ),
        )
        _wait(pg_port(), "PostgreSQL", proc, log)
        _databases(state)
        said.append(f"PostgreSQL on {HOST}:{pg_port()}")
    if spawned("redis") is None:
        conf = folder(state) / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(
                f"bind {HOST}\nport {redis_port()}\nrequirepass {secrets['IKOMM_REDIS_PASSWORD']}\n"
                f'save ""\nappendonly no\ndir {folder(state)}\nprotected-mode yes\n'
            )
        proc = spawn("redis", [str(REDIS_SERVER), str(conf)], dict(os.environ))
        _wait(redis_port(), "Redis", proc, state / "prefect" / "redis.log")
        said.append(f"Redis on {HOST}:{redis_port()}")
    return said


def _databases(state: Path, timeout: float = 20.0) -> None:
    """The `prefect` and `ikomm` databases, made if missing (PostgreSQL may take a moment to accept logins)."""
    import psycopg

    password = _secrets(state)["IKOMM_PG_PASSWORD"]
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = psycopg.connect(
                host=HOST, port=pg_port(), user=ROLE, password=password, dbname="postgres", autocommit=True
            )
            break
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise FatalError(f"PostgreSQL refuses the login of {ROLE}: {type(exc).__name__}") from None
            time.sleep(0.3)
    with conn:
        have = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        for name in ("prefect", "ikomm"):
            if name not in have:
                conn.execute(f'CREATE DATABASE "{name}"')


def stop() -> list[str]:
    """Stop Redis and PostgreSQL of this state folder; return the names of those that were running."""
    from ikomm.server import stop_spawned

    stopped = ["redis"] if stop_spawned("redis") else []
    # PostgreSQL's fast shutdown (SIGINT to the postmaster, as pg_ctl stop does): a client still connected (a
    # wave's ledger, a worker) has its session ended and the database is shut down cleanly. SIGTERM would wait
    # for every client to leave, and the SIGKILL after the grace period left a database to recover.
    if stop_spawned("postgres", leader_signal=signal.SIGINT):
        stopped.append("postgres")
    return stopped

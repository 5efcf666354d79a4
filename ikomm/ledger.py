"""The ledger: every user's state, every change recorded before it is made and confirmed after.

SQLite in WAL mode by default; any SQLAlchemy URL (PostgreSQL in particular) for scale-out. Tables:

    waves    one row a wave: state, approval, when it started and ended
    users    one row a user: the wave, the state (pending, running, migrated, verified, failed,
             rolled_back), the stage it is in, the reason of a failure, the platform account name
    events   the history of every state change: "what happened to user X, and when?"
    changes  each change to an outside system: planned before it is made, done after, undone by a
             rollback; `undo` holds what is needed to reverse it (previous values, previous device
             config, memberships added, files written)

A change is keyed by (user, stage, kind, target): recording it again (a rerun after a crash) returns
the first record, whose undo data describes the world before the first attempt.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

STATES = ("pending", "running", "migrated", "verified", "failed", "held", "rolled_back")
FINAL = ("verified", "failed", "held", "rolled_back")

meta = sa.MetaData()
waves_t = sa.Table(
    "waves",
    meta,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, default=""),
    sa.Column("approval", sa.Text, nullable=True),
    sa.Column("file", sa.Text, nullable=True),
    sa.Column("started", sa.String(32), nullable=False),
    sa.Column("ended", sa.String(32), nullable=True),
)
users_t = sa.Table(
    "users",
    meta,
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("wave", sa.String(64), nullable=False, index=True),
    sa.Column("muni", sa.String(64), nullable=False),
    sa.Column("legacy_id", sa.String(64), nullable=False),
    sa.Column("account", sa.String(64), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("stage", sa.String(32), nullable=False, default=""),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("updated", sa.String(32), nullable=False),
)
events_t = sa.Table(
    "events",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(128), nullable=False, index=True),
    sa.Column("wave", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("stage", sa.String(32), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("at", sa.String(32), nullable=False),
)
snapshots_t = sa.Table(
    "snapshots",
    meta,
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("wave", sa.String(64), nullable=False, index=True),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("taken", sa.String(32), nullable=False),
)
changes_t = sa.Table(
    "changes",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(128), nullable=False, index=True),
    sa.Column("wave", sa.String(64), nullable=False, index=True),
    sa.Column("stage", sa.String(32), nullable=False),
    sa.Column("system", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("undo", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("planned", sa.String(32), nullable=False),
    sa.Column("done", sa.String(32), nullable=True),
    sa.UniqueConstraint("key", "stage", "kind", "target", name="one_change"),
)
handovers_t = sa.Table(
    "handovers",
    meta,
    sa.Column("wave", sa.String(64), primary_key=True),
    sa.Column("by", sa.String(128), nullable=False),
    sa.Column("users", sa.Integer, nullable=False),
    sa.Column("at", sa.String(32), nullable=False),
)


def url_for(state_dir: Path) -> str:
    """The ledger's URL: IKOMM_LEDGER_URL (any SQLAlchemy URL), or SQLite in the state folder.

    Read from the environment by whoever opens the ledger, never passed as a flow parameter: a
    PostgreSQL URL carries a password, and Prefect stores and shows every parameter.
    """
    return os.environ.get("IKOMM_LEDGER_URL") or f"sqlite:///{state_dir / 'ledger.db'}"


def masked(url: str) -> str:
    """The URL as it may be shown: any password replaced by ***."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(a ledger URL that could not be parsed)"


# The statements a wave runs for every user and change, built once and bound at execution: building
# them per call made a state change or a recorded change cost 0.5 ms of CPU instead of 0.1 ms.
_USER_SET = users_t.update().where(users_t.c.key == sa.bindparam("k"))
_USER_GET = sa.select(users_t).where(users_t.c.key == sa.bindparam("k"))
_SNAPSHOT_GET = sa.select(snapshots_t.c.data).where(snapshots_t.c.key == sa.bindparam("k"))
_USER_WAVE = sa.select(users_t.c.wave).where(users_t.c.key == sa.bindparam("k"))
_EVENT_ADD = events_t.insert()
_CHANGE_FIND = sa.select(changes_t.c.id, changes_t.c.status).where(
    changes_t.c.key == sa.bindparam("k"),
    changes_t.c.stage == sa.bindparam("s"),
    changes_t.c.kind == sa.bindparam("kd"),
    changes_t.c.target == sa.bindparam("t"),
)
_CHANGE_ADD = changes_t.insert()
_CHANGE_SET = changes_t.update().where(changes_t.c.id == sa.bindparam("cid"))
_CHANGE_UNDO = sa.select(changes_t.c.undo).where(changes_t.c.id == sa.bindparam("cid"))


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class UserRow:
    key: str
    wave: str
    muni: str
    legacy_id: str
    account: str | None
    state: str
    stage: str
    reason: str
    updated: str


@dataclass(frozen=True)
class ChangeRow:
    id: int
    key: str
    wave: str
    stage: str
    system: str
    kind: str
    target: str
    undo: dict[str, Any]
    status: str
    planned: str
    done: str | None


class Ledger:
    """The ledger at an SQLAlchemy URL; tables are created on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown = masked(url)
        database = sa.engine.make_url(url).database if url.startswith("sqlite") else None
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.engine: Engine = sa.create_engine(url, future=True)
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        meta.create_all(self.engine)
        if database and database != ":memory:":
            _owner_only(Path(database))
        self._lock = threading.Lock() if url.startswith("sqlite") else None

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        if self._lock is None:
            with self.engine.begin() as conn:
                yield conn
            return
        with self._lock, self.engine.begin() as conn:  # one SQLite writer at a time, no busy retries
            yield conn

    # --- waves ----------------------------------------------------------------------------------

    def open_wave(self, wave_id: str, users: list[tuple[str, str, str]], file: str | None = None) -> None:
        """Create the wave (if new) and its users as pending (those already known keep their state)."""
        with self._tx() as conn:
            if conn.execute(sa.select(waves_t.c.id).where(waves_t.c.id == wave_id)).first() is None:
                conn.execute(waves_t.insert().values(id=wave_id, state="running", detail="", started=now(), file=file))
            known = {r[0] for r in conn.execute(sa.select(users_t.c.key).where(users_t.c.wave == wave_id))}
            new = [
                {
                    "key": k,
                    "wave": wave_id,
                    "muni": m,
                    "legacy_id": i,
                    "state": "pending",
                    "stage": "",
                    "reason": "",
                    "updated": now(),
                }
                for k, m, i in users
                if k not in known
            ]
            if new:
                conn.execute(users_t.insert(), new)
                conn.execute(
                    events_t.insert(),
                    [
                        {
                            "key": u["key"],
                            "wave": wave_id,
                            "state": "pending",
                            "stage": "",
                            "message": "added to the wave",
                            "at": u["updated"],
                        }
                        for u in new
                    ],
                )

    def wave(self, wave_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(waves_t).where(waves_t.c.id == wave_id)).mappings().first()
        if row is None:
            return None
        out = dict(row)
        out["approval"] = json.loads(row["approval"]) if row["approval"] else None
        return out

    def set_wave(self, wave_id: str, state: str, detail: str = "", ended: bool = False) -> None:
        with self._tx() as conn:
            values: dict[str, Any] = {"state": state, "detail": detail}
            if ended:
                values["ended"] = now()
            conn.execute(waves_t.update().where(waves_t.c.id == wave_id).values(**values))

    def approve(self, wave_id: str, approval: dict[str, Any]) -> None:
        with self._tx() as conn:
            conn.execute(waves_t.update().where(waves_t.c.id == wave_id).values(approval=json.dumps(approval)))

    def record_handover(self, wave_id: str, by: str, users: int) -> None:
        """Record that the wave's initial passwords were handed over (and their file deleted)."""
        with self._tx() as conn:
            conn.execute(handovers_t.delete().where(handovers_t.c.wave == wave_id))
            conn.execute(handovers_t.insert().values(wave=wave_id, by=by, users=users, at=now()))

    def handover(self, wave_id: str) -> dict[str, Any] | None:
        """When, by whom and for how many users the wave's passwords were handed over, if they were."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(handovers_t).where(handovers_t.c.wave == wave_id)).mappings().first()
        return dict(row) if row else None

    def retry_failed(self, wave_id: str) -> int:
        """Put the wave's failed users (already undone) back to pending; return how many."""
        failed = [u for u in self.users(wave_id) if u.state == "failed"]
        for u in failed:
            self.set_user(u.key, "pending", "", "retry requested", wave=wave_id)
        return len(failed)

    # --- snapshots ------------------------------------------------------------------------------

    def save_snapshot(self, key: str, wave_id: str, data: dict[str, Any]) -> None:
        """Keep the first snapshot of a user: the world before the wave wrote anything."""
        with self._tx() as conn:
            if conn.execute(sa.select(snapshots_t.c.key).where(snapshots_t.c.key == key)).first() is None:
                conn.execute(snapshots_t.insert().values(key=key, wave=wave_id, data=json.dumps(data), taken=now()))

    def snapshot(self, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(_SNAPSHOT_GET, {"k": key}).first()
        return json.loads(row[0]) if row else None

    # --- users ----------------------------------------------------------------------------------

    def set_user(
        self, key: str, state: str, stage: str, message: str, account: str | None = None, wave: str | None = None
    ) -> str:
        """Change a user's state and add the event; return the time. Only ikomm.migration.set_state calls this."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        at = now()
        values: dict[str, Any] = {"state": state, "stage": stage, "updated": at}
        values["reason"] = message if state in ("failed", "held") else ""
        if account is not None:
            values["account"] = account
        with self._tx() as conn:
            if wave is None:
                row = conn.execute(_USER_WAVE, {"k": key}).first()
                if row is None:
                    raise KeyError(key)
                wave = str(row[0])
            if conn.execute(_USER_SET, {"k": key, **values}).rowcount != 1:
                raise KeyError(key)
            conn.execute(
                _EVENT_ADD, {"key": key, "wave": wave, "state": state, "stage": stage, "message": message, "at": at}
            )
        return at

    def user(self, key: str) -> UserRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(_USER_GET, {"k": key}).mappings().first()
        return UserRow(**row) if row else None

    def users(self, wave_id: str) -> list[UserRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(users_t).where(users_t.c.wave == wave_id).order_by(users_t.c.key))
            return [UserRow(**r) for r in rows.mappings()]

    def find_users(self, text: str) -> list[UserRow]:
        """Users whose key, legacy id or account name equals text (the helpdesk's search)."""
        with self.engine.connect() as conn:
            c = users_t.c
            rows = conn.execute(sa.select(users_t).where(sa.or_(c.key == text, c.legacy_id == text, c.account == text)))
            return [UserRow(**r) for r in rows.mappings()]

    def events(self, key: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(events_t).where(events_t.c.key == key).order_by(events_t.c.id))
            return [dict(r) for r in rows.mappings()]

    def counts(self, wave_id: str) -> dict[tuple[str, str], int]:
        """(municipality, state) -> number of users."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(users_t.c.muni, users_t.c.state, sa.func.count())
                .where(users_t.c.wave == wave_id)
                .group_by(users_t.c.muni, users_t.c.state)
            )
            return {(m, s): n for m, s, n in rows}

    # --- changes --------------------------------------------------------------------------------

    def change_status(self, change_id: int) -> str:
        """planned, done or undone."""
        with self.engine.connect() as conn:
            return str(conn.execute(sa.select(changes_t.c.status).where(changes_t.c.id == change_id)).scalar_one())

    def plan_change(
        self, key: str, wave_id: str, stage: str, system: str, kind: str, target: str, undo: dict[str, Any]
    ) -> int:
        """Record a change before it is made; the same change recorded again returns the first record."""
        with self._tx() as conn:
            found = conn.execute(_CHANGE_FIND, {"k": key, "s": stage, "kd": kind, "t": target}).first()
            if found is not None:
                if found[1] == "undone":  # made again after a rollback: a new life, a new before
                    values = {"status": "planned", "undo": json.dumps(undo), "planned": now(), "done": None}
                    conn.execute(_CHANGE_SET, {"cid": found[0], **values})
                return int(found[0])
            result = conn.execute(
                _CHANGE_ADD,
                {
                    "key": key,
                    "wave": wave_id,
                    "stage": stage,
                    "system": system,
                    "kind": kind,
                    "target": target,
                    "undo": json.dumps(undo),
                    "status": "planned",
                    "planned": now(),
                },
            )
            primary = result.inserted_primary_key
            assert primary is not None
            return int(primary[0])

    def confirm(self, change_id: int, undo: dict[str, Any] | None = None) -> None:
        """Mark a change as made (adding to its undo data what was only known afterwards)."""
        values: dict[str, Any] = {"status": "done", "done": now()}
        with self._tx() as conn:
            if undo:
                old = conn.execute(_CHANGE_UNDO, {"cid": change_id}).scalar_one()
                values["undo"] = json.dumps({**json.loads(old), **undo})
            conn.execute(_CHANGE_SET, {"cid": change_id, **values})

    def mark_undone(self, change_id: int) -> None:
        with self._tx() as conn:
            conn.execute(_CHANGE_SET, {"cid": change_id, "status": "undone", "done": now()})

    def changes(
        self, key: str, stages: tuple[str, ...] | None = None, statuses: tuple[str, ...] = ("planned", "done")
    ) -> list[ChangeRow]:
        """A user's changes, newest first (the order to undo them in)."""
        c = changes_t.c
        query = sa.select(changes_t).where(c.key == key, c.status.in_(statuses))
        if stages:
            query = query.where(c.stage.in_(stages))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(c.id.desc())).mappings()
            return [ChangeRow(**{**r, "undo": json.loads(r["undo"])}) for r in rows]


def _owner_only(database: Path) -> None:
    """Make the SQLite files (database, -wal, -shm) 0600 with chmod alone.

    Never by opening them: closing any descriptor of a database file drops every POSIX lock this
    process holds on it, including the one each WAL connection keeps, and another process may then
    take itself for the last connection and reset the WAL under us (a malformed database, seen here).
    """
    for path in (database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
        try:
            if path.stat().st_mode & 0o777 != 0o600:
                path.chmod(0o600)
        except FileNotFoundError:
            pass


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()

"""The ledger: every user's state, every change recorded before it is made and confirmed after.

SQLite in WAL mode by default; any SQLAlchemy URL (PostgreSQL in particular) for scale-out. Tables:

    waves       one row a wave: state, approval, when it started and ended
    users       one row a user: where the user is now: the wave that owns them, the state (pending,
                running, migrated, verified, failed, held, rolled_back, left_out), the stage, the
                reason, the platform account name
    wave_users  one row a (wave, user): what became of the user in that wave (the states above, or
                skipped: moved by another wave; handed_over: taken by a later wave): the history
    events      every state change, with its wave: "what happened to user X, and when?"
    leases      one writer per wave: the process running it, renewed while it lives; on workers also
                one per batch (its flow run) and one per user the batch moves
    tallies     counts that a wave's processes share while it runs on workers: its failure budget
                (started, failed) and the seats it took per application
    wave_notes  what a wave's record should say besides its state (a preflight skipped, and by whom)
    run_links   the Prefect task run that moved a user in a wave and phase: the helpdesk's link to the UI
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
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ikomm.chunks import chunks
from ikomm.errors import ConflictError

STATES = ("pending", "running", "migrated", "verified", "failed", "held", "rolled_back", "left_out")
WAVE_ONLY = ("skipped", "handed_over")  # a wave's row only: the user is, or went, elsewhere
FINAL = ("verified", "failed", "held", "rolled_back", "left_out", *WAVE_ONLY)
TAKEABLE = ("held", "failed", "rolled_back", "left_out")  # not moved, and no wave working on them
IN_LIST = 500  # keys in one IN (...): small enough for any database

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


def _place() -> list[sa.Column[Any]]:
    """Where a user stands: the columns a user's present (users) and each wave's row (wave_users) share."""
    return [
        sa.Column("muni", sa.String(64), nullable=False),
        sa.Column("legacy_id", sa.String(64), nullable=False),
        sa.Column("account", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False, default=""),
        sa.Column("reason", sa.Text, nullable=False, default=""),
        sa.Column("updated", sa.String(32), nullable=False),
    ]


users_t = sa.Table(
    "users",
    meta,
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("wave", sa.String(64), nullable=False, index=True),
    *_place(),
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
wave_users_t = sa.Table(
    "wave_users",
    meta,
    sa.Column("wave", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(128), primary_key=True),
    *_place(),
    sa.Index("wave_users_key", "key"),
)
leases_t = sa.Table(
    "leases",
    meta,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("holder", sa.String(256), nullable=False),
    sa.Column("since", sa.String(32), nullable=False),
    sa.Column("renewed", sa.Float, nullable=False),
)
notes_t = sa.Table(
    "wave_notes",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("wave", sa.String(64), nullable=False, index=True),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("at", sa.String(32), nullable=False),
)
links_t = sa.Table(
    "run_links",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),  # the newest link has the highest
    sa.Column("key", sa.String(128), nullable=False),
    sa.Column("wave", sa.String(64), nullable=False),
    sa.Column("phase", sa.String(16), nullable=False),
    sa.Column("task_run", sa.String(64), nullable=False),
    sa.Column("at", sa.String(32), nullable=False),
    sa.UniqueConstraint("key", "wave", "phase", name="run_links_once"),
)
handovers_t = sa.Table(
    "handovers",
    meta,
    sa.Column("wave", sa.String(64), primary_key=True),
    sa.Column("by", sa.String(128), nullable=False),
    sa.Column("users", sa.Integer, nullable=False),
    sa.Column("at", sa.String(32), nullable=False),
)
tallies_t = sa.Table(
    "tallies",
    meta,
    sa.Column("wave", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),
)


def url_for(state_dir: Path) -> str:
    """The ledger's URL: IKOMM_LEDGER_URL (any SQLAlchemy URL), or SQLite in the state folder.

    Read from the environment by whoever opens the ledger, never passed as a flow parameter: a
    PostgreSQL URL carries a password, and Prefect stores and shows every parameter. In production
    mode (ikomm.production) the state folder's PostgreSQL is the default.
    """
    from ikomm import production

    if os.environ.get("IKOMM_LEDGER_URL"):
        return os.environ["IKOMM_LEDGER_URL"]
    if production.enabled(state_dir):
        return production.ledger_url(state_dir)
    return f"sqlite:///{state_dir / 'ledger.db'}"


def existing(url: str) -> Ledger | None:
    """The ledger at url if there is one (an SQLite file that exists, or any other database): a reader (status,
    plans, preflight) never creates state."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    return Ledger(url)


def masked(url: str) -> str:
    """The URL as it may be shown: any password replaced by ***."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(a ledger URL that could not be parsed)"


# The statements a wave runs for every user and change, built once and bound at execution: building
# them per call made a state change or a recorded change cost 0.5 ms of CPU instead of 0.1 ms.
_USER_SET = users_t.update().where(users_t.c.key == sa.bindparam("k"), users_t.c.wave == sa.bindparam("w"))
_WAVE_USER_SET = wave_users_t.update().where(
    wave_users_t.c.wave == sa.bindparam("w"), wave_users_t.c.key == sa.bindparam("k")
)
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


@dataclass
class Opening:
    """What opening a wave found for its users: new, already here, taken from another wave, and not taken.

    Each user is counted once: new + resumed + requeued + taken + skipped + left_out is the wave's users (but those
    another wave is working on now); a user left out by policy is counted as left out wherever they came from."""

    new: int = 0
    resumed: int = 0
    requeued: list[str] = field(default_factory=list)  # taken again in this wave (--include, or now ready)
    taken: list[tuple[str, str, str]] = field(default_factory=list)  # (user, from wave, state there)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (user, the wave that moved them)
    left_out: list[str] = field(default_factory=list)
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # (user, open wave, state there)


RECORDED = ("planned", "done", "undone")  # a change as any attempt left it: to make, made, or undone since


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
        if url.startswith("sqlite") and database in (None, "", ":memory:"):  # one shared in-memory database
            self.engine: Engine = sa.create_engine(
                url, poolclass=sa.pool.StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            self.engine = sa.create_engine(url, future=True)
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        _create_tables(self.engine)
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

    def open_wave(
        self,
        wave_id: str,
        users: list[tuple[str, str, str]],
        file: str | None = None,
        left_out: dict[str, str] | None = None,
        include: tuple[str, ...] = (),
        ready: frozenset[str] = frozenset(),
        take_open: bool = False,
        live: frozenset[str] = frozenset(),
    ) -> Opening:
        """Create the wave (if new) and settle where each of its users (key, muni, legacy_id) stands.

        A user new to the ledger joins as pending (or left_out, with the policy's reason); one already
        in this wave stays as it is, unless its state is in include, or it is held and in ready (its
        applications are ready now): then it is taken again. A user another wave moved is skipped;
        one held, failed, rolled back or left out elsewhere is taken; one open in another wave
        (pending, running) is refused, and nothing is written, unless take_open (and that wave has
        no live run, `live` names those): then the other wave's row says handed_over. A user who
        left this wave for the one working on them now is that wave's: left alone, not refused.
        """
        left_out = left_out or {}
        opening = Opening()
        at = now()
        with self._tx() as conn:
            settled = _settle(conn, wave_id, users, left_out, include, ready, take_open, live)
            mine = settled.mine
            plans = [p for p in settled.plans if p[0] not in ("theirs", "refused")]
            opening.refused.extend((p[1], p[4].wave, p[4].state) for p in settled.plans if p[0] == "refused")
            if opening.refused:
                return opening  # nothing written: the caller says why
            if conn.execute(sa.select(waves_t.c.id).where(waves_t.c.id == wave_id)).first() is None:
                conn.execute(waves_t.insert().values(id=wave_id, state="running", detail="", started=at, file=file))
            for action, key, muni, legacy_id, cur in plans:
                state = "left_out" if key in left_out else "pending"
                reason = left_out.get(key, "")
                row = {"muni": muni, "legacy_id": legacy_id, "state": state, "stage": "", "reason": reason}
                if action == "resume":
                    opening.resumed += 1
                    if key not in mine:  # a ledger from before waves kept their own rows
                        conn.execute(wave_users_t.insert().values(wave=wave_id, key=key, **_row(cur), updated=at))
                    continue
                if action == "skip":
                    opening.skipped.append((key, cur.wave))
                    message = f"skipped: already moved by wave {cur.wave} ({cur.updated[:10]})"
                    self._wave_row(conn, mine, wave_id, key, at, **{**row, "state": "skipped", "reason": message})
                    conn.execute(_EVENT_ADD, _event(key, wave_id, "skipped", "", message, at))
                    continue
                if action == "new":
                    opening.new += state != "left_out"  # each user counted once: a left-out one as left out
                    conn.execute(users_t.insert().values(key=key, wave=wave_id, account=None, updated=at, **row))
                    message = reason or "added to the wave"
                else:
                    before = f"{cur.state} in wave {cur.wave}" if cur.wave != wave_id else cur.state
                    cas = conn.execute(
                        users_t.update()
                        .where(users_t.c.key == key, users_t.c.wave == cur.wave, users_t.c.state == cur.state)
                        .values(wave=wave_id, updated=at, **row)
                    )
                    if cas.rowcount != 1:
                        raise ConflictError(f"{key} changed while wave {wave_id} was opening; run it again")
                    if cur.wave != wave_id:
                        if state != "left_out":
                            opening.taken.append((key, cur.wave, cur.state))
                        if cur.state not in TAKEABLE:  # taken from an open wave, as the lead asked
                            conn.execute(
                                _WAVE_USER_SET,
                                {"w": cur.wave, "k": key, "state": "handed_over", "reason": f"taken by {wave_id}"},
                            )
                    elif state != "left_out":
                        opening.requeued.append(key)
                    message = reason or f"taken again (was {before})"
                if state == "left_out":
                    opening.left_out.append(key)
                self._wave_row(conn, mine, wave_id, key, at, **row)
                conn.execute(_EVENT_ADD, _event(key, wave_id, state, "", message, at))
        return opening

    def preview_wave(
        self,
        wave_id: str,
        users: list[tuple[str, str, str]],
        left_out: dict[str, str] | None = None,
        include: tuple[str, ...] = (),
        ready: frozenset[str] = frozenset(),
        take_open: bool = False,
        live: frozenset[str] = frozenset(),
    ) -> dict[str, tuple[str, UserRow | None]]:
        """What open_wave would decide for each user, writing nothing: key -> (action, the user's row now).

        Actions: new, resume (stays as it is in this wave), again (taken again here), take (from
        another wave), skip (moved by another wave), theirs (left this wave for the one working on
        them now), refused (open in another wave).
        """
        with self.engine.connect() as conn:
            settled = _settle(conn, wave_id, users, left_out or {}, include, ready, take_open, live)
        return {p[1]: (p[0], UserRow(**p[4]._mapping) if p[4] is not None else None) for p in settled.plans}

    @staticmethod
    def _wave_row(conn: sa.Connection, mine: dict[str, Any], wave_id: str, key: str, at: str, **row: Any) -> None:
        if key in mine:
            conn.execute(_WAVE_USER_SET, {"w": wave_id, "k": key, "updated": at, **row})
        else:
            conn.execute(wave_users_t.insert().values(wave=wave_id, key=key, account=None, updated=at, **row))

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

    def note(self, wave_id: str, note: str) -> None:
        """Keep a note on the wave's record (a skipped preflight, say): shown by `wave status`."""
        with self._tx() as conn:
            conn.execute(notes_t.insert().values(wave=wave_id, note=note, at=now()))

    def notes(self, wave_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(notes_t).where(notes_t.c.wave == wave_id).order_by(notes_t.c.id))
            return [dict(r) for r in rows.mappings()]

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

    # --- leases: one writer per wave ---------------------------------------------------------------

    def acquire_lease(
        self, name: str, holder: str, alive: Callable[[str, float], bool], describe: Callable[[str], str]
    ) -> str | None:
        """Take the lease for holder; the holder it took over from (a dead one), if any.

        ConflictError if a live holder has it. Each step is one atomic statement (an insert, or an
        update that succeeds only if the row is still as read), so two processes never both win.
        """
        stamp = time.time()
        try:
            with self._tx() as conn:
                conn.execute(leases_t.insert().values(name=name, holder=holder, since=now(), renewed=stamp))
            return None
        except sa.exc.IntegrityError:
            pass
        with self._tx() as conn:
            row = conn.execute(sa.select(leases_t).where(leases_t.c.name == name)).first()
            if row is None:
                raise ConflictError(f"{name}: the lease changed hands just now; run again")
            if row.holder != holder and alive(row.holder, row.renewed):
                raise ConflictError(
                    f"{name.replace(':', ' ')} is being run by {describe(row.holder)} since {row.since[:19]} UTC; "
                    "one run at a time (wait for it, or stop it: a killed run gives the wave up at once)"
                )
            taken = conn.execute(
                leases_t.update()
                .where(leases_t.c.name == name, leases_t.c.holder == row.holder, leases_t.c.renewed == row.renewed)
                .values(holder=holder, since=now(), renewed=stamp)
            )
            if taken.rowcount != 1:
                raise ConflictError(f"{name}: another process took the lease just now; run again")
        return None if row.holder == holder else str(row.holder)

    def release_lease(self, name: str, holder: str) -> None:
        with self._tx() as conn:
            conn.execute(leases_t.delete().where(leases_t.c.name == name, leases_t.c.holder == holder))

    def claim_leases(
        self, names: Iterable[str], holder: str, alive: Callable[[str, float], bool], describe: Callable[[str], str]
    ) -> tuple[list[str], dict[str, str]]:
        """Take each lease that no live process holds; (names taken, {name: why not} for the others)."""
        taken: list[str] = []
        refused: dict[str, str] = {}
        for name in names:
            try:
                self.acquire_lease(name, holder, alive, describe)
                taken.append(name)
            except ConflictError as exc:
                refused[name] = str(exc)
        return taken, refused

    def renew_leases_of(self, holder: str) -> None:
        """Renew every lease this holder has, in one statement."""
        with self._tx() as conn:
            conn.execute(leases_t.update().where(leases_t.c.holder == holder).values(renewed=time.time()))

    def release_leases_of(self, holder: str, names: Iterable[str] | None = None) -> None:
        """Give up the holder's leases (those named, or all)."""
        where = leases_t.c.holder == holder
        if names is not None:
            where = sa.and_(where, leases_t.c.name.in_(list(names)))
        with self._tx() as conn:
            conn.execute(leases_t.delete().where(where))

    def lease(self, name: str) -> tuple[str, float] | None:
        """(holder, last renewed) of the lease, if anyone holds it."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(leases_t).where(leases_t.c.name == name)).first()
        return (row.holder, row.renewed) if row else None

    def leases(self) -> list[tuple[str, str, float]]:
        """(name, holder, last renewed) of every lease held or left behind."""
        with self.engine.connect() as conn:
            return [(r.name, r.holder, r.renewed) for r in conn.execute(sa.select(leases_t))]

    # --- tallies: counts a wave's workers share ------------------------------------------------

    def tally(self, wave_id: str, name: str, first: Callable[[], int] | None = None) -> int:
        """The count; made from first() (or 0) if there is none yet (whoever makes it first wins)."""
        c = tallies_t.c
        with self.engine.connect() as conn:
            n = conn.execute(sa.select(c.n).where(c.wave == wave_id, c.name == name)).scalar()
        if n is not None:
            return int(n)
        start = first() if first else 0
        try:
            with self._tx() as conn:
                conn.execute(tallies_t.insert().values(wave=wave_id, name=name, n=start))
            return start
        except sa.exc.IntegrityError:  # another process made it meanwhile: theirs counts
            return self.tally(wave_id, name)

    def add_tally(self, wave_id: str, name: str, by: int = 1, below: int | None = None) -> bool:
        """Add to the count, which tally() made; only while it stays at or below `below`, if given. False if not
        added. One atomic statement: two processes never both take the last seat.
        """
        c = tallies_t.c
        where = sa.and_(c.wave == wave_id, c.name == name)
        if below is not None:
            where = sa.and_(where, c.n + by <= below)
        with self._tx() as conn:
            return conn.execute(tallies_t.update().where(where).values(n=c.n + by)).rowcount == 1

    def forget_tallies(self, wave_id: str) -> None:
        """Drop the wave's counts: the next run counts afresh (seats from the directory, the budget from 0)."""
        with self._tx() as conn:
            conn.execute(tallies_t.delete().where(tallies_t.c.wave == wave_id))

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
        values["reason"] = message if state in ("failed", "held", "left_out") else ""
        if account is not None:
            values["account"] = account
        with self._tx() as conn:
            if wave is None:
                row = conn.execute(_USER_WAVE, {"k": key}).first()
                if row is None:
                    raise KeyError(key)
                wave = str(row[0])
            if conn.execute(_USER_SET, {"k": key, "w": wave, **values}).rowcount != 1:
                owner = conn.execute(_USER_WAVE, {"k": key}).first()
                if owner is None:
                    raise KeyError(key)
                raise ConflictError(f"{key} belongs to wave {owner[0]} now, not {wave}: this wave may not change it")
            conn.execute(_WAVE_USER_SET, {"k": key, "w": wave, **values})
            conn.execute(_EVENT_ADD, _event(key, wave, state, stage, message, at))
        return at

    def user(self, key: str) -> UserRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(_USER_GET, {"k": key}).mappings().first()
        return UserRow(**row) if row else None

    def users(self, wave_id: str) -> list[UserRow]:
        """The wave's users and what became of each in this wave (the wave's own rows)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(wave_users_t).where(wave_users_t.c.wave == wave_id).order_by(wave_users_t.c.key)
            )
            return [UserRow(**r) for r in rows.mappings()]

    def owned(self, wave_id: str) -> list[UserRow]:
        """The users this wave owns now (not those it skipped or another wave took since)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(users_t).where(users_t.c.wave == wave_id).order_by(users_t.c.key))
            return [UserRow(**r) for r in rows.mappings()]

    def everyone(self) -> list[UserRow]:
        """Every user the ledger knows, where each stands now."""
        with self.engine.connect() as conn:
            return [UserRow(**r) for r in conn.execute(sa.select(users_t).order_by(users_t.c.key)).mappings()]

    def history(self, key: str) -> list[UserRow]:
        """The user's row in every wave that selected them, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(wave_users_t).where(wave_users_t.c.key == key).order_by(wave_users_t.c.updated)
            )
            return [UserRow(**r) for r in rows.mappings()]

    def waves(self) -> list[dict[str, Any]]:
        """Every wave the ledger knows, oldest first."""
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(waves_t).order_by(waves_t.c.started)).mappings()]

    def find_users(self, text: str, keys: Iterable[str] = ()) -> list[UserRow]:
        """Users whose key, legacy id or account name equals text, whatever the case, or whose key is in keys
        (the helpdesk's search; the inventory finds keys by a person's name)."""
        wanted = text.strip().lower()
        with self.engine.connect() as conn:
            c = users_t.c
            match = sa.or_(
                sa.func.lower(c.key) == wanted,
                sa.func.lower(c.legacy_id) == wanted,
                sa.func.lower(c.account) == wanted,
                c.key.in_(list(keys)),
            )
            rows = conn.execute(sa.select(users_t).where(match).order_by(c.key))
            return [UserRow(**r) for r in rows.mappings()]

    def link_task_runs(self, wave_id: str, phase: str, task_runs: Mapping[str, str]) -> None:
        """Record the Prefect task run (id) that takes each user (key) through a phase of the wave."""
        if not task_runs:
            return
        at = now()
        with self._tx() as conn:
            conn.execute(
                links_t.delete().where(
                    links_t.c.wave == wave_id, links_t.c.phase == phase, links_t.c.key.in_(list(task_runs))
                )
            )
            conn.execute(
                links_t.insert(),
                [{"key": k, "wave": wave_id, "phase": phase, "task_run": t, "at": at} for k, t in task_runs.items()],
            )

    def task_runs(self, wave_id: str, since: str | None = None) -> dict[str, str]:
        """User -> the newest task run that took them through this wave (a phase's later run wins); only those
        linked at or after `since` (a time from now()), if given."""
        c = links_t.c
        query = sa.select(c.key, c.task_run).where(c.wave == wave_id)
        if since is not None:
            query = query.where(c.at >= since)
        with self.engine.connect() as conn:
            return {key: task_run for key, task_run in conn.execute(query.order_by(c.id))}

    def task_run_of(self, key: str, wave_id: str) -> str | None:
        """The newest task run that took this user through this wave, if one is recorded."""
        c = links_t.c
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(c.task_run).where(c.key == key, c.wave == wave_id).order_by(c.id.desc()).limit(1)
            ).first()
            return str(row[0]) if row else None

    def task_runs_of(self, keys: Iterable[str], wave_id: str, but: set[str]) -> list[tuple[str, str]]:
        """(key, task run) of every task run recorded for these users in this wave, but those in `but`."""
        c = links_t.c
        wanted = list(keys)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(c.key, c.task_run).where(c.wave == wave_id, c.key.in_(wanted)).order_by(c.id)
            ).all()
        return [(str(k), str(t)) for k, t in rows if str(t) not in but]

    def events(self, key: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(events_t).where(events_t.c.key == key).order_by(events_t.c.id))
            return [dict(r) for r in rows.mappings()]

    def moved_days(self) -> dict[str, str]:
        """User -> the day (UTC, ISO) of their last verification."""
        c = events_t.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(c.key, sa.func.max(c.at)).where(c.state == "verified").group_by(c.key))
            return {key: str(at)[:10] for key, at in rows}

    def downtimes(self, wave_id: str) -> dict[str, float]:
        """User -> seconds they could work nowhere in this wave's cutover: from the cutover stage's start (their
        legacy session logged off, their thin client pointed away) to verified on the platform; the last
        cutover of each user verified in this wave."""
        c = events_t.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(c.key, c.state, c.stage, c.at)
                .where(c.wave == wave_id, sa.or_(c.stage == "cutover", c.state == "verified"))
                .order_by(c.id)
            ).all()
        began: dict[str, str] = {}
        took: dict[str, float] = {}
        for key, state, stage, at in rows:
            if stage == "cutover" and state == "running":
                began[key] = at
            elif state == "verified" and key in began:
                took[key] = (datetime.fromisoformat(at) - datetime.fromisoformat(began.pop(key))).total_seconds()
        return took

    def progress(self, wave_id: str) -> tuple[int, int]:
        """(users in a final state, users prepared and waiting for the cutover) of the wave, counted by the database
        (the wave's progress while workers move its users: reading every row was 130-175 ms of CPU at 10,000 users)."""
        c = wave_users_t.c
        final = c.state.in_(FINAL)
        with self.engine.connect() as conn:
            done, prepared = conn.execute(
                sa.select(
                    sa.func.count().filter(final), sa.func.count().filter(sa.and_(~final, c.stage == "prepared"))
                ).where(c.wave == wave_id)
            ).one()
        return int(done), int(prepared)

    def counts(self, wave_id: str) -> dict[tuple[str, str], int]:
        """(municipality, state) -> number of the wave's users."""
        c = wave_users_t.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(c.muni, c.state, sa.func.count()).where(c.wave == wave_id).group_by(c.muni, c.state)
            )
            return {(m, s): n for m, s, n in rows}

    # --- changes --------------------------------------------------------------------------------

    def change_status_of(self, key: str, stage: str, kind: str, target: str) -> str | None:
        """planned, done or undone for the change with this key, or None if it was never recorded."""
        with self.engine.connect() as conn:
            found = conn.execute(_CHANGE_FIND, {"k": key, "s": stage, "kd": kind, "t": target}).first()
        return str(found[1]) if found else None

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
        """A user's changes, the last made first (the order to undo them in).

        Last made, not first recorded: a change made again after it was undone keeps its record (and its id) and
        gets a new planned time, and must be undone before what was made before it in that attempt (an account
        enabled again after it was brought back from the parking OU is disabled before it is parked again).
        """
        c = changes_t.c
        query = sa.select(changes_t).where(c.key == key, c.status.in_(statuses))
        if stages:
            query = query.where(c.stage.in_(stages))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(c.planned.desc(), c.id.desc())).mappings()
            return [ChangeRow(**{**r, "undo": json.loads(r["undo"])}) for r in rows]


@dataclass
class _Settled:
    plans: list[tuple[str, str, str, str, Any]]  # (action, key, muni, legacy_id, the user's row now)
    mine: dict[str, Any]  # this wave's own rows, by key


def _settle(
    conn: sa.Connection,
    wave_id: str,
    users: list[tuple[str, str, str]],
    left_out: dict[str, str],
    include: tuple[str, ...],
    ready: frozenset[str],
    take_open: bool,
    live: frozenset[str],
) -> _Settled:
    """Where each user of the wave stands and what opening the wave does with them (Ledger.open_wave)."""
    current = {
        r.key: r
        for chunk in chunks([k for k, _, _ in users], IN_LIST)
        for r in conn.execute(sa.select(users_t).where(users_t.c.key.in_(chunk)))
    }
    mine = {r.key: r for r in conn.execute(sa.select(wave_users_t).where(wave_users_t.c.wave == wave_id))}
    plans: list[tuple[str, str, str, str, Any]] = []
    for key, muni, legacy_id in users:
        cur = current.get(key)
        if cur is None:
            action = "new"
        elif cur.wave == wave_id:
            again = cur.state in include or (cur.state == "held" and key in ready)
            policy_changed = cur.state == "left_out" and key not in left_out
            action = "again" if again or policy_changed else "resume"
        elif cur.state == "verified":
            action = "skip"
        elif key in mine and cur.state not in TAKEABLE:
            action = "theirs"  # went from this wave to the one working on them now: theirs, not refused
        elif cur.state in TAKEABLE or (take_open and cur.wave not in live):
            action = "take"
        else:
            action = "refused"
        plans.append((action, key, muni, legacy_id, cur))
    return _Settled(plans, mine)


_CREATING = threading.Lock()


def _create_tables(engine: Engine) -> None:
    """Create the tables that are missing; another thread or process creating them at the same time is fine."""
    with _CREATING:
        try:
            meta.create_all(engine)
        except sa.exc.OperationalError as exc:  # created by another process between the check and the CREATE
            if "already exists" not in str(exc):
                raise
            meta.create_all(engine)


def _event(key: str, wave: str, state: str, stage: str, message: str, at: str) -> dict[str, str]:
    return {"key": key, "wave": wave, "state": state, "stage": stage, "message": message, "at": at}


def _row(user: Any) -> dict[str, Any]:
    """The per-wave columns of a users row."""
    return {k: getattr(user, k) for k in ("muni", "legacy_id", "account", "state", "stage", "reason")}


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

"""Preflight: everything a wave needs, checked before it writes anything (`ikomm preflight`, and `wave run`).

    window      the wave's window is open now (or the lead runs it outside, recorded)
    servers     every directory, file server, the config host and the broker answer: TLS validated,
                host keys known, credentials bind
    names       no account name the wave would create is taken by another user's account
    seats       the applications have seats for the users who still need one
    space       each platform file server has room for the bytes the wave copies to it

The Prefect checks (server up, concurrency limits present) are added by the caller, which knows
Prefect; this module does not. Every check is read-only. A check that cannot run (its server is
down) says so instead of passing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from ikomm.chunks import chunks
from ikomm.connectors.directory import DirectoryConnector
from ikomm.errors import IkommError, InvalidInputError
from ikomm.ledger import FINAL
from ikomm.policy import left_out_reason, needed_apps
from ikomm.stages import not_ours, trees
from ikomm.wave_run import WaveRun
from ikomm.waves import WaveUser


@dataclass(frozen=True)
class Check:
    """One thing preflight looked at: what, whether it is fine, and what it found."""

    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def preflight(run: WaveRun, extra: list[Check] | None = None, outside_window: bool = False) -> list[Check]:
    """Every check for the wave, in order; the wave may start only if all are ok.

    outside_window: the lead has decided to run although the window has ended (recorded by the caller).
    """
    checks = [window(run, outside_window)]
    servers = reachable(run)
    checks += servers
    down = {c.name for c in servers if not c.ok}
    checks += list(extra or [])
    todo = users_to_move(run)
    if "platform-ad" in down:
        checks.append(Check("names and seats", False, "not checked: the platform directory does not answer"))
    else:
        checks += names_free(run, todo)
        checks += seats_free(run, todo)
    checks += space_free(run, todo, down)
    return checks


def window(run: WaveRun, outside_window: bool = False) -> Check:
    """The wave's window is open now (a wave without a window may run any time); before it opens or after it ended
    only when the lead says so (--outside-window, recorded on the wave)."""
    w = run.wave.spec.window
    if w is None:
        return Check("window", True, "no window: the wave may run any time")
    now = datetime.now(UTC) if w.start.tzinfo is not None else datetime.now()
    if w.start <= now <= w.end:
        return Check("window", True, f"open until {w.end.isoformat()}")
    when = f"ended at {w.end.isoformat()}" if w.end < now else f"opens at {w.start.isoformat()}"
    if outside_window:
        return Check("window", True, f"{when}; run anyway (--outside-window, recorded)")
    then = "give the wave a new one" if w.end < now else "run it then"
    return Check("window", False, f"the window {when}: {then}, or run it now anyway with --outside-window")


def _try(name: str, probe: Callable[[], str]) -> Check:
    try:
        return Check(name, True, probe())
    except IkommError as exc:
        return Check(name, False, f"{type(exc).__name__}: {exc}")


def reachable(run: WaveRun) -> list[Check]:
    """Bind to each directory over TLS, open each SFTP server with its known host key, ask the broker."""
    inv, c = run.inv, run.c
    probes: list[tuple[str, Callable[[], str]]] = []

    def directory(d: DirectoryConnector, base: str) -> Callable[[], str]:
        def probe() -> str:
            d.read(base, ["1.1"])
            return f"{d.config.host}:{d.config.port}: bound over TLS as the wave's service account"

        return probe

    probes.append(("platform-ad", directory(c.platform(), inv.platform.directory.base_dn)))
    for muni in run.wave.spec.municipalities:
        legacy = inv.municipalities[muni].legacy
        probes.append((f"legacy-dir-{muni}", directory(c.legacy(muni), legacy.directory.users_dn)))
        probes.append((legacy.file_server.name, _sftp(run, legacy.file_server.host, legacy.file_server.port)))
    for zone in sorted({wu.user.zone for wu in run.wave.users}):
        fs = inv.zone(zone).file_server
        probes.append((fs.name, _sftp(run, fs.host, fs.port)))
    host = inv.platform.thin_client_config_host
    probes.append(("config-host", _sftp(run, host.host, host.port)))
    collections = sorted({inv.zone(wu.user.zone).terminal_farm.collection for wu in run.wave.users})

    def broker() -> str:
        for collection in collections:
            c.broker().collection_users(collection)
        return f"{inv.platform.broker.host}: answers over HTTPS for {', '.join(collections)}"

    probes.append(("broker", broker))
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda p: _try(*p), probes))


def _sftp(run: WaveRun, host: str, port: int) -> Callable[[], str]:
    def probe() -> str:
        run.c.sftp(host, port).exists("/")
        return f"{host}:{port}: host key as known, key accepted"

    return probe


def users_to_move(run: WaveRun) -> list[WaveUser]:
    """The wave's users not yet in a final state here (a new wave: all of them)."""
    done = {r.key for r in run.ledger.users(run.wave.id) if r.state in FINAL}
    include_disabled = run.wave.spec.options.include_disabled
    return [wu for wu in run.wave.users if wu.key not in done and left_out_reason(wu.user, include_disabled) is None]


def names_free(run: WaveRun, todo: list[WaveUser]) -> list[Check]:
    """No account name the wave would use is taken by an account linked to someone else, and every account that
    carries a user's link is one the wave may adopt (ikomm.stages.not_ours): in the user's own OU or parked, and
    made by a wave of ours."""
    d = run.inv.platform.directory
    by_name = {run.account(wu).lower(): wu for wu in todo}
    by_link = {f"{wu.muni}:{wu.user.legacy_id}": wu for wu in todo}
    taken, foreign = [], []
    for entry in run.c.platform().search(d.base_dn, "(sAMAccountName=*)", ["sAMAccountName", "employeeNumber"]):
        name = (entry.get("sAMAccountName") or ("",))[0].lower()
        link = (entry.get("employeeNumber") or ("",))[0]
        named = by_name.get(name)
        if named is not None and link != f"{named.muni}:{named.user.legacy_id}":
            taken.append(f"{name} ({entry.dn})")
        owner = by_link.get(link)
        why = not_ours(run, owner, entry.dn) if owner is not None else None
        if owner is not None and why:
            foreign.append(f"{owner.key}: {why}")
    checks = []
    if taken:
        listed = ", ".join(taken[:10]) + (f" and {len(taken) - 10} more" if len(taken) > 10 else "")
        checks.append(Check("names", False, f"{len(taken)} account name(s) taken by another account: {listed}"))
    else:
        checks.append(Check("names", True, f"{len(by_name)} account name(s) free or already this user's"))
    if foreign:
        listed = "; ".join(foreign[:10]) + (f"; and {len(foreign) - 10} more" if len(foreign) > 10 else "")
        checks.append(
            Check("adoption", False, f"{len(foreign)} account(s) carry a user's link but are not ours: {listed}")
        )
    return checks


def seats_free(run: WaveRun, todo: list[WaveUser]) -> list[Check]:
    """Each application has a seat for every user of the wave who needs one and is not a member yet."""
    need: dict[str, list[WaveUser]] = {}
    for wu in todo:
        for app in needed_apps(run.inv, wu.muni, wu.user):
            if wu.muni in app.groups:
                need.setdefault(app.id, []).append(wu)
    full = []
    for app_id, users in sorted(need.items()):
        app = run.inv.applications[app_id]
        members = [m.lower() for m in run.seats.members(app)]  # counted as the run's seat book counts them
        names = {run.account(wu).lower() for wu in users}
        already = sum(1 for m in members if m.split(",", 1)[0].removeprefix("cn=") in names)
        wanted = len(users) - already
        if len(members) + wanted > app.seat_limit:
            full.append(f"{app.name}: {len(members)} used + {wanted} needed > {app.seat_limit}")
    if full:
        return [Check("seats", False, "not enough seats: " + "; ".join(full))]
    return [Check("seats", True, f"{len(need)} application(s) have seats for the users who need them")]


def space_free(run: WaveRun, todo: list[WaveUser], down: set[str]) -> list[Check]:
    """Each platform file server's free space against the bytes the wave would copy to it (at most)."""
    by_server: dict[str, list[WaveUser]] = {}
    for wu in todo:
        by_server.setdefault(run.inv.zone(wu.user.zone).file_server.name, []).append(wu)
    checks = []
    for name, users in sorted(by_server.items()):
        unreached = sorted(({name} | {run.inv.municipalities[wu.muni].legacy.file_server.name for wu in users}) & down)
        if unreached:
            checks.append(Check(f"space on {name}", False, f"not checked: {', '.join(unreached)} not reached"))
            continue
        try:
            wanted = _bytes_to_copy(run, users)
            zone = next(z for z in run.inv.platform.zones if z.file_server.name == name)
            free = run.c.zone_files(zone.id).free_bytes(zone.file_server.home_root)
        except IkommError as exc:
            checks.append(Check(f"space on {name}", False, f"{type(exc).__name__}: {exc}"))
            continue
        detail = f"{wanted:,} bytes to copy for {len(users)} user(s), {free:,} free"
        checks.append(Check(f"space on {name}", wanted < free, detail))
    return checks


WALKED_TOGETHER = 100  # user folders walked over one SFTP session at a time (`FileServer.manifests`)


def _bytes_to_copy(run: WaveRun, users: list[WaveUser]) -> int:
    """The size of the users' profile and home folders on the legacy side (an upper bound of what moves).

    The folders of a legacy file server are walked WALKED_TOGETHER at a time, each lot over one session with its
    listings in flight together: about half the time and CPU of walking each user's folders on their own
    (docs/benchmarks.md). A folder that does not exist moves nothing."""
    roots: dict[str, list[str]] = {}
    for wu in users:
        roots.setdefault(wu.muni, []).extend(src_root for _kind, src_root, _dst in trees(run, wu))
    lots = [(muni, lot) for muni, paths in roots.items() for lot in chunks(paths, WALKED_TOGETHER)]

    def size(lot: tuple[str, Sequence[str]]) -> int:
        total = 0
        for found in run.c.legacy_files(lot[0]).manifests(lot[1], hashes=False).values():
            if isinstance(found, InvalidInputError):  # no such folder
                continue
            if isinstance(found, IkommError):
                raise found
            total += found.bytes
        return total

    with ThreadPoolExecutor(max_workers=min(4, max(1, len(lots)))) as pool:
        return sum(pool.map(size, lots))


def problems(checks: list[Check]) -> list[Check]:
    """The checks that failed."""
    return [c for c in checks if not c.ok]

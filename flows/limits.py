"""Per-system limits leased from Prefect's global concurrency limits for the length of a phase.

Each outside system has a global concurrency limit named `ikomm-<system>` (created with the wave's
value when missing; a value an operator set in the UI wins when it is lower). A wave process leases
its slots of every system when a phase starts, in one fixed order (so two waves cannot deadlock),
and hands them to its users through in-process semaphores; a second wave against the same servers
waits until the slots are free. One lease per system and phase, not one per operation: an acquire
costs about 130 ms here, and a user passes through seven holds (docs/waves.md).

The leases are taken through Prefect's public client API (increment-with-lease), renewed while the
phase runs, and each lease id is recorded in the ledger as `slots:<id>`, held by this process. Prefect
lets a killed process's leases lapse after LEASE_SECONDS; the next process that leases (a resumed wave,
a batch submitted again) gives back at once the slots of every recorded holder that is dead
(`free_lost_slots`), so nobody waits for them.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound

from ikomm.errors import FatalError
from ikomm.inventory import Inventory
from ikomm.leases import alive, describe, this_process
from ikomm.ledger import Ledger
from ikomm.preflight import Check, preflight
from ikomm.wave_run import WaveRun
from ikomm.waves import Wave

LEASE_SECONDS = 60  # Prefect's minimum; renewed while the phase runs


def limit_size(client: SyncPrefectClient, name: str, wanted: int) -> int:
    """The global concurrency limit's size: made with `wanted` if missing, else the lower of the two."""
    try:
        return max(1, min(wanted, client.read_global_concurrency_limit_by_name(name).limit))
    except ObjectNotFound:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=wanted))
        except Exception:  # another process made it just now: read theirs
            return max(1, min(wanted, client.read_global_concurrency_limit_by_name(name).limit))
        return wanted


@contextmanager
def leased(limits: dict[str, int], ledger: Ledger, share: int = 1) -> Iterator[dict[str, int]]:
    """Hold every system's slots while inside; yield the number of slots held per system.

    share: how many processes move the wave's users at once (its workers); each holds its part of every
    limit (at least one slot), so together they never use more than the limit (`workers_check` refuses a
    limit lower than the number of workers).
    """
    holder = this_process()
    stop = threading.Event()
    ids: list[UUID] = []
    with get_client(sync_client=True) as client:
        free_lost_slots(client, ledger)
        sizes = {name: max(1, limit_size(client, name, wanted) // share) for name, wanted in sorted(limits.items())}
        renewer = threading.Thread(target=_renew, args=(ids, stop), name="slots", daemon=True)
        try:
            for name, size in sorted(sizes.items()):  # one order for every process: no two wait for each other
                lease_id = _acquire(client, name, size)
                ids.append(lease_id)
                ledger.acquire_lease(f"slots:{lease_id}", holder, alive, describe)
            renewer.start()
            yield sizes
        finally:
            stop.set()
            for lease_id in ids:
                with contextlib.suppress(Exception):  # lapsed already: nothing held
                    client.release_concurrency_slots_with_lease(lease_id)
            ledger.release_leases_of(holder, [f"slots:{i}" for i in ids])


def _acquire(client: SyncPrefectClient, name: str, size: int) -> UUID:
    """Take size slots of the limit under a new lease, waiting while they are taken; the lease id."""
    while True:
        try:
            response = client.increment_concurrency_slots_with_lease([name], size, "concurrency", LEASE_SECONDS)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 423:  # 423 Locked: not free yet, try again when told
                raise
            time.sleep(min(5.0, float(exc.response.headers.get("Retry-After", "1"))))
            continue
        body = response.json()
        if not body.get("limits"):
            raise FatalError(f"Prefect has no concurrency limit {name}")
        return UUID(body["lease_id"])


def _renew(ids: list[UUID], stop: threading.Event) -> None:
    """Renew the leases every quarter of their length until stopped."""
    with get_client(sync_client=True) as client:
        while not stop.wait(LEASE_SECONDS / 4):
            for lease_id in list(ids):
                with contextlib.suppress(Exception):  # one missed renewal leaves three more before it lapses
                    client.renew_concurrency_lease(lease_id, LEASE_SECONDS)


def free_lost_slots(client: SyncPrefectClient, ledger: Ledger) -> int:
    """Give back the slots of every recorded lease whose holder died (killed wave or batch); how many leases."""
    freed = 0
    for name, holder, renewed in ledger.leases():
        if name.startswith("slots:") and not alive(holder, renewed):
            with contextlib.suppress(Exception):  # lapsed already
                client.release_concurrency_slots_with_lease(UUID(name.removeprefix("slots:")))
            ledger.release_leases_of(holder, [name])
            freed += 1
    return freed


_made: set[str] = set()
_made_lock = threading.Lock()


@contextmanager
def collection_guard(collection: str) -> Iterator[None]:
    """One writer at a time of a broker collection's user list, across processes: a Prefect global
    concurrency limit of one slot per collection (`ikomm-collection-<name>`), held for one read-change-write."""
    name = "ikomm-collection-" + re.sub(r"[^a-z0-9]+", "-", collection.lower()).strip("-")
    with _made_lock:
        if name not in _made:
            with get_client(sync_client=True) as client:
                limit_size(client, name, 1)
            _made.add(name)
    with concurrency(name, occupy=1, strict=True, lease_duration=LEASE_SECONDS):
        yield


def prefect_checks(limits: dict[str, int]) -> list[Check]:
    """Preflight's Prefect part: the API answers, and each system's concurrency limit (present, or made at start)."""
    try:
        with get_client(sync_client=True) as client:
            failure = client.api_healthcheck()
            if failure is not None:
                return [Check("prefect", False, f"the Prefect API does not answer: {failure}")]
            found: list[str] = []
            missing: list[str] = []
            inactive: list[str] = []
            for name, wanted in sorted(limits.items()):
                try:
                    limit = client.read_global_concurrency_limit_by_name(name)
                except ObjectNotFound:
                    missing.append(f"{name} ({wanted})")
                    continue
                (found if limit.active and limit.limit > 0 else inactive).append(f"{name}={limit.limit}")
    except Exception as exc:  # any client fault means the server is not usable
        return [Check("prefect", False, f"the Prefect API does not answer: {type(exc).__name__}: {exc}")]
    said = f"{len(found)} present"
    if missing:
        said += f"; made with the wave's values at start: {', '.join(missing)}"
    if inactive:
        said = f"inactive or 0 in the UI: {', '.join(inactive)}; {said}"
    return [Check("prefect", True, "the Prefect API answers"), Check("limits", not inactive, said)]


def wave_checks(
    inv: Inventory, wave: Wave, ledger: Ledger | None, state_dir: Path, outside_window: bool, workers: int | None = None
) -> list[Check]:
    """Every preflight check of the wave, the Prefect ones included (`ikomm preflight`, `wave run`, the served
    start-wave flow). ledger: as it is, or None if there is none yet; preflight writes nothing, not even a ledger.
    workers: the workers the run will use (None: as the wave file says); with any, a worker must be online.
    """
    from flows.batch import workers_check

    run = WaveRun(inv, wave, ledger or Ledger("sqlite://"), state_dir)
    wanted = wave.spec.options.workers if workers is None else workers
    try:
        return preflight(run, prefect_checks(run.limits()) + workers_check(run, wanted), outside_window)
    finally:
        run.c.close()

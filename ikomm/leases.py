"""One writer per wave: a lease in the ledger, held by the process that runs (or rolls back) the wave.

The holder is `host:pid:start-time`. On the same host a holder is alive while that very process is
(a pid reused by another process has another start time), so a run killed with `kill -9` gives the
lease up to the next run at once; from another host, while it renewed the lease within TTL seconds.
The holder renews every TTL/4 seconds from a background thread.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from types import TracebackType

from ikomm.ledger import Ledger

TTL = 60.0


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def this_process() -> str:
    """This process as a lease holder: host:pid:start-time."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def alive(holder: str, renewed: float, ttl: float = TTL) -> bool:
    """Whether the holder still runs: the process itself on this host, a recent renewal from another."""
    host, pid, started = holder.rsplit(":", 2)
    if host == socket.gethostname():
        return _start_time(int(pid)) == started
    return time.time() - renewed < ttl


def describe(holder: str) -> str:
    host, pid, _ = holder.rsplit(":", 2)
    return f"process {pid} on {host}"


class Lease:
    """Hold the ledger's lease `name` while inside; ConflictError if a live process holds it."""

    def __init__(self, ledger: Ledger, name: str) -> None:
        self.ledger, self.name, self.holder = ledger, name, this_process()
        self.took_over: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{name}", daemon=True)

    def __enter__(self) -> Lease:
        self.took_over = self.ledger.acquire_lease(self.name, self.holder, alive, describe)
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(TTL / 4):
            self.ledger.renew_leases_of(self.holder)  # this one and the process's others (its slots)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self.ledger.release_lease(self.name, self.holder)


class Claim:
    """Hold several leases at once while inside (a batch on a worker: `batch:<flow run>` and `user:<key>` each):
    those a live process holds are refused, not waited for; all renewed together, in one statement."""

    def __init__(self, ledger: Ledger, names: list[str]) -> None:
        self.ledger, self.names, self.holder = ledger, names, this_process()
        self.taken: list[str] = []
        self.refused: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="claim", daemon=True)

    def __enter__(self) -> Claim:
        self.taken, self.refused = self.ledger.claim_leases(self.names, self.holder, alive, describe)
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(TTL / 4):
            self.ledger.renew_leases_of(self.holder)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self.ledger.release_leases_of(self.holder, self.taken)


def holder_alive(ledger: Ledger, name: str) -> bool | None:
    """Whether the lease's holder still runs; None if nobody holds it."""
    found = ledger.lease(name)
    return None if found is None else alive(*found)


def live_waves(ledger: Ledger) -> frozenset[str]:
    """The waves a live process is running now."""
    return frozenset(
        name.removeprefix("wave:")
        for name, holder, renewed in ledger.leases()
        if name.startswith("wave:") and alive(holder, renewed)
    )


OPEN = frozenset({"running", "awaiting-approval"})  # wave states with a process behind them


def resume_command(wave: dict[str, object]) -> str:
    """The one command that takes a stopped wave further (its wave file as recorded)."""
    return f"ikomm wave run {wave.get('file') or 'waves/' + str(wave['id']) + '.yaml'}"


def as_it_is(ledger: Ledger, wave: dict[str, object]) -> dict[str, object]:
    """The wave's ledger row, but 'stopped' with why and how to go on when it says running or awaiting
    approval and no live process holds its lease (killed with `kill -9`, the machine rebooted)."""
    if wave.get("state") not in OPEN:
        return wave
    found = ledger.lease(f"wave:{wave['id']}")
    if found is not None and alive(*found):
        return wave
    gone = f" ({describe(found[0])})" if found else ""
    detail = (
        f"its process ended{gone} while the wave was {wave['state']}; nothing runs it now. "
        f"To go on: {resume_command(wave)}"
    )
    return {**wave, "state": "stopped", "detail": detail}

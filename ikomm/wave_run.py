"""A wave's run context, wired once and handed to every stage: inventory, wave, ledger, connectors,
concurrency gate, credentials, seats, failure budget, progress; and `set_state`, the one way a
user's state changes.

Nothing here knows Prefect: the flow hands in a `Gate` (its concurrency limits) and a progress
callback.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Protocol

from ikomm.budget import Budget, SharedBudget
from ikomm.connectors import Connectors
from ikomm.credentials import CredentialFile
from ikomm.errors import InvalidInputError
from ikomm.inventory import Inventory
from ikomm.ledger import Ledger
from ikomm.naming import account_names, platform_domain, searchable_name
from ikomm.seats import SeatBook, SharedSeats
from ikomm.waves import Wave, WaveUser

log = logging.getLogger("ikomm.wave")
# A user's story, line by line: every state change and every change made, with the user's key. Silent
# unless someone listens: the flows send it to the running task run's log in the Prefect UI.
story = logging.getLogger("ikomm.story")
story.addHandler(logging.NullHandler())
story.propagate = False


# Ctrl-C on the process that runs a wave (`ikomm wave run`): no user starts a step after it; the users in the
# middle of one finish it (each ends prepared, verified, held or failed-and-undone: never half made).
STOPPING = threading.Event()
INTERRUPTED = "interrupted (Ctrl-C): users in the middle of a step finished it, no new one started"


class Gate(Protocol):
    """Concurrency limits per outside system: hold(systems) occupies one slot of each while inside."""

    def hold(self, systems: Sequence[str]) -> AbstractContextManager[None]: ...


class LocalGate:
    """Per-system semaphores inside this process: the gate for the floor benchmark and plain scripts."""

    def __init__(self, limits: Mapping[str, int]) -> None:
        self._sems = {name: threading.BoundedSemaphore(n) for name, n in limits.items()}

    @contextmanager
    def hold(self, systems: Sequence[str]) -> Iterator[None]:
        taken = [self._sems[s] for s in sorted(systems) if s in self._sems]
        for sem in taken:
            sem.acquire()
        try:
            yield
        finally:
            for sem in reversed(taken):
                sem.release()


class WaveRun:
    """Everything a wave's stages share: inventory, wave, ledger, connectors, gate, credentials, progress."""

    def __init__(
        self,
        inv: Inventory,
        wave: Wave,
        ledger: Ledger,
        state_dir: Path,
        gate: Gate | None = None,
        connectors: Connectors | None = None,
        progress: Callable[[str, str, str], None] | None = None,
        today: date | None = None,
    ) -> None:
        self.inv, self.wave, self.ledger = inv, wave, ledger
        self.c = connectors or Connectors(inv, sftp_pool=wave.spec.options.concurrency, tenant=wave.tenant(inv))
        self.names = account_names(inv)
        self.credentials = CredentialFile(state_dir / "credentials" / f"{wave.id}.csv")
        self.gate: Gate = gate or LocalGate(self.limits())
        self.progress = progress
        self.today = today or datetime.now(UTC).date()
        self.budget: Budget | SharedBudget = Budget(wave.spec.options.failure_budget, wave.spec.options.min_failures)
        self.seats = SeatBook(self.c.platform(), inv.platform.directory.groups_dn)
        self.domain = platform_domain(inv.platform.directory)
        self._by_key = {wu.key: wu for wu in wave.users}
        self._broker_users: dict[str, set[str]] = {}
        self._broker_lock = threading.Lock()

    def share(self) -> None:
        """Count the failure budget and the seats in the ledger: other processes move this wave's users too."""
        opts = self.wave.spec.options
        self.budget = SharedBudget(opts.failure_budget, opts.min_failures, self.ledger, self.wave.id)
        self.seats = SharedSeats(self.c.platform(), self.inv.platform.directory.groups_dn, self.ledger, self.wave.id)

    def broker_lists(self, wu: WaveUser) -> bool:
        """Whether the broker allowed this user's platform name on the zone's collection when first asked.

        Read once per collection and run (users join a collection only at their own cutover).
        """
        collection = self.inv.zone(wu.user.zone).terminal_farm.collection
        with self._broker_lock:
            if collection not in self._broker_users:
                self._broker_users[collection] = {u.lower() for u in self.c.broker().collection_users(collection)}
            return self.broker_name(wu).lower() in self._broker_users[collection]

    def limits(self) -> dict[str, int]:
        """Concurrency limit name -> slots, for every outside system the wave touches."""
        lim = self.wave.spec.options.limits
        out = {"platform-ad": lim.platform_ad, "config-host": lim.config_host, "broker": lim.broker}
        for muni in self.wave.spec.municipalities:
            m = self.inv.municipalities[muni]
            out[f"legacy-dir-{muni}"] = lim.legacy_directory
            out[f"fs-{m.legacy.file_server.name}"] = lim.file_server
        for zone in self.inv.platform.zones:
            out[f"fs-{zone.file_server.name}"] = lim.file_server
        return {f"ikomm-{k}": v for k, v in out.items()}

    def systems(self, wu: WaveUser, *names: str) -> list[str]:
        """Limit names of the systems a stage of this user touches."""
        m = self.inv.municipalities[wu.muni]
        table = {
            "ad": "platform-ad",
            "legacy": f"legacy-dir-{wu.muni}",
            "legacy-fs": f"fs-{m.legacy.file_server.name}",
            "zone-fs": f"fs-{self.inv.zone(wu.user.zone).file_server.name}",
            "devices": "config-host",
            "broker": "broker",
        }
        return [f"ikomm-{table[n]}" for n in names]

    def known(self, key: str) -> WaveUser | None:
        """The wave's user with this key (municipality/legacy_id); one the wave file no longer names but the ledger
        recorded (a rollback undoes them too) from the inventory; None if the inventory lost them."""
        found = self._by_key.get(key)
        if found is not None:
            return found
        muni, _, legacy_id = key.partition("/")
        return next((WaveUser(muni, u) for u in self.inv.users.get(muni, []) if u.legacy_id == legacy_id), None)

    def user(self, key: str) -> WaveUser:
        """As known(), but InvalidInputError if the inventory lost them."""
        found = self.known(key)
        if found is not None:
            return found
        raise InvalidInputError(
            f"user {key}: recorded in the ledger for wave {self.wave.id} but no longer in the inventory; "
            "put their row back to undo what was done for them"
        )

    def account(self, wu: WaveUser) -> str:
        return self.names[(wu.muni, wu.user.legacy_id)]

    def person(self, wu: WaveUser) -> str:
        return searchable_name(wu.user.given_name, wu.user.surname)

    def upn(self, wu: WaveUser) -> str:
        return f"{self.account(wu)}@{self.inv.municipalities[wu.muni].upn_suffix}"

    def broker_name(self, wu: WaveUser) -> str:
        """DOMAIN\\account: how the broker and the terminal servers name the user's platform account."""
        return f"{self.domain}\\{self.account(wu)}"


def set_state(run: WaveRun, wu: WaveUser, state: str, stage: str, message: str, account: str | None = None) -> None:
    """Change a user's state: the ledger, the log and the progress view, together."""
    run.ledger.set_user(wu.key, state, stage, message, account, wave=run.wave.id)
    level = logging.WARNING if state in ("failed", "held") else logging.INFO
    log.log(level, "%s: %s %s: %s", wu.key, state, stage, message)
    story.log(level, "%s · %s: %s", stage, state, message)
    if run.progress is not None:
        run.progress(wu.key, state, stage)

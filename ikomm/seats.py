"""Seats per application: members of its platform groups, counted once per wave, then kept in memory."""

from __future__ import annotations

import threading

from ikomm.connectors.directory import DirectoryConnector, child_dn
from ikomm.errors import ConflictError
from ikomm.inventory.models import Application
from ikomm.ledger import Ledger


class SeatBook:
    """Seats in use per application (members of its groups), counted once, then kept under a lock.

    Reserving only counts in memory, so a dry run uses the same book to see who would not fit.
    """

    def __init__(self, ad: DirectoryConnector, groups_dn: str) -> None:
        self._ad, self._groups_dn = ad, groups_dn
        self._used: dict[str, int] = {}
        self._lock = threading.Lock()

    def members(self, app: Application) -> list[str]:
        """The member DNs of the application's groups, read now; each one a seat (preflight counts them too)."""
        found: list[str] = []
        for group in app.groups.values():
            entry = self._ad.read(child_dn("CN", group, self._groups_dn), ["member"])
            found += entry.get("member") if entry else ()
        return found

    def _count(self, app: Application) -> int:
        return len(self.members(app))

    def _now(self, app: Application) -> int:
        """Seats of app in use (counted on first ask, then kept); the caller holds the lock."""
        if app.id not in self._used:
            self._used[app.id] = self._count(app)
        return self._used[app.id]

    def used(self, app: Application) -> int:
        """Seats of app in use now (as counted, plus what this wave reserved since)."""
        with self._lock:
            return self._now(app)

    def reserve(self, app: Application) -> None:
        with self._lock:
            if self._now(app) >= app.seat_limit:
                raise ConflictError(f"application {app.name}: seat limit of {app.seat_limit} reached")
            self._used[app.id] += 1

    def release(self, app_id: str) -> None:
        with self._lock:
            if app_id in self._used:
                self._used[app_id] -= 1


class SharedSeats(SeatBook):
    """Seats of a wave whose users several processes move (workers): counted once from the directory into the
    ledger, then taken and given back there, so two workers never both take an application's last seat."""

    def __init__(self, ad: DirectoryConnector, groups_dn: str, ledger: Ledger, wave_id: str) -> None:
        super().__init__(ad, groups_dn)
        self.ledger, self.wave_id = ledger, wave_id

    def used(self, app: Application) -> int:
        return self.ledger.tally(self.wave_id, f"seats:{app.id}", lambda: self._count(app))

    def reserve(self, app: Application) -> None:
        self.used(app)
        if not self.ledger.add_tally(self.wave_id, f"seats:{app.id}", below=app.seat_limit):
            raise ConflictError(f"application {app.name}: seat limit of {app.seat_limit} reached")

    def release(self, app_id: str) -> None:
        self.ledger.add_tally(self.wave_id, f"seats:{app_id}", by=-1)

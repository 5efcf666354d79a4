"""The wave's failure budget: stop starting users once too many have failed."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ikomm.ledger import Ledger


@dataclass
class Budget:
    """The wave's failure budget: trips when failures exceed the share allowed (and a minimum count)."""

    share: float
    minimum: int
    started: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> bool:
        """Count a user as started; False (start nothing) once the budget has tripped."""
        with self.lock:
            if self.tripped:
                return False
            self.started += 1
            return True

    def fail(self) -> None:
        with self.lock:
            self.failed += 1

    @property
    def tripped(self) -> bool:
        return self.failed >= self.minimum and self.failed > self.share * max(self.started, 1)


class SharedBudget:
    """The failure budget of a wave whose users several processes move (workers): counted in the ledger."""

    def __init__(self, share: float, minimum: int, ledger: Ledger, wave_id: str) -> None:
        self.share, self.minimum, self.ledger, self.wave_id = share, minimum, ledger, wave_id

    def _count(self, name: str) -> int:
        return self.ledger.tally(self.wave_id, f"budget:{name}")

    @property
    def started(self) -> int:
        return self._count("started")

    @property
    def failed(self) -> int:
        return self._count("failed")

    def start(self) -> bool:
        """Count a user as started; False (start nothing) once the budget has tripped."""
        if self.tripped:
            return False
        self._count("started")  # made if missing
        return self.ledger.add_tally(self.wave_id, "budget:started")

    def fail(self) -> None:
        self._count("failed")
        self.ledger.add_tally(self.wave_id, "budget:failed")

    @property
    def tripped(self) -> bool:
        failed = self.failed
        return failed >= self.minimum and failed > self.share * max(self.started, 1)

"""The wave's failure budget: stop starting users once too many have failed."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


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

"""One exception tree for ikomm, split by what the caller does next.

    IkommError
    ├── HeldError            not yet: the user waits for an application; nothing was written
    ├── TransientError       retry later: server down or busy, timeout, connection reset
    ├── ConflictError        needs a decision: entry exists, constraint violated, drift
    │   └── ProcessGoneError the wave's process has ended: the answer is kept, a rerun goes on
    ├── InvalidInputError    fix the input: a file, a row, a field
    │   └── InventoryError   every problem found in the inventory, each naming file, row and field
    └── FatalError           stop: misconfiguration, refused host key, wrong credentials
        └── LabError         the local lab could not start, stop or seed a server

Messages never contain secrets: a credential is named by its reference, never shown.
"""

from __future__ import annotations

from dataclasses import dataclass


class IkommError(Exception):
    """Root of every error ikomm raises on purpose."""


class HeldError(IkommError):
    """The user cannot move yet (an application is not ready on the platform); nothing was written."""


class TransientError(IkommError):
    """A fault that may pass: retrying the same operation later is safe."""


class ConflictError(IkommError):
    """The world is not as expected; a person must decide what to do."""


class ProcessGoneError(ConflictError):
    """The process that ran a wave has ended; what was asked of it is recorded for the next run."""


class InvalidInputError(IkommError):
    """Input that cannot be used as it is; the message says where and why."""


class FatalError(IkommError):
    """A fault that retrying cannot fix."""


class LabError(FatalError):
    """The local lab failed to start, stop or seed one of its servers."""


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong in an input file, located as precisely as the file allows."""

    file: str
    row: int | None
    field: str
    message: str

    def where(self) -> str:
        """file:row field 'x', as an editor and a lead read it."""
        place = f"{self.file}:{self.row}" if self.row is not None else self.file
        return f"{place} field '{self.field}'" if self.field else place

    def __str__(self) -> str:
        place = f"{self.file}:{self.row}" if self.row is not None else self.file
        field = f" field '{self.field}':" if self.field else ""
        return f"{place}:{field} {self.message}"


class InventoryError(InvalidInputError):
    """The inventory has problems; each names its file, row (line) and field."""

    def __init__(self, problems: list[Problem], what: str = "the inventory") -> None:
        self.problems = sorted(set(problems))
        count = len(self.problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in {what}:\n{lines}")

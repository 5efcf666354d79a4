"""The floor for the wave benchmark: the same stages, connectors and concurrency, without ledger or Prefect.

`python -m bench.floor WAVE_FILE STATE_DIR`: every user of the wave through the same stages on a
thread pool of the wave's concurrency, with the same per-system limits (in-process semaphores), and
a ledger that records nothing. The same shape as the wave: all prepared, then all cut over, when the
wave needs an approval; each user straight through when it does not. The same reads too: the
snapshot the rollback proof needs is taken (and dropped).
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ikomm.errors import HeldError, IkommError
from ikomm.inventory import load_inventory
from ikomm.migration import cutover, prepare
from ikomm.wave_run import WaveRun
from ikomm.waves import WaveUser, load_wave


class NullLedger:
    """Answers like an empty ledger and keeps nothing."""

    def plan_change(self, *args: Any) -> int:
        return 0

    def confirm(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_user(self, *args: Any, **kwargs: Any) -> str:
        return ""

    def changes(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    def change_status_of(self, *args: Any) -> None:
        return None  # never recorded: the initial password is set, as in a first wave

    def snapshot(self, *args: Any) -> None:
        return None  # so the snapshot's reads are made, as in the wave

    def save_snapshot(self, *args: Any) -> None:
        pass


def main() -> None:
    wave_file, state = Path(sys.argv[1]), Path(sys.argv[2])
    inv = load_inventory(Path("inventory"))
    wave = load_wave(wave_file, inv)
    run = WaveRun(inv, wave, NullLedger(), state)  # type: ignore[arg-type]
    outcome: dict[str, int] = {}

    def one(wu: WaveUser, phase: str) -> str:
        try:
            if phase != "cutover":
                prepare(run, wu)
            if phase != "prepare":
                cutover(run, wu)
            return "ok"
        except HeldError:
            return "held"
        except IkommError:
            return "failed"

    with ThreadPoolExecutor(wave.spec.options.concurrency) as pool:
        if wave.spec.options.approval_required:
            results = list(pool.map(lambda u: one(u, "prepare"), wave.users))
            prepared = [wu for wu, r in zip(wave.users, results, strict=True) if r == "ok"]
            results = [*pool.map(lambda u: one(u, "cutover"), prepared), *(r for r in results if r != "ok")]
        else:
            results = list(pool.map(lambda u: one(u, "migrate"), wave.users))
    for r in results:
        outcome[r] = outcome.get(r, 0) + 1
    print(outcome)
    run.c.close()


if __name__ == "__main__":
    main()

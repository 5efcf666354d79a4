"""The floor for the wave benchmark: the same stages, connectors and concurrency, without ledger or Prefect.

`python -m bench.floor WAVE_FILE STATE_DIR`: every user of the wave through prepare then cutover on a
thread pool of the wave's concurrency, with the same per-system limits (in-process semaphores), and
a ledger that records nothing.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ikomm.errors import IkommError
from ikomm.inventory import load_inventory
from ikomm.migration import HeldError, WaveRun, cutover, prepare
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

    def change_status(self, *args: Any) -> str:
        return "planned"

    def snapshot(self, *args: Any) -> dict[str, Any]:
        return {}  # no rollback proof in the floor


def main() -> None:
    wave_file, state = Path(sys.argv[1]), Path(sys.argv[2])
    inv = load_inventory(Path("inventory"))
    wave = load_wave(wave_file, inv)
    run = WaveRun(inv, wave, NullLedger(), state)  # type: ignore[arg-type]
    outcome: dict[str, int] = {}

    def one(wu: WaveUser, phase: str) -> str:
        try:
            (prepare if phase == "prepare" else cutover)(run, wu)
            return "ok"
        except HeldError:
            return "held"
        except IkommError:
            return "failed"

    with ThreadPoolExecutor(wave.spec.options.concurrency) as pool:
        results = list(pool.map(lambda u: one(u, "prepare"), wave.users))
        prepared = [wu for wu, r in zip(wave.users, results, strict=True) if r == "ok"]
        for r in pool.map(lambda u: one(u, "cutover"), prepared):
            outcome[r] = outcome.get(r, 0) + 1
    outcome["held"] = outcome.get("held", 0) + len(wave.users) - len(prepared)
    print(outcome)
    run.c.close()


if __name__ == "__main__":
    main()

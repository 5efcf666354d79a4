"""Measure `lab up` for the 2,500-user inventory: cold (no cache), warm (cached), and the lab's memory."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ikomm.inventory import load_inventory
from lab.manager import Lab

RESULTS = Path("bench-results")


def main() -> None:
    console = Console()
    inv = load_inventory(Path("inventory"))
    lab = Lab(inv, progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    lab.down()
    assert inv.lab_dir is not None
    shutil.rmtree(inv.lab_dir / "cache", ignore_errors=True)
    runs = []
    for expected in ("cold", "warm", "warm"):
        t0 = time.monotonic()
        mode = lab.up()
        seconds = time.monotonic() - t0
        assert mode == expected, (mode, expected)
        runs.append({"mode": mode, "seconds": round(seconds, 2), "pss_mib": round(lab.memory_kib() / 1024)})
    lab.down()
    table = Table(title=f"lab up, {inv.user_count()} users, {len(lab.servers)} servers")
    for col in ("start", "seconds", "memory (PSS, MiB)"):
        table.add_column(col)
    for run in runs:
        table.add_row(str(run["mode"]), f"{run['seconds']:.1f}", str(run["pss_mib"]))
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lab_start.json").write_text(json.dumps({"users": inv.user_count(), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()

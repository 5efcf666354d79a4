"""Onboarding a municipality against the 2,500-user lab: `tenant add` (first and second run), `audit isolation`
and `tenant remove`, each run BENCH_RUNS times on a freshly restored lab; the spread (min to max) of wall and CPU.

It onboards Ringebu from the kit in inventory/tenants/ringebu into a copy of the inventory (bench-results/),
so the repository's inventory is never changed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.campaign import copy_inventory
from bench.cockpit import RESULTS, timed
from ikomm.inventory import load_inventory
from lab.manager import Lab

STATE = RESULTS / "tenant-state"
TENANT, NAME = "ringebu", "Ringebu"


def main() -> None:
    console = Console()
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    inv = load_inventory(Path("inventory"))
    lab = Lab(inv, progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    STATE.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "IKOMM_STATE": str(STATE.resolve())}
    copy = STATE / "inventory"
    base, where = [sys.executable, "-m", "ikomm"], ["--inventory", str(copy)]
    steps = {
        "tenant add": [*base, "tenant", "add", TENANT, "--name", NAME, *where],
        "tenant add (again)": [*base, "tenant", "add", TENANT, "--name", NAME, *where],
        "audit isolation": [*base, "audit", "isolation", *where],
        "tenant remove": [*base, "tenant", "remove", TENANT, "--yes", *where],
    }
    walls: dict[str, list[float]] = {k: [] for k in steps}
    cpus: dict[str, list[float]] = {k: [] for k in steps}
    exits: dict[str, set[int]] = {k: set() for k in steps}
    try:
        for _ in range(runs):
            lab.up()
            copy_inventory(Path("inventory"), copy, lab.dir)
            for name, argv in steps.items():
                wall, cpu, code = timed(argv, env)
                walls[name].append(wall)
                cpus[name].append(cpu)
                exits[name].add(code)
            console.print({k: round(v[-1], 2) for k, v in walls.items()})
    finally:
        lab.up()
    results = [
        {
            "step": name,
            "runs": runs,
            "wall_s": [round(min(walls[name]), 2), round(max(walls[name]), 2)],
            "cpu_s": [round(min(cpus[name]), 2), round(max(cpus[name]), 2)],
            "exit": sorted(exits[name]),
        }
        for name in steps
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tenant.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    users = len(inv.all_users())
    table = Table(title=f"onboarding {NAME} beside the {users}-user lab ({runs} runs each, min-max)")
    for col in ("step", "wall s", "CPU s (client)", "exit"):
        table.add_column(col)
    for r in results:
        wall_span, cpu_span = r["wall_s"], r["cpu_s"]
        assert isinstance(wall_span, list) and isinstance(cpu_span, list)
        table.add_row(str(r["step"]), f"{wall_span[0]}-{wall_span[1]}", f"{cpu_span[0]}-{cpu_span[1]}", str(r["exit"]))
    console.print(table)


if __name__ == "__main__":
    main()

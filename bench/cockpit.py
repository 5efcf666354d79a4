"""The lead's cockpit against the 2,500-user lab: `wave check`, `wave plan` (the dry run) and `preflight`,
for waves of 300, 500 and 2,500 users, each run RUNS times; the spread (min to max) of wall and CPU time.

The plan and the preflight read every server the wave touches and write nothing, so the lab is not
restored between runs. BENCH_SIZES (e.g. "300,500") and BENCH_RUNS choose what is measured.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from ikomm import server
from ikomm.inventory import load_inventory
from lab.manager import Lab

RESULTS = Path("bench-results")
STATE = RESULTS / "cockpit-state"


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds of the command, and its exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, proc.returncode


def main() -> None:
    console = Console()
    sizes = [int(s) for s in os.environ.get("BENCH_SIZES", "300,500,2500").split(",")]
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    inv = load_inventory(Path("inventory"))
    lab = Lab(inv, progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    STATE.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "IKOMM_STATE": str(STATE.resolve()),
        "IKOMM_PREFECT_PORT": "4222",
        "IKOMM_LEDGER_URL": f"sqlite:///{(STATE / 'no-ledger.db').resolve()}",  # never created: nothing writes
    }
    os.environ.update({k: env[k] for k in ("IKOMM_STATE", "IKOMM_PREFECT_PORT")})
    server.stop()
    server.start()
    env.update(server.client_env())
    results: list[dict[str, object]] = []
    try:
        lab.up()
        everyone = inv.all_users()
        for size in sizes:
            wave_file = STATE / f"cockpit{size}.yaml"
            chosen = [u.legacy_id for _, u in everyone[:size]]
            spec = {
                "id": f"cockpit{size}",
                "name": f"cockpit benchmark, {size} users",
                "municipalities": list(inv.municipalities),
                "users": {"all": True} if size >= len(everyone) else {"legacy_ids": chosen},
                "options": {"concurrency": 8, "approval_required": False},
            }
            wave_file.write_text(yaml.safe_dump(spec), encoding="utf-8")
            base = [sys.executable, "-m", "ikomm"]
            for name, argv in (
                ("wave check", [*base, "wave", "check", str(wave_file)]),
                ("wave plan", [*base, "wave", "plan", str(wave_file), "--json"]),
                ("preflight", [*base, "preflight", str(wave_file), "--json"]),
            ):
                walls, cpus, exits = [], [], set()
                for _ in range(runs):
                    wall, cpu, code = timed(argv, env)
                    walls.append(wall)
                    cpus.append(cpu)
                    exits.add(code)
                results.append(
                    {
                        "users": min(size, len(everyone)),
                        "command": name,
                        "runs": runs,
                        "wall_s": [round(min(walls), 1), round(max(walls), 1)],
                        "cpu_s": [round(min(cpus), 1), round(max(cpus), 1)],
                        "exit": sorted(exits),
                    }
                )
                console.print(results[-1])
    finally:
        server.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cockpit.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    table = Table(title=f"the cockpit against the {len(inv.all_users())}-user lab ({runs} runs each, min-max)")
    for col in ("users", "command", "wall s", "CPU s (client)", "exit"):
        table.add_column(col)
    for r in results:
        wall_span, cpu_span = r["wall_s"], r["cpu_s"]
        assert isinstance(wall_span, list) and isinstance(cpu_span, list)
        wall_s, cpu_s = f"{wall_span[0]}-{wall_span[1]}", f"{cpu_span[0]}-{cpu_span[1]}"
        table.add_row(str(r["users"]), str(r["command"]), wall_s, cpu_s, str(r["exit"]))
    console.print(table)


if __name__ == "__main__":
    main()

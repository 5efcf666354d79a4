"""Waves of 300, 500 and 2,500 users through every stage against the lab, each beside its floor (bench/floor.py).

For each size: wall time, CPU (wave process, Prefect server, lab servers) and the peak memory (PSS) of
the wave process tree with the Prefect server; the whole wave rolled back (timed) and the rollback
verified against the snapshots; then the floor. The lab is restored from its cache before each side,
so both start from the same state, and each size has its own state folder (ledger, Prefect database).
The summary gives each size's ratio to its floor and orchestration CPU (the wave's client CPU above
the floor's, plus the Prefect server's), and splits that CPU into a per-wave and a per-user part by a
least-squares line through the sizes.

BENCH_USERS picks the sizes (`BENCH_USERS=500`, `BENCH_USERS=300,500`; `all` is the whole inventory);
BENCH_PROFILE=1 records the wave's process, the Prefect server and the floor with py-spy (bench/profile.py).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from bench import profile
from ikomm import server
from ikomm.inventory import load_inventory
from lab import process
from lab.manager import Lab

RESULTS = Path("bench-results")
STATE = RESULTS / "wave-state"
SIZES = "300,500,all"


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    return [pid, *process.descendants(pid)]


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime (and reaped children's) of the processes, in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        except OSError:
            continue
    return total / ticks


def lab_pids(lab: Lab) -> list[int]:
    return [p for r in process.load(lab.pids) for p in tree(r.pid)]


def measured(argv: list[str], env: dict[str, str], extra: list[int], lab: Lab | None = None) -> dict[str, float]:
    """Run argv; wall time, its CPU, the extra processes' CPU, the lab's CPU (0 without a lab), peak PSS of argv's
    tree + extra."""

    def labs() -> list[int]:
        return lab_pids(lab) if lab is not None else []

    lab_before, extra_before = cpu_seconds(labs()), cpu_seconds(extra)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], process.pss_kib(tree(proc.pid) + extra))
            time.sleep(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    proc.wait()
    wall = time.monotonic() - t0
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "exit": proc.returncode,
        "wall_s": round(wall, 1),
        "cpu_s": round(after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime, 1),
        "extra_cpu_s": round(cpu_seconds(extra) - extra_before, 1),
        "lab_cpu_s": round(cpu_seconds(labs()) - lab_before, 1),
        "peak_pss_mib": round(peak[0] / 1024),
    }


def sizes(inventory_users: int) -> list[int]:
    """BENCH_USERS as user counts: '300,500,all' -> [300, 500, 2500]."""
    wanted = [w.strip() for w in os.environ.get("BENCH_USERS", SIZES).split(",") if w.strip()]
    return [inventory_users if w in ("all", "0") else min(int(w), inventory_users) for w in wanted]


def one_size(users: int, spying: bool, console: Console) -> dict[str, Any]:
    """The wave of the inventory's first `users` users, its rollback and its floor, measured."""
    inv = load_inventory(Path("inventory"))
    lab = Lab(inv, progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    spy: dict[str, Path] = {side: RESULTS / f"profile-{users}-{side}.txt" for side in ("wave", "server", "floor")}
    state = STATE / str(users)
    subprocess.run(["rm", "-rf", str(state)], check=True)  # its own ledger and Prefect database, from empty
    state.mkdir(parents=True)
    wave_file = state / "bench.yaml"
    wave_file.write_text(
        yaml.safe_dump(
            {
                "id": "bench",
                "name": "benchmark",
                "municipalities": list(inv.municipalities),
                "users": {"legacy_ids": [u.legacy_id for _, u in inv.all_users()[:users]]},
                "options": {"concurrency": 8, "approval_required": False, "failure_budget": 1.0},
            }
        )
    )
    env = {
        **os.environ,
        "IKOMM_STATE": str(state.resolve()),
        "IKOMM_PREFECT_PORT": "4220",
        "IKOMM_LEDGER_URL": f"sqlite:///{(state / 'ledger.db').resolve()}",
    }
    os.environ.update({k: env[k] for k in ("IKOMM_STATE", "IKOMM_PREFECT_PORT")})
    server.stop()
    server.start()
    env.update(server.client_env())
    server_pid = int((state / "prefect" / "server.pid").read_text())
    try:
        lab.up()
        console.print(f"[bold]{users} users[/]: the wave")
        wave_argv = [sys.executable, "-m", "ikomm", "wave", "run", str(wave_file), "--json"]
        server_spy = profile.spy_pid(server_pid, spy["server"]) if spying else None
        wave = measured([*(profile.spy_argv(spy["wave"]) if spying else []), *wave_argv], env, tree(server_pid), lab)
        if server_spy:
            server_spy.send_signal(signal.SIGINT)
            server_spy.wait()
        ikomm = [sys.executable, "-m", "ikomm"]
        counts = subprocess.run([*ikomm, "wave", "status", "bench", "--json"], env=env, capture_output=True, text=True)
        console.print(f"[bold]{users} users[/]: the rollback")
        rollback = measured([*ikomm, "rollback", "wave", "bench", "--yes", "--json"], env, tree(server_pid), lab)
        check = subprocess.run(
            [*ikomm, "verify", "rollback", "bench", "--json"], env=env, capture_output=True, text=True
        )
        proof = json.loads(check.stdout[check.stdout.index("{") :]) if "{" in check.stdout else {}
        lab.up()
        console.print(f"[bold]{users} users[/]: the floor")
        floor_argv = [sys.executable, "-m", "bench.floor", str(wave_file), str(state / "floor")]
        floor = measured([*(profile.spy_argv(spy["floor"]) if spying else []), *floor_argv], env, [], lab)
    finally:
        server.stop()
        lab.down()
    total_cpu = wave["cpu_s"] + wave["extra_cpu_s"] + wave["lab_cpu_s"]
    orchestration = max(0.0, wave["cpu_s"] - floor["cpu_s"]) + wave["extra_cpu_s"]
    if spying:
        for side in ("wave", "server", "floor"):
            console.print(profile.summary(spy[side]) if spy[side].exists() else f"{side}: no profile recorded")
    return {
        "users": users,
        "wave": wave,
        "floor": floor,
        "ratio": round(wave["wall_s"] / floor["wall_s"], 2),
        "orchestration_cpu_s": round(orchestration, 1),
        "orchestration_cpu_share": round(orchestration / total_cpu, 3),
        "rollback": rollback,
        "rollback_verify": {
            "checked": proof.get("checked"),
            "differences": sum(len(d) for d in proof.get("differences", {}).values()),
        },
        "status": json.loads(counts.stdout or "{}"),
    }


def per_wave_and_user(runs: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(seconds a wave, milliseconds a user) of orchestration CPU: the least-squares line through the sizes."""
    xs, ys = [r["users"] for r in runs], [r["orchestration_cpu_s"] for r in runs]
    if len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope * 1000


def main() -> None:
    console = Console()
    spying = os.environ.get("BENCH_PROFILE", "") not in ("", "0")
    runs: list[dict[str, Any]] = []
    for n in sizes(load_inventory(Path("inventory")).user_count()):
        runs.append(one_size(n, spying, console))
        r = runs[-1]
        console.print(
            f"{n} users: wave {r['wave']['wall_s']} s, floor {r['floor']['wall_s']} s ({r['ratio']:.2f} x), "
            f"orchestration CPU {r['orchestration_cpu_s']} s ({100 * r['orchestration_cpu_share']:.1f} %)"
        )
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "wave.json").write_text(json.dumps({"sizes": runs}, indent=1))  # so far: a later size may fail
    table = Table(title="waves against their floors (concurrency 8, gate open, preflight included)")
    for col in ("", *(f"{r['users']:,} users" for r in runs)):
        table.add_column(col, justify="right" if col else "left")
    rows: dict[str, Callable[[dict[str, Any]], str]] = {
        "wave, wall": lambda r: f"{r['wave']['wall_s']} s",
        "floor, wall": lambda r: f"{r['floor']['wall_s']} s",
        "ratio (goal ≤ 1.10 x; 1.20 x at 300)": lambda r: f"{r['ratio']:.2f} x",
        "CPU, wave process": lambda r: f"{r['wave']['cpu_s']} s",
        "CPU, floor process": lambda r: f"{r['floor']['cpu_s']} s",
        "CPU, Prefect server": lambda r: f"{r['wave']['extra_cpu_s']} s",
        "orchestration CPU": lambda r: f"{r['orchestration_cpu_s']} s",
        "  a user": lambda r: f"{1000 * r['orchestration_cpu_s'] / r['users']:.0f} ms",
        "  share (goal ≤ 10 %)": lambda r: f"{100 * r['orchestration_cpu_share']:.1f} %",
        "peak PSS (goal ≤ 500 MiB)": lambda r: f"{r['wave']['peak_pss_mib']} MiB",
        "rollback, wall": lambda r: f"{r['rollback']['wall_s']} s",
        "rollback proof": lambda r: (
            f"{r['rollback_verify']['checked']} users, {r['rollback_verify']['differences']} diff."
        ),
    }
    for name, cell in rows.items():
        table.add_row(name, *(cell(r) for r in runs))
    console.print(table)
    split = per_wave_and_user(runs)
    if split:
        console.print(f"orchestration CPU = {split[0]:.1f} s a wave + {split[1]:.1f} ms a user (least squares)")
    RESULTS.mkdir(exist_ok=True)
    summary: dict[str, Any] = {"sizes": runs}
    if split:
        summary["orchestration_cpu"] = {"per_wave_s": round(split[0], 1), "per_user_ms": round(split[1], 1)}
    (RESULTS / "wave.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

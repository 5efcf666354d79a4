"""A 2,500-user wave through every stage against the lab, beside the floor (bench/floor.py) in the same run.

Reports wall time, CPU (wave process, Prefect server, lab servers), and the peak memory (PSS) of the
wave process tree with the Prefect server; then rolls the whole wave back (timed) and verifies the
rollback against the snapshots. The lab is restored from its cache before each side, so
both start from the same state. Set BENCH_USERS to run a smaller wave (for a quick look), and
BENCH_PROFILE=1 to record the wave's process, the Prefect server and the floor with py-spy (bench/profile.py).
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
from pathlib import Path

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


def measured(argv: list[str], env: dict[str, str], extra: list[int], lab: Lab) -> dict[str, float]:
    """Run argv; wall time, its CPU, the extra processes' CPU, the lab's CPU, peak PSS of argv's tree + extra."""
    lab_before, extra_before = cpu_seconds(lab_pids(lab)), cpu_seconds(extra)
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
        "lab_cpu_s": round(cpu_seconds(lab_pids(lab)) - lab_before, 1),
        "peak_pss_mib": round(peak[0] / 1024),
    }


def main() -> None:
    console = Console()
    users = int(os.environ.get("BENCH_USERS", "0"))
    spying = os.environ.get("BENCH_PROFILE", "") not in ("", "0")
    spy: dict[str, Path] = {
        side: RESULTS / f"profile-{users or 'all'}-{side}.txt" for side in ("wave", "server", "floor")
    }
    inv = load_inventory(Path("inventory"))
    lab = Lab(inv, progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    STATE.mkdir(parents=True, exist_ok=True)
    wave_file = STATE / "bench.yaml"
    selection: dict[str, object] = {"all": True}
    if users:
        selection = {"legacy_ids": [u.legacy_id for _, u in inv.all_users()[:users]]}
    wave_file.write_text(
        yaml.safe_dump(
            {
                "id": "bench",
                "name": "benchmark",
                "municipalities": list(inv.municipalities),
                "users": selection,
                "options": {"concurrency": 8, "approval_required": False, "failure_budget": 1.0},
            }
        )
    )
    env = {
        **os.environ,
        "IKOMM_STATE": str(STATE.resolve()),
        "IKOMM_PREFECT_PORT": "4220",
        "IKOMM_LEDGER_URL": f"sqlite:///{(STATE / 'ledger.db').resolve()}",
    }
    os.environ.update({k: env[k] for k in ("IKOMM_STATE", "IKOMM_PREFECT_PORT")})
    for stale in (STATE / "ledger.db", STATE / "credentials"):
        subprocess.run(["rm", "-rf", str(stale)], check=True)
    server.stop()
    server.start()
    env.update(server.client_env())
    server_pid = int((STATE / "prefect" / "server.pid").read_text())
    try:
        lab.up()
        wave_argv = [sys.executable, "-m", "ikomm", "wave", "run", str(wave_file), "--json"]
        server_spy = profile.spy_pid(server_pid, spy["server"]) if spying else None
        wave = measured([*(profile.spy_argv(spy["wave"]) if spying else []), *wave_argv], env, tree(server_pid), lab)
        if server_spy:
            server_spy.send_signal(signal.SIGINT)
            server_spy.wait()
        counts = subprocess.run(
            [sys.executable, "-m", "ikomm", "wave", "status", "bench", "--json"],
            env=env,
            capture_output=True,
            text=True,
        ).stdout
        ikomm = [sys.executable, "-m", "ikomm"]
        rollback = measured([*ikomm, "rollback", "wave", "bench", "--yes", "--json"], env, tree(server_pid), lab)
        check = subprocess.run(
            [*ikomm, "verify", "rollback", "bench", "--json"], env=env, capture_output=True, text=True
        )
        proof = json.loads(check.stdout[check.stdout.index("{") :]) if "{" in check.stdout else {}
        lab.up()
        floor_argv = [sys.executable, "-m", "bench.floor", str(wave_file), str(STATE / "floor")]
        floor = measured([*(profile.spy_argv(spy["floor"]) if spying else []), *floor_argv], env, [], lab)
    finally:
        server.stop()
        lab.down()
    total_cpu = wave["cpu_s"] + wave["extra_cpu_s"] + wave["lab_cpu_s"]
    orchestration = max(0.0, wave["cpu_s"] - floor["cpu_s"]) + wave["extra_cpu_s"]
    table = Table(title=f"wave of {users or inv.user_count()} users, concurrency 8")
    for col in ("", "wave (Prefect + ledger)", "floor (connectors only)", "goal"):
        table.add_column(col)
    table.add_row(
        "wall time",
        f"{wave['wall_s']} s",
        f"{floor['wall_s']} s",
        f"{wave['wall_s'] / floor['wall_s']:.2f} x (≤ 1.3 x)",
    )
    table.add_row("CPU, client process", f"{wave['cpu_s']} s", f"{floor['cpu_s']} s", "")
    table.add_row("CPU, Prefect server", f"{wave['extra_cpu_s']} s", "-", "")
    table.add_row("CPU, lab servers", f"{wave['lab_cpu_s']} s", f"{floor['lab_cpu_s']} s", "")
    table.add_row("orchestration CPU share", f"{100 * orchestration / total_cpu:.1f} %", "", "≤ 15 %")
    table.add_row("peak memory (PSS)", f"{wave['peak_pss_mib']} MiB", f"{floor['peak_pss_mib']} MiB", "≤ 800 MB")
    console.print(table)
    differences = sum(len(d) for d in proof.get("differences", {}).values())
    console.print(
        f"rollback of the whole wave: {rollback['wall_s']} s (the wave took {wave['wall_s']} s); "
        f"verify rollback: {proof.get('checked', '?')} users compared, {differences} difference(s)"
    )
    if spying:
        for side in ("wave", "server", "floor"):
            console.print(profile.summary(spy[side]) if spy[side].exists() else f"{side}: no profile recorded")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "wave.json").write_text(
        json.dumps(
            {
                "users": users or inv.user_count(),
                "wave": wave,
                "floor": floor,
                "rollback": rollback,
                "rollback_verify": {"checked": proof.get("checked"), "differences": differences},
                "orchestration_cpu_share": round(orchestration / total_cpu, 3),
                "status": json.loads(counts or "{}"),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

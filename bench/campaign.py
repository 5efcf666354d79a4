"""The shipped campaign over all 2,500 users of the lab: every wave of waves/ back to back, the sweep included.

The pilot, then k01..k20 in the order of their nights, each `ikomm wave run FILE --auto-approve` (the
lead's approval given up front). The sweep waves run once while their applications are not ready
(every user held, nothing written), then the applications are made ready (in a copy of the
inventory) and the sweep waves and the last call run again. Reports the total time, each wave's,
users moved per hour, and the share of the users the policy moves that were moved. The lab is
restored from its cache first. BENCH_WAVES=k01,k02 runs only those (for a quick look).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ikomm import server
from ikomm.campaign import wave_files
from ikomm.inventory import load_inventory
from ikomm.ledger import Ledger
from ikomm.waves import Wave
from lab.manager import Lab

RESULTS = Path("bench-results")
WORK = RESULTS / "campaign"
STATE = WORK / "state"


def copy_inventory(source: Path, target: Path, lab_dir: Path) -> None:
    """The inventory, with its lab paths made absolute, so the copy reaches the running lab."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    for path in [target / "platform.yaml", target / "municipalities.yaml", *target.glob("tenants/*/tenant.yaml")]:
        path.write_text(path.read_text(encoding="utf-8").replace("../.lab", str(lab_dir)), encoding="utf-8")


def run(argv: list[str], env: dict[str, str], log: Path) -> tuple[int, float]:
    t0 = time.monotonic()
    with log.open("a", encoding="utf-8") as out:
        code = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    return code, time.monotonic() - t0


def main() -> None:
    console = Console()
    inv = load_inventory(Path("inventory"))
    lab = Lab(inv, progress=lambda msg: console.print(msg, style="dim"))
    for stale in (STATE, WORK / "inventory", WORK / "waves"):
        shutil.rmtree(stale, ignore_errors=True)
    STATE.mkdir(parents=True)
    copy_inventory(Path("inventory"), WORK / "inventory", lab.dir)
    shutil.copytree(Path("waves"), WORK / "waves")
    env = {
        **os.environ,
        "IKOMM_STATE": str(STATE.resolve()),
        "IKOMM_PREFECT_PORT": "4221",
        "IKOMM_LEDGER_URL": f"sqlite:///{(STATE / 'ledger.db').resolve()}",
        "COLUMNS": "200",
    }
    os.environ.update({k: env[k] for k in ("IKOMM_STATE", "IKOMM_PREFECT_PORT")})
    server.stop()
    server.start()
    env.update(server.client_env())
    only = [w for w in os.environ.get("BENCH_WAVES", "").split(",") if w]
    copy = WORK / "inventory"
    waves = [w for w in wave_files(WORK / "waves", load_inventory(copy)) if not only or w.id in only]
    sweeps = [w for w in waves if "sweep" in w.id or "last-call" in w.id]
    log = WORK / "waves.log"
    timings: list[tuple[str, str, int, float]] = []
    try:
        lab.up()
        t0 = time.monotonic()

        def run_wave(wave: Wave, when: str) -> None:
            argv = [sys.executable, "-m", "ikomm", "wave", "run", str(wave.path), "--auto-approve", "--outside-window"]
            code, seconds = run([*argv, "--inventory", str(copy)], env, log)
            timings.append((wave.id, when, code, seconds))
            console.print(f"{wave.id} ({when}): exit {code}, {seconds:.1f} s")

        for wave in [w for w in waves if "last-call" not in w.id]:
            run_wave(wave, "first run")
        apps = copy / "applications.yaml"  # the late applications are ready now
        apps.write_text(apps.read_text(encoding="utf-8").replace("ready_from: 2027-", "ready_from: 2026-"), "utf-8")
        for wave in sweeps:
            run_wave(wave, "applications ready")
        total = time.monotonic() - t0
        audit_code, audit_seconds = run(
            [sys.executable, "-m", "ikomm", "audit", "isolation", "--inventory", str(copy)], env, log
        )
        console.print(f"audit isolation over the moved users: exit {audit_code}, {audit_seconds:.1f} s")
    finally:
        server.stop()
        lab.down()
    ledger = Ledger(env["IKOMM_LEDGER_URL"])
    states = Counter(u.state for u in ledger.everyone())
    moved = states.get("verified", 0)
    policy_moves = sum(1 for _, u in inv.all_users() if u.enabled)
    share = round(moved / max(policy_moves, 1), 4)
    result = {
        "waves": len(waves),
        "runs": [{"wave": w, "pass": p, "exit": c, "seconds": round(s, 1)} for w, p, c, s in timings],
        "total_seconds": round(total, 1),
        "moved": moved,
        "states": dict(states),
        "policy_moves": policy_moves,
        "moved_share": share,
        "users_per_hour": round(moved / (total / 3600)),
        "audit_isolation": {"exit": audit_code, "seconds": round(audit_seconds, 1)},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "campaign.json").write_text(json.dumps(result, indent=1) + "\n")
    table = Table(title="The shipped campaign over the lab (make bench)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("waves (runs)", f"{len(waves)} ({len(timings)})")
    table.add_row("total time", f"{total:.0f} s")
    table.add_row("users moved", f"{moved} of {policy_moves} the policy moves ({100 * share:.1f} %)")
    table.add_row("users per hour", str(result["users_per_hour"]))
    table.add_row("states", ", ".join(f"{s} {n}" for s, n in sorted(states.items())))
    table.add_row("audit isolation afterwards", f"exit {audit_code}, {audit_seconds:.1f} s")
    console.print(table)


if __name__ == "__main__":
    main()

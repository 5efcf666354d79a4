"""Waves on two workers in production mode (PostgreSQL, Redis), at several sizes: `make bench-scale`.

For each size in BENCH_SCALE_SIZES (default 2500,10000): a generated inventory of that many users
(`ikomm lab generate --users N`) and its lab, production mode on its own ports and state folder, two
workers (`ikomm worker start --detach`), one wave of every user with `--workers 2` and no approval gate.
Reported: the wave's wall time (and its ratio to the first size's, against the users' ratio), how long
after the wave's end every user's task run is shown finished in the Prefect API, users verified, and
the peak memory (PSS) of everything: the wave process, the server, the workers and their batches,
PostgreSQL and Redis (the lab's servers are reported apart).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from bench.wave import lab_pids, tree
from flows.api import api_json
from ikomm import access, production
from ikomm.inventory import load_inventory
from ikomm.ledger import Ledger
from lab import process
from lab.manager import Lab

RESULTS = Path("bench-results")
PORTS = {"IKOMM_PG_PORT": "5460", "IKOMM_REDIS_PORT": "6410", "IKOMM_PREFECT_PORT": "4230"}


def ours(state: Path) -> list[int]:
    """The pids of everything production mode and the workers run for this state folder, and descendants."""
    pids: list[int] = []
    for pid_file in (state / "prefect").glob("*.pid"):
        try:
            pids += tree(int(pid_file.read_text()))
        except (OSError, ValueError):
            continue
    pg = subprocess.run(["pgrep", "-f", f"postgres.*{production.pg_data(state)}"], capture_output=True, text=True)
    for pid in pg.stdout.split():
        pids += tree(int(pid))
    return sorted(set(pids))


def one_size(users: int, console: Console) -> dict[str, object]:
    root = (RESULTS / f"scale-{users}").resolve()
    inventory, state = root / "inventory", root / "state"
    ikomm = [sys.executable, "-m", "ikomm"]
    if not (inventory / "platform.yaml").is_file():
        subprocess.run([*ikomm, "lab", "generate", "--users", str(users), "--out", str(inventory)], check=True)
    inv = load_inventory(inventory)
    lab = Lab(inv, progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    shutil.rmtree(state, ignore_errors=True)
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("IKOMM_LEDGER_URL", "PREFECT_API_URL")},
        **PORTS,
        "IKOMM_STATE": str(state),
        "PREFECT_API_URL": f"http://127.0.0.1:{PORTS['IKOMM_PREFECT_PORT']}/api",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ikomm, *args], env=env, capture_output=True, text=True, check=False)

    wave_file = root / "scale.yaml"
    wave_file.write_text(
        yaml.safe_dump(
            {
                "id": "scale",
                "name": f"scale-out, {users} users",
                "municipalities": list(inv.municipalities),
                "users": {"all": True},
                "options": {"concurrency": 8, "approval_required": False, "failure_budget": 1.0, "workers": 2},
            }
        ),
        encoding="utf-8",
    )
    try:
        t0 = time.monotonic()
        lab.up()
        console.print(f"[dim]lab of {users} users up in {time.monotonic() - t0:.0f} s[/]")
        for step in (
            ("server", "start", "--production"),
            *(("worker", "start", "--detach", "--name", n) for n in ("a", "b")),
        ):
            done = run(*step)
            assert done.returncode == 0, done.stdout + done.stderr
        peak = [0]
        log = open(root / "wave.log", "w", encoding="utf-8")  # noqa: SIM115 (closed below)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [*ikomm, "wave", "run", str(wave_file), "--inventory", str(inventory)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def sample() -> None:
            while proc.poll() is None:
                peak[0] = max(peak[0], process.pss_kib(tree(proc.pid) + ours(state)))
                time.sleep(2.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        proc.wait()
        wall = time.monotonic() - t0
        log.close()
        sampler.join()
        os.environ.update(PORTS)
        ledger = Ledger(production.ledger_url(state))
        links = list(ledger.task_runs("scale").values())
        t1 = time.monotonic()
        api = env["PREFECT_API_URL"]
        recorded = 0
        while time.monotonic() - t1 < 300:
            recorded = sum(
                api_json(
                    api,
                    "/task_runs/count",
                    {
                        "task_runs": {
                            "id": {"any_": links[i : i + 500]},
                            "state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}},
                        }
                    },
                    credential=access.existing_service_credential(state),
                )
                for i in range(0, len(links), 500)
            )
            if recorded == len(links):
                break
            time.sleep(1)
        states: dict[str, int] = {}
        for row in ledger.users("scale"):
            states[row.state] = states.get(row.state, 0) + 1
        lab_mib = round(process.pss_kib(lab_pids(lab)) / 1024)
        return {
            "users": users,
            "exit": proc.returncode,
            "wall_s": round(wall, 1),
            "users_per_s": round(users / wall, 2),
            "task_runs": len(links),
            "recorded": recorded,
            "recorded_after_end_s": round(time.monotonic() - t1, 1),
            "peak_pss_mib": round(peak[0] / 1024),
            "lab_pss_mib": lab_mib,
            "states": states,
        }
    finally:
        run("worker", "stop")
        run("server", "stop")
        shutil.rmtree(production.pg_data(state), ignore_errors=True)
        lab.down()
        for key in PORTS:
            os.environ.pop(key, None)


def main() -> None:
    console = Console()
    sizes = [int(s) for s in os.environ.get("BENCH_SCALE_SIZES", "2500,10000").split(",") if s.strip()]
    results = [one_size(n, console) for n in sizes]
    table = Table(title="waves on two workers, production mode (PostgreSQL, Redis), concurrency 8")
    for col in (
        "users",
        "wall",
        "users/s",
        "x first size (users x)",
        "task runs in API after end",
        "peak PSS",
        "lab PSS",
        "users",
    ):
        table.add_column(col)
    first = results[0]
    for r in results:
        ratio = f"{float(r['wall_s']) / float(first['wall_s']):.2f} x ({int(r['users']) / int(first['users']):.1f} x)"  # type: ignore[arg-type,call-overload]
        table.add_row(
            str(r["users"]),
            f"{r['wall_s']} s",
            str(r["users_per_s"]),
            ratio,
            f"{r['recorded']}/{r['task_runs']} in {r['recorded_after_end_s']} s",
            f"{r['peak_pss_mib']} MiB",
            f"{r['lab_pss_mib']} MiB",
            ", ".join(f"{n} {s}" for s, n in sorted(r["states"].items())),  # type: ignore[attr-defined]
        )
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

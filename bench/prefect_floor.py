"""What Prefect alone costs a user in the wave's shape, with no migration work: the floor under issue 15's goal.

`python -m bench.prefect_floor` runs, against a fresh local Prefect server (its own state folder and port),
a wave-shaped flow of N users that do nothing: the wave flow, a phase subflow, one task run a user submitted
to a thread pool of 8 with the per-user task's options (retries, no cache, no stored result), the user's name
and tags. Variant `story` adds what each user's task run carries in a real wave: one log entry of a dozen
lines and a card (a markdown artifact). Variant `bare` has neither.

For each size (BENCH_USERS, default 100,300,500) and variant, runs alternating, it reports the wall time and the
CPU of the flow's process and of the Prefect server, a user, and splits the CPU and the wall time into a
part a wave and a part a user by least squares over the sizes. Compared with the floor's wall time a user
(bench/wave.py), this says how much of the goal's budget (orchestration at most 10 % of the CPU, the wave at
most 1.10 x its floor) Prefect's own task runs take on this machine before any of ikomm's work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, cast

from rich.console import Console
from rich.table import Table

from bench.wave import RESULTS, measured, per_wave_and_user, tree
from ikomm import server

STATE = RESULTS / "prefect-floor-state"
SIZES = "100,300,500"
RUNS = int(os.environ.get("BENCH_RUNS", "2"))
STORY_LINES = 12  # about what a verified user's story has (state changes and changes made)


def client(users: int, variant: str) -> None:
    """The flow: N users, each one task run that does nothing (and tells a story when variant is 'story')."""
    from prefect import flow, get_run_logger, tags, task
    from prefect.artifacts import create_markdown_artifact
    from prefect.futures import PrefectFuture, wait
    from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

    from tasks.user import PER_USER, quiet_console

    @task(name="noop-user", task_run_name="{user} · {account} · {phase}", **PER_USER)
    def noop_user(wave_id: str, user: str, account: str, phase: str) -> str:
        if variant == "story":
            lines = "\n".join(f"12:00:{i:02d}.000  stage {i} · running: a line of the user's story" for i in range(12))
            get_run_logger().info("%s, times UTC:\n%s", user, lines)
            create_markdown_artifact(f"# {user}\n\n| | |\n|---|---|\n| account | {account} |\n" + "x" * 600)
        return "verified"

    @flow(name="noop-phase", flow_run_name="{wave_id} · migrate", persist_result=False)
    def phase(wave_id: str, keys: list[str]) -> int:
        quiet_console()
        futures = []
        for key in keys:
            with tags(f"municipality:{key.split('/')[0]}"):
                futures.append(noop_user.submit(wave_id, key, key.split("/")[1] + "@ikomm.no", "migrate"))
        wait(futures)
        return sum(f.state.is_completed() for f in futures)

    @flow(name="noop-wave", flow_run_name="{wave_id}", persist_result=False)
    def wave(wave_id: str, users: int) -> int:
        keys = [f"{('lillehammer', 'gausdal', 'oyer')[i % 3]}/user{i:05d}" for i in range(users)]
        runner = cast(TaskRunner[PrefectFuture[Any]], ThreadPoolTaskRunner(max_workers=8))
        return phase.with_options(task_runner=runner)(wave_id, keys)

    done = wave(f"noop-{variant}-{users}", users)
    assert done == users, f"{done} of {users} task runs completed"


def one_run(users: int, variant: str, server_pid: int, env: dict[str, str]) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.prefect_floor", "--client", str(users), variant]
    got = measured(argv, env, tree(server_pid))
    if got["exit"] != 0:
        raise SystemExit(f"the {variant} flow of {users} users ended with exit code {got['exit']}")
    return {
        "users": users,
        "variant": variant,
        "wall_s": got["wall_s"],
        "client_cpu_s": got["cpu_s"],
        "server_cpu_s": got["extra_cpu_s"],
    }


def main() -> None:
    console = Console()
    sizes = [int(s) for s in os.environ.get("BENCH_USERS", SIZES).split(",") if s.strip()]
    subprocess.run(["rm", "-rf", str(STATE)], check=True)
    STATE.mkdir(parents=True)
    os.environ.update({"IKOMM_STATE": str(STATE.resolve()), "IKOMM_PREFECT_PORT": "4221"})
    server.stop()
    server.start()
    env = {**os.environ, **server.client_env()}
    server_pid = int((STATE / "prefect" / "server.pid").read_text())
    runs: list[dict[str, Any]] = []
    try:
        for users in sizes:
            for _ in range(RUNS):
                for variant in ("bare", "story"):
                    runs.append(one_run(users, variant, server_pid, env))
                    r = runs[-1]
                    console.print(
                        f"{users} users, {variant}: {r['wall_s']} s, client CPU {r['client_cpu_s']} s, "
                        f"server CPU {r['server_cpu_s']} s"
                    )
    finally:
        server.stop()
    table = Table(title="Prefect alone, a user (no migration work; thread pool of 8, fresh server)")
    for col in ("users", "variant", "runs", "wall", "client CPU", "server CPU", "CPU, both"):
        table.add_column(col, justify="right")
    for users in sizes:
        for variant in ("bare", "story"):
            mine = [r for r in runs if r["users"] == users and r["variant"] == variant]

            def spread(field: str, rows: list[dict[str, Any]] = mine, n: int = users) -> str:
                ms = sorted(1000 * r[field] / n for r in rows)
                return f"{ms[0]:.0f}–{ms[-1]:.0f} ms" if len(ms) > 1 else f"{ms[0]:.0f} ms"

            both = sorted(1000 * (r["client_cpu_s"] + r["server_cpu_s"]) / users for r in mine)
            table.add_row(
                f"{users}",
                variant,
                str(len(mine)),
                spread("wall_s"),
                spread("client_cpu_s"),
                spread("server_cpu_s"),
                f"{both[0]:.0f}–{both[-1]:.0f} ms",
            )
    console.print(table)
    fits: dict[str, dict[str, float]] = {}
    for variant in ("bare", "story"):
        for what, field in (("CPU, both", None), ("wall", "wall_s")):
            rows = [r for r in runs if r["variant"] == variant]
            points = [
                {
                    "users": r["users"],
                    "orchestration_cpu_s": r[field] if field else r["client_cpu_s"] + r["server_cpu_s"],
                }
                for r in rows
            ]
            split = per_wave_and_user(points)
            if split:
                fits[f"{variant}, {what}"] = {"per_wave_s": round(split[0], 1), "per_user_ms": round(split[1], 1)}
                console.print(f"{variant}, {what}: {split[0]:.1f} s a wave + {split[1]:.1f} ms a user (least squares)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "prefect-floor.json").write_text(json.dumps({"runs": runs, "fits": fits}, indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        client(int(sys.argv[2]), sys.argv[3])
    else:
        main()

"""The rollback flow: one task run per user, named after the user, undoing from the ledger.

Started by `ikomm rollback user|wave`, or from the UI through the start-rollback deployment
(`ikomm serve`, flows/served.py), with the same choices.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from prefect import flow, tags, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.futures import PrefectFuture, wait
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows import without_heartbeats
from ikomm.errors import InvalidInputError
from ikomm.inventory import load_inventory
from ikomm.leases import Lease
from ikomm.ledger import Ledger, url_for
from ikomm.rollback import UserRollback, recorded_run, rollback_user
from ikomm.wave_run import WaveRun
from tasks.user import PER_USER, last_attempt, quiet_console, with_wave_retries

RUNS: dict[str, WaveRun] = {}


@task(name="roll-back-user", task_run_name="{user} · rollback", **PER_USER)
def roll_back_user(wave_id: str, user: str, stages: list[str], purge: bool, force: bool) -> dict[str, Any]:
    """Undo one user's changes (all, or of the given stages); a transient fault is retried like the wave's."""
    run = RUNS[wave_id]
    try:
        wu = run.user(user)
    except InvalidInputError as exc:  # recorded, but gone from the inventory: said, the others go on
        return asdict(UserRollback(user, problems=[str(exc)]))
    report = rollback_user(run, wu, tuple(stages) or None, purge, force, final_attempt=last_attempt(run))
    return asdict(report)


@flow(name="rollback", flow_run_name="rollback {wave_id}", persist_result=False)
def rollback_flow(
    wave_id: str,
    inventory: str,
    state_dir: str,
    users: list[str],
    stages: list[str] | None = None,
    purge: bool = False,
    force: bool = False,
    concurrency: int = 8,
) -> list[dict[str, Any]]:
    """Roll back these users of a wave (all stages, or some): the keys ikomm.rollback.select_users chose; an empty
    list undoes nobody."""
    quiet_console()  # each user's "Finished in state" goes to the UI, not the operator's terminal; warnings print
    ledger = Ledger(url_for(Path(state_dir)))  # from the environment: a URL may carry a password
    run = recorded_run(ledger, load_inventory(Path(inventory)), wave_id, Path(state_dir))
    RUNS[wave_id] = run
    owned = {u.key for u in ledger.owned(wave_id)}
    keys = [k for k in users if k in owned]  # a user another wave took since the choice is that wave's to undo
    try:
        futures = (
            with_wave_retries(roll_back_user, run).map(wave_id, keys, unmapped(list(stages or [])), purge, force)
            if keys
            else []
        )
        wait(futures)
        reports = [f.result() for f in futures]
        create_markdown_artifact(
            _report(wave_id, reports), key=f"rollback-{wave_id}".lower(), description=f"Rollback of {wave_id}"
        )
        return reports
    finally:
        RUNS.pop(wave_id, None)
        run.c.close()


def _report(wave_id: str, reports: list[dict[str, Any]]) -> str:
    lines = [
        f"# Rollback of {wave_id}",
        "",
        "| user | undone | conflicts | problems | quarantined |",
        "|---|---|---|---|---|",
    ]
    for r in reports:
        lines.append(
            f"| {r['user']} | {len(r['undone'])} | {'; '.join(r['conflicts'])} | {'; '.join(r['problems'])} "
            f"| {'; '.join(r['quarantined'])} |"
        )
    return "\n".join(lines) + "\n"


def run_rollback(wave_id: str, **kwargs: Any) -> list[UserRollback]:
    """Run the rollback flow in this process, as the wave's one writer, tagged with the wave."""
    ledger = Ledger(url_for(Path(str(kwargs["state_dir"]))))
    with Lease(ledger, f"wave:{wave_id}"), without_heartbeats(), tags(f"wave:{wave_id}", "rollback"):
        concurrency = int(kwargs.get("concurrency", 8))
        runner = cast(TaskRunner[PrefectFuture[Any]], ThreadPoolTaskRunner(max_workers=concurrency))
        flow_ = rollback_flow.with_options(task_runner=runner)
        reports = flow_(wave_id, **kwargs)
    return [UserRollback(**r) for r in reports]

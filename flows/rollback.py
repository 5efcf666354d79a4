"""The rollback flow: one task run per user, named after the user, undoing from the ledger.

Started by `ikomm rollback user|wave`, or from the UI through the start-rollback deployment
(`ikomm serve`, flows/served.py), with the same choices.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect import State, flow, get_run_logger, tags, task
from prefect.artifacts import create_markdown_artifact
from prefect.futures import PrefectFuture, wait
from prefect.states import Completed, Failed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows import without_heartbeats
from flows.wave import await_recorded
from ikomm.errors import InvalidInputError
from ikomm.inventory import load_inventory
from ikomm.leases import Lease
from ikomm.ledger import Ledger, now, url_for
from ikomm.report import RUNBOOK_USER
from ikomm.rollback import UserRollback, recorded_run, rollback_user
from ikomm.server import task_run_url
from ikomm.wave_run import WaveRun
from tasks.user import PER_USER, card, last_attempt, quiet_console, told, with_wave_retries

RUNS: dict[str, WaveRun] = {}


@task(name="roll-back-user", task_run_name="{user} · {account} · rollback · {person}", **PER_USER)
def roll_back_user(
    wave_id: str, user: str, account: str, stages: list[str], purge: bool, force: bool, person: str = ""
) -> State[dict[str, Any]]:
    """Undo one user's changes (all, or of the given stages); a transient fault is retried like the wave's.

    Named and tagged as the user's wave task runs are (key · account, municipality), with the story in its log
    and the user's card: the helpdesk's search finds it beside the move. It ends Completed "Rolled back", or
    Failed "Rollback incomplete" with the conflicts and problems (never green while something was left)."""
    run = RUNS[wave_id]
    try:
        wu = run.user(user)
    except InvalidInputError as exc:  # recorded, but gone from the inventory: said, the others go on
        report = UserRollback(user, problems=[str(exc)])
        return Failed(name="Rollback incomplete", message=str(exc), data=asdict(report))
    with told(user):
        report = rollback_user(run, wu, tuple(stages) or None, purge, force, final_attempt=last_attempt(run))
    row = run.ledger.user(user)
    card(run, wu, row)
    data = asdict(report)
    if report.conflicts or report.problems:
        left = "; ".join(report.conflicts + report.problems)
        return Failed(name="Rollback incomplete", message=f"{left} | follow {RUNBOOK_USER}", data=data)
    if report.nothing_to_do:
        return Completed(name="Nothing to undo", message="nothing recorded left to undo for this user", data=data)
    where = f"stage(s) {', '.join(stages)}" if stages else "the move"
    return Completed(
        name="Rolled back", message=f"{where} rolled back: {len(report.undone)} change(s) undone", data=data
    )


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
) -> State[list[dict[str, Any]]]:
    """Roll back these users of a wave (all stages, or some): the keys ikomm.rollback.select_users chose; an empty
    list undoes nobody. Ends Completed, or Failed "Rollback incomplete" naming the users left; the reports are its
    data either way."""
    quiet_console()  # each user's "Finished in state" goes to the UI, not the operator's terminal; warnings print
    ledger = Ledger(url_for(Path(state_dir)))  # from the environment: a URL may carry a password
    run = recorded_run(ledger, load_inventory(Path(inventory)), wave_id, Path(state_dir))
    RUNS[wave_id] = run
    owned = {u.key for u in ledger.owned(wave_id)}
    keys = [k for k in users if k in owned]  # a user another wave took since the choice is that wave's to undo
    try:
        task_ = with_wave_retries(roll_back_user, run)
        futures = []
        for key in keys:
            wu = run.known(key)  # None: gone from the inventory; its task says so
            account, person = (run.account(wu), run.person(wu)) if wu else ("?", "?")
            with tags(f"municipality:{key.split('/', 1)[0]}"):
                futures.append(task_.submit(wave_id, key, account, list(stages or []), purge, force, person))
        pages = {k: str(f.task_run_id) for k, f in zip(keys, futures, strict=True)}
        ledger.link_task_runs(wave_id, "rollback", pages)
        wait(futures)
        reports = [_report_of(key, f) for key, f in zip(keys, futures, strict=True)]
        mark_moves_rolled_back(ledger, wave_id, reports, pages)
        create_markdown_artifact(
            _report(wave_id, reports), key=f"rollback-{wave_id}".lower(), description=f"Rollback of {wave_id}"
        )
        left = [r["user"] for r in reports if r["conflicts"] or r["problems"]]
        if left:  # never green while a user is left half undone
            said = f"{len(left)} of {len(reports)} user(s) not fully rolled back ({', '.join(left[:5])}"
            said += ", ...)" if len(left) > 5 else ")"
            return Failed(name="Rollback incomplete", message=f"{said}: see each user's task run", data=reports)
        undone = sum(1 for r in reports if r["undone"])
        return Completed(
            message=f"{undone} user(s) rolled back, {len(reports) - undone} had nothing to undo", data=reports
        )
    finally:
        RUNS.pop(wave_id, None)
        run.c.close()


def _report_of(key: str, future: PrefectFuture[Any]) -> dict[str, Any]:
    """The user's rollback report, also when the task itself failed (a fault that is not the user's)."""
    result = future.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        return asdict(UserRollback(key, problems=[f"{type(result).__name__}: {result}"]))
    return cast(dict[str, Any], result)


def mark_moves_rolled_back(ledger: Ledger, wave_id: str, reports: list[dict[str, Any]], pages: dict[str, str]) -> None:
    """The user's earlier task runs in this wave (the move: "moved and verified") say first that the move was
    rolled back, with a link to the rollback's page: the helpdesk who finds the old page is not misled."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import LogCreate

    done = [r["user"] for r in reports if r["undone"] and not (r["conflicts"] or r["problems"])]
    if not done:
        return
    earlier = ledger.task_runs_of(done, wave_id, but=set(pages.values()))
    with get_client(sync_client=True) as client:
        for key, task_run in earlier:
            message = f"rolled back afterwards ({now()[:16].replace('T', ' ')} UTC): see {task_run_url(pages[key])}"
            try:
                client.set_task_run_state(UUID(task_run), Completed(name="Rolled back", message=message), force=True)
                earlier_run = client.read_task_run(UUID(task_run))
                said = LogCreate(
                    name="ikomm.rollback",
                    level=logging.WARNING,
                    message=f"{key}: {message}",
                    timestamp=datetime.now(UTC),
                    flow_run_id=earlier_run.flow_run_id,
                    task_run_id=earlier_run.id,
                )
                client.create_logs([said])  # the page's log ends with it, where the helpdesk reads
            except Exception as exc:
                get_run_logger().warning("%s: the page of an earlier run not marked rolled back: %s", key, exc)


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
    started = now()
    with Lease(ledger, f"wave:{wave_id}"), without_heartbeats(), tags(f"wave:{wave_id}", "rollback"):
        concurrency = int(kwargs.get("concurrency", 8))
        runner = cast(TaskRunner[PrefectFuture[Any]], ThreadPoolTaskRunner(max_workers=concurrency))
        flow_ = rollback_flow.with_options(task_runner=runner)
        ended = flow_(wave_id, **kwargs, return_state=True)  # "Rollback incomplete" is an outcome: its reports
        reports = cast("list[dict[str, Any]] | BaseException", ended.result(raise_on_failure=False))
    if isinstance(reports, BaseException):  # the flow itself failed or crashed
        raise reports
    # as a wave does: the users' rollback pages show how it ended for them before the command says it is over
    await_recorded(list(ledger.task_runs(wave_id, since=started).values()))
    return [UserRollback(**r) for r in reports]

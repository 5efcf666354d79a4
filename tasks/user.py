"""The one task per user and phase (prepare, cutover, or migrate: both): named after the user and their new
account, tagged with their own municipality, so the helpdesk finds them in the UI; each tells the user's
story there: every stage and change in its log, a card (artifact) saying what to tell the user, and a
final state that says what happened (Completed, Held, Skipped, or Failed with the reason and the runbook).
"""

from __future__ import annotations

import logging
import os
from typing import Any, ParamSpec, TypeVar

from prefect import State, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler
from prefect.runtime import task_run as current_task_run
from prefect.states import Completed, Failed
from prefect.tasks import Task, exponential_backoff

from ikomm.errors import TransientError
from ikomm.migration import run_user
from ikomm.report import RUNBOOK_USER, tell_user, user_card
from ikomm.wave_run import WaveRun, story

P = ParamSpec("P")
R = TypeVar("R")

RUNS: dict[str, WaveRun] = {}  # the wave runs of this process, by wave id (tasks take ids, not objects)
RETRIES = 3  # the default; a wave's options.retries and options.retry_delay override it


class RunLog(APILogHandler):
    """Prefect's API log handler for the user's story: sent to the running task run's log, dropped outside a run
    (a dry run or a CLI command tells the story to nobody)."""

    def emit(self, record: logging.LogRecord) -> None:
        if TaskRunContext.get() is None and FlowRunContext.get() is None:
            return
        super().emit(record)


# IKOMM_STORY=off: no story in the UI (no log lines, no card); for measuring what the story costs (bench/wave.py)
STORY = os.environ.get("IKOMM_STORY", "on") != "off"
if STORY and not any(isinstance(h, RunLog) for h in story.handlers):
    story.addHandler(RunLog())
    story.setLevel(logging.INFO)


def only_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a transient fault (server down, timeout); fail at once on invalid input or a conflict."""
    try:
        state.result()
    except TransientError:
        return True
    except Exception:
        return False
    return False


# How every per-user task runs (the wave's move_user, the rollback's roll_back_user): transient faults
# retried with exponential backoff and jitter, anything else fails at once; nothing cached or stored.
PER_USER: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": only_transient,
    "cache_policy": NO_CACHE,
    "persist_result": False,
}


def with_wave_retries(per_user: Task[P, R], run: WaveRun) -> Task[P, R]:
    """The per-user task with the wave file's retries and first retry delay."""
    opts = run.wave.spec.options
    return per_user.with_options(retries=opts.retries, retry_delay_seconds=exponential_backoff(opts.retry_delay))


def last_attempt(run: WaveRun) -> bool:
    """Whether the running task run is on its last attempt (the wave's retries are spent)."""
    return bool(current_task_run.run_count > run.wave.spec.options.retries)


@task(name="move-user", task_run_name="{user} · {account} · {phase}", **PER_USER)
def move_user(wave_id: str, user: str, account: str, phase: str) -> str | State[str]:
    """Move one user through a phase; the last failed attempt undoes the user's changes.

    A held user ends Completed-type in a state named Held, with the reason: nothing failed, nothing was
    changed for them (the UI and the dashboard must not count them as failures); a user another wave
    owns ends Skipped; a user who failed ends Failed with the reason, what was undone and the runbook.
    Each ends with the user's card on the task run (account is the name shown, not used otherwise).
    """
    run = RUNS[wave_id]
    wu = run.user(user)
    try:
        outcome = run_user(run, wu, phase, final_attempt=last_attempt(run))
    except Exception:
        row = run.ledger.user(user)
        if row is None or row.state != "failed" or row.wave != wave_id:
            raise  # to be retried, or a fault before the user was recorded
        _card(run, user)
        undone = "what was started was undone" if "undo incomplete" not in row.reason else "the undo is incomplete"
        return Failed(message=f"{row.reason} | {undone}; follow {RUNBOOK_USER}")
    _card(run, user)
    row = run.ledger.user(user)
    if outcome == "held":
        return Completed(name="Held", message=row.reason if row else "held", data=outcome)
    if outcome == "skipped":
        return Completed(
            name="Skipped", message=f"another wave ({row.wave if row else '?'}) owns this user now", data=outcome
        )
    if outcome == "verified":
        return Completed(message=f"moved and verified: log on as {run.account(wu)}", data=outcome)
    return Completed(message=row.reason if row else outcome, data=outcome)


def _card(run: WaveRun, user: str) -> None:
    """The user's card on the task run, and its advice as the last line of the task run's log."""
    if not STORY:
        return
    wu = run.user(user)
    row = run.ledger.user(user)
    story.info("tell the user: %s", tell_user(run, wu, row.state if row and row.wave == run.wave.id else "skipped"))
    create_markdown_artifact(user_card(run, wu), description=f"{user}: what to tell the user")

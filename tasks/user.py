"""The one task per user and phase (prepare, cutover, or migrate: both): named after the user, so the helpdesk
finds them in the UI."""

from __future__ import annotations

from typing import Any, ParamSpec, TypeVar

from prefect import State, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run as current_task_run
from prefect.states import Completed
from prefect.tasks import Task, exponential_backoff

from ikomm.errors import TransientError
from ikomm.migration import run_user
from ikomm.wave_run import WaveRun

P = ParamSpec("P")
R = TypeVar("R")

RUNS: dict[str, WaveRun] = {}  # the wave runs of this process, by wave id (tasks take ids, not objects)
RETRIES = 3  # the default; a wave's options.retries and options.retry_delay override it


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


@task(name="move-user", task_run_name="{user} · {phase}", **PER_USER)
def move_user(wave_id: str, user: str, phase: str) -> str | State[str]:
    """Move one user through a phase; the last failed attempt undoes the user's changes.

    A held user ends Completed-type in a state named Held, with the reason: nothing failed, nothing was
    changed for them (the UI and the dashboard must not count them as failures); a user another wave
    owns ends Skipped.
    """
    run = RUNS[wave_id]
    outcome = run_user(run, run.user(user), phase, final_attempt=last_attempt(run))
    if outcome == "held":
        row = run.ledger.user(user)
        return Completed(name="Held", message=row.reason if row else "held", data=outcome)
    if outcome == "skipped":
        return Completed(name="Skipped", message="another wave owns this user now", data=outcome)
    return outcome

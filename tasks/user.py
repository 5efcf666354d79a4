"""The one task per user and phase (prepare, cutover, or migrate: both): named after the user and their new
account, tagged with their own municipality, so the helpdesk finds them in the UI; each tells the user's
story there: every stage and change in its log (one entry, each line with its time), a card (artifact)
saying what to tell the user, and a final state that says what happened (Completed, Held, Skipped, or
Failed with the reason and the runbook).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar
from uuid import UUID

from prefect import State, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.runtime import task_run as current_task_run
from prefect.states import Completed, Failed
from prefect.tasks import Task, exponential_backoff

from ikomm.errors import TransientError
from ikomm.ledger import UserRow
from ikomm.migration import run_user
from ikomm.report import runbook_for, tell_user, user_card
from ikomm.wave_run import STOPPING, WaveRun, story
from ikomm.waves import WaveUser

P = ParamSpec("P")
R = TypeVar("R")

RUNS: dict[str, WaveRun] = {}  # the wave runs of this process, by wave id (tasks take ids, not objects)
RETRIES = 3  # the default; a wave's options.retries and options.retry_delay override it


class StoryBuffer(logging.Handler):
    """Collects the user's story (the core's `ikomm.story` lines) per running task run, each line with its time,
    to be written to the task run's log as one entry when the attempt ends (`told`). One log entry a user, not
    one a line: 27 lines a user cost the Prefect server 40 ms of CPU a user, one entry 2 ms (docs/benchmarks.md).
    Lines logged outside a task run (a dry run, a CLI command) are dropped."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: dict[UUID, list[str]] = {}
        self.warned: set[UUID] = set()
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        ctx = TaskRunContext.get()
        if ctx is None:
            return
        at = time.strftime("%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}"
        with self.guard:
            self.lines.setdefault(ctx.task_run.id, []).append(f"{at}  {record.getMessage()}")
            if record.levelno >= logging.WARNING:
                self.warned.add(ctx.task_run.id)

    def take(self, task_run_id: UUID) -> tuple[list[str], bool]:
        """The attempt's lines, and whether any was a warning; forgotten here."""
        with self.guard:
            warned = task_run_id in self.warned
            self.warned.discard(task_run_id)
            return self.lines.pop(task_run_id, []), warned


# IKOMM_STORY=off: no story in the UI (no log entry, no card); for measuring what the story costs (bench/wave.py)
STORY = os.environ.get("IKOMM_STORY", "on") != "off"
BUFFER = next((h for h in story.handlers if isinstance(h, StoryBuffer)), None) or StoryBuffer()
if STORY and BUFFER not in story.handlers:
    story.addHandler(BUFFER)
    story.setLevel(logging.INFO)


class StoriesNotPrinted(logging.Filter):
    """Keeps the users' task runs' INFO records (each user's story, Prefect's 'Finished in state') off the
    console: they are for the UI, the wave's terminal shows users per stage, and printing 2,500 stories
    through rich cost the wave's process about 2 ms of CPU a user. Warnings (a held or failed user) still print."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith("prefect.task_runs")


def quiet_console() -> None:
    """Put the filter on Prefect's console handlers (once)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
            isinstance(f, StoriesNotPrinted) for f in handler.filters
        ):
            handler.addFilter(StoriesNotPrinted())


@contextmanager
def told(user: str) -> Iterator[None]:
    """Write this attempt's story of the user to the task run's log when the attempt ends, however it ends."""
    try:
        yield
    finally:
        ctx = TaskRunContext.get()
        if STORY and ctx is not None:
            lines, warned = BUFFER.take(ctx.task_run.id)
            if lines:
                level = logging.WARNING if warned else logging.INFO
                get_run_logger().log(level, "%s, times UTC:\n%s", user, "\n".join(lines))


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


@task(name="move-user", task_run_name="{user} · {account} · {phase} · {person}", **PER_USER)
def move_user(wave_id: str, user: str, account: str, phase: str, person: str = "") -> str | State[str]:
    """Move one user through a phase; the last failed attempt undoes the user's changes.

    A held user ends Completed-type in a state named Held, with the reason: nothing failed, nothing was
    changed for them (the UI and the dashboard must not count them as failures); a user another wave
    owns ends Skipped; a user who failed ends Failed with the reason, what was undone and the runbook.
    Each ends with the user's card on the task run (account is the name shown, not used otherwise).
    """
    run = RUNS[wave_id]
    wu = run.user(user)
    with told(user):
        try:
            outcome = run_user(run, wu, phase, final_attempt=last_attempt(run))
        except Exception:
            row = run.ledger.user(user)
            if row is None or row.state != "failed" or row.wave != wave_id:
                raise  # to be retried, or a fault before the user was recorded
            card(run, wu, row)
            undone = "what was started was undone" if "undo incomplete" not in row.reason else "the undo is incomplete"
            return Failed(message=f"{row.reason} | {undone}; follow {runbook_for(run.inv, row.reason)}")
        row = run.ledger.user(user)
        card(run, wu, row)
    if outcome == "held":
        return Completed(name="Held", message=row.reason if row else "held", data=outcome)
    if outcome == "skipped":
        return Completed(
            name="Skipped", message=f"another wave ({row.wave if row else '?'}) owns this user now", data=outcome
        )
    if outcome == "verified":
        return Completed(message=f"moved and verified: log on as {run.account(wu)}", data=outcome)
    if outcome == "prepared":
        waits = "the wave was interrupted: the cutover waits for its rerun" if STOPPING.is_set() else "approval"
        return Completed(message=f"prepared: account {run.account(wu)}; the move waits for {waits}", data=outcome)
    if outcome == "not started":
        why = "the wave was interrupted" if STOPPING.is_set() else "the wave stopped (failure budget)"
        return Completed(
            name="Not started", message=f"{why} before this user's turn: nothing changed; a rerun takes them"
        )
    return Completed(message=row.reason if row else outcome, data=outcome)


def card(run: WaveRun, wu: WaveUser, row: UserRow | None) -> None:
    """The user's card on the task run, and its advice as the last line of the task run's log (row: the user's
    ledger row, read once by the caller)."""
    if not STORY:
        return
    story.info("tell the user: %s", tell_user(run, wu, row))
    create_markdown_artifact(user_card(run, wu, row), description=f"{wu.key}: what to tell the user")

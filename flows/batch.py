"""Waves on workers: a phase of a wave cut into batches, each a flow run of the `wave-batch/ikomm` deployment
on the process work pool `ikomm`, picked up by whichever worker (`ikomm worker start`) is free.

The wave's own flow run (in the `ikomm wave run` process) stays the one writer of the wave: it holds the
wave's lease, asks for approval, submits the batches (`Batches`) as its subflows and follows them. A batch:

- claims its flow run (`batch:<flow run id>`) and each of its users (`user:<key>`) in the ledger, so no
  user is moved by two processes at once: a user a live process holds is left to it;
- counts the failure budget and the seats in the ledger (shared with the wave's other batches), takes
  its part of every Prefect global concurrency limit (`leased(limits, ledger, share)`), and writes a broker
  collection under a limit of one per collection (`collection_guard`);
- moves its users through the phase with the same per-user task as a wave in one process.

A batch whose process died (a killed worker, a lost machine) is seen by the wave's run from the ledger
(its lease's holder is gone, or it never took one); the run marks the batch Crashed and submits its
users that are not through the phase yet as a new batch, up to ATTEMPTS times. A user's changes are
recorded in the ledger before they are made, so the new batch carries on where the dead one stopped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import State, flow, get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.runtime import flow_run
from prefect.states import Completed, Crashed
from prefect.task_runners import ThreadPoolTaskRunner

from flows import without_heartbeats
from flows.limits import collection_guard, free_lost_slots, leased
from ikomm import server
from ikomm.batches import batch_name, batches
from ikomm.inventory import load_inventory
from ikomm.leases import Claim, holder_alive
from ikomm.ledger import FINAL, Ledger, url_for
from ikomm.preflight import Check
from ikomm.wave_run import LocalGate, WaveRun
from ikomm.waves import load_wave
from tasks.user import RUNS

POOL = "ikomm"
DEPLOYMENT = f"wave-batch/{POOL}"
POLL_SECONDS = 1.0  # the batches' states and the progress count: a few ms of queries a time
UNCLAIMED_SECONDS = 120.0  # a batch taken this long ago without its lease in the ledger has lost its process
ATTEMPTS = 3  # submissions of a batch's users at most (the first and two after a lost or failed batch)


def through(phase: str, state: str, stage: str) -> bool:
    """Whether a user in this state and stage needs nothing more from this phase."""
    return state in FINAL or (phase == "prepare" and stage == "prepared")


@flow(name="wave-batch", flow_run_name="{name}", persist_result=False, validate_parameters=False)
def wave_batch(
    wave_id: str,
    wave_file: str,
    inventory: str,
    phase: str,
    name: str,
    keys: list[str],
    limits: dict[str, int],
    share: int = 1,
) -> State[dict[str, int]]:
    """Move a batch of the wave's users through a phase, on a worker (see the module's docstring)."""
    from flows.wave import PHASE_FLOWS, counted

    logger = get_run_logger()
    inv = load_inventory(Path(inventory))
    wave = load_wave(Path(wave_file), inv)
    state_dir = server.state_dir()
    ledger = Ledger(url_for(state_dir))  # from the worker's environment: a URL may carry a password
    with Claim(ledger, [f"batch:{flow_run.id}", *(f"user:{k}" for k in keys)]) as claim:
        for lease, why in claim.refused.items():
            logger.warning("%s left to the process that holds it: %s", lease.removeprefix("user:"), why)
        rows = {r.key: r for r in ledger.users(wave.id)}
        todo = [
            k
            for k in keys
            if f"user:{k}" in claim.taken and k in rows and not through(phase, rows[k].state, rows[k].stage)
        ]
        if len(todo) < len(keys):
            logger.info(
                "%d of %d users are through %s already or held elsewhere", len(keys) - len(todo), len(keys), phase
            )
        if not todo:
            return Completed(message="nothing to do", data={})
        run = WaveRun(inv, wave, ledger, state_dir)
        run.share()
        run.c.broker().guard = collection_guard
        RUNS[wave.id] = run
        concurrency = max(1, wave.spec.options.concurrency // share)
        try:
            with leased(run.limits(), ledger, share) as sizes:
                run.gate = LocalGate(sizes)
                runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=concurrency)
                # named as the batch, not '<wave> · <phase>': a resumed wave's run marks runs of that name Crashed
                phase_flow = PHASE_FLOWS[phase].with_options(task_runner=runner, flow_run_name=name)
                with without_heartbeats():  # this batch's own run has Prefect's, from the worker's process
                    outcome: dict[str, int] = phase_flow(wave.id, todo)
        finally:
            RUNS.pop(wave.id, None)
            run.c.close()
    return Completed(message=counted(outcome), data=outcome)


@dataclass
class Submitted:
    """A batch as submitted: its users, which attempt this is, and when."""

    keys: list[str]
    attempt: int
    started: float | None = None  # when the wave's run first saw a worker take it: Pending or Running (monotonic)


class Batches:
    """The wave's side: submit a phase's batches to the work pool and follow them to the end."""

    def __init__(self, run: WaveRun, phase: str, workers: int, tick: Callable[[], None] | None = None) -> None:
        self.run, self.phase, self.workers = run, phase, workers
        self.tick = tick or (lambda: None)
        self.logger = get_run_logger()
        self.limits = run.limits()
        self.open: dict[UUID, Submitted] = {}
        self.given_up: list[str] = []

    def run_all(self, keys: list[str]) -> None:
        """Submit every batch, then follow them until each has ended; lost and failed batches are resubmitted."""
        ensure_deployment()
        for batch in batches(self.run.wave, keys, self.run.wave.spec.options.batch_size):
            self.submit(batch, 1)
        waited = time.monotonic()
        with get_client(sync_client=True) as client:
            while self.open:
                time.sleep(POLL_SECONDS)
                self.follow(client)
                self.tick()
                if time.monotonic() - waited > 60 and self.scheduled(client) and not online_workers():
                    waited = time.monotonic()
                    self.logger.warning(
                        "batches wait for a worker of pool %s: is one running? (ikomm worker start)", POOL
                    )
        if self.given_up:
            self.logger.warning("%d user(s) left after %d attempts: rerun the wave", len(self.given_up), ATTEMPTS)

    def submit(self, keys: list[str], attempt: int) -> None:
        from prefect.client.schemas.objects import FlowRun
        from prefect.deployments import run_deployment

        wave = self.run.wave
        name = batch_name(wave, keys, self.phase) + (f" · attempt {attempt}" if attempt > 1 else "")
        made = run_deployment(
            DEPLOYMENT,
            parameters={
                "wave_id": wave.id,
                "wave_file": str(wave.path.resolve()),
                "inventory": str(self.run.inv.root.resolve()),
                "phase": self.phase,
                "name": name,
                "keys": keys,
                "limits": self.limits,
                "share": self.workers,
            },
            flow_run_name=name,
            timeout=0,
            as_subflow=True,
            tags=[f"wave:{wave.id}"],
        )
        assert isinstance(made, FlowRun)  # called outside an event loop: the sync variant
        self.open[made.id] = Submitted(keys, attempt)

    def follow(self, client: SyncPrefectClient) -> None:
        """Read the open batches' states once; close the ended ones, resubmit the lost and failed."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(self.open))))
        for fr in runs:
            sub = self.open[fr.id]
            state = fr.state
            if state is None:
                continue
            if state.is_final():
                del self.open[fr.id]
                if not state.is_completed():
                    self.again(sub, f"batch {fr.name} ended {state.name}: {state.message or ''}".rstrip(": "))
            elif (state.is_pending() or state.is_running()) and sub.started is None:
                sub.started = time.monotonic()
            elif (state.is_pending() or state.is_running()) and self.lost(fr.id, sub):
                why = "its process is gone (a worker killed or its machine lost)"
                crash(client, fr.id, f"{why}; its users not through {self.phase} were submitted again")
                free_lost_slots(client, self.run.ledger)  # its Prefect slots, at once: the next batch needs them
                held = self.run.ledger.lease(f"batch:{fr.id}")
                if held is not None:  # the dead process's claims: the batch's and its users'
                    self.run.ledger.release_leases_of(held[0])
                del self.open[fr.id]
                self.again(sub, f"batch {fr.name}: {why}")

    def lost(self, flow_run_id: UUID, sub: Submitted) -> bool:
        """Whether a batch a worker took has lost its process: its lease's holder is dead, or it took none in time
        (a worker killed while it started the batch leaves it Pending or Running, without a lease)."""
        alive = holder_alive(self.run.ledger, f"batch:{flow_run_id}")
        since = sub.started or time.monotonic()
        return alive is False or (alive is None and time.monotonic() - since > UNCLAIMED_SECONDS)

    def again(self, sub: Submitted, why: str) -> None:
        """Submit the batch's users not through the phase yet as a new batch, if attempts are left."""
        rows = {r.key: r for r in self.run.ledger.users(self.run.wave.id)}
        left = [k for k in sub.keys if k in rows and not through(self.phase, rows[k].state, rows[k].stage)]
        if not left:
            return
        if self.run.budget.tripped:
            self.logger.warning("%s; not submitted again: the failure budget has tripped", why)
            return
        if sub.attempt >= ATTEMPTS:
            self.logger.warning("%s; %d user(s) not submitted again after %d attempts", why, len(left), ATTEMPTS)
            self.given_up += left
            return
        self.logger.warning("%s; %d user(s) submitted again (attempt %d)", why, len(left), sub.attempt + 1)
        self.submit(left, sub.attempt + 1)

    def scheduled(self, client: SyncPrefectClient) -> bool:
        """Whether any open batch still waits for a worker to pick it up."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(self.open))))
        return any(fr.state is not None and fr.state.is_scheduled() for fr in runs)


def crash(client: SyncPrefectClient, flow_run_id: UUID, message: str) -> None:
    """Mark a flow run whose process died Crashed, with its nested flow runs and its task runs left open."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    for child in client.read_flow_runs(
        flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
    ):
        if child.state is not None and not child.state.is_final():
            crash(client, child.id, message)
    offset = 0
    while True:
        page = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id])),
            limit=200,
            offset=offset,
        )
        for tr in page:
            if tr.state is not None and not tr.state.is_final():
                client.set_task_run_state(tr.id, Crashed(message=message), force=True)
        if len(page) < 200:
            break
        offset += 200
    client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)


def ensure_deployment() -> None:
    """The process work pool `ikomm` and the `wave-batch/ikomm` deployment on it (made, or made again: an upsert).

    Its one pull step sets the working folder to this project's, from which the worker's flow-run process
    imports `flows.batch` (installed with ikomm): nothing is copied, so a worker runs the code installed on
    its machine (docs/scale-out.md: the same version everywhere).
    """
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    home = Path(__file__).resolve().parents[1]
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(POOL)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # made by another process just now
                client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        client.create_deployment(
            flow_id=client.create_flow(wave_batch),
            name=POOL,
            work_pool_name=POOL,
            entrypoint="flows.batch.wave_batch",
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(home)}}],
            description="A batch of a wave's users, run by a worker of the pool ikomm (ikomm worker start).",
        )


def online_workers() -> list[str]:
    """The names of the pool's workers that Prefect sees online now."""
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(POOL)
        except ObjectNotFound:
            return []
        return [w.name for w in client.read_workers_for_work_pool(POOL) if str(w.status).endswith("ONLINE")]


def workers_check(run: WaveRun, workers: int) -> list[Check]:
    """Preflight for a wave on workers: a worker online, and every limit at least one slot per worker."""
    if workers <= 0:
        return []
    online = online_workers()
    found = Check(
        "workers",
        bool(online),
        f"{len(online)} worker(s) online in pool {POOL}: {', '.join(sorted(online))}"
        if online
        else f"no worker online in pool {POOL}: start them first (ikomm worker start --detach)",
    )
    low = [f"{name}={n}" for name, n in sorted(run.limits().items()) if n < workers]
    slots = Check(
        "worker-limits",
        not low,
        f"each of the {workers} workers holds at least one slot of every limit"
        if not low
        else f"limits lower than the {workers} workers the wave wants: {', '.join(low)}; "
        "raise them or use fewer workers",
    )
    return [found, slots]

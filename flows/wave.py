"""The wave flow: prepare every user, wait for approval, cut every user over; progress as artifacts.

One flow run named after the wave (tagged with wave and municipalities) holds two nested flow runs,
`<wave> · prepare` and `<wave> · cutover`, each with one task run per user named after the user, so
no flow run holds more than one task run per user (2,500 for the whole platform, far below the size
at which Prefect drops records). When the gate is open before the wave starts (no approval required,
`--auto-approve`, or approved on an earlier run), there is nothing to wait for between the phases:
one nested flow run `<wave> · migrate` takes each user through both in one task run. The ledger,
not the UI's counts, is the source of truth.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from prefect import State, flow, get_run_logger, tags
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.flow_runs import pause_flow_run
from prefect.futures import wait
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import ConfigDict, Field

from flows import without_heartbeats
from flows.batch import Batches, crash
from flows.campaign import publish_status
from flows.limits import leased
from ikomm.campaign import campaign_status, status_markdown, wave_files
from ikomm.chunks import chunks
from ikomm.errors import ConflictError, IkommError, ProcessGoneError
from ikomm.inventory import Inventory, load_inventory
from ikomm.leases import Lease, holder_alive, resume_command
from ikomm.ledger import FINAL, Ledger, now, url_for
from ikomm.opening import open_wave
from ikomm.policy import ready_date
from ikomm.report import outcome_words, summary_markdown, table_rows
from ikomm.server import task_run_url, ui_base
from ikomm.wave_run import INTERRUPTED, STOPPING, LocalGate, WaveRun
from ikomm.waves import Wave, load_wave
from tasks.user import RUNS, move_user, quiet_console, with_wave_retries

APPROVAL_TIMEOUT = 7 * 24 * 3600
RECORDED_SECONDS = 60.0  # how long a wave's end waits for Prefect to record its task runs' final states
LOADED: dict[str, Inventory] = {}  # run_wave's inventory by its folder, while its wave flow runs in this process


APPROVE, REFUSE = "approve the cutover", "refuse the cutover"


class Approval(RunInput):
    """The lead's answer at the gate before cutover: nothing is chosen until the lead chooses (the UI's Resume
    form has no default to submit by mistake), and a refusal says why (the server refuses the form without)."""

    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"decision": {"const": REFUSE}}, "required": ["decision"]},
            "then": {"required": ["comment"], "properties": {"comment": {"minLength": 3}}},
        }
    )

    decision: Literal["approve the cutover", "refuse the cutover"] = Field(
        title="Decision", description="Approve to cut the prepared users over now; refuse to stop the wave here."
    )
    approver: str = Field(min_length=2, title="Who decides", description="Name or e-mail, kept with the answer.")
    comment: str = Field(
        "", title="Reason", description="Needed to refuse (at least 3 characters); kept with the answer."
    )

    @classmethod
    def of(cls, answer: dict[str, Any]) -> Approval:
        """The form from the ledger's record of an answer: approved, approver, comment."""
        decision = APPROVE if answer.get("approved") else REFUSE
        return cls(decision=decision, approver=answer.get("approver", ""), comment=answer.get("comment", ""))

    def answer(self) -> dict[str, Any]:
        """The answer as the ledger records it."""
        return {"approved": self.decision == APPROVE, "approver": self.approver, "comment": self.comment}


class Progress:
    """The wave's progress artifact, updated at most every two seconds from any worker thread."""

    def __init__(self, run: WaveRun, total: int) -> None:
        self.run, self.total = run, max(total, 1)
        self.flow_run_id: str | None = flow_run.id  # the wave's: its artifacts belong to it, not to a user
        # every user's (state, stage), kept from the state changes as they happen, so an update need
        # not read the whole wave from the ledger (at 2,500 users that was 2 % of the wave's CPU)
        self.users = {r.key: (r.state, r.stage) for r in run.ledger.users(run.wave.id)}
        self.key = f"wave-{run.wave.id}-progress".lower()
        artifact = create_progress_artifact(0.0, key=self.key, description=f"Wave {run.wave.id}")
        assert isinstance(artifact, UUID)
        self.artifact: UUID = artifact
        self.lock = threading.Lock()
        self.last = 0.0
        self.last_table = 0.0
        self.table_id: UUID | None = None
        self.table_lock = threading.Lock()

    def __call__(self, key: str, state: str, stage: str) -> None:
        now = time.monotonic()
        with self.lock:
            self.users[key] = (state, stage)
            if (state not in FINAL and stage != "prepared") or now - self.last < 2.0:
                return
            self.last = now
        self.update()

    def reload(self) -> None:
        """Count the wave's users in the ledger, then publish: other processes move them (workers)."""
        final, prepared = self.run.ledger.progress(self.run.wave.id)
        self.publish(final + 0.5 * prepared)

    def update(self) -> None:
        """Publish the progress of the state changes seen in this process."""
        with self.lock:
            states = list(self.users.values())
        self.publish(sum(1.0 if state in FINAL else 0.5 if stage == "prepared" else 0.0 for state, stage in states))

    def publish(self, done: float) -> None:
        """The progress artifact (done: users in a final state, half a user for each one prepared), and every
        10 s the table of users per municipality and state."""
        update_progress_artifact(self.artifact, min(100.0, 100.0 * done / self.total))
        if time.monotonic() - self.last_table >= 10.0:  # the table reads the ledger: less often
            self.last_table = time.monotonic()
            self.table()

    def table(self) -> None:
        """The table of users per municipality and state: made once a run, then updated in place (one artifact
        in the run's Artifacts tab, not one a publish)."""
        with self.table_lock:  # not self.lock: the users' threads need that one while the table is sent
            self.table_id = users_table(self.run, self.flow_run_id, self.table_id)


def users_table(run: WaveRun, flow_run_id: str | None, artifact_id: UUID | None = None) -> UUID:
    """The table artifact of users per municipality and state, on the wave's flow run (it is called from the
    users' worker threads too, and would belong to whichever task run called): made, or the one made updated."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate

    data = json.dumps(table_rows(run.ledger, run.wave.id))
    with get_client(sync_client=True) as client:
        if artifact_id is not None:
            client.update_artifact(artifact_id, ArtifactUpdate(data=data))
            return artifact_id
        made = client.create_artifact(
            ArtifactCreate(
                key=f"wave-{run.wave.id}-users".lower(),
                type="table",
                data=data,
                description="Users per municipality and state",
                flow_run_id=UUID(flow_run_id) if flow_run_id else None,
            )
        )
        return made.id


def _phase(run: WaveRun, phase: str, keys: list[str]) -> dict[str, int]:
    """Every user's task run for the phase, tagged with the user's own municipality (and state:held when the
    inventory says an application they need is not ready yet); each task run recorded in the ledger."""
    quiet_console()  # in whichever process runs the users' task runs: the wave's, or a worker's batch
    task = with_wave_retries(move_user, run)
    futures = []
    for key in keys:
        wu = run.user(key)
        ready = ready_date(run.inv, wu.muni, wu.user)
        labels = [f"municipality:{wu.muni}", *(["state:held"] if ready and ready > run.today else [])]
        with tags(*labels):
            futures.append(task.submit(run.wave.id, key, run.account(wu), phase, run.person(wu)))
    run.ledger.link_task_runs(run.wave.id, phase, {k: str(f.task_run_id) for k, f in zip(keys, futures, strict=True)})
    wait(futures)
    outcome: dict[str, int] = {}
    for f in futures:
        state = f.state
        name = "failed" if state.is_failed() or state.is_crashed() else str(f.result(raise_on_failure=False))
        outcome[name] = outcome.get(name, 0) + 1
    return outcome


def _phase_flow(phase: str) -> Any:
    @flow(name=f"wave-{phase}", flow_run_name="{wave_id} · " + phase, persist_result=False, validate_parameters=False)
    def phase_flow(wave_id: str, keys: list[str]) -> State[dict[str, int]]:
        outcome = _phase(RUNS[wave_id], phase, keys)
        return Completed(message=counted(outcome), data=outcome)

    return phase_flow


prepare_flow = _phase_flow("prepare")
cutover_flow = _phase_flow("cutover")
migrate_flow = _phase_flow("migrate")
PHASE_FLOWS = {"prepare": prepare_flow, "cutover": cutover_flow, "migrate": migrate_flow}


@flow(name="wave", flow_run_name="{wave_id}", persist_result=False)
def wave_flow(
    wave_id: str, wave_file: str, inventory: str, state_dir: str, auto_approve: bool = False, workers: int = 0
) -> State[dict[str, Any]]:
    """Move the wave's users: prepare all, approval gate, cutover all (or all straight through when the
    gate is open already), summary. The flow run ends Completed with the users' count in its message
    ("97 verified, 2 failed, 19 held"), or Stopped with why (failure budget, not approved).
    workers: 0, in this process; N, in batches on the N workers of the pool `ikomm` (flows.batch)."""
    result = _wave(wave_id, wave_file, inventory, state_dir, auto_approve, workers)
    return final_state(Ledger(url_for(Path(state_dir))), wave_id, result)


def final_state(ledger: Ledger, wave_id: str, result: dict[str, Any]) -> State[dict[str, Any]]:
    """The state a wave's run ends in, never green while a user failed: Completed with the users' counts;
    Failed named "Failed users" ("done with 2 failed: 97 verified, 2 failed, 19 held") when some failed; Stopped
    with why and the counts (of the Failed type when users failed)."""
    totals: dict[str, int] = {}
    for (_, state), n in ledger.counts(wave_id).items():
        totals[state] = totals.get(state, 0) + n
    message = counted(totals)
    failed = totals.get("failed", 0)
    if result.get("state") == "held":
        return Completed(name="Held", message=f"{result.get('reason')}: {message}", data=result)
    if result.get("reason") == INTERRUPTED:
        return Cancelled(name="Interrupted", message=f"{INTERRUPTED}: {message}; rerun to go on", data=result)
    if result.get("state") != "done":
        said = f"{result.get('reason') or 'stopped'}: {message}"
        return (Failed if failed else Completed)(name="Stopped", message=said, data=result)
    if failed:
        return Failed(name="Failed users", message=f"{outcome_words('done', failed)}: {message}", data=result)
    return Completed(message=message, data=result)


def counted(outcome: dict[str, int]) -> str:
    """'97 verified, 2 failed, 19 held': the counts of users per outcome, the most common first."""
    return ", ".join(f"{n} {name}" for name, n in sorted(outcome.items(), key=lambda kv: (-kv[1], kv[0]))) or "no users"


def _wave(
    wave_id: str, wave_file: str, inventory: str, state_dir: str, auto_approve: bool, workers: int
) -> dict[str, Any]:
    logger = get_run_logger()
    inv = LOADED.get(inventory) or load_inventory(Path(inventory))
    wave = load_wave(Path(wave_file), inv)
    ledger = Ledger(url_for(Path(state_dir)))  # from the environment: a URL may carry a password
    if ledger.wave(wave.id) is None:
        raise ConflictError(f"wave {wave.id} is not open in the ledger: start it with run_wave (`ikomm wave run`)")
    for orphan in mark_orphans(wave.id):
        logger.warning("flow run %s of this wave was left %s by a process that died: marked Crashed", *orphan)
    add_tags([f"municipality:{m}" for m in wave.spec.municipalities])
    ledger.set_wave(wave.id, "running")
    run = WaveRun(inv, wave, ledger, Path(state_dir))
    RUNS[wave.id] = run
    progress = Progress(run, len(wave.users))
    run.progress = progress
    runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=wave.spec.options.concurrency)
    if workers:
        ledger.forget_tallies(wave.id)  # this run counts its failure budget afresh, and the seats from AD
        run.share()

    def move(phase: str, keys: list[str]) -> None:
        """Take the users through the phase: in this process, or in batches on the workers."""
        if workers:
            logger.info("wave %s: %d user(s) to %s in batches on %d worker(s)", wave.id, len(keys), phase, workers)
            Batches(run, phase, workers, tick=progress.reload).run_all(keys)
            return
        with leased(run.limits(), run.ledger) as sizes:
            run.gate = LocalGate(sizes)
            PHASE_FLOWS[phase].with_options(task_runner=runner)(wave.id, keys)

    try:
        open_keys = [r.key for r in ledger.users(wave.id) if r.state not in FINAL]
        if not open_keys:
            final_state, why = ending(run)
            ledger.set_wave(wave.id, final_state, f"nothing to do now: {why}", ended=True)
            logger.info("wave %s: nothing to do now: %s", wave.id, why)
            return {"state": final_state, "changed": False, **({"reason": why} if final_state == "held" else {})}
        answer = _answered(run, ledger, auto_approve)
        if answer:  # the gate is open already: each user straight through, no wait for the slowest
            move("migrate", open_keys)
        else:
            to_prepare = [r.key for r in ledger.users(wave.id) if r.state not in FINAL and r.stage != "prepared"]
            if to_prepare:
                move("prepare", to_prepare)
            progress.reload() if workers else progress.update()
            if STOPPING.is_set():
                return _stop(run, INTERRUPTED)
            if run.budget.tripped:
                return _stop(run, _over_budget(run))
            ready = [r.key for r in ledger.users(wave.id) if r.state not in FINAL and r.stage == "prepared"]
            if ready and not (_ask(run, ledger) if answer is None else answer):
                return _stop(run, "cutover not approved")
            if ready:
                move("cutover", ready)
        if STOPPING.is_set():
            return _stop(run, INTERRUPTED)
        if run.budget.tripped:
            return _stop(run, _over_budget(run))
        pending = sum(1 for r in ledger.users(wave.id) if r.state not in FINAL)
        if pending:
            why = f"{pending} user(s) not in a final state"
            ledger.set_wave(wave.id, "stopped", why, ended=True)
            return {"state": "stopped", "changed": True, "reason": why}
        final_state, why = ending(run)
        ledger.set_wave(wave.id, final_state, why, ended=True)
        return {"state": final_state, "changed": True, **({"reason": why} if final_state == "held" else {})}
    finally:
        progress.reload() if workers else progress.update()
        progress.table()
        links = {key: task_run_url(t) for key, t in ledger.task_runs(wave.id).items()}
        create_markdown_artifact(
            summary_markdown(ledger, wave.id, inv, links),
            key=f"wave-{wave.id}-summary".lower(),
            description=f"Wave {wave.id}: summary",
        )
        _publish_campaign(inv, ledger, wave)
        RUNS.pop(wave.id, None)
        run.c.close()


def ending(run: WaveRun) -> tuple[str, str]:
    """How a wave with every user in a final state ends, and the words: "held" when every user it moves waits
    for an application (none verified, failed or rolled back here), else "done"; with held users, when to run
    it again."""
    users = run.ledger.users(run.wave.id)
    held = [u for u in users if u.state == "held"]
    if not held:
        return "done", "every user in a final state"
    days = sorted({day for u in held if (day := _ready(run, u.key)) is not None})
    when = f"run it again on or after {days[0]}" if days else "run it again once their applications are ready"
    if len(days) > 1:
        when += f" (the last are ready on {days[-1]})"
    if all(u.state in ("held", "left_out", "skipped", "handed_over") for u in users):  # none moved, failed or undone
        return "held", f"every user waits for an application ({len(held)} held): {when}"
    return "done", f"{len(held)} user(s) held for an application: {when}"


def _ready(run: WaveRun, key: str) -> date | None:
    wu = run.known(key)  # None: recorded, but gone from the inventory
    return ready_date(run.inv, wu.muni, wu.user) if wu else None


def _publish_campaign(inv: Inventory, ledger: Ledger, wave: Wave) -> None:
    """The campaign-status artifact, from the wave files beside this one (a broken one only warns)."""
    try:
        publish_status(status_markdown(campaign_status(inv, ledger, wave_files(wave.path.parent, inv)), inv))
    except IkommError as exc:
        get_run_logger().warning("campaign status not published: %s", exc)


def _over_budget(run: WaveRun) -> str:
    return f"failure budget exceeded: {run.budget.failed} of {run.budget.started} users failed"


def _stop(run: WaveRun, why: str) -> dict[str, Any]:
    run.ledger.set_wave(run.wave.id, "stopped", why, ended=True)
    get_run_logger().warning(
        "wave %s stopped: %s; ask the migration lead (rerun to continue, or roll back)", run.wave.id, why
    )
    return {"state": "stopped", "reason": why, "changed": True}


def _answered(run: WaveRun, ledger: Ledger, auto_approve: bool) -> bool | None:
    """The gate's answer if known without asking: given before (ledger), automatic, or not required."""
    wave = ledger.wave(run.wave.id) or {}
    if wave.get("approval"):
        return bool(wave["approval"].get("approved"))
    if auto_approve or not run.wave.spec.options.approval_required:
        ledger.approve(
            run.wave.id, {"approved": True, "approver": "auto" if auto_approve else "not required", "comment": ""}
        )
        return True
    return None


def _ask(run: WaveRun, ledger: Ledger) -> bool:
    """Pause for the lead's answer (UI or `ikomm wave approve`) and record it."""
    ledger.set_wave(run.wave.id, "awaiting-approval", "cutover waits for the lead: ikomm wave approve " + run.wave.id)
    point_to_gate(run.wave.id)
    answer = pause_flow_run(
        wait_for_input=Approval,
        timeout=APPROVAL_TIMEOUT,
        poll_interval=1,  # the answer is seen half a second after it is given on average: one small read a second
    )
    if answer is None:  # timed out
        return False
    ledger.approve(run.wave.id, answer.answer())
    ledger.set_wave(run.wave.id, "running")
    return answer.decision == APPROVE


def point_to_gate(wave_id: str) -> None:
    """On the run that started this wave from the UI (start-wave), a link to this run's gate: the lead who
    started it there finds where to approve."""
    parent = flow_run.parent_flow_run_id
    if not parent:
        return
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    gate = f"{ui_base()}/runs/flow-run/{flow_run.id}"
    text = (
        f"# Wave {wave_id} waits for approval\n\nEvery user is prepared. The cutover waits at the gate on the "
        f"wave's own flow run: [{wave_id}]({gate}) → **Resume**, choose the decision, sign it.\n\n"
        f"Or from a terminal: `ikomm wave approve {wave_id} --approver NAME`."
    )
    with get_client(sync_client=True) as client:
        client.create_artifact(
            ArtifactCreate(
                key=f"gate-{wave_id}".lower(),
                type="markdown",
                data=text,
                description=f"where to approve wave {wave_id}",
                flow_run_id=UUID(str(parent)),
            )
        )


def run_wave(
    wave_file: Path,
    inventory: Path,
    state_dir: Path,
    auto_approve: bool,
    include: tuple[str, ...] = (),
    take_open: bool = False,
    workers: int | None = None,
    inv: Inventory | None = None,
) -> dict[str, Any]:
    """Run the wave flow in this process, as the wave's one writer, tagged with the wave and its municipalities.

    Before the flow starts: the wave's lease (ConflictError if a live process runs it), then where
    each user stands (`Ledger.open_wave`): users moved by another wave skipped, users held, failed,
    rolled back or left out elsewhere taken, held users whose applications are ready now taken again,
    users in `include` states taken again, users open in another wave refused unless take_open.
    workers: how many workers move the users (None: as the wave file's options say; 0: this process).
    inv: the inventory as the caller loaded (and preflight checked) it; None: loaded here. The wave flow in this
    process takes it too (`LOADED`): at 2,500 users each load is 0.6 s of CPU.
    """
    inv = inv or load_inventory(inventory)
    wave = load_wave(wave_file, inv)
    ledger = Ledger(url_for(state_dir))
    started = now()
    with Lease(ledger, f"wave:{wave.id}") as lease:
        opening = open_wave(ledger, inv, wave, include, take_open)
        LOADED[str(inventory.resolve())] = inv
        try:
            # the municipalities: the wave's flow run all, a user's task run theirs
            with without_heartbeats(), tags(f"wave:{wave.id}"):
                ended = wave_flow(
                    wave.id,
                    str(wave_file.resolve()),
                    str(inventory.resolve()),
                    str(state_dir),
                    auto_approve,
                    wave.spec.options.workers if workers is None else workers,
                    return_state=True,  # "Failed users" is an outcome, not an error: its data is the result
                )
                result: dict[str, Any] = ended.result(raise_on_failure=False)  # type: ignore[assignment]
                if isinstance(result, BaseException):  # the flow itself failed or crashed
                    raise result
        finally:
            LOADED.pop(str(inventory.resolve()), None)
    unrecorded = await_recorded(list(ledger.task_runs(wave.id, since=started).values()))  # this run's
    if unrecorded:
        result["unrecorded"] = unrecorded
    result["opening"] = {
        "new": opening.new,
        "skipped": len(opening.skipped),
        "taken": len(opening.taken),
        "requeued": len(opening.requeued),
        "left_out": len(opening.left_out),
        "took_over_from": lease.took_over,
    }
    return result


def await_recorded(task_run_ids: list[str], timeout: float = RECORDED_SECONDS) -> int:
    """Wait until the Prefect API shows each of these task runs in a final state; return how many did not in time.

    The server records task runs from the events the wave's process sends, a moment after they happen (at
    2,500 users, up to minutes with the in-memory broker): a wave that ends before its users' pages say how
    it ended for them would send the helpdesk to a page still saying Running.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        TaskRunFilter,
        TaskRunFilterId,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    final = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED]
    waiting = {UUID(t) for t in task_run_ids}
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while waiting:
            for chunk in chunks(sorted(waiting), 200):  # the API's page size
                done = client.read_task_runs(
                    task_run_filter=TaskRunFilter(
                        id=TaskRunFilterId(any_=chunk),
                        state=TaskRunFilterState(type=TaskRunFilterStateType(any_=final)),
                    ),
                    limit=len(chunk),
                )
                waiting -= {t.id for t in done}
            if not waiting or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    return len(waiting)


def mark_orphans(wave_id: str) -> list[tuple[str, str]]:
    """Mark Crashed the flow runs of this wave that a killed process left open; return (name, old state) each.

    Called at the start of the wave's flow run, which holds the wave's lease (one writer per wave):
    any other run of this wave still Running, Pending or Paused has lost its process.
    """
    message = f"its process ended without closing it; wave {wave_id} was resumed by flow run {flow_run.id}"
    return crash_open_runs(wave_id, message, keep=flow_run.id)


def crash_open_runs(wave_id: str, message: str, keep: str | None = None) -> list[tuple[str, str]]:
    """Mark Crashed, with message, every run of this wave still Running, Pending or Paused (but keep), and the
    users' task runs left open in them; return (name, old state) of each."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    names = [wave_id, *(f"{wave_id} · {phase}" for phase in ("prepare", "cutover", "migrate"))]
    open_types = [StateType.RUNNING, StateType.PENDING, StateType.PAUSED]
    marked = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=names),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=open_types)),
            )
        )
        for run in runs:
            if str(run.id) == keep:
                continue
            crash(client, run.id, message)  # and its users' task runs left Running
            marked.append((str(run.name), str(run.state.name) if run.state else "?"))
    return marked


def add_tags(labels: list[str]) -> None:
    """Add tags to the running flow run only (a tags() context would give them to every task run in it)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        me = client.read_flow_run(UUID(str(flow_run.id)))
        client.update_flow_run(me.id, tags=sorted({*me.tags, *labels}))


def approve_wave(wave_id: str, approval: dict[str, Any], ledger: Ledger, wait: float = 30.0) -> str:
    """Resume the wave's paused flow run with the lead's answer; return the flow run id.

    The ledger says awaiting-approval just before the flow run asks the server to pause it: an answer given in
    between waits for the pause (up to wait seconds) rather than being refused.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    paused = FlowRunFilter(
        name=FlowRunFilterName(any_=[wave_id]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
    )
    deadline = time.monotonic() + wait
    with get_client(sync_client=True) as client:
        while not (runs := client.read_flow_runs(flow_run_filter=paused)):
            asking = (ledger.wave(wave_id) or {}).get("state") == "awaiting-approval"
            if not asking or time.monotonic() > deadline:
                why = f"no paused flow run named {wave_id!r}" + (f" after {wait:.0f} s" if asking else "")
                raise ConflictError(f"wave {wave_id} is not waiting for approval ({why})")
            time.sleep(0.2)
        wave = ledger.wave(wave_id) or {"id": wave_id}
        if holder_alive(ledger, f"wave:{wave_id}") is not True:
            # the process that paused is gone: resuming would turn the run Running with nobody behind it
            ledger.approve(wave_id, approval)  # the next run takes the answer and does not ask again
            said = "approved" if approval.get("approved") else "rejected"
            why = f"its process ended while it waited for approval; the cutover was {said} afterwards"
            ledger.set_wave(wave_id, "stopped", f"{why}. To go on: {resume_command(wave)}", ended=True)
            for run in runs:
                crash(client, run.id, f"{why}: nothing ran it on. To go on: {resume_command(wave)}")
            raise ProcessGoneError(
                f"wave {wave_id}: cutover {said} and recorded, but no process runs the wave any more "
                f"(the run waiting for the answer had ended). To go on: {resume_command(wave)} "
                "(it takes the recorded answer and does not ask again)"
            )
    resume_flow_run(runs[0].id, run_input=Approval.of(approval).model_dump())
    return str(runs[0].id)

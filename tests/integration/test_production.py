"""Production mode started by the project: Prefect on PostgreSQL with Redis as its broker, the ledger on
PostgreSQL; a wave through it in one process, then a wave in batches on two process workers, one killed
mid-batch; every user checked in the systems and every task run in Prefect's API. One production mode
for both: starting it costs about half a minute."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flows.api import api_json
from ikomm import access, production
from ikomm.inventory import Inventory
from ikomm.ledger import Ledger
from tests.integration.conftest import Env
from tests.integration.test_wave import check_systems

pytestmark = pytest.mark.integration

PORTS = {"IKOMM_PG_PORT": "5447", "IKOMM_REDIS_PORT": "6397", "IKOMM_PREFECT_PORT": "4212"}


def answers(port: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def prod_env(env: Env, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of an operator in production mode: its own state folder and ports; stopped afterwards."""
    state = tmp_path / "prod-state"
    variables = {k: v for k, v in {**os.environ, **env.vars}.items() if k not in ("IKOMM_LEDGER_URL",)}
    variables.update(PORTS)
    variables.update(
        {"IKOMM_STATE": str(state), "PREFECT_API_URL": f"http://127.0.0.1:{PORTS['IKOMM_PREFECT_PORT']}/api"}
    )
    yield variables
    subprocess.run([sys.executable, "-m", "ikomm", "server", "stop"], env=variables, capture_output=True, check=False)
    shutil.rmtree(production.pg_data(state), ignore_errors=True)


def ikomm(variables: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ikomm", *args], env=variables, capture_output=True, text=True, timeout=600, check=False
    )


def _in_one_process(prod_env: dict[str, str], inv: Inventory, state: Path) -> str:
    """Øyer's users in the `wave run` process: the ledger is PostgreSQL's, every user checked in the systems, every
    task run in the API. The command's output."""
    wave = state / "prod.yaml"
    wave.write_text(
        "id: prod\nname: production mode\nmunicipalities: [oyer]\nusers: {all: true}\n"
        "options: {concurrency: 6, approval_required: false, failure_budget: 1.0}\n",
        encoding="utf-8",
    )
    ran = ikomm(prod_env, "wave", "run", str(wave), "--inventory", str(inv.root))
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert not (state / "ledger.db").exists()  # the ledger is the PostgreSQL one
    ledger = _ledger(state)
    users = ledger.users("prod")
    assert len(users) == len(inv.users["oyer"])
    seen = check_systems(inv, ledger, "prod")
    assert set(seen) <= {"verified", "held", "left_out"} and seen["verified"] >= len(users) // 2, seen

    api = prod_env["PREFECT_API_URL"]
    credential = access.existing_service_credential(Path(prod_env["IKOMM_STATE"]))  # production's own server
    deadline, recorded = time.monotonic() + 60, -1
    while time.monotonic() < deadline:
        flows = api_json(
            api, "/flow_runs/filter", {"flow_runs": {"name": {"any_": ["prod · migrate"]}}}, credential=credential
        )
        ids = [f["id"] for f in flows]
        recorded = api_json(api, "/task_runs/count", {"flow_runs": {"id": {"any_": ids}}}, credential=credential)
        if recorded == len(users):
            break
        time.sleep(1)
    assert recorded == len(users)  # every user's task run reached Prefect's PostgreSQL database

    return ran.stdout + ran.stderr


def _ledger(state: Path) -> Ledger:
    saved = {key: os.environ.get(key) for key in PORTS}  # the session's own (IKOMM_PREFECT_PORT) put back after
    os.environ.update(PORTS)  # production.ledger_url reads the port
    try:
        return Ledger(production.ledger_url(state))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _wait_for(what: str, check: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"wave run ended before {what}"
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.5)


def _tree(pid: int) -> list[int]:
    """The process and all its descendants."""
    rows = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, check=True).stdout.split("\n")
    children: dict[int, list[int]] = {}
    for row in rows:
        if row.strip():
            child, parent = (int(x) for x in row.split())
            children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def test_production_mode_a_wave_in_one_process_then_one_on_two_workers(
    prod_env: dict[str, str], lab_inventory: Inventory
) -> None:
    """server start --production runs PostgreSQL, Redis and Prefect on them; a wave in one process; then two
    workers move the other municipalities' users in batches, one killed mid-batch; no password leaves its file;
    stop stops all three."""
    state = Path(prod_env["IKOMM_STATE"])
    started = ikomm(prod_env, "server", "start", "--production")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "production mode" in started.stdout
    assert all(answers(port) for port in PORTS.values())
    said = _in_one_process(prod_env, lab_inventory, state)
    said += _on_two_workers(prod_env, lab_inventory, state)

    secrets = production._secrets(state)
    logs = "".join(p.read_text(errors="replace") for p in (state / "prefect").glob("*.log"))
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    for value in secrets.values():
        assert value not in said + logs + ps
    connected = _ledger(state)
    assert connected.wave("workers") is not None  # its pool keeps the connection open: a client at the stop
    assert ikomm(prod_env, "server", "stop").returncode == 0
    time.sleep(0.5)
    assert not any(answers(port) for port in PORTS.values())
    pg_log = (state / "prefect" / "postgres.log").read_text()
    assert "received fast shutdown request" in pg_log and "database system is shut down" in pg_log, pg_log[-2000:]
    assert "unexpected postmaster exit" not in pg_log  # not killed: nothing for the next start to recover


def _on_two_workers(prod_env: dict[str, str], lab_inventory: Inventory, state: Path) -> str:
    """Two process workers of the pool `ikomm` move Lillehammer's and Gausdal's users in batches; one worker is
    killed with -9 in the middle of prepare; its batch is marked Crashed and its users submitted again; after
    the lead's approval every user is verified once in the systems, and every user's task run is in the API,
    finished. What the commands said."""
    inv = str(lab_inventory.root)
    wave = state / "workers.yaml"
    wave.write_text(
        "id: workers\nname: on two workers\nmunicipalities: [lillehammer, gausdal]\nusers: {all: true}\n"
        "options: {concurrency: 8, failure_budget: 1.0, retries: 1, retry_delay: 0.2, batch_size: 25}\n",
        encoding="utf-8",
    )
    refused = ikomm(prod_env, "wave", "run", str(wave), "--workers", "2", "--inventory", inv)
    assert refused.returncode == 1 and "no worker online in pool ikomm" in refused.stdout + refused.stderr
    for name in ("w1", "w2"):
        started = ikomm(prod_env, "worker", "start", "--detach", "--name", name)
        assert started.returncode == 0 and f"worker {name} online" in started.stdout, started.stdout + started.stderr
    listed = ikomm(prod_env, "worker", "list")
    assert "w1: online (started here)" in listed.stdout and "w2: online" in listed.stdout, listed.stdout

    out = open(state / "wave-run.log", "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    argv = [sys.executable, "-m", "ikomm", "wave", "run", str(wave), "--workers", "2", "--inventory", inv]
    run = subprocess.Popen(argv, env=prod_env, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for("the ledger opens the wave", lambda: _ledger(state).wave("workers") is not None, run)
        ledger = _ledger(state)
        w1 = int((state / "prefect" / "worker-w1.pid").read_text())
        prepared = lambda: sum(1 for u in ledger.users("workers") if u.stage == "prepared")  # noqa: E731

        def w1_mid_batch() -> bool:
            pids = {str(pid) for pid in _tree(w1)}
            batch = any(n.startswith("batch:") and h.split(":")[1] in pids for n, h, _ in ledger.leases())
            return batch and prepared() >= 3

        _wait_for("w1 in the middle of a batch", w1_mid_batch, run)
        for pid in _tree(w1):  # the worker and the batch it runs: a machine lost mid-batch
            os.kill(pid, signal.SIGKILL)
        again = ikomm(prod_env, "worker", "start", "--detach", "--name", "w1")  # its replacement
        assert again.returncode == 0, again.stdout + again.stderr
        _wait_for("the gate", lambda: (ledger.wave("workers") or {}).get("state") == "awaiting-approval", run)
        approved = ikomm(prod_env, "wave", "approve", "workers", "--approver", "leder@ikomm.no")
        assert approved.returncode == 0, approved.stdout + approved.stderr
        assert run.wait(timeout=600) == 0, (state / "wave-run.log").read_text()[-4000:]
    finally:
        if run.poll() is None:
            run.kill()
        out.close()
        ikomm(prod_env, "worker", "stop")

    users = ledger.users("workers")
    assert len(users) == len(lab_inventory.users["lillehammer"]) + len(lab_inventory.users["gausdal"])
    seen = check_systems(lab_inventory, ledger, "workers")  # one account each, checked in every system
    assert set(seen) <= {"verified", "held", "left_out"} and seen["verified"] >= len(users) // 2, seen

    api = prod_env["PREFECT_API_URL"]
    credential = access.existing_service_credential(Path(prod_env["IKOMM_STATE"]))  # production's own server
    batches = api_json(
        api, "/flow_runs/filter", {"flow_runs": {"tags": {"all_": ["wave:workers"]}}}, credential=credential
    )
    by_state: dict[str, list[str]] = {}
    for fr in batches:
        by_state.setdefault(fr["state_name"], []).append(fr["name"])
    assert by_state.get("Crashed"), by_state  # the killed worker's batch, marked by the wave's run
    assert any("attempt 2" in n for n in by_state.get("Completed", [])), by_state
    links = ledger.task_runs("workers")

    def count(ids: list[str], types: list[str]) -> int:
        query = {"task_runs": {"id": {"any_": ids}, "state": {"type": {"any_": types}}}}
        return int(api_json(api, "/task_runs/count", query, credential=credential))

    # every user's newest task run is in the API and finished (a user the killed batch had held stays linked to
    # its task run there, marked Crashed with the batch); every verified user's Completed
    assert count(list(links.values()), ["COMPLETED", "FAILED", "CRASHED"]) == len(links)
    assert len(links) == len([u for u in users if u.state != "left_out"])
    verified = [links[u.key] for u in users if u.state == "verified"]
    assert count(verified, ["COMPLETED"]) == len(verified)

    limit = api_json(api, "/v2/concurrency_limits/ikomm-platform-ad", credential=credential)
    assert limit["limit"] == 4 and limit["active_slots"] == 0, limit  # the wave's value; every slot given back
    passwords = (state / "credentials" / "workers.csv").read_text()
    assert all(u.key in passwords for u in users if u.state == "verified")
    return refused.stdout + refused.stderr + approved.stdout + (state / "wave-run.log").read_text()

"""Production mode started by the project: Prefect on PostgreSQL with Redis as its broker, the ledger on
PostgreSQL; a wave through it, every user checked in the systems and every task run in Prefect's API."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ikomm import production
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


def test_a_wave_in_production_mode(prod_env: dict[str, str], lab_inventory: Inventory) -> None:
    """server start --production runs PostgreSQL, Redis and Prefect on them; the wave's ledger is PostgreSQL's;
    every user is verified in the systems, every task run is in the API; no password leaves its file; stop
    stops all three."""
    state = Path(prod_env["IKOMM_STATE"])
    started = ikomm(prod_env, "server", "start", "--production")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "production mode" in started.stdout
    assert all(answers(port) for port in PORTS.values())

    wave = state / "prod.yaml"
    wave.write_text(
        "id: prod\nname: production mode\nmunicipalities: [oyer]\nusers: {all: true}\n"
        "options: {concurrency: 6, approval_required: false, failure_budget: 1.0}\n",
        encoding="utf-8",
    )
    ran = ikomm(prod_env, "wave", "run", str(wave), "--inventory", str(lab_inventory.root))
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert not (state / "ledger.db").exists()  # the ledger is the PostgreSQL one
    os.environ.update(PORTS)  # production.ledger_url reads the port
    try:
        url = production.ledger_url(state)
    finally:
        for key in PORTS:
            os.environ.pop(key, None)
    ledger = Ledger(url)
    users = ledger.users("prod")
    assert len(users) == len(lab_inventory.users["oyer"])
    seen = check_systems(lab_inventory, ledger, "prod")
    assert set(seen) <= {"verified", "held", "left_out"} and seen["verified"] >= len(users) // 2, seen

    api = prod_env["PREFECT_API_URL"]
    deadline, recorded = time.monotonic() + 60, -1
    while time.monotonic() < deadline:
        flows = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"name": {"any_": ["prod · migrate"]}}})
        ids = [f["id"] for f in flows.json()]
        recorded = httpx.post(f"{api}/task_runs/count", json={"flow_runs": {"id": {"any_": ids}}}).json()
        if recorded == len(users):
            break
        time.sleep(1)
    assert recorded == len(users)  # every user's task run reached Prefect's PostgreSQL database

    secrets = production._secrets(state)
    logs = "".join(p.read_text(errors="replace") for p in (state / "prefect").glob("*.log"))
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    for value in secrets.values():
        assert value not in ran.stdout + ran.stderr + logs + ps
    assert ikomm(prod_env, "server", "stop").returncode == 0
    time.sleep(0.5)
    assert not any(answers(port) for port in PORTS.values())

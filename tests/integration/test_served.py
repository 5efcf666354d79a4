"""Launch and undo from the UI: the served deployments start a wave (approval gate answered through the API the
UI's resume form uses) and a rollback (a dry run first), and refuse a wave file outside the served folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from ikomm.inventory import Inventory
from ikomm.ledger import Ledger
from tests.integration.conftest import Env
from tests.integration.test_helpdesk_ui import few_of


def start(api: str, deployment: str, parameters: dict[str, Any]) -> str:
    """A flow run of the deployment, as the UI's Run button makes it; its id."""
    found = httpx.get(f"{api}/deployments/name/{deployment}", timeout=30)
    found.raise_for_status()
    made = httpx.post(
        f"{api}/deployments/{found.json()['id']}/create_flow_run", json={"parameters": parameters}, timeout=30
    )
    made.raise_for_status()
    return str(made.json()["id"])


def state_of(api: str, flow_run: str) -> dict[str, Any]:
    state: dict[str, Any] = httpx.get(f"{api}/flow_runs/{flow_run}", timeout=30).json()["state"]
    return state


def wait_for(api: str, flow_run: str, types: tuple[str, ...], timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = state_of(api, flow_run)
        if state["type"] in types:
            return state
        assert time.monotonic() < deadline, f"flow run {flow_run} still {state['type']} after {timeout:.0f} s"
        time.sleep(0.3)


def paused_run(api: str, name: str, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = httpx.post(
            f"{api}/flow_runs/filter",
            json={"flow_runs": {"name": {"any_": [name]}, "state": {"type": {"any_": ["PAUSED"]}}}},
            timeout=30,
        ).json()
        if runs:
            return str(runs[0]["id"])
        time.sleep(0.3)
    raise AssertionError(f"no paused flow run {name!r} within {timeout:.0f} s")


def test_a_lead_starts_a_wave_and_an_operator_a_rollback_from_the_ui(
    env: Env, lab_inventory: Inventory, prefect_api: str
) -> None:
    waves = env.dir / "waves"
    waves.mkdir()
    env.wave_file("fra-ui", ["oyer"], few_of(lab_inventory, "oyer", moved=3, held=0), approval_required=True).rename(
        waves / "fra-ui.yaml"
    )
    env.vars["PREFECT_RUNNER_POLL_FREQUENCY"] = "2"  # the runner looks for new runs every 2 s, not 10
    served = env.ikomm("serve", "--detach", "--waves", str(waves), inventory=lab_inventory.root)
    assert served.returncode == 0, (env.dir / "ikomm-output.log").read_text()
    try:
        _waits_for_deployments(prefect_api)
        refused = start(prefect_api, "start-wave/wave", {"wave": "../../etc/passwd"})
        state = wait_for(prefect_api, refused, ("COMPLETED", "FAILED", "CRASHED"))
        assert state["type"] == "FAILED" and "refused" in state["message"] and "give the wave file" in state["message"]

        started = start(prefect_api, "start-wave/wave", {"wave": "fra-ui"})
        gate = paused_run(prefect_api, "fra-ui")  # preflight passed, every user prepared, the gate waits
        ledger = Ledger(env.ledger_url)
        assert {u.stage for u in ledger.users("fra-ui") if u.state == "running"} == {"prepared"}
        resumed = httpx.post(  # what the UI's resume form sends
            f"{prefect_api}/flow_runs/{gate}/resume",
            json={"run_input": {"approved": True, "approver": "lead@ikomm.no", "comment": "from the UI"}},
            timeout=30,
        )
        assert resumed.status_code < 300, resumed.text
        state = wait_for(prefect_api, started, ("COMPLETED", "FAILED", "CRASHED"))
        assert state["type"] == "COMPLETED" and "verified" in state["message"], state
        users = ledger.users("fra-ui")
        moved = [u for u in users if u.state == "verified"]
        assert moved and all(u.state in ("verified", "held", "left_out") for u in users)
        assert (ledger.wave("fra-ui") or {}).get("approval", {}).get("approver") == "lead@ikomm.no"

        one = moved[0]
        dry = start(prefect_api, "start-rollback/rollback", {"wave": "fra-ui", "users": [str(one.account)]})
        state = wait_for(prefect_api, dry, ("COMPLETED", "FAILED", "CRASHED"))
        assert state["name"] == "Dry run" and "nothing changed" in state["message"], state
        assert ledger.user(one.key) is not None and ledger.user(one.key).state == "verified"  # type: ignore[union-attr]

        undo = start(prefect_api, "start-rollback/rollback", {"wave": "fra-ui", "users": [one.key], "dry_run": False})
        state = wait_for(prefect_api, undo, ("COMPLETED", "FAILED", "CRASHED"))
        assert state["type"] == "COMPLETED" and "1 user(s) rolled back" in state["message"], state
        after = ledger.user(one.key)
        assert after is not None and after.state == "rolled_back"
    finally:
        env.ikomm("serve", "--stop", inventory=lab_inventory.root)
    assert "stopped" in (env.dir / "ikomm-output.log").read_text().splitlines()[-1]
    assert not Path(env.vars["IKOMM_STATE"], "prefect", "serve.pid").exists()


def _waits_for_deployments(api: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = {d["name"] for d in httpx.post(f"{api}/deployments/filter", json={}, timeout=30).json()}
        if {"wave", "rollback"} <= names:
            return
        time.sleep(0.3)
    raise AssertionError("the served deployments did not appear")

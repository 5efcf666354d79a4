"""Launch and undo from the UI: the served deployments start a wave (approval gate answered through the API the
UI's resume form uses) and a rollback (a dry run first), and refuse a wave file outside the served folder."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from flows.api import api_json, api_session
from ikomm.access import basic
from ikomm.inventory import Inventory
from ikomm.ledger import Ledger
from lab.browser import HelpdeskView, chromium
from tests.integration.conftest import Env
from tests.integration.test_helpdesk_ui import few_of


def start(api: str, deployment: str, parameters: dict[str, Any]) -> str:
    """A flow run of the deployment, as the UI's Run button makes it; its id."""
    found = api_json(api, f"/deployments/name/{deployment}")
    return str(api_json(api, f"/deployments/{found['id']}/create_flow_run", {"parameters": parameters})["id"])


def state_of(api: str, flow_run: str) -> dict[str, Any]:
    state: dict[str, Any] = api_json(api, f"/flow_runs/{flow_run}")["state"]
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
        runs = api_json(
            api, "/flow_runs/filter", {"flow_runs": {"name": {"any_": [name]}, "state": {"type": {"any_": ["PAUSED"]}}}}
        )
        if runs:
            return str(runs[0]["id"])
        time.sleep(0.3)
    raise AssertionError(f"no paused flow run {name!r} within {timeout:.0f} s")


def test_a_lead_starts_a_wave_and_an_operator_a_rollback_from_the_ui(
    env: Env, lab_inventory: Inventory, prefect_api: str, signed_in: dict[str, str]
) -> None:
    waves = env.dir / "waves"
    waves.mkdir()
    env.wave_file("fra-ui", ["oyer"], few_of(lab_inventory, "oyer", moved=3, held=1), approval_required=True).rename(
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

        refused = start(prefect_api, "start-wave/wave", {"wave": "fra-ui\n"})  # the name whole, not up to a newline
        state = wait_for(prefect_api, refused, ("COMPLETED", "FAILED", "CRASHED"))
        assert state["type"] == "FAILED" and "refused" in state["message"], state
        deployment = api_json(prefect_api, "/deployments/name/start-wave/wave")["id"]
        with api_session(prefect_api) as session:  # an unknown parameter: refused at the door, no run made
            answer = session.post(
                f"/deployments/{deployment}/create_flow_run", json={"parameters": {"wave": "fra-ui", "dryrun": True}}
            )
        assert answer.status_code == 409 and "dryrun" in answer.text, answer.text

        started = start(prefect_api, "start-wave/wave", {"wave": "fra-ui"})
        gate = paused_run(prefect_api, "fra-ui")  # preflight passed, every user prepared, the gate waits
        ledger = Ledger(env.ledger_url)
        assert {u.stage for u in ledger.users("fra-ui") if u.state == "running"} == {"prepared"}
        # the start run points to the gate; the form has no default to submit by mistake, a refusal needs a reason
        links = api_json(prefect_api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [started]}}})
        assert any(f"/runs/flow-run/{gate}" in (a.get("data") or "") for a in links), links
        with chromium() as browser:  # the lead opens the gate in the UI and presses Submit at once
            lead = HelpdeskView(browser, prefect_api.removesuffix("/api"), env.dir / "shots", signed_in["lead"])
            form = lead.resume_form(gate, shot="approval-form", submit=True)
        assert "'decision' is a required property" in form and "'approver' is a required property" in form, form
        assert api_json(prefect_api, f"/flow_runs/{gate}")["state"]["type"] == "PAUSED"  # nothing chosen: not resumed
        with api_session(prefect_api) as session:
            for blank in ({}, {"decision": "refuse the cutover", "approver": "lead@ikomm.no", "comment": ""}):
                refused_form = session.post(f"/flow_runs/{gate}/resume", json={"run_input": blank})
                assert refused_form.json()["status"] == "REJECT", (blank, refused_form.text)
            resumed = session.post(  # what the UI's resume form sends
                f"/flow_runs/{gate}/resume",
                json={"run_input": {"decision": "approve the cutover", "approver": "lead@ikomm.no", "comment": "UI"}},
            )
        assert resumed.status_code < 300 and resumed.json()["status"] == "ACCEPT", resumed.text
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

        # a filter that matches nobody is refused, for real as in its dry run, never read as "every user"
        held = next(u for u in users if u.state == "held")
        for nobody in (
            {"municipality": "Oyer"},  # the id is oyer: a name's case matches nobody
            {"municipality": "../../x"},
            {"users": ["nobody.here"]},
            {"users": []},
            {"users": [held.key], "stages": ["cutover"]},  # a held user has no cutover change recorded
        ):
            for dry_run in (True, False):
                run = start(prefect_api, "start-rollback/rollback", {"wave": "fra-ui", **nobody, "dry_run": dry_run})
                state = wait_for(prefect_api, run, ("COMPLETED", "FAILED", "CRASHED"))
                assert state["type"] == "FAILED" and state["message"].startswith("refused: "), (nobody, state)
        assert [u.state for u in ledger.users("fra-ui")] == [u.state for u in users]  # nobody touched

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
        names = {d["name"] for d in api_json(api, "/deployments/filter", {})}
        if {"wave", "rollback"} <= names:
            return
        time.sleep(0.3)
    raise AssertionError("the served deployments did not appear")


def test_a_start_survives_a_busy_server(prefect_api: str) -> None:
    """While other clients write (a runner's polls, logs), bare calls to create a flow run meet 503 (SQLite's
    refused lock upgrade, which no busy timeout waits out); the same calls through Prefect's client all succeed."""
    flow_id = api_json(prefect_api, "/flows/", {"name": "ikomm-busy-server-check"})["id"]
    deployment = api_json(prefect_api, "/deployments/", {"name": "busy", "flow_id": flow_id})["id"]
    stop = threading.Event()

    def write(path: str, body: object, pause: float) -> None:
        with httpx.Client(base_url=prefect_api + "/", timeout=30, headers=service_key) as bare:
            while not stop.wait(pause):
                bare.post(path, json=body)

    service_key = {"Authorization": basic(os.environ["PREFECT_API_AUTH_STRING"])}  # bare: no retries, not no key
    poll = {"deployment_ids": [deployment]}  # what a served runner asks every few seconds (it writes last_polled)
    logs = [{"name": "busy", "level": 20, "message": "x" * 200, "timestamp": "2026-12-06T10:00:00Z"}] * 50
    writers = [
        threading.Thread(target=write, args=("deployments/get_scheduled_flow_runs", poll, 0.5)),
        threading.Thread(target=write, args=("logs/", logs, 0.1)),
    ]
    for writer in writers:
        writer.start()
    try:
        with httpx.Client(base_url=prefect_api + "/", timeout=30, headers=service_key) as bare:
            answers = []
            while not {0, 502, 503} & set(answers) and len(answers) < 300:
                try:
                    answers.append(bare.post(f"deployments/{deployment}/create_flow_run", json={}).status_code)
                except httpx.TransportError:  # the server dropped the connection: the other face of the same refusal
                    answers.append(0)
        # 502: the proxy's word for a connection Prefect dropped
        assert {0, 502, 503} & set(answers), f"the server was never busy in {len(answers)} calls: {set(answers)}"
        made = [start(prefect_api, "ikomm-busy-server-check/busy", {}) for _ in range(10)]
        assert len(set(made)) == 10
    finally:
        stop.set()
        for writer in writers:
            writer.join()
        with api_session(prefect_api) as session:
            session.delete(f"/flows/{flow_id}")  # with its deployment and runs: nothing left for the UI

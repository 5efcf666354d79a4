"""Whole waves against the lab and a real Prefect server, checked in the systems themselves."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.api import api_json
from ikomm.connectors import Connectors
from ikomm.connectors.devices import settings
from ikomm.connectors.directory import equality_filter
from ikomm.connectors.files import verify_tree
from ikomm.inventory import Inventory, load_inventory
from ikomm.inventory.models import User
from ikomm.ledger import FINAL, Ledger
from ikomm.naming import account_names, platform_domain, searchable_name
from ikomm.report import runbook_for
from lab.manager import Lab
from tests.integration.conftest import Env
from tests.integration.test_helpdesk_ui import few_of
from tests.integration.test_served import paused_run

pytestmark = pytest.mark.integration


def _platform_account(made: Connectors, inv: Inventory, muni: str, legacy_id: str) -> list[str]:
    link = f"{muni}:{legacy_id}"
    return [
        s.dn for s in made.platform().search(inv.platform.directory.base_dn, equality_filter("employeeNumber", link))
    ]


def check_systems(inv: Inventory, ledger: Ledger, wave_id: str) -> dict[str, int]:
    """Every verified user checked in AD, file servers, device config and broker; every other one undone."""
    made = Connectors(inv)
    names = account_names(inv)
    domain = platform_domain(inv.platform.directory)
    seen: dict[str, int] = {}
    try:
        for row in ledger.users(wave_id):
            seen[row.state] = seen.get(row.state, 0) + 1
            if row.state in ("skipped", "handed_over"):
                continue  # another wave moved or took this user: checked under that wave
            user = next(u for u in inv.users[row.muni] if u.legacy_id == row.legacy_id)
            dns = _platform_account(made, inv, row.muni, row.legacy_id)
            legacy = made.legacy(row.muni).find_user(row.legacy_id)
            assert legacy is not None
            if row.state != "verified":
                assert row.state in ("failed", "held", "pending", "left_out", "skipped"), row
                assert all("OU=Deaktivert" in dn for dn in dns), (row.key, dns)  # undone: parked or never made
                assert made.legacy(row.muni).is_enabled(legacy) == user.enabled, row.key
                continue
            assert len(dns) == 1 and inv.municipalities[row.muni].target_ou in dns[0], (row.key, dns)
            entry = made.platform().read(dns[0])
            assert entry is not None and made.platform().is_enabled(entry)
            assert entry.get("sAMAccountName") == (names[(row.muni, row.legacy_id)],)
            groups = set(made.platform().groups_of(dns[0]))
            legacy_groups = set(user.legacy_groups)
            wanted = {
                a.groups[row.muni]
                for a in inv.applications.values()
                if set(a.granted_by.get(row.muni, ())) & legacy_groups and row.muni in a.groups
            }
            assert {g.split(",")[0].removeprefix("CN=") for g in groups} == wanted, row.key
            zone = inv.zone(user.zone)
            for src, root in (
                (user.profile_path, zone.file_server.profile_root),
                (user.home_path, zone.file_server.home_root),
            ):
                check = verify_tree(
                    made.legacy_files(row.muni), src, made.zone_files(user.zone), f"{root}/{row.account}"
                )
                assert check.ok, (row.key, check.missing, check.different)
            if user.device:
                config = settings(made.devices().read(user.device) or "")
                assert config["rdp_collection"] == zone.terminal_farm.collection and config["user"] == row.account
            assert f"{domain}\\{row.account}" in made.broker().collection_users(zone.terminal_farm.collection)
            assert not made.legacy(row.muni).is_enabled(legacy), row.key
    finally:
        made.close()
    return seen


def passwords(env: Env, wave_id: str) -> list[str]:
    path = env.dir / "state" / "credentials" / f"{wave_id}.csv"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    rows = path.read_text(encoding="utf-8").splitlines()[1:]
    return [row.rsplit(",", 1)[1] for row in rows]


def assert_no_password_anywhere(env: Env, wave_id: str, prefect_db: Path) -> None:
    """No initial password in the ledger, the Prefect database (logs, artifacts, states) or the output."""
    secrets = [p.encode() for p in passwords(env, wave_id)]
    assert secrets
    credentials = env.dir / "state" / "credentials" / f"{wave_id}.csv"
    files = [p for p in env.dir.rglob("*") if p.is_file() and p != credentials]
    files += [p for p in prefect_db.parent.glob("prefect.db*")]
    for path in files:
        data = path.read_bytes()
        leaked = [s for s in secrets if s in data]
        assert not leaked, f"a password is in {path}"


def task_runs_of(api: str, flow_run: str) -> list[dict[str, Any]]:
    """Every task run the Prefect server recorded under the newest flow run of that name (what the UI lists)."""
    newest = api_json(  # the server keeps flow runs of the same name from earlier sessions
        api,
        "/flow_runs/filter",
        {"flow_runs": {"name": {"any_": [flow_run]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 1},
    )
    runs: list[dict[str, Any]] = []
    while newest:
        page = api_json(
            api,
            "/task_runs/filter",
            {"flow_runs": {"id": {"any_": [newest[0]["id"]]}}, "limit": 200, "offset": len(runs)},
        )
        runs += page
        if len(page) < 200:
            break
    return runs


def ui_task_runs(api: str, flow_run: str, expected: int) -> set[str]:
    """Names of the task runs the Prefect server recorded under a flow run (what the UI lists),
    waiting up to 60 s for its recorder to catch up."""
    names: set[str] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        names = {r["name"] for r in task_runs_of(api, flow_run)}
        if len(names) >= expected:
            break
        time.sleep(0.5)
    return names


def ui_task_run_states(api: str, flow_run: str) -> dict[str, tuple[str, str, str]]:
    """Task-run name -> (state type, state name, message) under the newest flow run of that name, waiting up to
    60 s for the server's recorder to reach every final state."""
    deadline = time.monotonic() + 60
    while True:
        states = {
            r["name"]: (r["state"]["type"], r["state"]["name"], r["state"]["message"] or "")
            for r in task_runs_of(api, flow_run)
        }
        if time.monotonic() > deadline or all(t in ("COMPLETED", "FAILED", "CRASHED") for t, _, _ in states.values()):
            return states
        time.sleep(0.5)


def test_wave_moves_everyone_checks_out_and_rerun_is_a_no_op(
    env: Env, lab_inventory: Inventory, prefect_api: str
) -> None:
    """~120 users across the three municipalities: every user verified or held, in the systems themselves."""
    inv = lab_inventory
    wave = env.wave_file("alle", ["lillehammer", "gausdal", "oyer"], approval_required=True)
    proc = env.ikomm("wave", "run", str(wave), "--auto-approve", inventory=inv.root)
    assert proc.returncode == 0, (env.dir / "ikomm-output.log").read_text()[-3000:]
    ledger = Ledger(env.ledger_url)
    seen = check_systems(inv, ledger, "alle")
    assert seen.get("verified", 0) >= 80 and set(seen) <= {"verified", "held", "left_out"}
    assert all("not ready" in u.reason for u in ledger.users("alle") if u.state == "held")
    names = {
        f"{m}/{u.legacy_id}": f"{account_names(inv)[(m, u.legacy_id)]} · migrate · "
        + searchable_name(u.given_name, u.surname)
        for m, u in inv.all_users()
    }
    # task runs named after the user, their new account and their name; none for users policy leaves out
    wanted = {f"{u.key} · {names[u.key]}" for u in ledger.users("alle") if u.state != "left_out"}
    assert ui_task_runs(prefect_api, "alle · migrate", len(wanted)) == wanted  # the helpdesk finds every user
    held = {f"{u.key} · {names[u.key]}": u.reason for u in ledger.users("alle") if u.state == "held"}
    states = ui_task_run_states(prefect_api, "alle · migrate")
    assert held and all(states[name][:2] == ("COMPLETED", "Held") for name in held), states  # not Failed: nothing did
    assert all("not ready" in states[name][2] for name in held)
    assert not [n for n, st in states.items() if st[0] != "COMPLETED"], states
    # each moved user's downtime (cutover to verified), on their page's story and in wave status
    down = ledger.downtimes("alle")
    assert set(down) == {u.key for u in ledger.users("alle") if u.state == "verified"} and max(down.values()) < 120
    status = env.said("wave", "status", "alle")
    assert f"downtime (cutover to verified) of {len(down)} user(s): median" in status.stdout, status.stdout
    # one live table of users on the wave's run, updated in place (not a new version each publish)
    wave_run = api_json(
        prefect_api, "/flow_runs/filter", {"flow_runs": {"name": {"any_": ["alle"]}}, "sort": "START_TIME_DESC"}
    )[0]["id"]
    tables = api_json(
        prefect_api,
        "/artifacts/filter",
        {"artifacts": {"flow_run_id": {"any_": [wave_run]}, "key": {"any_": ["wave-alle-users"]}}},
    )
    assert len(tables) == 1 and "verified" in json.dumps(tables[0]["data"]), tables
    # a user's task run carries their own municipality only, and state:held when they wait for an application
    for r in task_runs_of(prefect_api, "alle · migrate"):
        assert [t for t in r["tags"] if t.startswith("municipality:")] == [f"municipality:{r['name'].split('/')[0]}"]
        assert ("state:held" in r["tags"]) == (r["name"] in held), r
    changes = (
        sqlite3.connect(env.ledger_url.removeprefix("sqlite:///")).execute("select count(*) from changes").fetchone()
    )
    again = env.ikomm("wave", "run", str(wave), "--auto-approve", inventory=inv.root)
    assert again.returncode == 0
    assert "nothing changed" in (env.dir / "ikomm-output.log").read_text()
    after = (
        sqlite3.connect(env.ledger_url.removeprefix("sqlite:///")).execute("select count(*) from changes").fetchone()
    )
    assert after == changes
    from ikomm import server

    assert_no_password_anywhere(env, "alle", server.state_dir() / "prefect" / "prefect.db")
    # state is root's alone, and the ledger's URL (a PostgreSQL one carries a password) is no flow parameter
    state = Path(env.vars["IKOMM_STATE"])
    assert state.stat().st_mode & 0o777 == 0o700
    assert Path(env.ledger_url.removeprefix("sqlite:///")).stat().st_mode & 0o777 == 0o600
    assert (state / "credentials" / "alle.csv").stat().st_mode & 0o777 == 0o600
    assert (server.state_dir() / "prefect" / "prefect.db").stat().st_mode & 0o777 == 0o600
    runs = api_json(prefect_api, "/flow_runs/filter", {"limit": 200})
    assert runs and all(
        "ledger" not in name and "ledger" not in str(value).lower()
        for r in runs
        if r["name"].startswith("alle")  # this test's (the server keeps older sessions' runs)
        for name, value in r["parameters"].items()
    )


def test_faults_leave_those_users_undone_and_the_rest_migrated(
    env: Env, lab: Lab, lab_inventory: Inventory, tmp_path: Path
) -> None:
    """A missing profile folder, a full application, and a device host down for the whole wave."""
    import shutil

    inv_dir = tmp_path / "inventory"
    shutil.copytree(lab_inventory.root, inv_dir)
    apps = yaml.safe_load((inv_dir / "applications.yaml").read_text(encoding="utf-8"))
    late_apps = {a.id for a in lab_inventory.applications.values() if a.ready_from.year > 2026}
    late = {g for a in lab_inventory.applications.values() if a.id in late_apps for g in a.granted_by["lillehammer"]}
    # users who get past the snapshot with the config host down: Lillehammer's without a device
    reach = [
        u for u in lab_inventory.users["lillehammer"] if u.enabled and not u.device and not set(u.legacy_groups) & late
    ]
    lost = reach[0]  # its profile folder goes missing; an application only the others have fills up

    def grants(app: dict[str, Any], user: User) -> bool:
        return bool(set(app.get("granted_by", {}).get("lillehammer", [])) & set(user.legacy_groups))

    full = next(
        a
        for a in apps["applications"]
        if a["id"] not in late_apps and not grants(a, lost) and sum(grants(a, u) for u in reach[1:]) >= 2
    )
    full["seat_limit"] = 1
    (inv_dir / "applications.yaml").write_text(yaml.safe_dump(apps, allow_unicode=True), encoding="utf-8")
    inv = load_inventory(inv_dir)
    shutil.rmtree(lab.server_path(inv.municipalities["lillehammer"].legacy.file_server.name, lost.profile_path))
    lab.stop_server("config-host")
    try:
        wave = env.wave_file("feil", ["lillehammer", "gausdal", "oyer"])  # Lillehammer has users without a device
        env.ikomm("wave", "run", str(wave), "--auto-approve", "--skip-preflight", inventory=inv_dir)
    finally:
        lab.start_server("config-host")
    ledger = Ledger(env.ledger_url)
    rows = {r.key: r for r in ledger.users("feil")}
    assert (
        rows[f"lillehammer/{lost.legacy_id}"].state == "failed"
        and "no such folder" in rows[f"lillehammer/{lost.legacy_id}"].reason
    )
    seat_failures = [r for r in rows.values() if "seat limit" in r.reason]
    assert seat_failures, f"a second user of {full['id']} must hit its seat limit of 1"
    device_users = {f"{m}/{u.legacy_id}" for m in inv.municipalities for u in inv.users[m] if u.device}
    assert all(rows[k].state in ("failed", "held") for k in device_users)
    assert any(r.state == "verified" for k, r in rows.items() if k not in device_users)
    check_systems(inv, ledger, "feil")
    # the config host's users: its name in plain words and the runbook to resume by, not an address
    down = [r for r in rows.values() if r.state == "failed" and "configuration host did not answer" in r.reason]
    assert down and all(runbook_for(inv, r.reason) == "runbooks/wave-stopped.md" for r in down)
    # in the UI: each failed user's task run Failed, with the reason, what was undone and the runbook
    ui = {
        name.split(" · ")[0]: st
        for name, st in ui_task_run_states(env.vars["PREFECT_API_URL"], "feil · migrate").items()
    }
    for key, row in rows.items():
        if row.state == "failed":
            kind, _, message = ui[key]
            assert kind == "FAILED" and row.reason in message and runbook_for(inv, row.reason) in message, ui[key]


def test_failure_budget_stops_the_wave_when_a_file_server_dies(env: Env, lab: Lab, lab_inventory: Inventory) -> None:
    """With Lillehammer's file server stopped, the wave stops starting users once the budget trips."""
    inv = lab_inventory
    lab.stop_server("fs-lillehammer")
    try:
        wave = env.wave_file("budsjett", ["lillehammer"], failure_budget=0.1, min_failures=3, concurrency=2)
        proc = env.ikomm("wave", "run", str(wave), "--auto-approve", "--skip-preflight", inventory=inv.root)
    finally:
        lab.start_server("fs-lillehammer")
    assert proc.returncode == 1
    ledger = Ledger(env.ledger_url)
    wave_row = ledger.wave("budsjett")
    assert wave_row is not None and wave_row["state"] == "stopped" and "failure budget" in wave_row["detail"]
    states = [u.state for u in ledger.users("budsjett")]
    assert states.count("pending") > len(states) // 2  # most were never started
    check_systems(inv, ledger, "budsjett")


@pytest.mark.parametrize("kill_after", [("prepare", 8), ("cutover", 8)])
def test_sigkill_then_rerun_completes_the_wave(env: Env, lab_inventory: Inventory, kill_after: tuple[str, int]) -> None:
    """SIGKILL in the middle of prepare or cutover; the same command again ends every user in one final state."""
    inv = lab_inventory
    phase, count = kill_after
    wave = env.wave_file("avbrutt", ["gausdal", "oyer"])
    proc = env.ikomm("wave", "run", str(wave), "--auto-approve", inventory=inv.root, wait=False)
    db = env.ledger_url.removeprefix("sqlite:///")
    # users pass through both phases in one task (the gate is open), so count who has passed a point
    stage_sql = "stage = 'prepared'" if phase == "prepare" else "stage = 'done'"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            query = f"select count(distinct key) from events where {stage_sql}"
            done = sqlite3.connect(db).execute(query).fetchone()[0]
        except sqlite3.Error:
            done = 0
        if done >= count:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the wave ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rerun = env.ikomm("wave", "run", str(wave), "--auto-approve", inventory=inv.root)
    assert rerun.returncode == 0, (env.dir / "ikomm-output.log").read_text()[-3000:]
    ledger = Ledger(env.ledger_url)
    assert all(u.state in FINAL for u in ledger.users("avbrutt"))
    seen = check_systems(inv, ledger, "avbrutt")
    assert seen.get("verified", 0) > 10
    dup = (
        sqlite3.connect(db)
        .execute("select key, kind, target, count(*) from changes group by key, kind, target having count(*) > 1")
        .fetchall()
    )
    assert dup == []
    # the killed run's flow run is not left Running in the UI: Crashed, pointing at the run that resumed it
    api = env.vars["PREFECT_API_URL"]
    runs = api_json(
        api,
        "/flow_runs/filter",
        {"flow_runs": {"name": {"any_": ["avbrutt"]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 2},
    )
    assert [r["state"]["type"] for r in runs] == ["COMPLETED", "CRASHED"], [r["state"] for r in runs]
    assert f"resumed by flow run {runs[0]['id']}" in runs[1]["state"]["message"]


def at_the_gate(env: Env, proc: subprocess.Popen[str], wave_id: str, timeout: float = 240) -> Ledger:
    """Wait until the running `wave run` (proc) has its wave awaiting approval; the ledger, to read on."""
    ledger = Ledger(env.ledger_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = ledger.wave(wave_id) if Path(env.ledger_url.removeprefix("sqlite:///")).exists() else None
        if row and row["state"] == "awaiting-approval":
            return ledger
        assert proc.poll() is None, (env.dir / "ikomm-output.log").read_text()[-3000:]
        time.sleep(0.3)
    raise AssertionError(f"wave {wave_id} did not reach its approval gate within {timeout:.0f} s")


def test_approval_gate_waits_for_the_lead(env: Env, lab_inventory: Inventory) -> None:
    """Without --auto-approve the flow pauses before cutover; `ikomm wave approve` lets it go on."""
    inv = lab_inventory
    wave = env.wave_file("godkjenn", ["oyer"], approval_required=True)
    proc = env.ikomm("wave", "run", str(wave), inventory=inv.root, wait=False)
    ledger = at_the_gate(env, proc, "godkjenn")
    assert all(u.stage == "prepared" or u.state in FINAL for u in ledger.users("godkjenn"))
    approve = env.said("wave", "approve", "godkjenn", "--approver", "leder@ikomm.no", timeout=60)
    assert approve.returncode == 0, approve.stderr + approve.stdout
    assert proc.wait(timeout=300) == 0
    wave_row = ledger.wave("godkjenn")
    assert wave_row is not None and wave_row["approval"]["approver"] == "leder@ikomm.no"
    assert {u.state for u in ledger.users("godkjenn")} <= {"verified", "held"}
    again = env.said("wave", "approve", "godkjenn", timeout=60)
    assert again.returncode != 0 and "godkjenn is not waiting for approval" in again.stdout + again.stderr
    assert (ledger.wave("godkjenn") or {})["approval"]["approver"] == "leder@ikomm.no"  # the answer stands


@pytest.mark.parametrize("where", ["in the middle", "at the gate"])
def test_ctrl_c_stops_cleanly_and_the_rerun_goes_on(env: Env, lab_inventory: Inventory, where: str) -> None:
    """SIGINT on `wave run`: one line, no traceback, exit 130; in the middle of the wave the users in flight finish
    their step and nobody is left half made, the run ends Cancelled ("Interrupted"); at the gate it stops at once
    and the run is Crashed; never left Running. The same command again ends every user in a final state."""
    inv = lab_inventory
    wave_id = f"avbrot-{'midt' if where == 'in the middle' else 'port'}"
    gate = where == "at the gate"
    wave = env.wave_file(wave_id, ["gausdal", "oyer"], approval_required=gate)
    run_args = ("wave", "run", str(wave), *(() if gate else ("--auto-approve",)))
    log = env.dir / "ikomm-output.log"
    proc = env.ikomm(*run_args, inventory=inv.root, wait=False)
    db = env.ledger_url.removeprefix("sqlite:///")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            con = sqlite3.connect(db)
            if gate:
                row = con.execute("select state from waves where id = ?", (wave_id,)).fetchone()
                ready = row is not None and row[0] == "awaiting-approval"
            else:
                ready = (
                    con.execute("select count(distinct key) from events where stage = 'prepared'").fetchone()[0] >= 6
                )
        except sqlite3.Error:
            ready = False
        if ready:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the wave ended before it could be interrupted"
    api = env.vars["PREFECT_API_URL"]
    if gate:
        paused_run(api, wave_id)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=180) == 130, log.read_text()[-3000:]
    said = log.read_text()
    assert "Traceback" not in said and "atexit" not in said, said[-3000:]
    assert ("stopped at once" if gate else "stopping: users in the middle of a step finish it") in said, said[-2000:]
    runs = api_json(api, "/flow_runs/filter", {"flow_runs": {"name": {"any_": [wave_id]}}})
    assert [r["state"]["type"] for r in runs] == ["CRASHED" if gate else "CANCELLED"], [r["state"] for r in runs]
    ledger = Ledger(env.ledger_url)
    users = ledger.users(wave_id)
    assert all(u.state in FINAL or u.state == "pending" or u.stage == "prepared" for u in users), [
        (u.key, u.state, u.stage) for u in users if u.state not in FINAL
    ]
    status = env.said("wave", "status", wave_id)
    assert "wave state: stopped" in status.stdout, status.stdout
    rerun = env.ikomm("wave", "run", str(wave), "--auto-approve", inventory=inv.root)
    assert rerun.returncode == 0, log.read_text()[-3000:]
    assert all(u.state in FINAL for u in ledger.users(wave_id))
    assert check_systems(inv, ledger, wave_id).get("verified", 0) > 10


def test_an_approval_after_the_process_died_says_so_and_the_rerun_goes_on(env: Env, lab_inventory: Inventory) -> None:
    """kill -9 while the wave waits at the gate: status says stopped (not running), the approval is recorded but
    said to need a rerun (rc 1, the command named), the paused flow run is Crashed, and the rerun goes on without
    asking again."""
    inv = lab_inventory
    wave = env.wave_file("foreldrelos", ["oyer"], approval_required=True)
    proc = env.ikomm("wave", "run", str(wave), inventory=inv.root, wait=False)
    ledger = at_the_gate(env, proc, "foreldrelos")
    api = env.vars["PREFECT_API_URL"]
    gate = paused_run(api, "foreldrelos")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = env.said("wave", "status", "foreldrelos")
    assert "wave state: stopped" in status.stdout and "ikomm wave run" in status.stdout, status.stdout
    listed = env.said("wave", "list", "--json", "--waves", str(wave.parent), "--inventory", str(inv.root))
    assert {r["wave"]: r["state"] for r in json.loads(listed.stdout)}["foreldrelos"] == "stopped"
    approve = env.said("wave", "approve", "foreldrelos", "--approver", "leder@ikomm.no", timeout=60)
    said = approve.stdout + approve.stderr
    assert approve.returncode == 1 and "no process runs the wave" in said and f"ikomm wave run {wave}" in said, said
    crashed = api_json(api, f"/flow_runs/{gate}")["state"]
    assert crashed["type"] == "CRASHED" and "ikomm wave run" in crashed["message"], crashed
    rerun = env.ikomm("wave", "run", str(wave), inventory=inv.root, wait=False)
    assert rerun.wait(timeout=300) == 0, (env.dir / "ikomm-output.log").read_text()[-3000:]  # asked nothing
    assert {u.state for u in ledger.users("foreldrelos")} <= {"verified", "held"}
    assert (ledger.wave("foreldrelos") or {})["approval"]["approver"] == "leder@ikomm.no"


def test_a_wave_with_failed_users_says_so_everywhere(env: Env, lab: Lab, lab_inventory: Inventory) -> None:
    """Gausdal's file server is down for the whole wave and the failure budget lets it go on: Gausdal's users fail
    (each undone), Øyer's move. Done, but nowhere green: exit 3, "done with N failed" on the terminal, in the
    summary and on the flow run, whose state is of the Failed type ("Failed users")."""
    users = few_of(lab_inventory, "gausdal", moved=2, held=0) + few_of(lab_inventory, "oyer", moved=2, held=0)
    wave = env.wave_file("delvis", ["gausdal", "oyer"], users, approval_required=False, failure_budget=1.0)
    lab.stop_server("fs-gausdal")
    try:
        proc = env.ikomm("wave", "run", str(wave), "--skip-preflight", inventory=lab_inventory.root)
    finally:
        lab.start_server("fs-gausdal")
    said = (env.dir / "ikomm-output.log").read_text()
    assert proc.returncode == 3, said[-3000:]
    ended = Ledger(env.ledger_url).users("delvis")
    failed = [u for u in ended if u.state == "failed"]
    assert len(failed) == 2 and {u.muni for u in failed} == {"gausdal"}
    assert [u.state for u in ended if u.muni == "oyer"] == ["verified", "verified"]
    assert "wave delvis: done with 2 failed" in said
    api = env.vars["PREFECT_API_URL"]
    newest = {"flow_runs": {"name": {"any_": ["delvis"]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 1}
    run = api_json(api, "/flow_runs/filter", newest)[0]
    assert (run["state"]["type"], run["state"]["name"]) == ("FAILED", "Failed users"), run["state"]
    assert run["state"]["message"].startswith("done with 2 failed: ")
    summary = api_json(api, "/artifacts/filter", {"artifacts": {"key": {"any_": ["wave-delvis-summary"]}}})
    assert summary and "State: **done with 2 failed**" in summary[-1]["data"]


def test_the_live_view_in_a_terminal_is_not_torn_by_log_lines(env: Env, lab_inventory: Inventory) -> None:
    """`wave run` in a terminal (a pty, read back by a terminal emulator): the log lines of held users print above
    the live table, whole, and the table's rows hold nothing else."""
    import fcntl
    import os
    import pty
    import struct
    import sys
    import termios

    import pyte

    wave = env.wave_file("levende", ["oyer"], few_of(lab_inventory, "oyer", moved=6, held=3))
    argv = [sys.executable, "-m", "ikomm", "wave", "run", str(wave), "--auto-approve"]
    argv += ["--inventory", str(lab_inventory.root)]
    columns, rows = 140, 400
    pid, fd = pty.fork()
    if pid == 0:  # the child: ikomm on the pty, as a lead at a terminal
        os.execve(sys.executable, argv, {**os.environ, **env.vars, "COLUMNS": str(columns), "TERM": "xterm"})
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    out = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child has ended
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    screen = pyte.Screen(columns, rows)
    pyte.ByteStream(screen).feed(out.replace(b"\n", b"\r\n") if b"\r\n" not in out else out)
    lines = [line.rstrip() for line in screen.display if line.strip()]
    shown = "\n".join(lines)
    assert os.waitstatus_to_exitcode(status) == 0, shown[-3000:]
    # torn, the table's pieces were left behind each time a log line pushed it down, and a log line was glued
    # to its last row ("wave state: running 14:04:11.876 | WARNING | ...")
    headers = [line for line in lines if re.fullmatch(r"\s*wave levende: \d+ users", line)]
    assert len(headers) == 1, shown
    assert not [line for line in lines if re.search(r"wave state: .*\d\d:\d\d:\d\d\.\d+ \|", line)], shown
    table_rows = [line for line in lines if "│" in line]
    assert table_rows and not [r for r in table_rows if "WARNING" in r or "INFO" in r or "Task run" in r], shown
    held = [line for line in lines if "held plan: held back" in line]
    assert len(held) >= 3 and all("│" not in line for line in held), shown
    assert any(line.startswith("wave levende: done") for line in lines), shown

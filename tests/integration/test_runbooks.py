"""Every shell block of every runbook, run against the lab in a scenario that needs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ikomm.inventory import Inventory
from ikomm.ledger import Ledger
from lab.manager import Lab
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"
BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)


def script(page: str, values: dict[str, str]) -> str:
    """The page's shell blocks, in order, with its variables set to this scenario's values."""
    text = "\n".join(BLOCK.findall((RUNBOOKS / page).read_text(encoding="utf-8")))
    assert text.strip(), f"{page} has no shell blocks"
    for name, value in values.items():
        text, n = re.subn(rf"^{name}=\S*", f"{name}={value}", text, flags=re.MULTILINE)
        assert n == 1, f"{page} should set {name} once"
    return text


def run_page(env: Env, page: str, values: dict[str, str], inv: Inventory) -> str:
    """Run a runbook page as an operator would, from a checkout-like folder; fail on the first failing command."""
    work = env.dir / "checkout"
    (work / "waves").mkdir(parents=True, exist_ok=True)
    for wave in env.dir.glob("*.yaml"):
        (work / "waves" / wave.name).write_bytes(wave.read_bytes())
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script(page, values)],
        cwd=work,
        env={**os.environ, **env.vars, "IKOMM_INVENTORY": str(inv.root), "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{page} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_rollback_runbooks_user_legacy_stage_and_wave(env: Env, lab_inventory: Inventory) -> None:
    """After a wave: one user back, one legacy account back, the cutover of one municipality, then the wave."""
    inv = lab_inventory
    wave = env.wave_file("rb", ["gausdal", "oyer"], approval_required=False)
    assert env.ikomm("wave", "run", str(wave), inventory=inv.root).returncode == 0
    ledger = Ledger(env.ledger_url)
    verified = [u.key for u in ledger.users("rb") if u.state == "verified"]
    out = run_page(env, "rollback-user.md", {"USER_ID": verified[0], "WAVE": "rb"}, inv)
    assert "0 difference(s)" in out
    out = run_page(env, "legacy-needed-again.md", {"USER_ID": verified[1], "WAVE": "rb"}, inv)
    assert "0 difference(s)" in out
    # the cutover alone would point Gausdal's thin clients at disabled legacy accounts: refused, nothing undone
    alone = env.said(
        "rollback",
        "wave",
        "rb",
        "--stage",
        "cutover",
        "--municipality",
        "gausdal",
        "--yes",
        "--inventory",
        str(inv.root),
    )
    assert (
        alone.returncode == 2 and "able to log on nowhere" in alone.stderr and "--stage cutover,retire" in alone.stderr
    )
    assert all(
        u.state == "verified"
        for u in Ledger(env.ledger_url).users("rb")
        if u.muni == "gausdal" and u.key in verified[2:]
    )
    out = run_page(env, "rollback-stage.md", {"WAVE": "rb", "STAGES": "cutover,retire", "MUNICIPALITY": "gausdal"}, inv)
    assert "0 difference(s)" in out  # the thin client and the legacy account (enabled) as before the wave
    out = run_page(env, "rollback-wave.md", {"WAVE": "rb"}, inv)
    assert "0 difference(s)" in out
    again = run_page(env, "rollback-wave.md", {"WAVE": "rb"}, inv)
    assert "nothing to undo" in again and "0 difference(s)" in again


@pytest.mark.parametrize("page", ["file-server-died.md", "wave-stopped.md"])
def test_resume_runbooks_after_a_file_server_died(env: Env, lab: Lab, lab_inventory: Inventory, page: str) -> None:
    """Gausdal's file server dies, the budget stops the wave; once it is back, the runbook finishes the wave."""
    inv = lab_inventory
    wave = env.wave_file(
        "stopp", ["gausdal", "oyer"], approval_required=False, failure_budget=0.1, min_failures=3, concurrency=2
    )
    lab.stop_server("fs-gausdal")
    try:
        assert env.ikomm("wave", "run", str(wave), "--skip-preflight", inventory=inv.root).returncode == 1
    finally:
        lab.start_server("fs-gausdal")
    run_page(env, page, {"WAVE": "stopp"}, inv)
    assert {u.state for u in Ledger(env.ledger_url).users("stopp")} <= {"verified", "held"}
    if page != "file-server-died.md":
        return
    # the retried users were undone once (accounts parked), then taken again: the wave still rolls back whole
    out = run_page(env, "rollback-wave.md", {"WAVE": "stopp"}, inv)
    assert "0 difference(s)" in out
    assert {u.state for u in Ledger(env.ledger_url).users("stopp")} <= {"rolled_back", "held"}
    again = run_page(env, "rollback-wave.md", {"WAVE": "stopp"}, inv)
    assert "nothing to undo" in again and "0 difference(s)" in again


def test_start_a_wave_runbook_checks_plans_preflights_and_runs(env: Env, lab_inventory: Inventory) -> None:
    """The night's page: check, dry run, preflight and run, each command as written; the wave ends done."""
    inv = lab_inventory
    env.wave_file("natt", ["oyer"], approval_required=False)
    out = run_page(env, "start-a-wave.md", {"WAVE": "natt"}, inv)
    assert "wave natt is valid" in out and "ready to run" in out and "dry run, nothing written" in out
    wave = Ledger(env.ledger_url).wave("natt")
    assert wave is not None and wave["state"] == "done"

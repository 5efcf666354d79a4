"""Rollback against the lab: drift is reported, not overwritten; a killed rollback finishes on a rerun."""

from __future__ import annotations

import json
import signal
import sqlite3
import time

import pytest

from ikomm.connectors import Connectors
from ikomm.inventory import Inventory
from ikomm.ledger import Ledger
from lab.manager import Lab
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration


def output(env: Env) -> str:
    return (env.dir / "ikomm-output.log").read_text(encoding="utf-8")


def verify(env: Env, inv: Inventory, wave: str, *extra: str) -> dict[str, object]:
    env.ikomm("verify", "rollback", wave, "--json", *extra, inventory=inv.root)
    text = output(env)
    found: dict[str, object] = json.loads(text[text.rindex('{\n  "checked"') :])
    return found


def test_drift_is_reported_then_forced(env: Env, lab_inventory: Inventory) -> None:
    """A device config changed after cutover is left alone (conflict) until --force; then zero differences."""
    inv = lab_inventory
    wave = env.wave_file("drift", ["oyer"], approval_required=False)
    assert env.ikomm("wave", "run", str(wave), inventory=inv.root).returncode == 0
    ledger = Ledger(env.ledger_url)
    row = next(u for u in ledger.users("drift") if u.state == "verified")
    device = next(u.device for u in inv.users["oyer"] if u.legacy_id == row.legacy_id)
    assert device
    made = Connectors(inv)
    made.devices().update(device, {"rdp_server": "helpdesk-changed-this"})
    made.close()
    assert env.ikomm("rollback", "user", row.key, inventory=inv.root).returncode == 1
    assert "changed after the cutover" in output(env)
    assert ledger.user(row.key).state == "failed"  # type: ignore[union-attr]
    assert [c.kind for c in ledger.changes(row.key)] == ["device-config"]  # everything else undone
    assert env.ikomm("rollback", "user", row.key, "--force", inventory=inv.root).returncode == 0
    assert verify(env, inv, "drift", "--user", row.key)["differences"] == {}


def test_rollback_killed_halfway_finishes_on_rerun(env: Env, lab: Lab, lab_inventory: Inventory) -> None:
    """kill -9 during a wave rollback; the same command finishes it, the next says nothing to undo."""
    inv = lab_inventory
    config_host = lab.server_path("config-host", inv.platform.thin_client_config_host.config_root)
    devices_before = {p.name: p.read_bytes() for p in config_host.iterdir()}
    wave = env.wave_file("halv", ["lillehammer"], approval_required=False)
    assert env.ikomm("wave", "run", str(wave), inventory=inv.root).returncode == 0
    proc = env.ikomm("rollback", "wave", "halv", "--purge", "--yes", inventory=inv.root, wait=False)
    db = env.ledger_url.removeprefix("sqlite:///")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        done = sqlite3.connect(db).execute("select count(*) from users where state = 'rolled_back'").fetchone()[0]
        if done >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the rollback ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ledger = Ledger(env.ledger_url)
    assert any(u.state != "rolled_back" for u in ledger.users("halv") if u.state not in ("held", "left_out"))
    assert env.ikomm("rollback", "wave", "halv", "--purge", "--yes", inventory=inv.root).returncode == 0
    assert env.ikomm("rollback", "wave", "halv", "--purge", "--yes", inventory=inv.root).returncode == 0
    assert "nothing to undo" in output(env)
    # the narrowest window, made certain: killed after a user's last undo, before its state changed
    key = next(u.key for u in ledger.users("halv") if u.state == "rolled_back")
    ledger.set_user(key, "running", "rollback", "rolling back 9 change(s)")
    assert env.ikomm("rollback", "user", key, inventory=inv.root).returncode == 0
    assert {u.state for u in ledger.users("halv")} <= {"rolled_back", "held", "left_out"}
    assert verify(env, inv, "halv")["differences"] == {}
    made = Connectors(inv)
    parked = list(made.platform().search(f"OU=Deaktivert,{inv.platform.directory.base_dn}", "(objectClass=user)"))
    made.close()
    assert parked == []  # --purge deleted the accounts instead of parking them
    # the config host exactly as before: every config as it was, no .previous or temporary file left
    assert {p.name: p.read_bytes() for p in config_host.iterdir()} == devices_before
    # the wave run again after its rollback: verify says what it compares (the rolled-back users; none is left
    # once all moved again) and counts those moved again, instead of their moves as differences
    rolled = sum(1 for u in ledger.users("halv") if u.state == "rolled_back")
    others = len(ledger.users("halv")) - rolled  # held and left out: nothing of theirs was undone
    assert env.ikomm("wave", "run", str(wave), "--include", "rolled_back", inventory=inv.root).returncode == 0
    proof = verify(env, inv, "halv")
    assert proof["differences"] == {} and proof["checked"] == 0, proof
    assert proof["not_compared"] == {"moved again since": rolled, "not rolled back": others}, proof

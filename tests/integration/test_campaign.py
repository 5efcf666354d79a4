"""The campaign against the lab: planned, run wave after wave, the held users swept up; a user's place across waves."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import yaml

from ikomm.inventory import Inventory, load_inventory
from ikomm.ledger import Ledger
from ikomm.policy import ready_by
from lab.manager import Lab
from tests.integration.conftest import Env
from tests.integration.test_wave import check_systems

pytestmark = pytest.mark.integration

OPTIONS = {"approval_required": False, "concurrency": 6, "retries": 1, "retry_delay": 0.2, "failure_budget": 1.0}


@pytest.fixture(autouse=True)
def restore_lab_after(lab: Lab) -> Iterator[None]:
    """These tests move most of the lab's users; the tests after them expect the seeded world."""
    yield
    lab.up()


def output(env: Env) -> str:
    return (env.dir / "ikomm-output.log").read_text(encoding="utf-8")


def last_json(env: Env) -> dict[str, object]:
    text = output(env)
    found: dict[str, object] = json.loads(text[text.rindex("\n{\n") :])
    return found


def test_campaign_planned_run_and_swept_moves_everyone_once(env: Env, lab_inventory: Inventory, tmp_path: Path) -> None:
    """Plan, run every wave, make the held applications ready, run the sweep again: every user accounted for."""
    inv_dir = tmp_path / "inventory"
    shutil.copytree(lab_inventory.root, inv_dir)
    waves = tmp_path / "waves"
    waves.mkdir()
    (waves / "campaign.yaml").write_text(
        yaml.safe_dump(
            {
                "id": "test",
                "name": "Test",
                "start": "2027-01-11",
                "nights": {"weekdays": ["mon", "tue", "wed", "thu"], "start": "18:00", "end": "23:00"},
                "users_per_hour": 100,
                "max_users_per_night": 30,
                "order": ["oyer", "gausdal", "lillehammer"],
                "sweep_gap_days": 0,
                "wave_options": OPTIONS,
            }
        ),
        encoding="utf-8",
    )
    assert env.ikomm("campaign", "plan", str(waves / "campaign.yaml"), inventory=inv_dir).returncode == 0
    files = sorted(p for p in waves.glob("k*.yaml"))
    regular = [p for p in files if "sweep" not in p.name and "last-call" not in p.name]
    sweeps = [p for p in files if "sweep" in p.name]
    assert len(regular) >= 4 and sweeps and files[-1].name.endswith("last-call.yaml")
    ledger = Ledger(env.ledger_url)
    for path in regular + sweeps:  # the applications of the swept users are not ready yet: they are held
        # the nights are in 2027: each runs now, before its window, as the lead decides (recorded)
        ran = env.ikomm("wave", "run", str(path), "--outside-window", inventory=inv_dir)
        if path in sweeps:  # a night that held everyone is "held", not done, and says when to run it again
            assert ran.returncode == 4, output(env)[-3000:]
            night = ledger.wave(path.stem) or {}
            assert night["state"] == "held" and "run it again on or after 2027-" in night["detail"], night
        else:
            assert ran.returncode == 0, output(env)[-3000:]
    held = [u.key for p in sweeps for u in ledger.users(p.stem) if u.state == "held"]
    assert held and all(u.state == "held" for p in sweeps for u in ledger.users(p.stem))
    # the applications become ready: the sweep's next run takes its held users again, and moves them
    apps = inv_dir / "applications.yaml"
    apps.write_text(apps.read_text(encoding="utf-8").replace("ready_from: 2027-", "ready_from: 2026-"), "utf-8")
    for path in [*sweeps, files[-1]]:
        ran = env.ikomm("wave", "run", str(path), "--outside-window", inventory=inv_dir)
        assert ran.returncode == 0, output(env)[-3000:]
    inv = load_inventory(inv_dir)
    for path in files:
        check_systems(inv, ledger, path.stem)
    enabled = sum(u.enabled for users in inv.users.values() for u in users)
    everyone = ledger.everyone()
    assert Counter(u.state for u in everyone) == {"verified": enabled, "left_out": inv.user_count() - enabled}
    for user in everyone:  # each moved exactly once: one wave verified them, one account was made
        verified_in = [h.wave for h in ledger.history(user.key) if h.state == "verified"]
        assert len(verified_in) == (user.state == "verified"), (user.key, verified_in)
    assert env.ikomm("campaign", "status", "--waves", str(waves), "--json", inventory=inv_dir).returncode == 0
    status = last_json(env)
    assert status["total"] == inv.user_count() and status["in_no_wave"] == 0
    assert status["by_state"] == {"moved": enabled, "left_out": inv.user_count() - enabled}
    assert (
        env.ikomm(
            "campaign", "report", "--out", str(tmp_path / "report"), "--waves", str(waves), inventory=inv_dir
        ).returncode
        == 0
    )
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "<svg" in page and f"{enabled} of {inv.user_count()} users moved" in page and "http" not in page


def test_overlapping_and_concurrent_waves_rollback_and_requeue(
    env: Env, lab: Lab, lab_inventory: Inventory, tmp_path: Path
) -> None:
    """Moved users skipped by a later wave; one run of a wave at a time; open users refused until taken on
    purpose; rolled back users taken again only with --include; a failed user re-queued once the cause is fixed."""
    inv = lab_inventory
    first = next(u.department for u in inv.users["gausdal"] if u.enabled)
    small = env.wave_file("liten", ["gausdal"], **OPTIONS)
    spec = yaml.safe_load(small.read_text(encoding="utf-8"))
    spec["users"] = {"departments": [first]}
    small.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    assert env.ikomm("wave", "run", str(small), inventory=inv.root).returncode == 0
    ledger = Ledger(env.ledger_url)
    moved = {u.key for u in ledger.users("liten") if u.state == "verified"}
    assert moved

    # the whole municipality: started twice at once, the second run is refused; moved users are skipped
    everyone = env.wave_file("gausdal-alle", ["gausdal"], **{**OPTIONS, "approval_required": True})
    racing = env.ikomm("wave", "run", str(everyone), inventory=inv.root, wait=False)  # waits at the gate
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (ledger.wave("gausdal-alle") or {}).get("state") != "awaiting-approval":
        time.sleep(0.2)
    second = env.ikomm("wave", "run", str(everyone), inventory=inv.root)
    assert second.returncode != 0 and "is being run by process" in output(env)
    approve = env.said("wave", "approve", "gausdal-alle", timeout=60)
    assert approve.returncode == 0, approve.stderr + approve.stdout
    assert racing.wait(timeout=600) == 0, output(env)[-3000:]
    rows = {u.key: u for u in ledger.users("gausdal-alle")}
    assert {k for k, u in rows.items() if u.state == "skipped"} == moved
    assert all("already moved by wave liten" in rows[k].reason for k in moved)
    check_systems(inv, ledger, "liten")
    check_systems(inv, ledger, "gausdal-alle")

    # users left open by a wave nobody runs: refused, changing nothing, until taken on purpose
    oyer = [(f"oyer/{u.legacy_id}", "oyer", u.legacy_id) for u in inv.users["oyer"]]
    ledger.open_wave("forlatt", oyer)  # opened, then abandoned before it ran
    oyer_wave = env.wave_file("oyer-alle", ["oyer"], **OPTIONS)
    refused = env.ikomm("wave", "run", str(oyer_wave), inventory=inv.root)
    assert refused.returncode != 0 and "in another wave that is still open" in output(env)
    assert ledger.wave("oyer-alle") is None
    taken = env.ikomm("wave", "run", str(oyer_wave), "--take-from-open-waves", inventory=inv.root)
    assert taken.returncode == 0, output(env)[-3000:]
    assert {u.state for u in ledger.users("forlatt")} == {"handed_over"}
    check_systems(inv, ledger, "oyer-alle")

    # rolled back: a plain rerun leaves them so; --include rolled_back moves them again
    assert env.ikomm("rollback", "wave", "oyer-alle", "--yes", inventory=inv.root).returncode == 0
    rolled = {u.key for u in ledger.owned("oyer-alle") if u.state == "rolled_back"}
    assert rolled
    assert env.ikomm("wave", "run", str(oyer_wave), inventory=inv.root).returncode == 0
    assert {u.key for u in ledger.owned("oyer-alle") if u.state == "rolled_back"} == rolled
    assert env.ikomm("wave", "run", str(oyer_wave), "--include", "rolled_back", inventory=inv.root).returncode == 0
    assert not {u.key for u in ledger.owned("oyer-alle") if u.state == "rolled_back"}
    check_systems(inv, ledger, "oyer-alle")

    # failed because a profile folder was missing: fixed, then re-queued with --include failed
    lost = next(u for u in inv.users["lillehammer"] if u.enabled and ready_by(inv, "lillehammer", u, date.today()))
    lost_key = f"lillehammer/{lost.legacy_id}"
    folder = lab.server_path(inv.municipalities["lillehammer"].legacy.file_server.name, lost.profile_path)
    away = tmp_path / "profile-away"
    shutil.move(folder, away)  # an overlay mount: a rename across its layers is refused
    one = env.wave_file("en", ["lillehammer"], **OPTIONS)
    spec = yaml.safe_load(one.read_text(encoding="utf-8"))
    spec["users"] = {"legacy_ids": [lost.legacy_id]}
    one.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    env.ikomm("wave", "run", str(one), inventory=inv.root)
    assert ledger.user(lost_key).state == "failed"  # type: ignore[union-attr]
    shutil.move(away, folder)
    assert env.ikomm("wave", "run", str(one), inventory=inv.root).returncode == 3  # done, but with 1 failed
    assert ledger.user(lost_key).state == "failed"  # type: ignore[union-attr]  (a plain rerun: as it was)
    assert env.ikomm("wave", "run", str(one), "--include", "failed", inventory=inv.root).returncode == 0
    assert ledger.user(lost_key).state == "verified"  # type: ignore[union-attr]
    check_systems(inv, ledger, "en")

"""The campaign planner and a user's place across waves, without servers: the ledger on SQLite in a temp folder."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ikomm.campaign import campaign_status, capacity, load_campaign, plan_campaign, wave_files, write_plan
from ikomm.cli import app
from ikomm.errors import ConflictError, InventoryError
from ikomm.inventory import Inventory, load_inventory
from ikomm.leases import Lease, alive, this_process
from ikomm.ledger import Ledger
from ikomm.policy import ready_date
from lab.synthetic import generate

CAMPAIGN = {
    "id": "test",
    "name": "Test campaign",
    "start": "2027-01-11",
    "nights": {"weekdays": ["mon", "tue", "wed", "thu"], "start": "18:00", "end": "23:00"},
    "skip": ["2027-01-12"],
    "users_per_hour": 10,
    "max_users_per_night": 40,
    "order": ["oyer", "gausdal", "lillehammer"],
}


@pytest.fixture(scope="module")
def inv(tmp_path_factory: pytest.TempPathFactory) -> Inventory:
    folder = tmp_path_factory.mktemp("campaign") / "inventory"
    generate(folder, users=300, seed=11, lab_dir="../lab")
    return load_inventory(folder)


def campaign_file(folder: Path, **changes: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "campaign.yaml"
    path.write_text(yaml.safe_dump({**CAMPAIGN, **changes}, allow_unicode=True), encoding="utf-8")
    return path


def test_plan_accounts_for_every_user_once_and_is_deterministic(inv: Inventory, tmp_path: Path) -> None:
    """Each user is in exactly one planned wave, left out by policy, or for the last call; same inputs, same bytes."""
    path = campaign_file(tmp_path / "waves")
    plan = plan_campaign(inv, load_campaign(path, inv))
    assert plan.capacity == 40  # min(10 users/h x 5 h, 40)
    planned = [wu.key for w in plan.waves for wu in w.users]
    assert len(planned) == len(set(planned))
    everyone = {f"{m}/{u.legacy_id}" for m, users in inv.users.items() for u in users}
    left_out = {wu.key for wu in plan.left_out}
    assert set(planned) | left_out == everyone and not set(planned) & left_out
    assert all(not wu.user.enabled for wu in plan.left_out)
    assert plan.waves[-1].kind == "last-call" and all(len(w.users) <= 40 for w in plan.waves)
    first = {p.name: p.read_bytes() for p in write_plan(plan, inv, tmp_path / "waves")}
    again = {
        p.name: p.read_bytes()
        for p in write_plan(plan_campaign(inv, load_campaign(path, inv)), inv, tmp_path / "waves")
    }
    assert first == again and sorted(p.name for p in (tmp_path / "waves").glob("k*.yaml")) == sorted(first)


def test_plan_keeps_order_nights_departments_and_readiness(inv: Inventory, tmp_path: Path) -> None:
    """Municipalities in order, weekday nights less the skipped, departments whole where they fit, nobody early."""
    plan = plan_campaign(inv, load_campaign(campaign_file(tmp_path), inv))
    regular = [w for w in plan.waves if w.kind == "wave"]
    order = [w.municipalities[0] for w in regular]
    assert order == sorted(order, key=["oyer", "gausdal", "lillehammer"].index)
    nights = [w.night for w in plan.waves]
    assert nights == sorted(nights) and len(set(nights)) == len(nights)
    assert all(n.weekday() < 4 and n != date(2027, 1, 12) for n in nights)
    for w in plan.waves:
        for wu in w.users:
            ready = ready_date(inv, wu.muni, wu.user)
            assert ready is None or ready <= w.night, (wu.key, ready, w.night)
    late = [wu for w in plan.waves if w.kind == "sweep" for wu in w.users]
    assert late and all((ready_date(inv, wu.muni, wu.user) or date.min) > regular[0].night for wu in late)
    # a department that fits a night is never split
    for w in regular:
        for (muni, dept), count in w.departments().items():
            size = sum(1 for u in inv.users[muni] if u.department == dept and u.enabled)
            late_ones = sum(1 for wu in late if (wu.muni, wu.user.department) == (muni, dept))
            if size - late_ones <= plan.capacity:
                assert count == size - late_ones, (w.id, dept)


def test_plan_written_waves_load_and_status_counts_everyone(inv: Inventory, tmp_path: Path) -> None:
    """The files load as wave files; with no ledger the status says planned, left out, and 0 in no wave."""
    folder = tmp_path / "waves"
    write_plan(plan_campaign(inv, load_campaign(campaign_file(folder), inv)), inv, folder)
    status = campaign_status(inv, None, wave_files(folder, inv))
    total = sum(len(u) for u in inv.users.values())
    assert status.total == total and status.in_no_wave == 0
    assert set(status.by_state) == {"planned", "left_out"} and sum(status.by_state.values()) == total
    result = CliRunner().invoke(
        app, ["campaign", "status", "--waves", str(folder), "--inventory", str(inv.root), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert '"in_no_wave": 0' in result.output and f'"total": {total}' in result.output


def test_campaign_file_problems_are_located(inv: Inventory, tmp_path: Path) -> None:
    """An unknown or missing municipality, a done wave that does not exist, a bad window: file, line, field."""
    path = campaign_file(
        tmp_path, order=["oyer", "lunner"], done=["pilot"], nights={**CAMPAIGN["nights"], "end": "17:00"}
    )  # type: ignore[dict-item]
    with pytest.raises(InventoryError) as caught:
        load_campaign(path, inv)
    text = str(caught.value)
    assert "campaign.yaml" in text and "nights" in text and "end must be after start" in text
    path = campaign_file(tmp_path, order=["oyer", "lunner"], done=["pilot"])
    with pytest.raises(InventoryError) as caught:
        load_campaign(path, inv)
    fields = {p.field for p in caught.value.problems}
    assert {"order[1]", "order", "done[0]"} <= fields


def test_done_waves_users_are_not_planned_again_unless_they_were_held(inv: Inventory, tmp_path: Path) -> None:
    """Users of a wave named done are left to it, except those it had to hold: the sweep takes them."""
    folder = tmp_path / "waves"
    folder.mkdir()
    (folder / "pilot.yaml").write_text(
        yaml.safe_dump(
            {
                "id": "pilot",
                "name": "p",
                "municipalities": ["oyer"],
                "users": {"all": True},
                "window": {"start": "2026-11-27T17:00:00", "end": "2026-11-29T20:00:00"},
            }
        ),
        encoding="utf-8",
    )
    campaign = load_campaign(campaign_file(folder, done=["pilot"]), inv)
    plan = plan_campaign(inv, campaign)
    oyer_planned = {wu.key for w in plan.waves for wu in w.users if wu.muni == "oyer"}
    held_in_pilot = {
        f"oyer/{u.legacy_id}"
        for u in inv.users["oyer"]
        if (ready_date(inv, "oyer", u) or date.min) > date(2026, 11, 29) and u.enabled
    }
    assert oyer_planned == held_in_pilot
    assert capacity(campaign.spec) == 40


def test_a_user_moves_once_across_waves(tmp_path: Path) -> None:
    """Moved elsewhere: skipped. Held, failed, rolled back elsewhere: taken. Open elsewhere: refused, unless asked."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    users = [("oyer/a", "oyer", "a"), ("oyer/b", "oyer", "b"), ("oyer/c", "oyer", "c"), ("oyer/d", "oyer", "d")]
    ledger.open_wave("w1", users)
    ledger.set_user("oyer/a", "verified", "done", "moved", wave="w1")
    ledger.set_user("oyer/b", "held", "plan", "not ready", wave="w1")
    ledger.set_user("oyer/c", "rolled_back", "done", "rolled back", wave="w1")
    ledger.set_user("oyer/d", "running", "files", "copying", wave="w1")
    refused = ledger.open_wave("w2", users)
    assert refused.refused == [("oyer/d", "w1", "running")] and ledger.wave("w2") is None  # nothing written
    opening = ledger.open_wave("w2", users, take_open=True, live=frozenset())
    assert opening.skipped == [("oyer/a", "w1")]
    assert sorted(k for k, _, _ in opening.taken) == ["oyer/b", "oyer/c", "oyer/d"]
    assert {u.key: u.state for u in ledger.users("w1")} == {
        "oyer/a": "verified",
        "oyer/b": "held",
        "oyer/c": "rolled_back",
        "oyer/d": "handed_over",
    }
    assert {u.key: u.wave for u in ledger.everyone()} == {
        "oyer/a": "w1",
        "oyer/b": "w2",
        "oyer/c": "w2",
        "oyer/d": "w2",
    }
    assert [h.wave for h in ledger.history("oyer/b")] == ["w1", "w2"]
    with pytest.raises(ConflictError, match="belongs to wave w2"):
        ledger.set_user("oyer/b", "verified", "done", "moved", wave="w1")  # w1 may not write b any more
    with pytest.raises(ConflictError, match="belongs to wave w1"):
        ledger.set_user("oyer/a", "failed", "undone", "x", wave="w2")  # w2 skipped a: never writes it
    rerun = ledger.open_wave("w1", users)  # w1 again, while w2 works on d: d is w2's, not refused
    assert rerun.refused == [] and ledger.user("oyer/d").wave == "w2"  # type: ignore[union-attr]


def test_requeue_and_ready_and_policy(tmp_path: Path) -> None:
    """--include takes a wave's own users again; held ones come back when ready; left out ones stay out."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    users = [("g/a", "g", "a"), ("g/b", "g", "b"), ("g/c", "g", "c")]
    ledger.open_wave("w", users, left_out={"g/c": "disabled"})
    assert ledger.user("g/c").state == "left_out"  # type: ignore[union-attr]
    ledger.set_user("g/a", "failed", "undone", "boom", wave="w")
    ledger.set_user("g/b", "held", "plan", "not ready", wave="w")
    assert ledger.open_wave("w", users, left_out={"g/c": "disabled"}).requeued == []  # a plain rerun: as they were
    again = ledger.open_wave("w", users, left_out={"g/c": "disabled"}, include=("failed",), ready=frozenset({"g/b"}))
    assert sorted(again.requeued) == ["g/a", "g/b"]
    assert {u.key: u.state for u in ledger.users("w")} == {"g/a": "pending", "g/b": "pending", "g/c": "left_out"}


def test_one_writer_per_wave(tmp_path: Path) -> None:
    """A live holder keeps the lease; a dead one (here: a holder that is no process) gives it up at once."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    with Lease(ledger, "wave:w") as lease:
        assert lease.took_over is None and alive(this_process(), 0)
        with pytest.raises(ConflictError, match="is being run by"):
            ledger.acquire_lease("wave:w", "otherhost:1:1", alive, str)
    dead = this_process().rsplit(":", 2)[0] + ":999999999:0"
    ledger.acquire_lease("wave:w", dead, alive, str)
    with Lease(ledger, "wave:w") as lease:
        assert lease.took_over == dead
    assert ledger.leases() == []


def test_disabled_users_are_left_out_of_a_copy_of_the_inventory(inv: Inventory, tmp_path: Path) -> None:
    """The policy reads the inventory's enabled column: a re-enabled user is planned again."""
    folder = tmp_path / "inventory"
    shutil.copytree(inv.root, folder)
    path = folder / "users" / "oyer.csv"
    path.write_text(path.read_text(encoding="utf-8").replace(",false\n", ",true\n"), encoding="utf-8")
    plan = plan_campaign(load_inventory(folder), load_campaign(campaign_file(tmp_path / "w"), load_inventory(folder)))
    assert all(wu.muni != "oyer" for wu in plan.left_out)


def test_each_user_of_an_opening_is_counted_once(tmp_path: Path) -> None:
    """A user left out here, whether new or taken from a wave that left them out too, counts as left out only:
    the opening's counts add up to the wave's users (k20 once said 2,502 of 2,500)."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    users = [("o/a", "o", "a"), ("o/b", "o", "b"), ("o/c", "o", "c"), ("o/d", "o", "d")]
    first = ledger.open_wave("w1", users, left_out={"o/c": "disabled", "o/d": "disabled"})
    assert (first.new, sorted(first.left_out)) == (2, ["o/c", "o/d"])
    ledger.set_user("o/b", "held", "plan", "not ready", wave="w1")
    ledger.set_user("o/a", "verified", "done", "moved", wave="w1")
    sweep = ledger.open_wave("w2", users, left_out={"o/c": "disabled", "o/d": "disabled"})
    counted = sweep.new + sweep.resumed + len(sweep.requeued + sweep.taken + sweep.skipped + sweep.left_out)
    assert counted == len(users), sweep
    assert [t[0] for t in sweep.taken] == ["o/b"] and sorted(sweep.left_out) == ["o/c", "o/d"]


def test_the_burn_up_stops_moved_at_today_and_draws_the_target_on_top() -> None:
    """Moved is drawn up to today (not as a flat line into the future), the plan to its end, and the line of the
    users the policy moves last, so a moved line that reaches it does not hide it."""
    from datetime import date

    from ikomm.campaign import _burn_up

    svg = _burn_up({"2026-11-20": 60, "2027-02-01": 40}, {"2026-11-20": 100}, 100, date(2026, 12, 6))
    lines = svg.splitlines()
    moved = next(line for line in lines if 'stroke="#1b9e77"' in line and "polyline" in line)
    today = next(line for line in lines if ">today<" in line)
    assert moved.split('points="')[1].split()[-1].split(",")[0] == today.split('x="')[1].split('"')[0]
    assert any("polyline" in line and "#8da0cb" in line for line in lines)  # the plan, beside it
    target = next(i for i, line in enumerate(lines) if 'stroke="#555"' in line)
    assert target > lines.index(moved)


def test_downtime_is_cutover_to_verified_per_user_with_median_p95_and_worst(tmp_path: Path) -> None:
    """A user's downtime: from the cutover stage's start to verified (the last cutover, in this wave only)."""
    from ikomm.report import downtime_words

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.open_wave("w", [("g/a", "g", "a"), ("g/b", "g", "b"), ("g/c", "g", "c")])
    for key in ("g/a", "g/b"):
        ledger.set_user(key, "running", "cutover", "device, broker, legacy session", wave="w")
        ledger.set_user(key, "verified", "done", "migrated and verified", wave="w")
    ledger.set_user("g/c", "running", "cutover", "device, broker, legacy session", wave="w")  # not verified (yet)
    down = ledger.downtimes("w")
    assert set(down) == {"g/a", "g/b"} and all(0 <= s < 5 for s in down.values())
    said = downtime_words({f"g/{i}": float(i) for i in range(1, 101)})
    assert said == "downtime (cutover to verified) of 100 user(s): median 50.5 s, p95 95.0 s, worst 100.0 s (g/100)"
    assert downtime_words({}) is None

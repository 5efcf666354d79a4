"""What the helpdesk sees, in a real browser: Debian's headless Chromium on the real Prefect UI after a wave."""

from __future__ import annotations

from datetime import date

from ikomm import server
from ikomm.inventory import Inventory
from ikomm.ledger import Ledger
from ikomm.policy import ready_date
from lab.browser import HelpdeskView, chromium
from tests.integration.conftest import Env


def few_of(inv: Inventory, muni: str, moved: int = 4, held: int = 2) -> list[str]:
    """Legacy ids of a few enabled users who move and a few the inventory says are held (an app not ready)."""
    today = date.today()
    users = [u for u in inv.users[muni] if u.enabled]
    late = [u.legacy_id for u in users if (ready_date(inv, muni, u) or today) > today]
    ready = [u.legacy_id for u in users if (ready_date(inv, muni, u) or today) <= today]
    assert len(late) >= held and len(ready) >= moved, "the test inventory has held and ready users"
    return ready[:moved] + late[:held]


def test_the_helpdesk_finds_a_user_reads_their_story_and_sees_held_users_held(
    env: Env, lab_inventory: Inventory, prefect_api: str
) -> None:
    """After a small wave: a held user's page says Held and why; a moved user's page shows the account name and
    the timeline, their card says what to tell them; a search by account name finds the user."""
    wave = env.wave_file("helpdesk", ["lillehammer"], few_of(lab_inventory, "lillehammer"))
    proc = env.ikomm("wave", "run", str(wave), "--auto-approve", inventory=lab_inventory.root)
    assert proc.returncode == 0, (env.dir / "ikomm-output.log").read_text()[-3000:]
    ledger = Ledger(env.ledger_url)
    links = ledger.task_runs("helpdesk")
    users = ledger.users("helpdesk")
    moved = next(u for u in users if u.state == "verified")
    held = next(u for u in users if u.state == "held")
    assert moved.account and moved.key in links and held.key in links
    ui = server.ui_base()

    with chromium() as browser:
        view = HelpdeskView(browser, ui)
        page = view.task_run(links[held.key])
        assert f"{held.key} · " in page
        assert "\nHeld\n" in page and "Failed" not in page  # the state badge: nothing failed for them
        assert "not ready on the platform yet" in page  # the reason, in plain words
        assert "keep working on the old system" in page  # what to tell them, the log's last word

        page = view.task_run(links[moved.key])
        assert f"{moved.key} · {moved.account} · migrate" in page  # the name carries old id and new account
        assert f"create the platform account {moved.account}" in page  # the timeline: what changed, stage by stage
        for line in ("plan · running", "entitle · changed: add to", "copied the home folder", "done · verified"):
            assert line in page, line
        assert "\nCompleted\n" in page and f"log on as {moved.account}" in page

        card = view.card(links[moved.key])
        assert "What to tell the user" in card and f"They log on as {moved.account}" in card
        assert moved.key in card and "Timeline (UTC)" in card

        found = view.search_task_runs(moved.account)
        # this user only (the session's server keeps earlier sessions' runs of the same name)
        assert found and set(found) == {f"{moved.key} · {moved.account} · migrate"}, found

    # and the command line hands out the same page, whatever the case typed
    assert env.ikomm("status", moved.account.upper(), inventory=lab_inventory.root).returncode == 0
    assert f"{ui}/runs/task-run/{links[moved.key]}" in (env.dir / "ikomm-output.log").read_text()

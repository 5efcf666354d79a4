"""What the helpdesk sees, in a real browser: Debian's headless Chromium on the real Prefect UI after a wave."""

from __future__ import annotations

from datetime import date

import httpx
from playwright.sync_api import Page

from flows.api import api_json, api_session
from ikomm import server
from ikomm.inventory import Inventory
from ikomm.ledger import Ledger
from ikomm.naming import fold, searchable_name
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
    env: Env, lab_inventory: Inventory, prefect_api: str, signed_in: dict[str, str]
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
        view = HelpdeskView(browser, ui, credential=signed_in["helpdesk"])
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
        person = next(u for m, u in lab_inventory.all_users() if f"{m}/{u.legacy_id}" == moved.key)
        named = f"{moved.key} · {moved.account} · migrate · {searchable_name(person.given_name, person.surname)}"
        assert named in found and all(f.startswith(f"{moved.key} · {moved.account} · ") for f in found), found
        # the person's name, typed as a person would (ASCII for æ, ø, å), finds them too
        assert named in view.search_task_runs(fold(person.surname), shot=None)

    # and the command line hands out the same page, whatever the case typed
    assert env.ikomm("status", moved.account.upper(), inventory=lab_inventory.root).returncode == 0
    assert f"{ui}/runs/task-run/{links[moved.key]}" in (env.dir / "ikomm-output.log").read_text()

    # rolled back: the rollback's page is found by the account name too and says so, with the story and the card;
    # the move's page says "Rolled back" first; `ikomm status` hands out the rollback's page
    undo = env.ikomm("rollback", "user", moved.key, "--yes", inventory=lab_inventory.root)
    assert undo.returncode == 0, (env.dir / "ikomm-output.log").read_text()[-3000:]
    back = ledger.task_runs("helpdesk")[moved.key]
    assert back != links[moved.key]
    with chromium() as browser:
        view = HelpdeskView(browser, ui, env.dir / "shots", credential=signed_in["helpdesk"])
        page = view.task_run(back, shot="helpdesk-rolled-back-user")
        assert f"{moved.key} · {moved.account} · rollback" in page and "\nRolled back\n" in page, page
        assert "municipality:lillehammer" in page and "rollback · running" in page and "rolled_back" in page, page
        card = view.card(back)
        assert "rolled_back" in card and "Their move was rolled back" in card, card
        old = view.task_run(links[moved.key], shot="helpdesk-moved-then-rolled-back")
        assert "\nRolled back\n" in old and back in old, old
        found = view.search_task_runs(moved.account)
        assert any(f.startswith(f"{moved.key} · {moved.account} · rollback · ") for f in found), found
    log = env.dir / "ikomm-output.log"
    assert env.ikomm("status", moved.key, inventory=lab_inventory.root).returncode == 0
    assert f"{ui}/runs/task-run/{back}" in log.read_text().split("rollback user")[-1]


def test_the_helpdesk_reads_but_starts_resumes_cancels_and_deletes_nothing(
    prefect_api: str, signed_in: dict[str, str]
) -> None:
    """Behind the proxy: without a sign-in the UI asks for one; the helpdesk's sign-in opens the pages, and every
    write the UI makes for it (Run, resume, cancel, delete) is refused with the reason, shown in the UI; a lead's
    sign-in may do them. The API is refused without credentials, and Prefect itself only takes the service's."""
    flow = api_json(prefect_api, "/flows/", {"name": "ikomm-roles-check"})["id"]
    deployment = api_json(prefect_api, "/deployments/", {"name": "roles", "flow_id": flow})["id"]
    run = api_json(prefect_api, f"/deployments/{deployment}/create_flow_run", {})["id"]
    ui = server.ui_base()
    writes = [
        ("POST", f"/api/deployments/{deployment}/create_flow_run", {}),
        ("POST", f"/api/flow_runs/{run}/resume", {"run_input": {"approved": True}}),
        ("POST", f"/api/flow_runs/{run}/set_state", {"state": {"type": "CANCELLING"}, "force": True}),
        ("DELETE", f"/api/flow_runs/{run}", None),
    ]
    try:
        assert httpx.get(f"{prefect_api}/admin/version").status_code == 401
        internal = f"http://127.0.0.1:{server.internal_port()}/api/admin/version"
        assert httpx.get(internal, auth=tuple(signed_in["lead"].split(":", 1))).status_code == 401  # type: ignore[arg-type]
        with chromium() as browser:
            page = HelpdeskView(browser, ui).page()  # signed in as a person does: on the UI's own sign-in page
            page.goto(f"{ui}/deployments/deployment/{deployment}")
            page.get_by_placeholder("admin:pass").fill("hanne:wrong")
            page.get_by_role("button", name="Login").click()
            page.get_by_text("Authentication failed").first.wait_for()
            page.get_by_placeholder("admin:pass").fill(signed_in["helpdesk"])
            page.get_by_role("button", name="Login").click()
            page.get_by_text("ikomm-roles-check").first.wait_for()  # it reads
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Quick run").first.click()
            page.get_by_text("may only read (helpdesk)").first.wait_for()  # the refusal, as the UI shows it
            assert [_fetch(page, *w) for w in writes] == [403] * len(writes)
            assert _fetch(page, "POST", "/api/flow_runs/filter", {"limit": 1}) == 200
            assert api_json(prefect_api, f"/flow_runs/{run}")["state"]["type"] == "SCHEDULED"  # untouched

            lead = HelpdeskView(browser, ui, credential=signed_in["lead"]).page()
            lead.goto(f"{ui}/deployments/deployment/{deployment}")
            lead.get_by_text("ikomm-roles-check").first.wait_for()
            assert [_fetch(lead, *w) for w in writes[:1] + writes[2:]] == [201, 201, 204]
    finally:
        with api_session(prefect_api) as session:
            session.delete(f"/flows/{flow}")


def _fetch(page: Page, method: str, path: str, body: object) -> int:
    """The status of an API call made as the UI makes it: from the page, with the sign-in it keeps."""
    return int(
        page.evaluate(
            """async ([method, path, body]) => {
                const headers = {"Content-Type": "application/json",
                                 "Authorization": "Basic " + localStorage.getItem("prefect-password")};
                const sent = body === null ? undefined : JSON.stringify(body);
                return (await fetch(path, {method, headers, body: sent})).status;
            }""",
            [method, path, body],
        )
    )

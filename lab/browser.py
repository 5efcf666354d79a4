"""What the helpdesk sees: the real Prefect UI, rendered by Debian's headless Chromium, driven by Playwright.

Used by the browser test (tests/integration/test_helpdesk_ui.py) and by `make demo`, which keeps
screenshots in docs/img/ (`python -m lab.browser WAVE`). Chromium comes from Debian's package
(/usr/bin/chromium, installed by `make setup`), never from Playwright's download; the flags keep it
off the network: this machine's closed network refuses Chromium's background connections.
"""

from __future__ import annotations

import argparse
import base64
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",  # as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium (Debian's) for the duration of the block."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class HelpdeskView:
    """The Prefect UI at ui (http://host:port), as a person at the helpdesk uses it."""

    browser: Browser
    ui: str
    shots: Path | None = None  # where to keep screenshots, if anywhere
    credential: str | None = None  # "name:password", as typed into the UI's sign-in page (ikomm access add)

    def page(self) -> Page:
        """A new tab, signed in as the UI's sign-in page leaves it (the credential in the page's local storage)."""
        page = self.browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        if self.credential is not None:
            token = base64.b64encode(self.credential.encode()).decode()  # base64: nothing to quote
            page.add_init_script(f"localStorage.setItem('prefect-password', '{token}')")
        return page

    def _shot(self, page: Page, name: str | None) -> None:
        if self.shots is not None and name:
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(800)  # the UI dims a page while it loads; a person sees it settled
            self.shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(self.shots / f"{name}.png"))

    def task_run(self, task_run_id: str, shot: str | None = None) -> str:
        """The text of a user's task-run page (name, state, every log line), once its logs are shown."""
        page = self.page()
        try:
            page.goto(f"{self.ui}/runs/task-run/{task_run_id}")
            page.get_by_text("Finished in state").first.wait_for()  # the last log line: the story is there
            self._shot(page, shot)
            return page.inner_text("body")
        finally:
            page.close()

    def card(self, task_run_id: str, shot: str | None = None) -> str:
        """The text of the user's card: the task run's Artifacts tab, then the card itself."""
        page = self.page()
        try:
            page.goto(f"{self.ui}/runs/task-run/{task_run_id}")
            page.get_by_text("Artifacts", exact=True).first.click()
            page.get_by_text("what to tell the user").first.click()
            page.get_by_text("What to tell the user", exact=True).first.wait_for()
            self._shot(page, shot)
            return page.inner_text("body")
        finally:
            page.close()

    def search_task_runs(self, text: str, shot: str | None = None) -> list[str]:
        """Names of the users' task runs (key · account · phase) the Runs page's task-run search lists for text,
        typed as a person would."""
        page = self.page()
        try:
            page.goto(f"{self.ui}/runs")
            page.get_by_text("Task runs", exact=True).click()
            page.get_by_placeholder("Search by task run name").fill(text)
            page.wait_for_url(re.compile(r"task-run-search="))
            deadline = time.monotonic() + TIMEOUT_MS / 1000
            while True:  # until the list shows only what the search found (it updates a moment after typing)
                page.wait_for_load_state("networkidle")
                runs = [line.strip() for line in page.inner_text("body").splitlines() if line.count(" · ") >= 2]
                found = [r for r in runs if text.lower() in r.lower()]
                if (found and len(found) == len(runs)) or time.monotonic() > deadline:
                    break
                page.wait_for_timeout(500)
            self._shot(page, shot)
            return found
        finally:
            page.close()

    def flow_run(self, flow_run_id: str, shot: str | None = None) -> str:
        """The text of a flow run's page (the wave's, with its final state's message in the log)."""
        page = self.page()
        try:
            page.goto(f"{self.ui}/runs/flow-run/{flow_run_id}")
            page.get_by_text("Finished in state").first.wait_for()
            self._shot(page, shot)
            return page.inner_text("body")
        finally:
            page.close()

    def resume_form(self, flow_run_id: str, shot: str | None = None, submit: bool = False) -> str:
        """The text of a paused flow run's Resume form (the approval gate), as the lead opens it; with submit,
        Submit pressed as the form first shows (nothing chosen) and the text after."""
        page = self.page()
        try:
            page.goto(f"{self.ui}/runs/flow-run/{flow_run_id}")
            page.get_by_role("button", name="Resume").first.click()
            page.get_by_text("Decision").first.wait_for()
            self._shot(page, shot)
            if submit:
                page.get_by_role("button", name="Submit").first.click()
                page.wait_for_timeout(1500)  # the form's answer (or the run's new state) shows a moment later
                self._shot(page, f"{shot}-submitted" if shot else None)
            return page.inner_text("body")
        finally:
            page.close()

    def artifact(self, key: str, shot: str | None = None) -> str:
        """The text of the newest version of a keyed artifact (the wave's summary)."""
        page = self.page()
        try:
            page.goto(f"{self.ui}/artifacts/key/{key}")
            page.locator("a[href*='/artifacts/artifact/']").first.click()  # the newest version
            page.wait_for_url(re.compile(r"/artifacts/artifact/"))
            page.wait_for_load_state("networkidle")
            self._shot(page, shot)
            return page.inner_text("body")
        finally:
            page.close()


def sign_in(state: Path, name: str) -> str:
    """The "name:password" handed over to name by `ikomm access add` (the demo's helpdesk and lead)."""
    path = state / "access" / f"{name}.password"
    if not path.is_file():
        raise SystemExit(f"no sign-in for {name}: run `ikomm access add {name} --role ...` first")
    return path.read_text(encoding="utf-8").strip()


def screenshots(wave_id: str, out: Path) -> list[Path]:
    """Screenshots of what the helpdesk sees after a wave (the demo's): a moved user's page and card, a held
    user's page, a search by account name, the wave's run and summary."""
    from ikomm import server
    from ikomm.ledger import Ledger, url_for

    ledger = Ledger(url_for(server.state_dir()))
    links = ledger.task_runs(wave_id)
    users = ledger.users(wave_id)
    moved = next(u for u in users if u.state == "verified" and u.key in links)
    held = next((u for u in users if u.state == "held" and u.key in links), None)
    with chromium() as browser:
        view = HelpdeskView(browser, server.ui_base(), out, sign_in(server.state_dir(), "helpdesk"))
        view.task_run(links[moved.key], shot="helpdesk-moved-user")
        view.card(links[moved.key], shot="helpdesk-user-card")
        if held is not None:
            view.task_run(links[held.key], shot="helpdesk-held-user")
        view.search_task_runs(moved.account or moved.legacy_id, shot="helpdesk-search")
        view.artifact(f"wave-{wave_id}-summary".lower(), shot="helpdesk-wave-summary")
    return sorted(out.glob("helpdesk-*.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshots of the Prefect UI after a wave, for docs/.")
    parser.add_argument("wave")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    for path in screenshots(args.wave, args.out):
        print(path)


if __name__ == "__main__":
    main()

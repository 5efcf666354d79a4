"""The lab, started once per test session from a small generated inventory, stopped at the end."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ikomm import access, server
from ikomm.connectors import Connectors
from ikomm.errors import IkommError
from ikomm.inventory import Inventory, load_inventory
from lab.manager import Lab, chroot_unsafe_parent
from lab.synthetic import generate

REPO = Path(__file__).resolve().parents[2]
TEST_USERS = 120


def test_root() -> Path:
    """Under the repository if sshd may chroot there; else under /var/lib (a checkout in /tmp, say)."""
    beside = REPO / ".lab-test"
    if chroot_unsafe_parent(beside) is None:
        return beside
    return Path("/var/lib/ikomm-lab-test") / hashlib.sha256(str(REPO).encode()).hexdigest()[:12]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def lab_inventory() -> Inventory:
    """A 120-user inventory (and Ringebu's tenant kit) generated for the tests; same bytes every run, so its lab
    cache is reused."""
    root = test_root()
    folder = root / "inventory"
    if folder.exists():
        shutil.rmtree(folder)
    generate(folder, users=TEST_USERS, seed=7, lab_dir=str(root / "lab"), tenants=["ringebu"])
    return load_inventory(folder)


@pytest.fixture(scope="session")
def lab(lab_inventory: Inventory) -> Iterator[Lab]:
    """The running lab of the test inventory (another lab on the same addresses is stopped first)."""
    try:
        default = Lab(load_inventory(REPO / "inventory"))
        if default.down():
            warnings.warn("stopped the repository's demo lab: the test lab uses the same addresses", stacklevel=1)
    except IkommError:
        pass
    the_lab = Lab(lab_inventory)
    the_lab.up()
    yield the_lab
    the_lab.down()


@pytest.fixture
def connectors(lab: Lab, lab_inventory: Inventory) -> Iterator[Connectors]:
    """Connectors built from the test inventory, closed after the test."""
    made = Connectors(lab_inventory)
    yield made
    made.close()


PREFECT_PORT = "4210"  # not the demo's 4200: tests never touch the demo's server or state


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A local Prefect server for the session, with its state under the test folder; its API URL."""
    state = test_root() / "prefect-state"
    saved = {k: os.environ.get(k) for k in ("IKOMM_STATE", "IKOMM_PREFECT_PORT", "PREFECT_API_AUTH_STRING")}
    os.environ.update({"IKOMM_STATE": str(state), "IKOMM_PREFECT_PORT": PREFECT_PORT})
    try:
        server.stop()  # one left over from an interrupted session
        server.start()
        os.environ["PREFECT_API_AUTH_STRING"] = server.client_env()["PREFECT_API_AUTH_STRING"]  # the service's
        yield server.api_url()
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class Env:
    """One test's private state folder, ledger and environment for `ikomm` subprocesses."""

    dir: Path
    vars: dict[str, str]
    ledger_url: str

    def wave_file(
        self, wave_id: str, municipalities: list[str], legacy_ids: list[str] | None = None, **options: object
    ) -> Path:
        """A wave file of every user of the municipalities, or only of these legacy ids."""
        spec = {
            "id": wave_id,
            "name": f"test {wave_id}",
            "municipalities": municipalities,
            "users": {"legacy_ids": legacy_ids} if legacy_ids else {"all": True},
            "options": {"concurrency": 6, "retries": 1, "retry_delay": 0.2, "failure_budget": 1.0, **options},
        }
        path = self.dir / f"{wave_id}.yaml"
        path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
        return path

    def said(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """`ikomm ARGS` as a lead runs it, without a terminal, in this test's environment; its output captured."""
        return subprocess.run(
            [sys.executable, "-m", "ikomm", *args],
            env={**os.environ, **self.vars},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ikomm(self, *args: str, inventory: Path, wait: bool = True) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "ikomm", *args, "--inventory", str(inventory)]
        out = open(self.dir / "ikomm-output.log", "a", encoding="utf-8")  # noqa: SIM115 (closed by the child's end)
        proc = subprocess.Popen(argv, env={**os.environ, **self.vars}, stdout=out, stderr=subprocess.STDOUT, text=True)
        if wait:
            proc.wait(timeout=600)
        return proc


@pytest.fixture
def env(lab: Lab, prefect_api: str, tmp_path: Path) -> Iterator[Env]:
    """A fresh lab (warm restore from its cache: nothing a previous test did remains) and private state."""
    lab.up()
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    variables = {
        "IKOMM_STATE": str(tmp_path / "state"),
        "IKOMM_LEDGER_URL": url,
        "PREFECT_API_URL": prefect_api,
        "PREFECT_HOME": str(tmp_path / "prefect-client"),
        "COLUMNS": "200",
    }
    yield Env(tmp_path, variables, url)


@pytest.fixture(scope="module")
def signed_in(prefect_api: str) -> dict[str, str]:
    """A helpdesk person and a lead who may sign in to the session's UI: role -> "name:password"."""
    state = server.state_dir()
    made = {role: access.add_person(state, name, role) for name, role in (("hanne", "helpdesk"), ("lars", "lead"))}
    server.reload_proxy()
    time.sleep(0.5)  # nginx's workers reread the files
    return {role: path.read_text(encoding="utf-8").strip() for role, path in made.items()}

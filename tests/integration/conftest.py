"""The lab, started once per test session from a small generated inventory, stopped at the end."""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from ikomm import server
from ikomm.connectors import Connectors
from ikomm.errors import IkommError
from ikomm.inventory import Inventory, load_inventory
from ikomm.synthetic import generate
from lab.manager import Lab, chroot_unsafe_parent

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
    """A 120-user inventory generated for the tests; same bytes every run, so its lab cache is reused."""
    root = test_root()
    folder = root / "inventory"
    if folder.exists():
        shutil.rmtree(folder)
    generate(folder, users=TEST_USERS, seed=7, lab_dir=str(root / "lab"))
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
    saved = {k: os.environ.get(k) for k in ("IKOMM_STATE", "IKOMM_PREFECT_PORT")}
    os.environ.update({"IKOMM_STATE": str(state), "IKOMM_PREFECT_PORT": PREFECT_PORT})
    try:
        server.stop()  # one left over from an interrupted session
        server.start()
        yield server.api_url()
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

"""The lab, started once per test session from a small generated inventory, stopped at the end."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from ikomm.errors import IkommError
from ikomm.inventory import Inventory, load_inventory
from ikomm.synthetic import generate
from lab.manager import Lab

REPO = Path(__file__).resolve().parents[2]
# Under the repository, not /tmp: sshd's ChrootDirectory refuses world-writable parents.
TEST_ROOT = REPO / ".lab-test"
TEST_USERS = 60


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def lab_inventory() -> Inventory:
    """A 60-user inventory generated for the tests; same bytes every run, so its lab cache is reused."""
    folder = TEST_ROOT / "inventory"
    if folder.exists():
        shutil.rmtree(folder)
    generate(folder, users=TEST_USERS, seed=7, lab_dir="../lab")
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

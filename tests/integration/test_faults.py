"""Faults: a server stopped in the middle of work raises a TransientError; once it is back, a retry succeeds."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from ikomm.connectors import Connectors
from ikomm.connectors.files import copy_tree, verify_tree
from ikomm.errors import TransientError
from ikomm.inventory import Inventory
from lab.manager import Lab

pytestmark = pytest.mark.integration


@pytest.fixture
def restart(lab: Lab) -> Iterator[list[str]]:
    """Names of servers a test stopped; each is started again afterwards, whatever happened."""
    stopped: list[str] = []
    yield stopped
    for name in stopped:
        if not any(s.name == name and running for s, running, _ in lab.status()):
            lab.start_server(name)


def test_directory_stopped_mid_work_then_back(
    connectors: Connectors, lab: Lab, lab_inventory: Inventory, restart: list[str]
) -> None:
    """slapd stops between two reads on a bound connection: transient; after restart the same call succeeds."""
    legacy = connectors.legacy("gausdal")
    users = lab_inventory.users["gausdal"]
    assert legacy.find_user(users[0].legacy_id) is not None
    restart.append("legacy-dir-gausdal")
    lab.stop_server("legacy-dir-gausdal")
    with pytest.raises(TransientError):
        legacy.find_user(users[1].legacy_id)
    lab.start_server("legacy-dir-gausdal")
    assert legacy.find_user(users[1].legacy_id) is not None


def test_file_server_stopped_mid_copy_then_resumes(
    connectors: Connectors, lab: Lab, lab_inventory: Inventory, restart: list[str]
) -> None:
    """The target file server dies after the first file: transient; after restart the copy resumes and verifies."""
    inv = lab_inventory
    user = inv.users["lillehammer"][5]
    zone = inv.zone(user.zone)
    source, target = connectors.legacy_files("lillehammer"), connectors.zone_files(user.zone)
    dst_root = f"{zone.file_server.home_root}/test-fault-{user.legacy_id}"
    restart.append(zone.file_server.name)

    def kill_target(rel: str, size: int) -> None:
        if zone.file_server.name in restart and not stopped:
            lab.stop_server(zone.file_server.name)
            stopped.append(rel)

    stopped: list[str] = []
    try:
        with pytest.raises(TransientError):
            copy_tree(source, user.home_path, target, dst_root, on_file=kill_target)
        lab.start_server(zone.file_server.name)
        resumed = copy_tree(source, user.home_path, target, dst_root)
        assert resumed.unchanged >= 1 and resumed.copied + resumed.unchanged == len(resumed.source.files)
        assert verify_tree(source, user.home_path, target, dst_root).ok
    finally:
        shutil.rmtree(lab.server_path(zone.file_server.name, dst_root), ignore_errors=True)


def test_broker_stopped_then_back(
    connectors: Connectors, lab: Lab, lab_inventory: Inventory, restart: list[str]
) -> None:
    """The broker is down: transient; back up, the same query answers."""
    broker = connectors.broker()
    collection = lab_inventory.platform.zones[0].terminal_farm.collection
    before = broker.collection_users(collection)
    restart.append("broker")
    lab.stop_server("broker")
    with pytest.raises(TransientError):
        broker.collection_users(collection)
    lab.start_server("broker")
    assert broker.collection_users(collection) == before

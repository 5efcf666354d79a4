"""What the lab would start for an inventory, and the guards that keep it on loopback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ikomm.cli import app
from ikomm.errors import LabError
from ikomm.inventory import load_inventory
from lab.manager import SAFE_LAB_ROOT, Lab, chroot_unsafe_parent, servers_of
from lab.synthetic import generate


def test_lab_runs_every_server_of_the_inventory(repo: Path) -> None:
    """Two ADs, two slapd, six file servers, the config host and the broker, each on its own address."""
    servers = servers_of(load_inventory(repo / "inventory"))
    kinds = [s.kind for s in servers]
    assert (kinds.count("samba"), kinds.count("slapd"), kinds.count("sshd"), kinds.count("broker")) == (2, 2, 7, 1)
    assert len({s.host for s in servers}) == len(servers)


def test_lab_refuses_an_address_off_loopback(repo: Path, tmp_path: Path) -> None:
    """An inventory that points a server at a real network address cannot start a lab there."""
    inv_dir = tmp_path / "inv"
    inv_dir.mkdir()
    for path in (repo / "inventory").rglob("*"):
        if path.is_file():
            target = inv_dir / path.relative_to(repo / "inventory")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    platform = inv_dir / "platform.yaml"
    platform.write_text(platform.read_text().replace("host: 127.0.0.30", "host: 10.20.10.30"))
    with pytest.raises(LabError, match="loopback only"):
        servers_of(load_inventory(inv_dir))


def test_chroot_guard_names_the_world_writable_parent(tmp_path: Path) -> None:
    """sshd would refuse a chroot below /tmp; the guard names the folder to blame."""
    assert chroot_unsafe_parent(tmp_path / "lab") is not None
    assert chroot_unsafe_parent(Path("/usr/share")) is None


def test_lab_below_tmp_lives_under_var_lib_behind_a_link(tmp_path: Path) -> None:
    """A checkout in /tmp gets its lab in a root-owned folder that the inventory's lab folder links to."""
    inv_dir = tmp_path / "checkout" / "inventory"
    generate(inv_dir, users=6, seed=1, lab_dir="../.lab")
    (tmp_path / "checkout" / ".lab").mkdir()  # an earlier attempt left it empty
    lab = Lab(load_inventory(inv_dir))
    assert lab.dir.parent == SAFE_LAB_ROOT and chroot_unsafe_parent(lab.dir) is None
    try:
        lab._check_dir()
        assert (tmp_path / "checkout" / ".lab").resolve() == lab.dir
        assert Lab(load_inventory(inv_dir)).dir == lab.dir  # later commands find it through the link
    finally:
        shutil.rmtree(lab.dir, ignore_errors=True)


def test_inventory_show_prints_the_tables(repo: Path) -> None:
    """`ikomm inventory show` prints users per municipality, applications per zone and servers per role."""
    result = CliRunner().invoke(
        app, ["inventory", "show", "--inventory", str(repo / "inventory")], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    for text in (
        "Users per municipality and department",
        "Øyer (14 %)",
        "Applications per zone",
        "Platform servers per role",
        "terminal-server",
    ):
        assert text in result.output

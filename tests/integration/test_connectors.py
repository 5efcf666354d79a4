"""The connectors against the lab's real Samba AD, slapd, sshd and the WinRM broker."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ikomm.connectors import Connectors
from ikomm.connectors.broker import ps_quote
from ikomm.connectors.devices import settings
from ikomm.connectors.directory import child_dn, equality_filter
from ikomm.connectors.files import FileServer, copy_tree, verify_tree
from ikomm.errors import FatalError, InvalidInputError
from ikomm.inventory import Inventory
from lab.manager import Lab

pytestmark = pytest.mark.integration

NASTY = 'O\'Brien-Ørbæk, Kåre+Ann "#1"; *(x)\\ $(whoami) `n ‘q’'


def test_ad_account_lifecycle(connectors: Connectors, lab_inventory: Inventory) -> None:
    """An AD user with a hostile name: created, password set (must change), disabled, enabled, moved, deleted."""
    inv = lab_inventory
    ad = connectors.platform()
    muni = inv.municipalities["lillehammer"]
    dn = child_dn("CN", NASTY, muni.target_ou)
    upn = f"test.nasty@{muni.upn_suffix}"
    ad.add(dn, ["user"], {"sAMAccountName": "test.nasty", "userPrincipalName": upn, "userAccountControl": "514"})
    try:
        [found] = ad.search(muni.target_ou, equality_filter("cn", NASTY), ["cn"])
        assert found.get("cn") == (NASTY,)
        password = "Tr1ck'y\"pa$$ ÆØÅ;"
        ad.set_password(dn, password)
        assert ad.set_enabled(dn, True).changed
        entry = ad.read(dn)
        assert entry is not None and ad.is_enabled(entry) and entry.get("pwdLastSet") == ("0",)
        assert ad.check_password(upn, password)  # right, though it must be changed at first logon
        assert not ad.check_password(upn, "not-the-password")
        assert ad.set_enabled(dn, True).changed is False
        change = ad.set_enabled(dn, False)
        assert change.before == {"userAccountControl": ("512",)}
        entry = ad.read(dn)
        assert entry is not None and not ad.is_enabled(entry)

        group = f"CN={next(iter(inv.applications.values())).groups['lillehammer']},{inv.platform.directory.groups_dn}"
        assert ad.add_member(group, dn) is True
        assert ad.add_member(group, dn) is False
        state = ad.state(dn)
        assert state is not None and state.groups == (group,)
        assert ad.remove_member(group, dn) is True
        assert ad.remove_member(group, dn) is False

        parked = ad.move(dn, f"OU=Deaktivert,{inv.platform.directory.base_dn}")
        assert ad.read(dn) is None and ad.read(parked) is not None
        assert ad.move(dn, f"OU=Deaktivert,{inv.platform.directory.base_dn}") == parked  # idempotent
        dn = ad.move(parked, muni.target_ou)
    finally:
        ad.delete(dn)
    assert ad.delete(dn) is False


def test_password_only_over_ldaps(connectors: Connectors, lab_inventory: Inventory) -> None:
    """unicodePwd is refused on a StartTLS or OpenLDAP connector before anything is sent."""
    d = lab_inventory.platform.directory
    with pytest.raises(FatalError, match="LDAPS"):
        connectors.directory(d.model_copy(update={"security": "starttls", "port": 389})).set_password("CN=x", "pw")
    with pytest.raises(FatalError):
        connectors.legacy("gausdal").set_password("uid=x", "pw")


@pytest.mark.parametrize("muni_id", ["gausdal", "lillehammer"])
def test_legacy_disable_enable_and_membership(connectors: Connectors, lab_inventory: Inventory, muni_id: str) -> None:
    """Disabling a legacy account (shadowExpire / UAC bit) and restoring it; groupOfNames membership."""
    inv = lab_inventory
    legacy = connectors.legacy(muni_id)
    user = next(u for u in inv.users[muni_id] if u.enabled and u.legacy_groups)
    entry = legacy.find_user(user.legacy_id)
    assert entry is not None and legacy.is_enabled(entry)
    change = legacy.set_enabled(entry.dn, False)
    assert change.changed
    entry_now = legacy.read(entry.dn)
    assert entry_now is not None and not legacy.is_enabled(entry_now)
    if muni_id == "gausdal":
        assert entry_now.get("shadowExpire") == ("1",)
    legacy.modify(entry.dn, change.before)  # undo exactly what was there before
    restored = legacy.read(entry.dn)
    assert restored is not None and legacy.is_enabled(restored)
    assert restored.attributes == legacy.read(entry.dn).attributes  # type: ignore[union-attr]

    groups = legacy.groups_of(entry.dn)
    assert len(groups) == len(user.legacy_groups)
    assert legacy.remove_member(groups[0], entry.dn) is True
    assert legacy.add_member(groups[0], entry.dn) is True
    assert legacy.add_member(groups[0], entry.dn) is False
    assert legacy.groups_of(entry.dn) == groups


def test_broker_quoting_round_trips_hostile_names(connectors: Connectors, lab_inventory: Inventory) -> None:
    """A user name full of quotes, $, backticks and semicolons is added, read back and removed unharmed."""
    broker = connectors.broker()
    collection = lab_inventory.platform.zones[0].terminal_farm.collection
    before = broker.collection_users(collection)
    name = "PLATTFORM\\" + NASTY
    assert broker.add_user(collection, name) is True
    assert broker.add_user(collection, name) is False
    assert name in broker.collection_users(collection)
    assert broker.remove_user(collection, name) is True
    assert broker.remove_user(collection, name) is False
    assert broker.collection_users(collection) == before
    assert ps_quote("a'b’c") == "'a''b’’c'"
    with pytest.raises(InvalidInputError):
        broker.collection_users("no such collection")


def test_broker_lists_and_logs_off_sessions(connectors: Connectors, lab: Lab) -> None:
    """A seeded legacy session is found by user and logged off; a second log-off ends nothing."""
    import json

    state = json.loads((lab.dir / "broker" / "state.json").read_text(encoding="utf-8"))
    session = state["sessions"][0]
    broker = connectors.broker()
    found = broker.sessions(session["user"])
    assert [s.id for s in found] == [s["id"] for s in state["sessions"] if s["user"] == session["user"]]
    assert [s.id for s in broker.log_off(session["user"], session["host"])] == [s.id for s in found]
    assert broker.sessions(session["user"]) == [] and broker.log_off(session["user"]) == []


def _user_with_tree(inv: Inventory, muni_id: str) -> tuple[str, str]:
    user = inv.users[muni_id][1]
    return user.legacy_id, user.home_path


def test_copy_tree_streams_skips_junk_keeps_mtimes_and_refuses_escaping_links(
    connectors: Connectors, lab: Lab, lab_inventory: Inventory
) -> None:
    """A tree is copied with mtimes, mode and owner; junk skipped; an outside symlink refused, an inside one kept."""
    inv = lab_inventory
    muni = inv.municipalities["gausdal"]
    user = inv.users["gausdal"][1]
    src_local = lab.server_path(muni.legacy.file_server.name, user.profile_path)
    os.symlink("/etc/passwd", src_local / "passord")
    os.symlink("../../../../..", src_local / "opp")
    os.symlink("Desktop", src_local / "Skrivebord")
    zone = inv.zone(user.zone)
    dst_root = f"{zone.file_server.profile_root}/test-copy-{user.legacy_id}"
    try:
        report = copy_tree(
            connectors.legacy_files("gausdal"),
            user.profile_path,
            connectors.zone_files(user.zone),
            dst_root,
            (4242, 4243),
        )
        assert set(report.failed) == {"passord", "opp"}
        assert all("outside" in reason for reason in report.failed.values())
        target = lab.server_path(zone.file_server.name, dst_root)
        assert os.readlink(target / "Skrivebord") == "Desktop"
        assert not (target / "AppData/Local/Temp").exists()  # junk folder skipped
        for rel in report.written:
            src, dst = src_local / rel, target / rel
            if not dst.is_symlink():
                assert dst.stat().st_mtime == int(src.stat().st_mtime)
                assert (dst.stat().st_uid, dst.stat().st_gid, dst.stat().st_mode & 0o777) == (4242, 4243, 0o600)
        check = verify_tree(
            connectors.legacy_files("gausdal"), user.profile_path, connectors.zone_files(user.zone), dst_root
        )
        assert check.ok and check.extra == ()
        assert all(len(e.sha256) == 64 for e in check.source.files.values())
    finally:
        for link in ("passord", "opp", "Skrivebord"):
            (src_local / link).unlink()
        shutil.rmtree(lab.server_path(zone.file_server.name, dst_root), ignore_errors=True)


def test_interrupted_copy_resumes_and_verifies(connectors: Connectors, lab: Lab, lab_inventory: Inventory) -> None:
    """A copy stopped after two files resumes with the rest only; a changed source file is the only delta later."""
    inv = lab_inventory
    user = inv.users["oyer"][3]
    source, target = connectors.legacy_files("oyer"), connectors.zone_files(user.zone)
    dst_root = f"{inv.zone(user.zone).file_server.home_root}/test-resume-{user.legacy_id}"

    class Stop(Exception):
        pass

    def stop_after_two(rel: str, size: int) -> None:
        if len(done) == 1:
            raise Stop
        done.append(rel)

    done: list[str] = []
    try:
        with pytest.raises(Stop):
            copy_tree(source, user.home_path, target, dst_root, on_file=stop_after_two)
        assert not verify_tree(source, user.home_path, target, dst_root).ok
        again = copy_tree(source, user.home_path, target, dst_root)
        assert again.unchanged == 2 and again.copied == len(again.source.files) - 2
        assert verify_tree(source, user.home_path, target, dst_root).ok
        assert copy_tree(source, user.home_path, target, dst_root).copied == 0  # nothing left to move

        src_file = lab.server_path(inv.municipalities["oyer"].legacy.file_server.name, user.home_path)
        changed = next(p for p in sorted(src_file.rglob("*.txt")))
        changed.write_text("endret etter forhåndskopien\n", encoding="utf-8")
        delta = copy_tree(source, user.home_path, target, dst_root)
        assert delta.copied == 1 and delta.written == [str(changed.relative_to(src_file))]
        assert verify_tree(source, user.home_path, target, dst_root).ok
    finally:
        shutil.rmtree(lab.server_path(inv.zone(user.zone).file_server.name, dst_root), ignore_errors=True)


def test_unknown_and_changed_host_keys_are_refused(lab: Lab, lab_inventory: Inventory, tmp_path: Path) -> None:
    """A file server whose key is not in known_hosts, or differs from it, is refused before authentication."""
    inv = lab_inventory
    ssh = inv.platform.ssh
    fs = inv.municipalities["lillehammer"].legacy.file_server
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(FatalError, match="unknown host key"):
        FileServer(fs.host, fs.port, ssh.user, inv.path(ssh.key_file), empty).exists("/")
    lines = inv.path(ssh.known_hosts).read_text().splitlines()
    mine = next(line for line in lines if line.startswith(f"[{fs.host}]:{fs.port} "))
    other = next(line for line in lines if not line.startswith(f"[{fs.host}]:{fs.port} "))
    wrong = tmp_path / "wrong"
    wrong.write_text(mine.split(" ", 1)[0] + " " + other.split(" ", 1)[1] + "\n")
    with pytest.raises(FatalError, match="changed"):
        FileServer(fs.host, fs.port, ssh.user, inv.path(ssh.key_file), wrong).exists("/")
    with pytest.raises(FatalError, match="known_hosts"):
        FileServer(fs.host, fs.port, ssh.user, inv.path(ssh.key_file), tmp_path / "missing")


def test_device_config_written_atomically_with_previous_kept(
    connectors: Connectors, lab: Lab, lab_inventory: Inventory
) -> None:
    """A device config update keeps comments, writes .previous, is a no-op when equal, and restores exactly."""
    inv = lab_inventory
    device = inv.devices["lillehammer"][0]
    configs = connectors.devices()
    original = configs.read(device.device_id)
    assert original is not None and original.startswith("#")
    change = configs.update(device.device_id, {"rdp_server": "rds-kontor.plattform.ikomm.no"})
    assert change.changed and change.before == original
    assert settings(configs.read(device.device_id) or "")["rdp_server"] == "rds-kontor.plattform.ikomm.no"
    folder = lab.server_path("config-host", inv.platform.thin_client_config_host.config_root)
    assert (folder / f"{device.device_id}.conf.previous").read_text(encoding="utf-8") == original
    assert not list(folder.glob("*.ikomm-part"))
    assert configs.update(device.device_id, {"rdp_server": "rds-kontor.plattform.ikomm.no"}).changed is False
    assert configs.restore(device.device_id, original).changed
    assert configs.read(device.device_id) == original
    assert not (folder / f"{device.device_id}.conf.previous").exists()  # the undo leaves the host as it was
    (folder / f"{device.device_id}.conf.previous").write_text("an operator's own backup\n", encoding="utf-8")
    configs.update(device.device_id, {"rdp_server": "rds-kontor.plattform.ikomm.no"})
    configs.restore(device.device_id, original, "an operator's own backup\n")
    assert (folder / f"{device.device_id}.conf.previous").read_text(encoding="utf-8") == "an operator's own backup\n"
    (folder / f"{device.device_id}.conf.previous").unlink()
    with pytest.raises(InvalidInputError):
        configs.read("../../etc/passwd")

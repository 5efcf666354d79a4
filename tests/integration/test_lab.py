"""The lab's real servers hold the inventory's world: read it back through ldap3, paramiko and pywinrm."""

from __future__ import annotations

import json
import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path, PurePosixPath

import ldap3
import paramiko
import pytest
import winrm
from ldap3.core.exceptions import LDAPException, LDAPSocketOpenError

from ikomm.inventory import Inventory
from ikomm.inventory.models import DirectoryConfig, FileServerConfig
from ikomm.processes import pgid_of
from ikomm.secrets import resolve_secret
from lab import process, seed
from lab.manager import Lab

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def pristine(lab: Lab) -> None:
    """These tests read the seeded world: start from the lab's cache, whatever ran before them."""
    lab.up()


def connect(inv: Inventory, d: DirectoryConfig, ca_file: str | None = None) -> ldap3.Connection:
    tls = ldap3.Tls(
        validate=ssl.CERT_REQUIRED,
        ca_certs_file=ca_file or str(inv.path(d.ca_file or "")),
        valid_names=[d.tls_name] if d.tls_name else None,
    )
    server = ldap3.Server(d.host, port=d.port, use_ssl=True, tls=tls, connect_timeout=5)
    return ldap3.Connection(server, d.bind_dn, resolve_secret(d.password, inv), auto_bind=True, raise_exceptions=True)


def search_all(conn: ldap3.Connection, base: str, flt: str, attrs: list[str]) -> list[dict[str, object]]:
    return [
        e
        for e in conn.extend.standard.paged_search(base, flt, attributes=attrs, paged_size=200, generator=True)
        if e["type"] == "searchResEntry"
    ]


def sftp(inv: Inventory, host: str, port: int, known_hosts: Path | None = None) -> paramiko.SSHClient:
    ssh = inv.platform.ssh
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts or inv.path(ssh.known_hosts)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        host,
        port=port,
        username=ssh.user,
        key_filename=str(inv.path(ssh.key_file)),
        allow_agent=False,
        look_for_keys=False,
        timeout=5,
    )
    return client


def test_every_server_runs_and_answers(lab: Lab) -> None:
    """`lab status` sees every server of the inventory running and answering."""
    rows = lab.status()
    assert len(rows) == 14  # the owners' and the platform's twelve, and Ringebu's legacy directory and file server
    assert [s.name for s, running, answers in rows if not (running and answers)] == []


def test_platform_ad_holds_ous_and_application_groups(lab: Lab, lab_inventory: Inventory) -> None:
    """The platform AD, over LDAPS with the CA validated, has an OU per municipality and every app group."""
    inv = lab_inventory
    d = inv.platform.directory
    with connect(inv, d) as conn:
        ous = search_all(conn, d.users_dn, "(objectClass=organizationalUnit)", ["ou"])
        assert {str(e["dn"]).lower() for e in ous} >= {m.target_ou.lower() for m in inv.municipalities.values()}
        groups = search_all(conn, d.groups_dn, "(objectClass=group)", ["sAMAccountName"])
        wanted = {g for a in inv.applications.values() for g in a.groups.values()}
        assert {str(e["attributes"]["sAMAccountName"]) for e in groups} == wanted
        assert search_all(conn, d.users_dn, "(objectClass=user)", ["cn"]) == []  # nobody migrated yet


def test_legacy_ad_holds_users_groups_and_disabled_accounts(lab: Lab, lab_inventory: Inventory) -> None:
    """Lillehammer's legacy AD (Samba) has every user with æøå intact, their groups, and the disabled ones."""
    inv = lab_inventory
    muni = inv.municipalities["lillehammer"]
    d = muni.legacy.directory
    users = {u.legacy_id: u for u in inv.users["lillehammer"]}
    with connect(inv, d) as conn:
        found = search_all(
            conn,
            d.users_dn,
            "(objectClass=user)",
            ["sAMAccountName", "givenName", "sn", "userAccountControl", "memberOf", "mail"],
        )
        by_id = {str(e["attributes"]["sAMAccountName"]): e["attributes"] for e in found}
        assert set(by_id) == set(users)
        for legacy_id, user in users.items():
            attrs = by_id[legacy_id]
            assert (attrs["givenName"], attrs["sn"], attrs["mail"]) == (user.given_name, user.surname, user.email)
            assert bool(int(str(attrs["userAccountControl"])) & 2) == (not user.enabled)
            groups = {str(g).split(",")[0][3:].replace("\\", "") for g in attrs["memberOf"]}
            assert groups == set(user.legacy_groups)


@pytest.mark.parametrize("muni_id", ["gausdal", "oyer"])
def test_legacy_openldap_holds_posix_users_and_groups(lab: Lab, lab_inventory: Inventory, muni_id: str) -> None:
    """Gausdal's and Øyer's slapd hold posixAccount users (shadowExpire=1 when disabled) and groupOfNames."""
    inv = lab_inventory
    d = inv.municipalities[muni_id].legacy.directory
    users = {u.legacy_id: u for u in inv.users[muni_id]}
    with connect(inv, d) as conn:
        found = search_all(conn, d.users_dn, "(objectClass=posixAccount)", ["uid", "cn", "shadowExpire"])
        by_id = {str(e["attributes"]["uid"][0]): e["attributes"] for e in found}
        assert set(by_id) == set(users)
        for legacy_id, user in users.items():
            assert by_id[legacy_id]["cn"] == [f"{user.given_name} {user.surname}"]
            assert (by_id[legacy_id]["shadowExpire"] == 1) == (not user.enabled)
        groups = search_all(conn, d.groups_dn, "(objectClass=groupOfNames)", ["cn", "member"])
        members = {str(g["attributes"]["cn"][0]): {str(m) for m in g["attributes"]["member"]} for g in groups}
        for legacy_id, user in users.items():
            for group in user.legacy_groups:
                assert f"uid={legacy_id},{d.users_dn}" in members[group]


def test_directories_refuse_a_wrong_ca_and_plain_binds(lab: Lab, lab_inventory: Inventory, tmp_path: Path) -> None:
    """A certificate from another CA is refused; slapd refuses a simple bind without TLS."""
    inv = lab_inventory
    other_ca = tmp_path / "other-ca.pem"
    from lab.keys import LabCA

    other_ca.write_bytes(LabCA(tmp_path / "other").ca_file.read_bytes())
    for d in (inv.platform.directory, inv.municipalities["gausdal"].legacy.directory):
        with pytest.raises(LDAPSocketOpenError):
            connect(inv, d, ca_file=str(other_ca))
    d = inv.municipalities["gausdal"].legacy.directory
    plain = ldap3.Connection(
        ldap3.Server(d.host, port=389), d.bind_dn, resolve_secret(d.password, inv), raise_exceptions=True
    )
    with pytest.raises(LDAPException, match="confidentiality"):
        plain.bind()


def test_legacy_file_server_holds_the_users_trees(lab: Lab, lab_inventory: Inventory) -> None:
    """Over SFTP (host key checked), each legacy file server holds profile and home trees as seeded."""
    inv = lab_inventory
    for muni_id, muni in inv.municipalities.items():
        fs: FileServerConfig = muni.legacy.file_server
        user = inv.users[muni_id][1]
        local_root = lab.dir / "sshd" / fs.name / "root"
        with sftp(inv, fs.host, fs.port) as client:
            channel = client.open_sftp()
            home = channel.listdir(user.home_path)
            assert {"Dokumenter", "Bilder", "Tomt arkiv"} <= set(home)
            assert channel.listdir(f"{user.home_path}/Tomt arkiv") == []
            pictures = f"{user.home_path}/Bilder/tur på Hafjell.jpg"
            with channel.open(pictures, "rb") as fh:
                remote = fh.read()
            local = local_root / PurePosixPath(pictures).relative_to("/")
            assert remote == local.read_bytes()
            attrs = channel.stat(pictures)
            assert attrs.st_mtime == int(local.stat().st_mtime)
            assert seed.MTIME_FROM <= (attrs.st_mtime or 0) < seed.MTIME_TO
            assert "NTUSER.DAT" in channel.listdir(user.profile_path)
            with pytest.raises(IOError):
                channel.listdir("/etc")  # chrooted: nothing outside the file server's tree


def test_platform_file_servers_are_empty_before_migration(lab: Lab, lab_inventory: Inventory) -> None:
    """Each zone's platform file server has its profile and home roots, and nothing in them yet."""
    inv = lab_inventory
    for zone in inv.platform.zones:
        fs = zone.file_server
        with sftp(inv, fs.host, fs.port) as client:
            channel = client.open_sftp()
            assert channel.listdir(fs.profile_root) == []
            assert channel.listdir(fs.home_root) == []


def test_unknown_or_changed_host_key_is_refused(lab: Lab, lab_inventory: Inventory, tmp_path: Path) -> None:
    """With RejectPolicy, a host missing from known_hosts or with another key is refused."""
    inv = lab_inventory
    fs = inv.municipalities["gausdal"].legacy.file_server
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException):
        sftp(inv, fs.host, fs.port, known_hosts=empty)
    other = inv.municipalities["oyer"].legacy.file_server
    lines = inv.path(inv.platform.ssh.known_hosts).read_text().splitlines()
    oyer_key = next(line for line in lines if line.startswith(f"[{other.host}]:")).split(" ", 1)[1]
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[{fs.host}]:{fs.port} {oyer_key}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        sftp(inv, fs.host, fs.port, known_hosts=wrong)


def test_config_host_holds_one_config_per_device(lab: Lab, lab_inventory: Inventory) -> None:
    """Each thin client's config points at its municipality's legacy terminal server."""
    inv = lab_inventory
    ch = inv.platform.thin_client_config_host
    with sftp(inv, ch.host, ch.port) as client:
        channel = client.open_sftp()
        names = set(channel.listdir(ch.config_root))
        for muni_id, devices in inv.devices.items():
            for dev in devices:
                assert f"{dev.device_id}.conf" in names
            dev = devices[0]
            with channel.open(f"{ch.config_root}/{dev.device_id}.conf", "rb") as fh:
                config = fh.read().decode("utf-8")
            assert f"user={dev.assigned_user or ''}\n" in config
            assert f"rdp_server={inv.municipalities[muni_id].legacy.terminal_server.address}\n" in config


def broker_session(inv: Inventory, password: str | None = None) -> winrm.Session:
    b = inv.platform.broker
    return winrm.Session(
        f"{b.scheme}://{b.host}:{b.port}/wsman",
        auth=(b.user, password or resolve_secret(b.password, inv)),
        transport="basic",
        server_cert_validation="validate",
        ca_trust_path=str(inv.path(b.ca_file or "")),
    )


def test_broker_answers_pywinrm_over_https(lab: Lab, lab_inventory: Inventory) -> None:
    """pywinrm reaches the broker over HTTPS (CA validated) and reads collections and sessions."""
    inv = lab_inventory
    session = broker_session(inv)
    result = session.run_ps("Get-RDSessionCollection | ConvertTo-Json -Compress")
    assert result.status_code == 0, result.std_err
    collections = {c["CollectionName"]: c for c in json.loads(result.std_out)}
    assert set(collections) == {z.terminal_farm.collection for z in inv.platform.zones}
    sessions = json.loads(session.run_ps("Get-RDUserSession | ConvertTo-Json -Compress").std_out)
    expected = json.loads((lab.dir / "broker" / "state.json").read_text())["sessions"]
    assert len(sessions) == len(expected) > 0
    assert session.run_cmd("ipconfig").status_code == 1


def test_broker_refuses_a_wrong_password(lab: Lab, lab_inventory: Inventory) -> None:
    """A wrong password is refused with 401, as WinRM does."""
    with pytest.raises(winrm.exceptions.InvalidCredentialsError):
        broker_session(lab_inventory, password="wrong-password").run_ps("Get-RDSessionCollection")


def test_secrets_are_private_and_not_on_command_lines(lab: Lab) -> None:
    """The lab's secrets file is 0600, and no server has a password on its command line."""
    secrets = lab.dir / "secrets.env"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    values = [line.split("=", 1)[1] for line in secrets.read_text().splitlines()]
    for proc in process.load(lab.pids):
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")
        assert not any(v in cmdline for v in values), proc.name


def test_down_stops_everything_and_up_again_is_warm(lab: Lab, repo: Path) -> None:
    """`lab down` leaves no process of the lab behind and is idempotent; the next `lab up` is warm."""
    procs = process.load(lab.pids)
    groups = {p.pid for p in procs}
    assert sorted(lab.down()) == sorted(p.name for p in procs)
    leftover = [pid for pid in os.listdir("/proc") if pid.isdigit() and pgid_of(int(pid)) in groups]
    assert leftover == []
    assert lab.down() == []
    assert lab.up() == "warm"
    assert all(running and answers for _, running, answers in lab.status())


def test_cli_status_json(lab: Lab, lab_inventory: Inventory) -> None:
    """`ikomm lab status --json` lists every server as answering and exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "ikomm", "lab", "status", "--json", "--inventory", str(lab_inventory.root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 14 and all(r["answers"] for r in rows)

"""A new municipality joins without weakening the others: onboarding, least privilege and the isolation audit,
against the lab's platform AD (real ACLs in Samba) and file servers."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ikomm.acl import CONTAINER_INHERIT, WRITE_PROPERTY, Ace, granted, revoked, rid, sid_text
from ikomm.connectors import Connectors
from ikomm.connectors.directory import child_dn, equality_filter
from ikomm.errors import FatalError
from ikomm.inventory import Inventory, load_inventory
from ikomm.ledger import Ledger
from ikomm.naming import account_names
from ikomm.stages import DOMAIN_USERS_RID, ID_BASE
from ikomm.tenancy import layout_of
from lab.manager import Lab
from tests.integration.conftest import Env
from tests.integration.test_helpdesk_ui import few_of
from tests.integration.test_runbooks import run_page
from tests.integration.test_wave import check_systems

pytestmark = pytest.mark.integration

TENANT = "ringebu"
OWNERS = ("lillehammer", "gausdal", "oyer")


def output(env: Env) -> str:
    return (env.dir / "ikomm-output.log").read_text(encoding="utf-8")


def owners_world(inv: Inventory) -> dict[str, Any]:
    """Every object of the owner municipalities on the platform: entries with their ACLs, groups, folders."""
    made = Connectors(inv)
    ad = made.platform()
    world: dict[str, Any] = {}
    try:
        for muni in OWNERS:
            for entry in ad.search_acl(inv.municipalities[muni].target_ou, "(objectClass=*)", ["*"]):
                world[entry.dn] = dict(entry.attributes)
        for app in inv.applications.values():
            for muni in OWNERS:
                dn = child_dn("CN", app.groups[muni], inv.platform.directory.groups_dn)
                for entry in ad.search_acl(dn, "(objectClass=*)", ["*"]):
                    world[entry.dn] = dict(entry.attributes)
        tenant = inv.municipalities.get(TENANT)
        tenant_ids = set()  # the new municipality's own folders are not the owners'
        if tenant is not None and ad.read(tenant.target_ou, ["1.1"]) is not None:
            for entry in ad.search(tenant.target_ou, "(objectClass=user)", ["objectSid"]):
                tenant_ids.add(ID_BASE + rid(sid_text(entry.get("objectSid")[0])))
        for zone in inv.platform.zones:
            fs = made.zone_files(zone.id)
            for root in (zone.file_server.home_root, zone.file_server.profile_root):
                for top in fs.listing(root):
                    if top.uid not in tenant_ids:
                        world[f"{zone.id}:{top.path}"] = top
    finally:
        made.close()
    return world


def audit(env: Env, inv_dir: Path) -> tuple[int, list[dict[str, str]]]:
    before = len(output(env)) if (env.dir / "ikomm-output.log").exists() else 0
    code = env.ikomm("audit", "isolation", "--json", inventory=inv_dir).returncode
    text = output(env)[before:]
    return code, json.loads(text[text.index("{") :])["findings"]


@pytest.fixture
def inv_dir(env: Env, lab_inventory: Inventory, tmp_path: Path) -> Iterator[Path]:
    """A copy of the test inventory (with Ringebu's kit) that onboarding may change."""
    folder = tmp_path / "inventory"
    shutil.copytree(lab_inventory.root, folder)
    yield folder


def onboard(env: Env, inv_dir: Path) -> Inventory:
    result = env.ikomm("tenant", "add", TENANT, "--name", "Ringebu", inventory=inv_dir)
    assert result.returncode == 0, output(env)[-3000:]
    return load_inventory(inv_dir)


def test_a_new_municipality_joins_without_weakening_the_others(env: Env, inv_dir: Path) -> None:
    """Onboarding leaves every owner's object as it was, the audit passes, the delegate is refused outside its
    own OU and groups, and Ringebu's wave runs end to end bound as its own account."""
    inv = load_inventory(inv_dir)
    oyer_ids = [u.legacy_id for u in inv.users["oyer"][:3]]
    wave = env.wave_file("w-oyer", ["oyer"], oyer_ids, approval_required=False)
    assert env.ikomm("wave", "run", str(wave), inventory=inv_dir).returncode == 0, output(env)[-3000:]
    before = owners_world(inv)
    assert any("employeenumber" in attrs for attrs in before.values() if isinstance(attrs, dict))  # accounts too

    inv = onboard(env, inv_dir)
    assert "onboarded" in output(env)
    again = env.ikomm("tenant", "add", TENANT, "--name", "Ringebu", inventory=inv_dir)
    assert again.returncode == 0 and "already onboarded: nothing to do" in output(env)
    assert owners_world(inv) == before  # 0 differences in every owner's entries, ACLs and folders
    assert audit(env, inv_dir) == (0, [])

    # the delegate: refused everywhere outside its own OU and application groups
    delegate = Connectors(inv, tenant=TENANT)
    admin = Connectors(inv)
    try:
        ad = delegate.platform()
        oyer_account = next(iter(admin.platform().search(inv.municipalities["oyer"].target_ou, "(objectClass=user)")))
        oyer_group = child_dn("CN", inv.applications["gerica"].groups["oyer"], inv.platform.directory.groups_dn)
        attempts: list[Callable[[], object]] = [
            lambda: ad.modify(oyer_account.dn, {"title": ["taken over"]}),
            lambda: ad.set_enabled(oyer_account.dn, False),
            lambda: ad.add_member(oyer_group, oyer_account.dn),
            lambda: ad.add(
                f"CN=intruder,{inv.municipalities['oyer'].target_ou}", ["user"], {"sAMAccountName": "intruder"}
            ),
            lambda: ad.move(oyer_account.dn, inv.municipalities[TENANT].target_ou),
        ]
        for attempt in attempts:
            with pytest.raises(FatalError, match="insufficientAccessRights"):
                attempt()
    finally:
        delegate.close()
    assert owners_world(inv) == before

    # Ringebu's wave binds as svc-ringebu: every account it made is owned by that account
    wave = env.wave_file("w-ringebu", [TENANT], approval_required=False)
    assert env.ikomm("wave", "run", str(wave), inventory=inv_dir).returncode == 0, output(env)[-3000:]
    ledger = Ledger(env.ledger_url)
    seen = check_systems(inv, ledger, "w-ringebu")
    assert seen.get("verified", 0) >= 5 and set(seen) <= {"verified", "held", "left_out"}, seen
    try:
        ad = admin.platform()
        delegation = inv.municipalities[TENANT].delegation
        assert delegation is not None
        svc = sid_text(ad.read(delegation.account_dn, ["objectSid"]).get("objectSid")[0])  # type: ignore[union-attr]
        conn = ad.connection()
        from ldap3.protocol.microsoft import security_descriptor_control
        from winacl.dtyp.security_descriptor import SECURITY_DESCRIPTOR

        conn.search(
            inv.municipalities[TENANT].target_ou,
            f"(employeeNumber={TENANT}:*)",
            attributes=["nTSecurityDescriptor"],
            controls=security_descriptor_control(sdflags=0x01),
        )
        owners = {
            str(SECURITY_DESCRIPTOR.from_bytes(e["raw_attributes"]["nTSecurityDescriptor"][0]).Owner)
            for e in conn.response
            if e["type"] == "searchResEntry"
        }
        assert owners == {svc}
    finally:
        admin.close()
    assert owners_world(inv) == before
    assert audit(env, inv_dir) == (0, [])
    munis = (inv_dir / "municipalities.yaml").read_bytes()
    assert env.ikomm("tenant", "remove", TENANT, "--yes", inventory=inv_dir).returncode == 1
    assert "has users or data on the platform" in output(env) and "account CN=" in output(env)
    assert (inv_dir / "municipalities.yaml").read_bytes() == munis  # refused: nothing removed


def test_the_audit_finds_each_crossing(env: Env, lab: Lab, inv_dir: Path) -> None:
    """Each crossing planted on the platform is reported by its kind (exit 1); taken away, the audit passes."""
    inv = onboard(env, inv_dir)
    lay = layout_of(inv, TENANT, "Ringebu")
    made = Connectors(inv)
    ad = made.platform()
    lill_ou = inv.municipalities["lillehammer"].target_ou
    planted = f"CN=planted.user,{lill_ou}"
    ad.add(planted, ["user"], {"sAMAccountName": "planted.user", "employeeNumber": "lillehammer:planted"})
    planted_uid = ID_BASE + rid(sid_text(ad.read(planted, ["objectSid"]).get("objectSid")[0]))  # type: ignore[union-attr]
    admin_sid = sid_text(ad.read(lay.admin_group_dn, ["objectSid"]).get("objectSid")[0])  # type: ignore[union-attr]
    ringebu_gerica = lay.app_group_dn(inv, "gerica")
    fs = made.zone_files("office")
    home = f"{inv.zone('office').file_server.home_root}/planted.user"

    def ace_on_lillehammer() -> Callable[[], None]:
        descriptor = ad.read_acl(lill_ou)
        assert descriptor is not None
        new = granted(descriptor, [Ace(admin_sid, WRITE_PROPERTY)])
        assert new is not None
        ad.write_acl(lill_ou, new)
        return lambda: ad.write_acl(lill_ou, revoked(ad.read_acl(lill_ou) or b"", admin_sid) or b"")

    def nesting() -> Callable[[], None]:
        ad.add_member(lay.admin_group_dn, planted)
        return lambda: ad.remove_member(lay.admin_group_dn, planted) and None

    def placement() -> Callable[[], None]:
        moved = ad.move(planted, lay.target_ou)
        return lambda: ad.move(moved, lill_ou) and None

    def open_folder() -> Callable[[], None]:
        fs.ensure_folder(home, 0o705, (planted_uid, 0))  # others may read it (its group may not)
        return lambda: fs.remove_folder(home) and None

    def domain_users_folder() -> Callable[[], None]:
        fs.ensure_folder(home, 0o750, (planted_uid, ID_BASE + DOMAIN_USERS_RID))
        return lambda: fs.remove_folder(home) and None

    def entitlement() -> Callable[[], None]:
        ad.add_member(ringebu_gerica, planted)
        return lambda: ad.remove_member(ringebu_gerica, planted) and None

    kommuner = inv.platform.directory.users_dn  # OU=Kommuner, above every municipality's OU

    def with_ace(dn: str, ace: Ace) -> Callable[[], None]:
        descriptor = ad.read_acl(dn)
        assert descriptor is not None
        new = granted(descriptor, [ace])
        assert new is not None
        ad.write_acl(dn, new)
        return lambda: ad.write_acl(dn, descriptor)

    def inherited_from_kommuner() -> Callable[[], None]:  # written once, inherited by every municipality's OU
        return with_ace(kommuner, Ace(admin_sid, WRITE_PROPERTY, None, None, CONTAINER_INHERIT))

    def authenticated_users_write() -> Callable[[], None]:  # every account of every municipality
        return with_ace(lill_ou, Ace("S-1-5-11", WRITE_PROPERTY))

    neutral = f"CN=neutral.group,CN=Users,{inv.platform.directory.base_dn}"

    def nested_through_a_neutral_group() -> Callable[[], None]:
        ad.add(neutral, ["group"], {"sAMAccountName": "neutral.group"})
        ad.add_member(neutral, planted)
        ad.add_member(lay.admin_group_dn, neutral)

        def undo() -> None:
            ad.remove_member(lay.admin_group_dn, neutral)
            ad.delete(neutral)

        return undo

    tenant_folder = lay.folders["office"]
    lill_gerica = child_dn("CN", inv.applications["gerica"].groups["lillehammer"], inv.platform.directory.groups_dn)
    lill_gid = ID_BASE + rid(sid_text(ad.read(lill_gerica, ["objectSid"]).get("objectSid")[0]))  # type: ignore[union-attr]
    ringebu_gid = ID_BASE + rid(admin_sid)

    def tenant_folder_of_another_group() -> Callable[[], None]:
        fs.ensure_folder(tenant_folder, 0o2770, (0, lill_gid))
        return lambda: fs.ensure_folder(tenant_folder, 0o2770, (0, ringebu_gid)) and None

    def acl(path: str, *spec: str) -> Callable[[], None]:  # as an admin of the file server would, on the server
        real = lab.server_path("fs-office", path)
        subprocess.run(["setfacl", *spec, str(real)], check=True)
        return lambda: subprocess.run(["setfacl", "-b", str(real)], check=True) and None

    def tenant_folder_with_an_acl_for_another_group() -> Callable[[], None]:
        return acl(tenant_folder, "-m", f"g:{lill_gid}:rx")

    def home_folder_with_a_default_acl_for_domain_users() -> Callable[[], None]:
        fs.ensure_folder(home, 0o700, (planted_uid, 0))
        acl(home, "-d", "-m", f"g:{ID_BASE + DOMAIN_USERS_RID}:rx")
        return lambda: fs.remove_folder(home) and None  # the folder goes, its ACL with it

    cases: list[tuple[str, Callable[[], Callable[[], None]], str]] = [
        ("ace", ace_on_lillehammer, lill_ou),
        ("nesting", nesting, lay.admin_group_dn),
        ("placement", placement, f"CN=planted.user,{lay.target_ou}"),
        ("folder", open_folder, f"fs-office:{home}"),
        ("folder", domain_users_folder, f"fs-office:{home}"),
        ("entitlement", entitlement, ringebu_gerica),
        ("ace", inherited_from_kommuner, kommuner),
        ("ace", authenticated_users_write, lill_ou),
        ("nesting", nested_through_a_neutral_group, lay.admin_group_dn),
        ("folder", tenant_folder_of_another_group, f"fs-office:{tenant_folder}"),
        ("folder", tenant_folder_with_an_acl_for_another_group, f"fs-office:{tenant_folder}"),
        ("folder", home_folder_with_a_default_acl_for_domain_users, f"fs-office:{home}"),
    ]
    try:
        assert audit(env, inv_dir) == (0, [])
        for kind, plant, where in cases:
            undo = plant()
            code, findings = audit(env, inv_dir)
            assert code == 1 and [(f["kind"], f["where"]) for f in findings] == [(kind, where)], (kind, findings)
            undo()
            assert audit(env, inv_dir) == (0, []), kind
    finally:
        made.close()


def test_the_runbook_onboards_and_removes_leaving_everything_as_before(env: Env, inv_dir: Path) -> None:
    """runbooks/onboard-a-municipality.md as written (check, add twice, audit, remove, audit): afterwards the
    whole platform directory (every entry, attribute and DACL) and the inventory are as before, byte for byte."""
    inv = load_inventory(inv_dir)
    files = {p.relative_to(inv_dir): p.read_bytes() for p in inv_dir.rglob("*") if p.is_file()}
    made = Connectors(inv)

    def platform() -> dict[str, Any]:
        base = inv.platform.directory.base_dn
        found = made.platform().search_acl(base, "(objectClass=*)", ["*"])
        # the DC's RID Set counts the ids it handed out (svc-ringebu and its group took two): not undone
        return {e.dn: dict(e.attributes) for e in found if not e.dn.startswith("CN=RID Set,")}

    try:
        before = platform()
        out = run_page(env, "onboard-a-municipality.md", {"TENANT": TENANT, "NAME": "Ringebu"}, inv)
        assert out.count("isolation holds") == 3 and "svc-ringebu" in out and "not onboarded" in out
        after = platform()
    finally:
        made.close()
    assert sorted(set(after) ^ set(before)) == []
    assert {dn for dn in before if before[dn] != after[dn]} == set()
    assert {p.relative_to(inv_dir): p.read_bytes() for p in inv_dir.rglob("*") if p.is_file()} == files


def test_a_broken_kit_is_refused_before_anything_is_written(env: Env, inv_dir: Path) -> None:
    """A kit with a bad row: exit 2 naming file, row and field; no OU on the platform, the inventory unchanged."""
    kit = inv_dir / "tenants" / TENANT / "users.csv"
    lines = kit.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].replace("@ringebu.kommune.no", "@")
    kit.write_text("\n".join(lines) + "\n", encoding="utf-8")
    inv = load_inventory(inv_dir)
    munis = (inv_dir / "municipalities.yaml").read_bytes()
    assert env.ikomm("tenant", "add", TENANT, "--name", "Ringebu", inventory=inv_dir).returncode == 2
    assert "tenants/ringebu/users.csv:4: field 'email'" in output(env)
    made = Connectors(inv)
    try:
        found = list(made.platform().search(inv.platform.directory.users_dn, equality_filter("ou", "Ringebu")))
    finally:
        made.close()
    assert found == [] and (inv_dir / "municipalities.yaml").read_bytes() == munis


def test_a_delegate_cannot_plant_an_account_for_another_municipality(env: Env, inv_dir: Path) -> None:
    """Ringebu's delegate makes, in its own OU, an account with an Øyer user's planned name and link
    (employeeNumber oyer:<id>): preflight refuses the Øyer wave before it writes anything; forced past preflight,
    the wave leaves that user failed with the reason and never enables, entitles or fills the planted account,
    while the wave's other users move."""
    inv = onboard(env, inv_dir)
    victim_id, other_id = few_of(inv, "oyer", moved=2, held=0)  # two whose applications are ready
    victim, other = (next(u for u in inv.users["oyer"] if u.legacy_id == i) for i in (victim_id, other_id))
    sam = account_names(inv)[("oyer", victim.legacy_id)]
    planted = child_dn("CN", sam, inv.municipalities[TENANT].target_ou)
    delegate = Connectors(inv, tenant=TENANT)
    try:
        delegate.platform().add(
            planted, ["user"], {"sAMAccountName": sam, "employeeNumber": f"oyer:{victim.legacy_id}"}
        )
    finally:
        delegate.close()
    wave = env.wave_file("w-plant", ["oyer"], [victim.legacy_id, other.legacy_id], approval_required=False)

    refused = env.ikomm("wave", "run", str(wave), inventory=inv_dir)
    assert refused.returncode != 0
    said = output(env)
    assert "not ours" in said and planted.lower() in said.lower(), said[-3000:]
    assert Ledger(env.ledger_url).users("w-plant") == []  # nothing written

    forced = env.ikomm("wave", "run", str(wave), "--skip-preflight", inventory=inv_dir)
    assert forced.returncode == 3, output(env)[-3000:]  # done, with the victim failed
    ledger = Ledger(env.ledger_url)
    states = {u.legacy_id: u for u in ledger.users("w-plant")}
    assert states[other.legacy_id].state == "verified"
    assert states[victim.legacy_id].state in ("failed", "held"), states[victim.legacy_id]
    assert "not adopted" in states[victim.legacy_id].reason
    admin = Connectors(inv)
    try:
        entry = admin.platform().read(planted, ["userAccountControl", "memberOf"])
        assert entry is not None and not entry.get("memberOf")  # no Øyer application group
        assert int(entry.get("userAccountControl")[0]) & 2  # still disabled
    finally:
        admin.close()

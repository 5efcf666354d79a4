"""Tenancy without servers: ACEs granted and revoked, the onboarded inventory, waves and campaigns of a tenant."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from winacl.dtyp.security_descriptor import SECURITY_DESCRIPTOR

from ikomm.acl import aces, granted, revoked
from ikomm.campaign import load_campaign, plan_campaign
from ikomm.connectors import Connectors, platform_directory
from ikomm.errors import FatalError, InventoryError
from ikomm.inventory import Inventory, load_inventory
from ikomm.inventory.load import load_tenant_kit, tenant_kits
from ikomm.tenancy import _write_files, checked, files_with_tenant, files_without_tenant, layout_of, ou_rights
from ikomm.waves import load_wave
from lab.synthetic import generate

SID = "S-1-5-21-1-2-3-1201"
PLAIN = "O:S-1-5-32-544G:S-1-5-32-544D:AI(A;;0xf01ff;;;SY)(A;CIID;0xf01bd;;;S-1-5-32-544)"


@pytest.fixture(scope="module")
def onboarded(tmp_path_factory: pytest.TempPathFactory) -> Inventory:
    """A generated inventory with Ringebu onboarded into its files (no server: the files only)."""
    folder = tmp_path_factory.mktemp("tenancy") / "inventory"
    generate(folder, users=200, seed=5, lab_dir="../lab", tenants=["ringebu"])
    inv = load_inventory(folder)
    kit = tenant_kits(folder)["ringebu"]
    _write_files(folder, files_with_tenant(inv, kit, layout_of(inv, "ringebu", "Ringebu")))
    return load_inventory(folder)


def test_rights_are_added_once_before_inherited_entries_and_revoked_to_the_same_bytes() -> None:
    """granted() adds missing explicit ACEs ahead of inherited ones, is idempotent; revoked() restores the bytes."""
    before = SECURITY_DESCRIPTOR.from_sddl(PLAIN).to_bytes()
    wanted = ou_rights(SID)
    after = granted(before, wanted)
    assert after is not None
    listed = aces(after)
    assert [a.trustee for a in listed] == ["S-1-5-18", SID, SID, "S-1-5-32-544"]
    assert all(any(a.covers(w) for a in listed) for w in wanted)
    assert granted(after, wanted) is None  # nothing missing: nothing to write
    assert revoked(after, SID) == before
    assert revoked(before, SID) is None


def test_onboarding_writes_the_municipality_its_groups_and_users(onboarded: Inventory) -> None:
    """The entry carries the delegation; every application has Ringebu's group; the kit's users are in users/."""
    muni = onboarded.municipalities["ringebu"]
    assert muni.delegation is not None and muni.delegation.password.env == "IKOMM_TENANT_RINGEBU_PASSWORD"
    assert muni.target_ou.startswith("OU=Ringebu,OU=Kommuner,") and muni.ownership_pct == 0
    assert all(a.groups["ringebu"].endswith("-Ringebu") for a in onboarded.applications.values())
    assert all(a.granted_by["ringebu"] == [f"rb-{a.id}"] for a in onboarded.applications.values())
    assert len(onboarded.users["ringebu"]) == 10
    back = files_without_tenant(onboarded, "ringebu")
    assert "ringebu" not in checked(onboarded, back).municipalities


def test_a_tenant_moves_in_waves_of_its_own_bound_as_its_account(onboarded: Inventory, tmp_path: Path) -> None:
    """A wave naming the tenant beside another municipality is refused, naming the field; alone, it binds as svc."""
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(
        yaml.safe_dump({"id": "mixed", "name": "m", "municipalities": ["oyer", "ringebu"], "users": {"all": True}})
    )
    with pytest.raises(InventoryError, match=r"mixed.yaml:\d+: field 'municipalities\[1\]': 'ringebu' has its own"):
        load_wave(mixed, onboarded)
    alone = tmp_path / "alone.yaml"
    alone.write_text(
        yaml.safe_dump({"id": "alone", "name": "a", "municipalities": ["ringebu"], "users": {"all": True}})
    )
    wave = load_wave(alone, onboarded)
    assert wave.tenant(onboarded) == "ringebu"
    assert platform_directory(onboarded, wave.tenant(onboarded)).bind_dn == "svc-ringebu@plattform.ikomm.no"
    assert platform_directory(onboarded).bind_dn.startswith("Administrator@")
    with pytest.raises(FatalError, match="no delegated account"):
        Connectors(onboarded, tenant="oyer")


def test_the_campaign_never_puts_a_tenant_in_a_shared_wave(onboarded: Inventory, tmp_path: Path) -> None:
    """Sweeps and the last call of a tenant are its own; the owners' waves are as they were."""
    spec = {
        "id": "t",
        "name": "T",
        "start": "2026-01-05",  # before some applications are ready: there are sweeps
        "nights": {"weekdays": ["mon", "tue", "wed", "thu"], "start": "18:00", "end": "23:00"},
        "users_per_hour": 10,
        "max_users_per_night": 40,
        "order": ["oyer", "ringebu", "gausdal", "lillehammer"],
    }
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(spec))
    plan = plan_campaign(onboarded, load_campaign(path, onboarded))
    assert any(w.kind == "sweep" for w in plan.waves)
    for wave in plan.waves:
        assert "ringebu" not in wave.municipalities or wave.municipalities == ["ringebu"], wave.id
    assert [w.id for w in plan.waves if w.kind == "last-call"][-1].endswith("-last-call-ringebu")
    planned = [wu.key for w in plan.waves for wu in w.users if wu.muni == "ringebu"]
    assert len(planned) == len(set(planned))


def test_the_generator_writes_a_kit_without_changing_the_owners(tmp_path: Path) -> None:
    """With or without Ringebu's kit, the owners' files are the same bytes; an unknown neighbour is refused."""
    generate(tmp_path / "a", users=100, seed=3)
    generate(tmp_path / "b", users=100, seed=3, tenants=["ringebu"])
    a = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()}
    b = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert {k: v for k, v in b.items() if k.parts[0] != "tenants"} == a
    kit = load_tenant_kit(tmp_path / "b" / "tenants" / "ringebu")
    assert kit.spec.legacy.directory.host == "127.0.0.6" and kit.users and kit.devices
    with pytest.raises(ValueError, match="no tenant named narnia"):
        generate(tmp_path / "c", users=100, tenants=["narnia"])


def test_a_kit_with_problems_names_each(tmp_path: Path) -> None:
    """A kit without devices.csv and with another id: every problem, each with its file."""
    generate(tmp_path / "inv", users=60, seed=3, tenants=["ringebu"])
    kit = tmp_path / "inv" / "tenants" / "ringebu"
    shutil.copytree(kit, tmp_path / "kits" / "other")
    (tmp_path / "kits" / "other" / "devices.csv").unlink()
    with pytest.raises(InventoryError) as caught:
        load_tenant_kit(tmp_path / "kits" / "other")
    text = str(caught.value)
    assert "kits/other/devices.csv: file is missing" in text
    assert "kits/other/tenant.yaml:" in text and "must be the kit folder's name 'other'" in text
    with pytest.raises(InventoryError, match="not a tenant kit"):
        load_tenant_kit(tmp_path / "inv")

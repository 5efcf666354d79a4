"""The repository's inventory and the synthetic generator."""

from __future__ import annotations

from pathlib import Path

from ikomm.inventory import load_inventory
from ikomm.naming import fold
from lab.synthetic import generate


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_repository_inventory_is_the_2500_user_sample(repo: Path) -> None:
    """inventory/ holds the generated 2,500-user sample, valid, split about 1,750 / 400 / 350."""
    inv = load_inventory(repo / "inventory")
    assert {m: len(u) for m, u in inv.users.items()} == {"lillehammer": 1750, "gausdal": 400, "oyer": 350}
    assert len(inv.applications) == 50
    assert 90 <= len(inv.servers) <= 120
    assert inv.municipalities["oyer"].name == "Øyer"


def test_repository_inventory_matches_the_generator(repo: Path, tmp_path: Path) -> None:
    """The committed sample is exactly what `ikomm lab generate` writes with the defaults and Ringebu's tenant kit."""
    generate(tmp_path / "inventory", tenants=["ringebu"])
    assert _tree_bytes(tmp_path / "inventory") == _tree_bytes(repo / "inventory")


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    """Generation is deterministic in seed and size."""
    generate(tmp_path / "a", users=50, seed=11)
    generate(tmp_path / "b", users=50, seed=11)
    generate(tmp_path / "c", users=50, seed=12)
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")
    assert _tree_bytes(tmp_path / "a") != _tree_bytes(tmp_path / "c")


def test_sample_has_the_hard_cases(repo: Path) -> None:
    """Names with æøå, the same name in two municipalities, long names, no thin client, disabled accounts."""
    inv = load_inventory(repo / "inventory")
    users = [u for _, u in inv.all_users()]
    assert any(set("æøåÆØÅ") & set(u.given_name + u.surname) for u in users)
    kari = [m for m, u in inv.all_users() if (u.given_name, u.surname) == ("Kari", "Nordmann")]
    assert len(set(kari)) == 3
    assert any(len(fold(f"{u.given_name}.{u.surname}")) > 20 for u in users)
    assert any(u.device is None for u in users)
    assert 5 <= sum(not u.enabled for u in users) <= 60
    assert any(a.ready_from.year > 2026 for a in inv.applications.values())
    spare = [d for devices in inv.devices.values() for d in devices if d.assigned_user is None]
    assert spare


def test_fold_transliterates_norwegian_letters() -> None:
    """æ→ae, ø→o, å→aa, as the naming policy wants."""
    assert fold("Ærlig Øystein Åsgård") == "Aerlig Oystein Aasgaard"

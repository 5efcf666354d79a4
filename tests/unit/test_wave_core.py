"""Pure logic of the wave: naming, wave files, the ledger, quoting and path rules of the connectors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ikomm.budget import Budget
from ikomm.connectors.broker import ps_quote
from ikomm.connectors.devices import settings, with_settings
from ikomm.connectors.files import inside, is_junk
from ikomm.credentials import new_password
from ikomm.errors import InvalidInputError, InventoryError
from ikomm.inventory import Inventory, load_inventory
from ikomm.ledger import Ledger
from ikomm.naming import MAX_SAM, account_names, base_name, with_suffix
from ikomm.waves import load_wave

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def inv() -> Inventory:
    return load_inventory(REPO / "inventory")


def test_account_names_are_unique_short_ascii_and_deterministic(inv: Inventory) -> None:
    """Every user gets a unique name of at most 20 of a-z0-9.-; the same inventory gives the same names."""
    names = account_names(inv)
    assert len(set(names.values())) == len(names) == inv.user_count()
    assert all(
        len(n) <= MAX_SAM and n.replace(".", "").replace("-", "").isalnum() and n.isascii() for n in names.values()
    )
    assert names == account_names(inv)
    karis = sorted(n for n in names.values() if n.startswith("kari.nordmann"))
    assert karis[0] == "kari.nordmann" and len(karis) >= 3  # the largest owner's Kari keeps the plain name


def test_base_name_transliterates_and_truncates() -> None:
    """æ→ae, ø→o, å→aa; first given name, last surname; a number replaces the tail when needed."""
    assert base_name("Åse Marie", "Bjørnstad-Ødegård") == "aase.bjornstad-odegaard"
    assert with_suffix("aase.bjornstad-odegaard", 1) == "aase.bjornstad-odega"
    assert with_suffix("aase.bjornstad-odegaard", 12) == "aase.bjornstad-ode12"
    assert base_name("Zoë", "D'Arcy") == "zoe.darcy"


def write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


def test_wave_file_problems_name_file_line_and_field(inv: Inventory, tmp_path: Path) -> None:
    """Unknown municipality, unknown user, bad option and a wrong id are all reported, each located."""
    path = write(
        tmp_path,
        "w1.yaml",
        "id: w2\nname: x\nmunicipalities: [lillehammer, nowhere]\n"
        "users:\n  legacy_ids: [nobody]\noptions:\n  concurrency: 0\n",
    )
    with pytest.raises(InventoryError) as caught:
        load_wave(path, inv)
    text = str(caught.value)
    assert "w1.yaml:7: field 'options.concurrency'" in text
    with pytest.raises(InventoryError) as caught:
        load_wave(
            write(
                tmp_path,
                "w1.yaml",
                "id: w2\nname: x\nmunicipalities: [lillehammer, nowhere]\nusers:\n  legacy_ids: [nobody]\n",
            ),
            inv,
        )
    problems = {(p.row, p.field) for p in caught.value.problems}
    assert problems == {(1, "id"), (3, "municipalities[1]"), (5, "users.legacy_ids[0]")}


def test_wave_selection_by_department_site_and_csv(inv: Inventory, tmp_path: Path) -> None:
    """Departments, sites and a CSV select the union; a bad CSV row names its line and column."""
    write(tmp_path, "list.csv", "municipality,legacy_id\ngausdal,gd10001\noyer,nobody\n")
    path = write(tmp_path, "w.yaml", "id: w\nname: x\nmunicipalities: [gausdal, oyer]\nusers:\n  csv: list.csv\n")
    with pytest.raises(InventoryError) as caught:
        load_wave(path, inv)
    assert [(p.file, p.row, p.field) for p in caught.value.problems] == [("list.csv", 3, "legacy_id")]
    write(tmp_path, "list.csv", "municipality,legacy_id\ngausdal,gd10001\n")
    path = write(
        tmp_path,
        "w.yaml",
        "id: w\nname: x\nmunicipalities: [gausdal, oyer]\nusers:\n  csv: list.csv\n  departments: [kultur]\n",
    )
    wave = load_wave(path, inv)
    assert "gausdal/gd10001" in {u.key for u in wave.users}
    assert {u.user.department for u in wave.users} == {"kultur", inv.users["gausdal"][0].department}
    pilot = load_wave(REPO / "waves" / "pilot.yaml", inv)
    assert {u.muni for u in pilot.users} == {"lillehammer", "gausdal", "oyer"}


def test_ledger_records_once_and_lists_newest_first(tmp_path: Path) -> None:
    """A change recorded twice is one record with the first undo data; states and events go together."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    ledger.open_wave("w", [("a/1", "a", "1"), ("a/2", "a", "2")])
    ledger.open_wave("w", [("a/1", "a", "1")])  # again: nothing doubled
    first = ledger.plan_change("a/1", "w", "account", "ldap:platform", "modify", "CN=x", {"before": {"title": ["old"]}})
    again = ledger.plan_change("a/1", "w", "account", "ldap:platform", "modify", "CN=x", {"before": {"title": ["new"]}})
    assert first == again
    second = ledger.plan_change("a/1", "w", "entitle", "ldap:platform", "add-member", "CN=g", {})
    ledger.confirm(first)
    assert [c.id for c in ledger.changes("a/1")] == [second, first]
    assert ledger.changes("a/1")[1].undo == {"before": {"title": ["old"]}}
    ledger.set_user("a/1", "failed", "undone", "why", wave="w")
    assert ledger.user("a/1").reason == "why"  # type: ignore[union-attr]
    assert [e["state"] for e in ledger.events("a/1")] == ["pending", "failed"]
    assert ledger.counts("w") == {("a", "failed"): 1, ("a", "pending"): 1}
    assert ledger.progress("w") == (1, 0)  # final, prepared: counted by the database for the progress artifact
    ledger.set_user("a/2", "running", "prepared", "ready for the cutover", wave="w")
    assert ledger.progress("w") == (1, 1) and ledger.progress("other") == (0, 0)
    ledger.mark_undone(first)
    assert ledger.plan_change("a/1", "w", "account", "ldap:platform", "modify", "CN=x", {"before": 2}) == first
    assert ledger.changes("a/1", ("account",))[0].undo == {"before": 2}  # made again after an undo: a new before


def test_budget_trips_on_share_and_minimum() -> None:
    """The budget needs both the minimum count and the share; once tripped, nobody new starts."""
    budget = Budget(share=0.1, minimum=3)
    for _ in range(10):
        assert budget.start()
    budget.fail()
    budget.fail()
    assert not budget.tripped
    budget.fail()
    assert budget.tripped and not budget.start()


def test_quoting_paths_and_device_settings() -> None:
    """PowerShell literals, junk rules, symlink containment and config rewriting."""
    assert ps_quote("O'Brien ‘x’ $(rm) `n; a") == "'O''Brien ‘‘x’’ $(rm) `n; a'"
    with pytest.raises(InvalidInputError):
        ps_quote("line\nbreak")
    assert is_junk("Bilder/Thumbs.db") and is_junk("AppData/Local/Temp", folder=True) and is_junk("~$doc.docx")
    assert not is_junk("Dokumenter/temp.txt") and not is_junk("Temp", folder=False)
    assert inside("a/b", "../c") == "a/c" and inside("a", "../../x") is None and inside("", "/etc") is None
    text = "# c\nuser=\nrdp_server=old\n"
    new = with_settings(text, {"rdp_server": "new", "rdp_collection": "K"})
    assert new == "# c\nuser=\nrdp_server=new\nrdp_collection=K\n" and settings(new)["rdp_collection"] == "K"
    with pytest.raises(InvalidInputError):
        with_settings(text, {"user": "a\nrdp_server=evil"})
    pw = new_password()
    assert len(pw) == 18 and any(c.isdigit() for c in pw) and not pw.isalnum()

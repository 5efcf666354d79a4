"""A corpus of broken inventories: each names the right file, row (line) and field, and never a secret."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ikomm.cli import app
from ikomm.errors import InventoryError
from ikomm.inventory import load_inventory
from lab.synthetic import generate


@dataclass(frozen=True)
class Case:
    """Break one file of a valid inventory; expect one problem at file, row and field."""

    id: str
    file: str
    breaks: Callable[[str], str]
    row: int | Callable[[str], int] | None
    field: str
    says: str


def line_no(needle: str, nth: int = 1) -> Callable[[str], int]:
    """The 1-based line of the nth line containing needle (looked up in the broken text)."""

    def find(text: str) -> int:
        return [i for i, line in enumerate(text.splitlines(), 1) if needle in line][nth - 1]

    return find


def csv_cell(row: int, column: str, value: str) -> Callable[[str], str]:
    """Set one cell of a CSV (row counts lines, header = 1) to value."""

    def change(text: str) -> str:
        lines = text.splitlines()
        header = lines[0].split(",")
        cells = lines[row - 1].split(",")
        cells[header.index(column)] = value
        lines[row - 1] = ",".join(cells)
        return "\n".join(lines) + "\n"

    return change


def replace(old: str, new: str, count: int = 1) -> Callable[[str], str]:
    def change(text: str) -> str:
        assert old in text, f"test setup: {old!r} not in file"
        return text.replace(old, new, count)

    return change


def duplicate_row(row: int) -> Callable[[str], str]:
    def change(text: str) -> str:
        lines = text.splitlines()
        return "\n".join([*lines, lines[row - 1]]) + "\n"

    return change


def drop_column(column: str) -> Callable[[str], str]:
    def change(text: str) -> str:
        rows = [line.split(",") for line in text.splitlines()]
        i = rows[0].index(column)
        return "\n".join(",".join(r[:i] + r[i + 1 :]) for r in rows) + "\n"

    return change


def last_line(text: str) -> int:
    return len(text.splitlines())


USERS = "users/gausdal.csv"
DEVICES = "devices/gausdal.csv"
MUNIS = "municipalities.yaml"
APPS = "applications.yaml"

CASES = [
    Case("duplicate-legacy-id", USERS, duplicate_row(2), last_line, "legacy_id", "duplicate legacy_id"),
    Case("bad-email", USERS, csv_cell(3, "email", "not-an-email"), 3, "email", "pattern"),
    Case("missing-column", USERS, drop_column("title"), 1, "title", "missing column"),
    Case("unknown-column", USERS, replace("legacy_id,", "legacy_idd,"), 1, "legacy_idd", "unknown column"),
    Case("stray-delimiter", USERS, csv_cell(4, "title", "lærer,rektor"), 4, "", "stray delimiter"),
    Case("unknown-zone", USERS, csv_cell(2, "zone", "kantine"), 2, "zone", "unknown zone 'kantine'"),
    Case("enabled-not-bool", USERS, csv_cell(3, "enabled", "yes"), 3, "enabled", "'true' or 'false'"),
    Case("unknown-device", USERS, csv_cell(2, "device", "tc-gaus-99999"), 2, "device", "unknown device"),
    Case("home-outside-root", USERS, csv_cell(2, "home_path", "/etc/passwd"), 2, "home_path", "home_root"),
    Case("relative-profile-path", USERS, csv_cell(2, "profile_path", "../x"), 2, "profile_path", "absolute"),
    Case("legacy-id-with-space", USERS, csv_cell(3, "legacy_id", "gd 1"), 3, "legacy_id", "pattern"),
    Case("missing-given-name", USERS, csv_cell(4, "given_name", ""), 4, "given_name", "at least 1 character"),
    Case("bad-mac", DEVICES, csv_cell(2, "mac", "00:1e:c9:zz:01:02"), 2, "mac", "pattern"),
    Case(
        "duplicate-mac",
        DEVICES,
        lambda t: csv_cell(3, "mac", t.splitlines()[1].split(",")[1])(t),
        3,
        "mac",
        "duplicate MAC",
    ),
    Case(
        "unknown-assigned-user",
        DEVICES,
        csv_cell(2, "assigned_user", "nobody"),
        2,
        "assigned_user",
        "unknown user 'nobody'",
    ),
    Case(
        "bad-dn",
        MUNIS,
        replace("base_dn: dc=gausdal,dc=kommune,dc=no", "base_dn: dc=gausdal,,dc=no"),
        line_no("base_dn: dc=gausdal,,dc=no"),
        "municipalities[1].legacy.directory.base_dn",
        "not a valid DN",
    ),
    Case(
        "unknown-key",
        MUNIS,
        replace("ownership_pct: 16", "ownership_pc: 16"),
        line_no("ownership_pc: 16"),
        "municipalities[1].ownership_pc",
        "unknown field",
    ),
    Case(
        "shares-not-100",
        MUNIS,
        replace("ownership_pct: 16", "ownership_pct: 26"),
        line_no("municipalities:"),
        "municipalities",
        "add up to 110 %",
    ),
    Case(
        "target-ou-outside-platform",
        MUNIS,
        replace("OU=Gausdal,OU=Kommuner,DC=plattform,DC=ikomm,DC=no", "OU=Gausdal,DC=gausdal,DC=no"),
        line_no("target_ou: OU=Gausdal,DC=gausdal"),
        "municipalities[1].target_ou",
        "under the platform base DN",
    ),
    Case(
        "password-as-value",
        MUNIS,
        replace("password:\n        env: IKOMM_LEGACY_GAUSDAL_PASSWORD", "password: Hemmelig-Passord-123"),
        line_no("password: Hemmelig"),
        "municipalities[1].legacy.directory.password",
        "never values",
    ),
    Case(
        "unknown-app-zone",
        APPS,
        replace("zone: health", "zone: helse"),
        line_no("zone: helse"),
        "applications[0].zone",
        "unknown zone 'helse'",
    ),
    Case(
        "app-group-unknown-muni",
        APPS,
        replace("    gausdal: APP-Gerica-Gausdal", "    lunner: APP-Gerica-Lunner"),
        line_no("lunner: APP-Gerica-Lunner"),
        "applications[0].groups.lunner",
        "unknown municipality 'lunner'",
    ),
    Case(
        "duplicate-app-id",
        APPS,
        replace("id: profil", "id: gerica"),
        line_no("id: gerica", nth=2),
        "applications[1].id",
        "duplicate application id",
    ),
    Case(
        "seat-limit-zero",
        APPS,
        lambda t: t.replace("seat_limit:", "seat_limit: 0 #", 1),
        line_no("seat_limit: 0"),
        "applications[0].seat_limit",
        "greater than 0",
    ),
    Case(
        "bad-date",
        APPS,
        replace("ready_from: 2026-01-05", "ready_from: 2026-13-45"),
        line_no("2026-13-45"),
        "applications[0].ready_from",
        "date",
    ),
    Case(
        "bad-server-address",
        "servers.yaml",
        replace("address: 10.20.10.11", "address: 10.20..11"),
        line_no("10.20..11"),
        "servers[0].address",
        "not an IP address or host name",
    ),
    Case(
        "ldaps-without-ca",
        "platform.yaml",
        replace("  ca_file: ../lab/tls/lab-ca.pem\n", "", 1),
        line_no("directory:"),
        "directory",
        "'ca_file' is required",
    ),
    Case(
        "invalid-yaml",
        "platform.yaml",
        replace("zones:\n", "zones:\n\t- broken\n"),
        line_no("\t- broken"),
        "",
        "not valid YAML",
    ),
    Case(
        "duplicate-yaml-key",
        "platform.yaml",
        replace("secrets_file:", "lab: {dir: x}\nsecrets_file:"),
        line_no("lab: {dir: x}"),
        "lab",
        "duplicate key",
    ),
]


@pytest.fixture(scope="module")
def base_inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("base") / "inventory"
    generate(folder, users=24, seed=3, lab_dir="../lab")
    load_inventory(folder)  # the base is valid
    return folder


def break_inventory(base: Path, target: Path, case: Case) -> str:
    shutil.copytree(base, target)
    path = target / case.file
    text = case.breaks(path.read_text(encoding="utf-8"))
    path.write_text(text, encoding="utf-8")
    return text


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_broken_inventory_names_file_row_and_field(base_inventory: Path, tmp_path: Path, case: Case) -> None:
    """Each broken file yields a problem naming its file, its line and its field, with a useful reason."""
    text = break_inventory(base_inventory, tmp_path / "inv", case)
    with pytest.raises(InventoryError) as caught:
        load_inventory(tmp_path / "inv")
    problems = caught.value.problems
    row = case.row(text) if callable(case.row) else case.row
    matching = [p for p in problems if p.file == case.file and p.field == case.field and case.says in p.message]
    assert matching, f"expected {case.file}:{row} field {case.field!r} ~ {case.says!r}; got:\n{caught.value}"
    assert matching[0].row == row, f"wrong row: {matching[0]}"


def test_users_file_not_utf8(base_inventory: Path, tmp_path: Path) -> None:
    """A Latin-1 users file is reported at the line of its first non-UTF-8 byte, and nothing cascades from it."""
    shutil.copytree(base_inventory, tmp_path / "inv")
    path = tmp_path / "inv" / USERS
    text = path.read_text(encoding="utf-8")
    line, char = next((i, c) for i, row in enumerate(text.splitlines(), 1) for c in row if not c.isascii())
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(InventoryError) as caught:
        load_inventory(tmp_path / "inv")
    expected = f"{USERS}:{line}: not UTF-8 (byte 0x{ord(char):02x}); save the file as UTF-8"
    assert [str(p) for p in caught.value.problems] == [expected]


def test_unknown_municipality_file(base_inventory: Path, tmp_path: Path) -> None:
    """A users file for a municipality that municipalities.yaml does not know is named as such."""
    shutil.copytree(base_inventory, tmp_path / "inv")
    shutil.copy(tmp_path / "inv" / USERS, tmp_path / "inv" / "users" / "lunner.csv")
    with pytest.raises(InventoryError) as caught:
        load_inventory(tmp_path / "inv")
    assert any(
        p.file == "users/lunner.csv" and "unknown municipality 'lunner'" in p.message for p in caught.value.problems
    )


def test_user_in_two_municipalities(base_inventory: Path, tmp_path: Path) -> None:
    """The same email in two municipalities' files is reported as one user in two municipalities."""
    shutil.copytree(base_inventory, tmp_path / "inv")
    gausdal_email = (tmp_path / "inv" / USERS).read_text(encoding="utf-8").splitlines()[2].split(",")[3]
    oyer = tmp_path / "inv" / "users" / "oyer.csv"
    oyer.write_text(csv_cell(2, "email", gausdal_email)(oyer.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(InventoryError) as caught:
        load_inventory(tmp_path / "inv")
    [problem] = caught.value.problems
    assert (problem.file, problem.row, problem.field) == ("users/oyer.csv", 2, "email")
    assert "a user in two municipalities" in problem.message and f"{USERS}:3" in problem.message


def test_missing_file(base_inventory: Path, tmp_path: Path) -> None:
    """A missing inventory file is named."""
    shutil.copytree(base_inventory, tmp_path / "inv")
    (tmp_path / "inv" / "servers.yaml").unlink()
    with pytest.raises(InventoryError) as caught:
        load_inventory(tmp_path / "inv")
    assert [str(p) for p in caught.value.problems] == ["servers.yaml: file is missing"]


def test_secret_value_never_echoed(base_inventory: Path, tmp_path: Path) -> None:
    """A password written into the inventory is refused without repeating it, in the exception and the CLI."""
    case = next(c for c in CASES if c.id == "password-as-value")
    break_inventory(base_inventory, tmp_path / "inv", case)
    with pytest.raises(InventoryError) as caught:
        load_inventory(tmp_path / "inv")
    assert "Hemmelig-Passord-123" not in str(caught.value)
    result = CliRunner().invoke(app, ["inventory", "validate", "--inventory", str(tmp_path / "inv")])
    assert result.exit_code == 2
    assert "Hemmelig-Passord-123" not in result.output


def test_all_problems_reported_at_once(base_inventory: Path, tmp_path: Path) -> None:
    """Validation does not stop at the first problem: a lead fixes the whole file in one go."""
    shutil.copytree(base_inventory, tmp_path / "inv")
    path = tmp_path / "inv" / USERS
    text = csv_cell(2, "zone", "kantine")(path.read_text(encoding="utf-8"))
    path.write_text(csv_cell(3, "email", "x")(text), encoding="utf-8")
    with pytest.raises(InventoryError) as caught:
        load_inventory(tmp_path / "inv")
    assert {(p.row, p.field) for p in caught.value.problems} == {(2, "zone"), (3, "email")}


def test_cli_validate_exit_codes(base_inventory: Path, tmp_path: Path) -> None:
    """`ikomm inventory validate` exits 0 on a valid inventory and 2 with the problem's location otherwise."""
    runner = CliRunner()
    ok = runner.invoke(app, ["inventory", "validate", "--inventory", str(base_inventory)])
    assert ok.exit_code == 0, ok.output
    assert "is valid" in ok.output
    case = next(c for c in CASES if c.id == "bad-mac")
    break_inventory(base_inventory, tmp_path / "inv", case)
    bad = runner.invoke(app, ["inventory", "validate", "--inventory", str(tmp_path / "inv"), "--json"])
    assert bad.exit_code == 2
    assert '"file": "devices/gausdal.csv"' in bad.output and '"row": 2' in bad.output

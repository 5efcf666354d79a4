"""Bad inventories and wave files, as an attacker or a careless lead writes them: each refused with exit 2,
the file, line and field named, no traceback, nothing written."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from ikomm.cli import app
from ikomm.connectors.devices import DeviceConfigs, with_settings
from ikomm.connectors.directory import child_dn
from ikomm.errors import InvalidInputError
from ikomm.inventory import load_inventory
from ikomm.waves import load_wave
from lab.synthetic import generate
from tests.unit.test_campaign_plan import CAMPAIGN

USERS = "users/gausdal.csv"
DEVICES = "devices/gausdal.csv"
MUNIS = "municipalities.yaml"
APPS = "applications.yaml"
PLATFORM = "platform.yaml"
SERVERS = "servers.yaml"


@dataclass(frozen=True)
class Case:
    """Break one file; expect a problem at file, line (a number, or the line holding a text) and field."""

    id: str
    file: str
    breaks: Callable[[str], str]
    line: int | str | None
    field: str


def cell(row: int, column: str, value: str) -> Callable[[str], str]:
    """Set one CSV cell (row counts lines, header = 1), quoting as csv does."""

    def change(text: str) -> str:
        rows = list(csv.reader(io.StringIO(text, newline="")))
        rows[row - 1][rows[0].index(column)] = value
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        return out.getvalue()

    return change


def copy_cell(row: int, column: str, from_row: int, suffix: str = "") -> Callable[[str], str]:
    def change(text: str) -> str:
        rows = list(csv.reader(io.StringIO(text, newline="")))
        return cell(row, column, rows[from_row - 1][rows[0].index(column)] + suffix)(text)

    return change


def sub(old: str, new: str) -> Callable[[str], str]:
    def change(text: str) -> str:
        assert old in text, f"test setup: {old!r} not in the file"
        return text.replace(old, new, 1)

    return change


def yaml_line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


DEEP = "[" * 5000 + "]" * 5000
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b]\n"
CONTROLS = {
    "nul": "\x00",
    "cr": "\r",
    "lf": "\n",
    "u2028": "\u2028",
    "nel": "\x85",
    "esc": "\x1b",
    "tab": "\t",
    "zero-width": "\u200b",
    "vt": "\x0b",
    "u2029": "\u2029",
}
YAML_ESCAPES = {"nul": "\\0", "cr": "\\r", "lf": "\\n", "u2028": "\\L", "nel": "\\N", "esc": "\\e"}

INVENTORY_CASES = [
    # a user's folder: the root itself, another user's, or inside another user's
    Case("home-is-root", USERS, cell(3, "home_path", "/srv/home"), 3, "home_path"),
    Case("home-is-root-slash", USERS, cell(3, "home_path", "/srv/home/"), 3, "home_path"),
    Case("home-is-root-dot", USERS, cell(3, "home_path", "/srv/home/."), 3, "home_path"),
    Case("profile-is-root", USERS, cell(2, "profile_path", "/srv/profiles"), 2, "profile_path"),
    Case("home-of-another-user", USERS, copy_cell(3, "home_path", 2), 3, "home_path"),
    Case("home-same-via-dot", USERS, cell(3, "home_path", "/srv/home/./gd10001"), 3, "home_path"),
    Case("home-inside-another", USERS, copy_cell(3, "home_path", 2, "/Documents"), 3, "home_path"),
    Case("profile-inside-another", USERS, copy_cell(4, "profile_path", 2, "/x"), 4, "profile_path"),
    Case("outer-named-after-inner", USERS, cell(2, "home_path", "/srv/home/gd10002/inner"), 2, "home_path"),
    # control and invisible characters, everywhere data reaches LDAP, SFTP, configs or a terminal
    *[Case(f"given-name-{n}", USERS, cell(3, "given_name", f"Ka{c}ri"), 3, "given_name") for n, c in CONTROLS.items()],
    Case("surname-esc", USERS, cell(2, "surname", "Nord\x1b[2Jmann"), 2, "surname"),
    Case("email-lf", USERS, cell(2, "email", "kari\n@gausdal.kommune.no"), 2, "email"),
    Case("department-u2028", USERS, cell(2, "department", "nav\u2028x"), 2, "department"),
    Case("title-nel", USERS, cell(2, "title", "le\x85der"), 2, "title"),
    Case("groups-lf", USERS, cell(2, "legacy_groups", "gd-nav\ngd-helse"), 2, "legacy_groups"),
    Case("groups-empty-name", USERS, cell(2, "legacy_groups", "gd-nav;;gd-helse"), 2, "legacy_groups"),
    Case("groups-trailing-separator", USERS, cell(2, "legacy_groups", "gd-nav;"), 2, "legacy_groups"),
    Case("home-esc", USERS, cell(2, "home_path", "/srv/home/gd\x1b1"), 2, "home_path"),
    Case("profile-u2028", USERS, cell(2, "profile_path", "/srv/profiles/gd\u20281"), 2, "profile_path"),
    Case("device-nel", USERS, cell(2, "device", "tc-gaus\x8500001"), 2, "device"),
    Case("legacy-id-nul", USERS, cell(2, "legacy_id", "gd\x001"), 2, "legacy_id"),
    Case("ten-megabyte-field", USERS, cell(2, "title", "x" * 10_000_000), 2, "title"),
    Case("site-lf", DEVICES, cell(2, "site", "Gausdal\nrådhus"), 2, "site"),
    Case("site-u2028", DEVICES, cell(2, "site", "Gausdal\u2028rådhus"), 2, "site"),
    Case("assigned-user-esc", DEVICES, cell(2, "assigned_user", "gd\x1b10001"), 2, "assigned_user"),
    Case("device-id-nul", DEVICES, cell(2, "device_id", "tc\x00"), 2, "device_id"),
    *[
        Case(
            f"municipality-name-{n}",
            MUNIS,
            sub("name: Gausdal\n", f'name: "Gaus{e}dal"\n'),
            "Gaus",
            "municipalities[1].name",
        )
        for n, e in YAML_ESCAPES.items()
    ],
    Case(
        "tls-name-wildcard",
        MUNIS,
        sub("tls_name: ldap.gausdal.kommune.no", "tls_name: '*.gausdal.kommune.no'"),
        "*.gausdal",
        "municipalities[1].legacy.directory.tls_name",
    ),
    Case(
        "legacy-security-plain",
        MUNIS,
        sub("security: ldaps", "security: plain"),
        "    directory:",
        "municipalities[0].legacy.directory",
    ),
    Case(
        "upn-suffix-nel",
        MUNIS,
        sub("upn_suffix: gausdal.kommune.no", 'upn_suffix: "\\Ngausdal.kommune.no"'),
        "\\Ngausdal",
        "municipalities[1].upn_suffix",
    ),
    Case(
        "target-ou-cr",
        MUNIS,
        sub(
            "target_ou: OU=Gausdal,OU=Kommuner,DC=plattform,DC=ikomm,DC=no",
            'target_ou: "\\rOU=Gausdal,DC=plattform,DC=ikomm,DC=no"',
        ),
        "\\rOU=Gausdal",
        "municipalities[1].target_ou",
    ),
    Case(
        "ownership-true",
        MUNIS,
        sub("ownership_pct: 16", "ownership_pct: true"),
        "ownership_pct: true",
        "municipalities[1].ownership_pct",
    ),
    Case(
        "port-true", MUNIS, sub("port: 2222", "port: true"), "port: true", "municipalities[0].legacy.file_server.port"
    ),
    Case(
        "home-root-lf",
        MUNIS,
        sub("home_root: /srv/home", 'home_root: "/srv/home\\n"'),
        "home_root:",
        "municipalities[0].legacy.file_server.home_root",
    ),
    Case(
        "terminal-server-esc",
        MUNIS,
        sub("name: ts01.gausdal.kommune.no", 'name: "\\ets01.gausdal.kommune.no"'),
        "ts01.gausdal",
        "municipalities[1].legacy.terminal_server.name",
    ),
    Case(
        "attribute-map-nel",
        MUNIS,
        sub("legacy_id: uid", 'legacy_id: "uid\\N"'),
        "uid\\N",
        "municipalities[1].legacy.directory.attribute_map.legacy_id",
    ),
    Case(
        "attribute-map-filter",
        MUNIS,
        sub("legacy_id: uid", "legacy_id: 'uid)(objectClass=*'"),
        "uid)(",
        "municipalities[1].legacy.directory.attribute_map.legacy_id",
    ),
    Case(
        "attribute-map-unknown-key",
        MUNIS,
        sub("legacy_id: uid", "legacy_id: uid\n        password: userPassword"),
        "userPassword",
        "municipalities[1].legacy.directory.attribute_map.password.[key]",
    ),
    Case("municipalities-anchor", MUNIS, sub("name: Gausdal", "name: &n Gausdal\n  nick: *n"), "&n", ""),
    Case("broker-http", PLATFORM, sub("scheme: https", "scheme: http"), "broker:", "broker"),
    Case(
        "platform-tls-wildcard",
        PLATFORM,
        sub("tls_name: DC1.PLATTFORM.IKOMM.NO", "tls_name: '*.PLATTFORM.IKOMM.NO'"),
        "*.PLATTFORM",
        "directory.tls_name",
    ),
    Case("platform-security-plain", PLATFORM, sub("security: ldaps", "security: plain"), "directory:", "directory"),
    Case(
        "collection-empty",
        PLATFORM,
        sub("collection: Kontor-farm", "collection: ''"),
        "collection: ''",
        "zones[0].terminal_farm.collection",
    ),
    Case(
        "collection-u2028",
        PLATFORM,
        sub("collection: Helse-farm", 'collection: "Helse\\Lfarm"'),
        "Helse\\Lfarm",
        "zones[1].terminal_farm.collection",
    ),
    Case("farm-host-empty", PLATFORM, sub("- ts-office-01", "- ''"), "- ''", "zones[0].terminal_farm.hosts[0]"),
    Case(
        "config-root-nul",
        PLATFORM,
        sub("config_root: /srv/thinclient", 'config_root: "/srv/\\0thin"'),
        "config_root:",
        "thin_client_config_host.config_root",
    ),
    Case("ssh-user-esc", PLATFORM, sub("user: root", 'user: "root\\e"'), "user: ", "ssh.user"),
    Case("platform-port-true", PLATFORM, sub("port: 636", "port: true"), "port: true", "directory.port"),
    Case("platform-anchor", PLATFORM, sub("directory:", "directory: &d"), "&d", ""),
    Case("alias-bomb", PLATFORM, lambda t: BOMB + t, 1, ""),
    Case("self-reference", PLATFORM, lambda t: "loop: &l [*l]\n" + t, 1, ""),
    Case("deeply-nested", PLATFORM, lambda t: t + "extra: " + DEEP + "\n", "extra:", ""),
    Case(
        "seat-limit-true",
        APPS,
        sub("seat_limit: 23", "seat_limit: true"),
        "seat_limit: true",
        "applications[0].seat_limit",
    ),
    Case(
        "seat-limit-false",
        APPS,
        sub("seat_limit: 23", "seat_limit: false"),
        "seat_limit: false",
        "applications[0].seat_limit",
    ),
    Case(
        "app-group-empty",
        APPS,
        sub("gausdal: APP-Gerica-Gausdal", "gausdal: ''"),
        "gausdal: ''",
        "applications[0].groups.gausdal",
    ),
    Case(
        "app-group-u2028",
        APPS,
        sub("gausdal: APP-Gerica-Gausdal", 'gausdal: "APP\\LGerica"'),
        "APP\\LGerica",
        "applications[0].groups.gausdal",
    ),
    Case("granted-by-empty", APPS, sub("- gd-gerica", "- ''"), "- ''", "applications[0].granted_by.gausdal[0]"),
    Case(
        "granted-by-lf",
        APPS,
        sub("- gd-gerica", '- "gd-\\ngerica"'),
        "gd-\\ngerica",
        "applications[0].granted_by.gausdal[0]",
    ),
    Case("app-name-esc", APPS, sub("name: Gerica", 'name: "Gerica\\e[31m"'), "Gerica\\e", "applications[0].name"),
    Case("apps-deeply-nested", APPS, lambda t: t + "x: " + DEEP + "\n", "x: ", ""),
    Case(
        "server-name-esc", SERVERS, sub("name: ikm-domain-core-01", 'name: "ikm\\e-core"'), "ikm\\e", "servers[0].name"
    ),
]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("base") / "inventory"
    generate(folder, users=24, seed=3, lab_dir="../lab")
    load_inventory(folder)
    return folder


def assert_refused(result: Result, file: str, line: int | None, field: str) -> None:
    """Exit 2, the problem located as `file:line: field 'x':`, and no traceback."""
    assert result.exit_code == 2, result.output[-2000:]
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    where = f"{file}:{line}:" if line is not None else f"{file}:"
    where += f" field '{field}':" if field else ""
    assert where in result.output, f"expected {where!r} in:\n{result.output[-2000:]}"
    assert "Traceback" not in result.output


def located(text: str, line: int | str | None) -> int | None:
    return yaml_line(text, line) if isinstance(line, str) else line


@pytest.mark.parametrize("case", INVENTORY_CASES, ids=lambda c: c.id)
def test_broken_inventory_is_refused_with_its_place(base: Path, tmp_path: Path, case: Case) -> None:
    """`ikomm inventory validate` on a broken file: exit 2 with file, line and field, no traceback."""
    shutil.copytree(base, tmp_path / "inv")
    path = tmp_path / "inv" / case.file
    text = case.breaks(path.read_text(encoding="utf-8"))
    path.write_text(text, encoding="utf-8", newline="")
    result = CliRunner().invoke(app, ["inventory", "validate", "--inventory", str(tmp_path / "inv")])
    assert_refused(result, case.file, located(text, case.line), case.field)


WAVE = {
    "id": "w",
    "name": "test",
    "municipalities": ["gausdal"],
    "users": {"departments": ["nav"]},
}


def wave_text(**changes: object) -> str:
    spec = {**WAVE, **changes}
    return yaml.safe_dump(spec, allow_unicode=True, sort_keys=False)


@dataclass(frozen=True)
class WaveCase:
    id: str
    text: str
    line: int | str | None
    field: str
    file: str = "w.yaml"
    csv: bytes | None = None


WAVE_CASES = [
    WaveCase("concurrency-true", wave_text(options={"concurrency": True}), "concurrency", "options.concurrency"),
    WaveCase("retries-true", wave_text(options={"retries": True}), "retries", "options.retries"),
    WaveCase("budget-true", wave_text(options={"failure_budget": True}), "failure_budget", "options.failure_budget"),
    WaveCase("min-failures-true", wave_text(options={"min_failures": True}), "min_failures", "options.min_failures"),
    WaveCase("retry-delay-false", wave_text(options={"retry_delay": False}), "retry_delay", "options.retry_delay"),
    WaveCase(
        "limit-true", wave_text(options={"limits": {"platform_ad": True}}), "platform_ad", "options.limits.platform_ad"
    ),
    WaveCase("municipality-twice", wave_text(municipalities=["gausdal", "oyer", "gausdal"]), 6, "municipalities[2]"),
    WaveCase(
        "window-mixed-offsets",
        wave_text(window={"start": "2027-01-12T18:00:00+01:00", "end": "2027-01-12T23:00:00"}),
        "window:",
        "window",
    ),
    WaveCase("name-esc", wave_text(name="pilot\x1b[2J"), "name:", "name"),
    WaveCase("department-lf", wave_text(users={"departments": ["nav\nx"]}), 7, "users.departments[0]"),
    WaveCase("legacy-id-u2028", wave_text(users={"legacy_ids": ["gd\u20281"]}), 7, "users.legacy_ids[0]"),
    WaveCase("site-nul", wave_text(users={"sites": ["Gausdal\x00"]}), 7, "users.sites[0]"),
    WaveCase("csv-absolute", wave_text(users={"csv": "/etc/passwd"}), "csv:", "users.csv"),
    WaveCase("csv-parent", wave_text(users={"csv": "../secrets.csv"}), "csv:", "users.csv"),
    WaveCase("wave-anchor", wave_text() + "extra: &x 1\nmore: *x\n", "extra:", ""),
    WaveCase("wave-self-reference", "users: &u {legacy_ids: *u}\n" + wave_text(), 1, ""),
    WaveCase("wave-deeply-nested", wave_text() + "extra: " + DEEP + "\n", "extra:", ""),
    WaveCase(
        "csv-latin-1",
        wave_text(users={"csv": "users.csv"}),
        2,
        "",
        file="users.csv",
        csv="municipality,legacy_id\ngausdal,gd10001 Ørbæk\n".encode("latin-1"),
    ),
    WaveCase(
        "csv-ten-megabyte-field",
        wave_text(users={"csv": "users.csv"}),
        2,
        "legacy_id",
        file="users.csv",
        csv=b"municipality,legacy_id\ngausdal," + b"x" * 10_000_000 + b"\n",
    ),
    WaveCase(
        "csv-other-municipality",
        wave_text(users={"csv": "users.csv"}),
        3,
        "municipality",
        file="users.csv",
        csv=b"municipality,legacy_id\ngausdal,gd10001\noyer,oy10001\n",
    ),
    WaveCase(
        "csv-unclosed-quote",
        wave_text(users={"csv": "users.csv"}),
        2,
        "",
        file="users.csv",
        csv=b'municipality,legacy_id\ngausdal,"gd10001\n',
    ),
    WaveCase("id-esc", wave_text(id="w\x1b"), "id:", "id"),
]


@pytest.mark.parametrize("case", WAVE_CASES, ids=lambda c: c.id)
def test_broken_wave_file_is_refused_with_its_place(
    base: Path, tmp_path: Path, case: WaveCase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ikomm wave run` on a broken wave file: exit 2 with file, line and field, nothing written, no traceback."""
    monkeypatch.setenv("IKOMM_STATE", str(tmp_path / "state"))
    (tmp_path / "w.yaml").write_text(case.text, encoding="utf-8")
    if case.csv is not None:
        (tmp_path / "users.csv").write_bytes(case.csv)
    result = CliRunner().invoke(app, ["wave", "run", str(tmp_path / "w.yaml"), "--inventory", str(base)])
    text = case.text if case.file == "w.yaml" else (case.csv or b"").decode("latin-1")
    assert_refused(result, case.file, located(text, case.line), case.field)
    assert not (tmp_path / "state").exists()  # nothing written


def test_data_is_never_read_as_markup(base: Path, tmp_path: Path) -> None:
    """A municipality called `Gausdal [/bold]` prints as it is, in validate and show."""
    shutil.copytree(base, tmp_path / "inv")
    path = tmp_path / "inv" / MUNIS
    path.write_text(path.read_text(encoding="utf-8").replace("name: Gausdal", "name: Gausdal [/bold]"), "utf-8")
    for command in ("validate", "show"):
        result = CliRunner().invoke(app, ["inventory", command, "--inventory", str(tmp_path / "inv")])
        assert result.exit_code == 0, result.output
        assert "Gausdal [/bold]" in result.output


def test_wave_window_with_offsets_and_csv_with_bom_are_accepted(base: Path, tmp_path: Path) -> None:
    """A window written with UTC offsets loads and compares with now; a user list saved with a BOM is read."""
    inv = load_inventory(base)
    (tmp_path / "users.csv").write_bytes("municipality,legacy_id\ngausdal,gd10001\n".encode("utf-8-sig"))
    window = {"start": "2027-01-12T18:00:00+01:00", "end": "2027-01-12T23:00:00+01:00"}
    (tmp_path / "w.yaml").write_text(wave_text(users={"csv": "users.csv"}, window=window), encoding="utf-8")
    wave = load_wave(tmp_path / "w.yaml", inv)
    assert [wu.key for wu in wave.users] == ["gausdal/gd10001"]
    assert wave.spec.window is not None and wave.spec.window.contains() is False


@pytest.mark.parametrize("separator", ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"])
def test_device_settings_refuse_every_line_separator(separator: str) -> None:
    """No value or key may split a device config line, whatever line break Python's splitlines knows."""
    with pytest.raises(InvalidInputError):
        with_settings("a=1\n", {"user": f"kari{separator}rdp_server=evil"})
    with pytest.raises(InvalidInputError):
        with_settings("a=1\n", {f"us{separator}er": "kari"})
    with pytest.raises(InvalidInputError):
        with_settings("a=1\n", {"user": f"kari{separator}"})


@pytest.fixture(scope="module")
def staff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An inventory of 150 users: one a night on Mondays takes them almost three years."""
    folder = tmp_path_factory.mktemp("staff") / "inventory"
    generate(folder, users=150, seed=3, lab_dir="../lab")
    return folder


@pytest.mark.parametrize(
    ("changes", "needle", "field", "said"),
    [
        ({"start": "9999-12-31"}, "start:", "start", "not a date this campaign can start on"),
        ({"start": "0001-01-01"}, "start:", "start", "not a date this campaign can start on"),
        ({"nights": {**CAMPAIGN["nights"], "start": 1800}}, "start: 1800", "nights.start", '"HH:MM"'),  # type: ignore[dict-item]
        (
            {"max_users_per_night": 1, "nights": {**CAMPAIGN["nights"], "weekdays": ["mon"]}},  # type: ignore[dict-item]
            "max_users_per_night:",
            "max_users_per_night",
            "a campaign must fit in 2 years",
        ),
    ],
    ids=["start-9999", "start-year-1", "night-start-integer", "one-user-a-night"],
)
def test_broken_campaign_file_is_refused_with_its_place(
    staff: Path, tmp_path: Path, changes: dict[str, object], needle: str, field: str, said: str
) -> None:
    """`ikomm campaign plan` on a campaign file a lead mistyped: exit 2 with file, line and field, nothing written."""
    path = tmp_path / "waves" / "campaign.yaml"
    path.parent.mkdir()
    text = yaml.safe_dump({**CAMPAIGN, **changes}, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["campaign", "plan", str(path), "--inventory", str(staff)])
    assert_refused(result, "campaign.yaml", yaml_line(text, needle), field)
    assert said in result.output
    assert sorted(p.name for p in path.parent.iterdir()) == ["campaign.yaml"]


def test_a_file_given_as_a_folder_is_refused(base: Path, tmp_path: Path) -> None:
    """--out naming a file (not a folder) is refused with exit 2 by `campaign plan` and `lab generate`."""
    (tmp_path / "waves").mkdir()
    path = tmp_path / "waves" / "campaign.yaml"
    path.write_text(yaml.safe_dump(CAMPAIGN), encoding="utf-8")
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    for args in (
        ["campaign", "plan", str(path), "--inventory", str(base), "--out", str(a_file)],
        ["lab", "generate", "--users", "30", "--out", str(a_file)],
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "not a folder" in result.output, result.output[-2000:]
        assert "Traceback" not in result.output
    assert a_file.read_text() == "keep me"


@pytest.mark.parametrize("name", ["pilot\n", "pilot\r\n", "../pilot", "", "pilot.yaml\n"])
def test_names_with_a_trailing_newline_are_no_names(tmp_path: Path, name: str) -> None:
    """A device id or a served wave's name is matched whole: a trailing newline is refused, not matched before."""
    from flows.served import wave_path

    (tmp_path / "pilot.yaml").write_text("id: pilot\n")
    with pytest.raises(InvalidInputError):
        wave_path(tmp_path, name)
    with pytest.raises(InvalidInputError):
        DeviceConfigs(None, "/srv/thinclient").path(name.replace("pilot", "tc-1"))  # type: ignore[arg-type]


def test_an_empty_name_names_no_entry() -> None:
    """child_dn refuses an empty value (an RDN of nothing) with InvalidInputError, not IndexError."""
    with pytest.raises(InvalidInputError, match="names no entry"):
        child_dn("CN", "", "OU=Gausdal,DC=ikomm,DC=no")

"""The lead's cockpit without servers: `wave check` and `wave status`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ikomm.cli import app
from ikomm.ledger import Ledger
from lab.synthetic import generate

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cockpit") / "inventory"
    generate(folder, users=24, seed=3, lab_dir="../lab")
    return folder


def wave(tmp_path: Path, **spec: object) -> Path:
    text = {"id": "w", "name": "test", "municipalities": ["gausdal", "oyer"], "users": {"all": True}, **spec}
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(text), encoding="utf-8")
    return path


def test_wave_check_valid_names_the_users_and_touches_no_server(
    inventory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A valid wave: exit 0 with users per municipality; no lab runs here, no state folder appears."""
    monkeypatch.setenv("IKOMM_STATE", str(tmp_path / "state"))
    result = CliRunner().invoke(app, ["wave", "check", str(wave(tmp_path)), "--inventory", str(inventory), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["ok"] and set(summary["users"]) == {"gausdal", "oyer"} and all(summary["users"].values())
    assert not (tmp_path / "state").exists()


def test_wave_check_lists_every_problem_with_exit_2(inventory: Path, tmp_path: Path) -> None:
    """Two problems of form, or two against the inventory: each time both named with their field, exit 2."""
    forms = wave(tmp_path, options={"retries": 99, "concurrency": 0})
    links = tmp_path / "links" / "w.yaml"
    links.parent.mkdir()
    links.write_text(
        yaml.safe_dump(
            {"id": "w", "name": "t", "municipalities": ["gausdal", "atlantis"], "users": {"departments": ["Nowhere"]}}
        ),
        encoding="utf-8",
    )
    for path, fields in (
        (forms, ("options.retries", "options.concurrency")),
        (links, ("municipalities[1]", "users.departments[0]")),
    ):
        result = CliRunner().invoke(app, ["wave", "check", str(path), "--inventory", str(inventory)])
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
        assert "2 problems" in result.output, result.output
        assert all(f"field '{f}'" in result.output for f in fields), result.output
        assert "Traceback" not in result.output


def test_wave_status_says_when_it_cuts_the_list_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """15 held users: the default view shows ten and says how to see the other five; --all shows every one."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("IKOMM_LEDGER_URL", url)
    monkeypatch.setenv("IKOMM_STATE", str(tmp_path / "state"))
    ledger = Ledger(url)
    users = [(f"gausdal/gd{i:03}", "gausdal", f"gd{i:03}") for i in range(15)]
    ledger.open_wave("w", users)
    for key, _, _ in users:
        ledger.set_user(key, "held", "plan", "held back: not ready on the platform yet", wave="w")
    short = CliRunner().invoke(app, ["wave", "status", "w"], env={"COLUMNS": "200"})
    assert short.exit_code == 0, short.output
    assert "not moved (15), the last 10 shown" in short.output and "5 more not moved" in short.output
    every = CliRunner().invoke(app, ["wave", "status", "w", "--all"], env={"COLUMNS": "200"})
    assert all(key in every.output for key, _, _ in users) and "more not moved" not in every.output


def test_preflight_refuses_an_ended_window_unless_the_lead_says_so(inventory: Path, tmp_path: Path) -> None:
    """A window that ended or has not opened fails preflight and names the way out; --outside-window passes it."""
    from types import SimpleNamespace

    from ikomm.inventory import load_inventory
    from ikomm.preflight import window
    from ikomm.waves import load_wave

    inv = load_inventory(inventory)
    past = load_wave(wave(tmp_path, window={"start": "2020-01-10T18:00:00", "end": "2020-01-11T06:00:00"}), inv)
    run: Any = SimpleNamespace(wave=past)
    assert not window(run).ok and "--outside-window" in window(run).detail
    assert window(run, outside_window=True).ok
    later = load_wave(wave(tmp_path, window={"start": "2999-01-10T18:00:00", "end": "2999-01-11T06:00:00"}), inv)
    run = SimpleNamespace(wave=later)  # a month early is as wrong as a month late
    assert not window(run).ok and "opens at" in window(run).detail and "--outside-window" in window(run).detail
    assert window(run, outside_window=True).ok


@pytest.mark.parametrize(
    "args",
    [
        ["wave", "status", "pilot"],
        ["status", "gausdal/gd10001", "--inventory", "INVENTORY"],
        ["verify", "rollback", "pilot", "--inventory", "INVENTORY"],
    ],
    ids=["wave-status", "status", "verify-rollback"],
)
def test_reading_commands_create_no_state(
    inventory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """Run where no wave has run, a reading command says so (exit 2) and leaves no state folder or ledger."""
    monkeypatch.setenv("IKOMM_STATE", str(tmp_path / "state"))
    monkeypatch.delenv("IKOMM_LEDGER_URL", raising=False)
    result = CliRunner().invoke(app, [str(inventory) if a == "INVENTORY" else a for a in args])
    assert result.exit_code == 2 and "no ledger in" in result.output, result.output
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--approver", "x"], "--approver: who decides"),
        (["--approver", "kari@ikomm.no", "--reject"], "--reject needs --comment"),
        (["--approver", "kari@ikomm.no", "--reject", "--comment", "no"], "--reject needs --comment"),
    ],
)
def test_an_answer_without_who_or_a_refusal_without_why_is_refused_before_anything(
    tmp_path: Path, args: list[str], said: str
) -> None:
    """The same rules as the UI's Resume form; no server is asked, no state is made."""
    result = CliRunner().invoke(app, ["wave", "approve", "w", *args], env={"IKOMM_STATE": str(tmp_path / "s")})
    assert result.exit_code == 2 and said in result.output, result.output
    assert not (tmp_path / "s").exists()

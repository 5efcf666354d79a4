"""State is root's alone, a ledger URL is never shown with its password, and passwords are deleted once handed over."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ikomm.cli import app
from ikomm.credentials import CredentialFile
from ikomm.ledger import Ledger, masked, url_for


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "state"
    monkeypatch.setenv("IKOMM_STATE", str(folder))
    monkeypatch.delenv("IKOMM_LEDGER_URL", raising=False)
    return folder


def test_state_folder_0700_and_ledger_0600_before_anything_else(state: Path) -> None:
    """The first command that writes state makes the folder 0700 and the ledger database 0600 (a reading one,
    such as `wave status`, creates nothing: tests/unit/test_wave_commands.py)."""

    result = CliRunner().invoke(app, ["credentials", "handed-over", "nosuch"])
    assert result.exit_code == 2
    assert state.stat().st_mode & 0o777 == 0o700
    assert (state / "ledger.db").stat().st_mode & 0o777 == 0o600


def test_an_existing_loose_state_folder_is_tightened(state: Path) -> None:
    """A state folder made by hand with 0755 is made 0700 by the next command; a loose ledger file 0600."""

    state.mkdir(mode=0o755)
    state.chmod(0o755)
    (state / "ledger.db").touch(mode=0o644)
    CliRunner().invoke(app, ["wave", "status", "nosuch"])
    assert state.stat().st_mode & 0o777 == 0o700
    assert (state / "ledger.db").stat().st_mode & 0o777 == 0o600


def test_ledger_url_is_masked_and_never_a_flow_parameter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PostgreSQL URL's password is never shown; the flows read the URL from the environment, not parameters."""
    from flows.rollback import rollback_flow
    from flows.wave import wave_flow

    url = "postgresql+psycopg://ikomm:Hemmelig-Passord-123@db.ikomm.no:5432/ledger"
    assert masked(url) == "postgresql+psycopg://ikomm:***@db.ikomm.no:5432/ledger"
    assert "Hemmelig" not in masked("postgresql://ikomm:Hemmelig@h/db?x=1")
    monkeypatch.setenv("IKOMM_LEDGER_URL", url)
    assert url_for(tmp_path) == url
    for flow_ in (wave_flow, rollback_flow):
        assert not any("ledger" in p for p in inspect.signature(flow_.fn).parameters)


def test_credentials_handed_over_deletes_the_file_and_records_it(state: Path) -> None:
    """Refused while users are on the way; afterwards the file is deleted and the ledger says who, when, how many."""

    state.mkdir(mode=0o700)
    ledger = Ledger(url_for(state))
    ledger.open_wave("pilot", [("oyer/oy1", "oyer", "oy1"), ("oyer/oy2", "oyer", "oy2")])
    creds = CredentialFile(state / "credentials" / "pilot.csv")
    creds.put("oyer/oy1", "ola.nordmann", "ola.nordmann@oyer.kommune.no", "Hemmelig-Passord-1")
    ledger.set_user("oyer/oy1", "verified", "done", "moved", wave="pilot")
    runner = CliRunner()
    busy = runner.invoke(app, ["credentials", "handed-over", "pilot", "--by", "kari@ikomm.no"])
    assert busy.exit_code == 1 and "oyer/oy2" in busy.output and creds.path.is_file()
    ledger.set_user("oyer/oy2", "held", "plan", "not ready", wave="pilot")
    done = runner.invoke(app, ["credentials", "handed-over", "pilot", "--by", "kari@ikomm.no"])
    assert done.exit_code == 0, done.output
    assert not creds.path.exists() and "Hemmelig" not in done.output
    record = ledger.handover("pilot")
    assert record is not None and (record["by"], record["users"]) == ("kari@ikomm.no", 1)
    again = runner.invoke(app, ["credentials", "handed-over", "pilot"])
    assert again.exit_code == 0 and "handed over by kari@ikomm.no" in again.output
    assert runner.invoke(app, ["credentials", "handed-over", "nosuch"]).exit_code == 2


def test_production_mode_keeps_its_passwords_in_one_owner_only_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Production mode's passwords: made once, 0600, the same on every read; URLs quote them; off by default."""
    from ikomm import production
    from ikomm.ledger import url_for

    monkeypatch.delenv("IKOMM_LEDGER_URL", raising=False)
    monkeypatch.setenv("IKOMM_PG_PORT", "5999")
    state = tmp_path / "state"
    assert not production.enabled(state) and url_for(state).startswith("sqlite:///")
    url = production.ledger_url(state)
    secrets = state / "production" / "secrets.env"
    assert production.enabled(state) and secrets.stat().st_mode & 0o777 == 0o600
    assert url == production.ledger_url(state) and url.startswith("postgresql+psycopg://ikomm:")
    assert url.endswith("@127.0.0.1:5999/ikomm") and url_for(state) == url
    env = production.prefect_env(state)
    assert env["PREFECT_MESSAGING_BROKER"] == "prefect_redis.messaging"
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://ikomm:")
    assert production.pg_data(state) != production.pg_data(tmp_path / "other")

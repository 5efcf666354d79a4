"""The helpdesk's search: by old id, account or name in any case, and the link to the user's task run."""

from __future__ import annotations

from pathlib import Path

from ikomm.cli.status import named
from ikomm.errors import ConflictError, TransientError
from ikomm.inventory import load_inventory
from ikomm.ledger import Ledger
from ikomm.naming import account_names
from ikomm.report import RUNBOOK_FILES, RUNBOOK_RESUME, RUNBOOK_USER, plain_reason, runbook_for, said_plainly
from ikomm.waves import load_wave

REPO = Path(__file__).resolve().parents[2]


def test_find_users_takes_any_case_and_keys_found_by_name() -> None:
    ledger = Ledger("sqlite://")
    inv = load_inventory(REPO / "inventory")
    wave = load_wave(REPO / "waves" / "pilot.yaml", inv)
    names = account_names(inv)
    ledger.open_wave("pilot", [(u.key, u.muni, u.user.legacy_id) for u in wave.users], "pilot.yaml")
    first = wave.users[0]
    ledger.set_user(first.key, "running", "account", "made", names[(first.muni, first.user.legacy_id)], wave="pilot")
    account = names[(first.muni, first.user.legacy_id)]
    for text in (first.key, first.key.upper(), first.user.legacy_id.upper(), account.upper(), f"  {account} "):
        assert [u.key for u in ledger.find_users(text)] == [first.key], text
    assert ledger.find_users("nobody") == []
    # a person's name, any case, with or without æ, ø, å, finds the key in the inventory
    person = f"{first.user.given_name} {first.user.surname}"
    keys = named(REPO / "inventory", person.upper())
    assert first.key in keys
    assert first.key in named(REPO / "inventory", person.translate(str.maketrans("æøåÆØÅ", "aoaAOA")).lower())
    assert [u.key for u in ledger.find_users(person, keys)] == [first.key]
    assert named(REPO / "inventory", "ab") == []  # too short to mean anyone
    assert named(REPO / "no-such-inventory", person) == []  # says why on stderr, finds nothing by name


def test_a_users_task_run_is_recorded_and_the_newest_wins() -> None:
    ledger = Ledger("sqlite://")
    ledger.link_task_runs("w1", "prepare", {"g/a": "run-1", "g/b": "run-2"})
    ledger.link_task_runs("w1", "cutover", {"g/a": "run-3"})
    ledger.link_task_runs("w1", "prepare", {"g/b": "run-4"})  # the phase run again (a rerun): replaced
    ledger.link_task_runs("w1", "prepare", {})
    assert ledger.task_run_of("g/a", "w1") == "run-3"
    assert ledger.task_runs("w1") == {"g/a": "run-3", "g/b": "run-4"}
    assert ledger.task_run_of("g/a", "w2") is None


def test_a_held_users_account_name_as_the_ui_shows_it_finds_them() -> None:
    """A held user has no account made, but the UI names their task run with the account they will get."""
    ledger = Ledger("sqlite://")
    inv = load_inventory(REPO / "inventory")
    wave = load_wave(REPO / "waves" / "pilot.yaml", inv)
    ledger.open_wave("pilot", [(u.key, u.muni, u.user.legacy_id) for u in wave.users], "pilot.yaml")
    held = wave.users[1]
    ledger.set_user(held.key, "held", "plan", "held back: not ready on the platform yet: X", wave="pilot")
    account = account_names(inv)[(held.muni, held.user.legacy_id)]
    assert [u.key for u in ledger.find_users(account, named(REPO / "inventory", account.upper()))] == [held.key]


def test_a_failed_users_reason_names_the_system_and_the_runbook() -> None:
    """An address in a transient error becomes the system's name in plain words, the detail kept for operators;
    the runbook follows what failed."""
    inv = load_inventory(REPO / "inventory")
    gausdal = inv.municipalities["gausdal"]
    fs = gausdal.legacy.file_server
    down = TransientError(f"gave up after retries: connect to {fs.host}:{fs.port}: NoValidConnectionsError: x")
    reason = plain_reason(inv, down)
    assert reason.startswith(f"{gausdal.name}'s file server did not answer (detail: TransientError: gave up")
    assert f"{fs.host}:{fs.port}" in reason and runbook_for(inv, reason) == RUNBOOK_FILES
    config = inv.platform.thin_client_config_host
    reason = plain_reason(inv, TransientError(f"write config: connect to {config.host}:{config.port}: refused"))
    assert reason.startswith("the thin-client configuration host did not answer") and runbook_for(inv, reason) == (
        RUNBOOK_RESUME
    )
    directory = inv.platform.directory
    ldap = TransientError(f"bind: LDAPSocketOpenError: ('unable to open socket', [(x, ('{directory.host}', 636))])")
    assert plain_reason(inv, ldap).startswith("the platform directory did not answer")
    conflict = ConflictError("create-account: CN=x already exists")
    assert plain_reason(inv, conflict) == "ConflictError: create-account: CN=x already exists"
    assert runbook_for(inv, plain_reason(inv, conflict)) == RUNBOOK_USER
    assert said_plainly(plain_reason(inv, down)) == f"{gausdal.name}'s file server did not answer"

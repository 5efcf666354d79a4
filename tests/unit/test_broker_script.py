"""The lab broker's PowerShell subset: what it accepts, and the unsafe quoting it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.broker import BrokerState, ScriptError, parse


@pytest.fixture
def state(tmp_path: Path) -> BrokerState:
    path = tmp_path / "state.json"
    path.write_text(
        json.dumps(
            {
                "collections": {"Kontor-farm": {"hosts": ["ts-office-01"], "users": []}},
                "sessions": [{"id": 1, "user": "LHMR\\kari", "host": "ts01", "state": "Active"}],
                "next_session_id": 2,
            }
        )
    )
    return BrokerState(path)


def test_single_quotes_are_literal(state: BrokerState) -> None:
    """'' inside single quotes is one quote; $, ` and ; inside stay text."""
    weird = "O''Brien $(rm -rf /); `whoami`"
    state.run(f"Set-RDSessionCollectionConfiguration -CollectionName 'Kontor-farm' -UserGroup @('{weird}')")
    out = state.run("Get-RDSessionCollectionConfiguration -CollectionName 'Kontor-farm' -UserGroup | ConvertTo-Json")
    assert json.loads(out)["UserGroup"] == ["O'Brien $(rm -rf /); `whoami`"]


def test_expanding_strings_and_variables_are_refused() -> None:
    """Double quotes with $ or a backtick, and variables, would expand on a real broker: refused."""
    for script in (
        'Get-RDUserSession -CollectionName "$x"',
        "Get-RDUserSession -CollectionName $x",
        'Get-RDUserSession -CollectionName "a`b"',
    ):
        with pytest.raises(ScriptError):
            parse(script)


def test_logoff_removes_only_that_session(state: BrokerState) -> None:
    """Invoke-RDUserLogoff removes the session and persists the state."""
    out = state.run("Get-RDUserSession | Where-Object UserName -eq 'LHMR\\kari' | ConvertTo-Json -Compress")
    assert json.loads(out)[0]["UnifiedSessionId"] == 1
    state.run("Invoke-RDUserLogoff -HostServer 'ts01' -UnifiedSessionID 1 -Force")
    assert json.loads(state.path.read_text())["sessions"] == []
    with pytest.raises(ScriptError):
        state.run("Invoke-RDUserLogoff -HostServer 'ts01' -UnifiedSessionID 1 -Force")


def test_unknown_cmdlet_fails(state: BrokerState) -> None:
    with pytest.raises(ScriptError, match="not recognized"):
        state.run("Remove-Item -Path 'C:\\'")

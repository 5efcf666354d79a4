"""A process group counts as running while a member runs, not while exited members wait to be reaped."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ikomm import server
from ikomm.processes import group_alive


def _until_zombie(pid: int) -> None:
    """Wait until pid has exited and not been waited for by its parent (this process)."""
    for _ in range(200):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return
        time.sleep(0.05)


def test_a_group_whose_leader_has_exited_is_not_running_though_nobody_reaped_it() -> None:
    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    assert group_alive(child.pid)
    os.kill(child.pid, signal.SIGTERM)
    _until_zombie(child.pid)
    os.killpg(child.pid, 0)  # the kernel still has the group
    assert not group_alive(child.pid)
    assert not Path(f"/proc/{child.pid}").exists()  # reaped by the look


def test_stop_spawned_stops_what_it_started_and_forgets_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IKOMM_STATE", str(tmp_path))
    proc = server.spawn("sleeper", ["sleep", "30"], dict(os.environ))
    assert server.spawned("sleeper") == proc.pid
    assert server.stop_spawned("sleeper", grace=60.0)
    assert proc.poll() is not None
    assert server.spawned("sleeper") is None
    assert not server.stop_spawned("sleeper")


def test_a_spawned_process_that_exited_is_not_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IKOMM_STATE", str(tmp_path))
    proc = server.spawn("crashing", ["sh", "-c", "exit 3"], dict(os.environ))
    _until_zombie(proc.pid)  # the group still answers kill(0)
    assert server.spawned("crashing") is None  # so `server start` starts it again

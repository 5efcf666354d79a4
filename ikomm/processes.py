"""Process groups as /proc shows them: whether a group still runs, with zombies not counted."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def pgid_of(pid: int) -> int | None:
    """The process group of pid, or None if it is gone or a zombie (it has exited; only its parent's wait is due)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name (field 2) may contain spaces; fields after it are fixed
    if fields[0] == "Z":
        return None
    return int(fields[2])


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs.

    A group whose members have all exited still answers kill(0) until each is reaped: the leader by its parent
    (this process, if it started it and kept no Popen to wait with: reaped here), the others by PID 1, which on
    some machines takes one or two seconds. Zombies do not count, so a stop need not wait for that.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    return any(pgid_of(int(p)) == pgid for p in os.listdir("/proc") if p.isdigit())


def await_group_end(pgid: int, grace: float) -> None:
    """Wait up to grace seconds for the group, just signalled to stop, to end; SIGKILL what is left of it then."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)

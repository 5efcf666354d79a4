"""Start the lab's servers as process groups, remember them by pid and start time, stop exactly those."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ikomm.errors import LabError
from ikomm.processes import await_group_end


@dataclass(frozen=True)
class Running:
    """A server the lab started: its process group leader, identified by pid and kernel start time."""

    name: str
    pid: int
    start_time: int
    host: str
    port: int
    tls: bool


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces; fields after it are fixed
    return int(stat.rsplit(")", 1)[1].split()[19])


def is_alive(proc: Running) -> bool:
    """True if the recorded process still runs (and is not a later process that reused its pid)."""
    return _start_time(proc.pid) == proc.start_time


def spawn(name: str, argv: list[str], log: Path, host: str, port: int, tls: bool) -> Running:
    """Start argv in a new session (its own process group), output to log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    started = _start_time(child.pid)
    if started is None:
        raise LabError(f"{name}: exited at once; see {log}")
    return Running(name, child.pid, started, host, port, tls)


def answers(proc: Running, ca_file: Path | None, timeout: float = 1.0) -> bool:
    """True if the server accepts a TCP connection (and completes a TLS handshake with the lab CA, for TLS ports)."""
    try:
        with socket.create_connection((proc.host, proc.port), timeout=timeout) as sock:
            if proc.tls:
                context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
                context.check_hostname = False
                with context.wrap_socket(sock):
                    pass
        return True
    except OSError:
        return False


def wait_ready(procs: list[Running], ca_file: Path | None, logs: Path, timeout: float = 60.0) -> None:
    """Wait until every server answers; raise LabError naming those that died or stayed silent."""
    pending = list(procs)
    deadline = time.monotonic() + timeout
    while pending:
        for proc in list(pending):
            if not is_alive(proc):
                raise LabError(f"{proc.name} exited during start; see {logs / (proc.name + '.log')}")
            if answers(proc, ca_file, timeout=0.5):
                pending.remove(proc)
        if pending and time.monotonic() > deadline:
            names = ", ".join(p.name for p in pending)
            raise LabError(f"no answer within {timeout:.0f} s from: {names}; see the logs in {logs}")
        if pending:
            time.sleep(0.05)


def stop(proc: Running, grace: float = 5.0) -> bool:
    """Stop the process group of proc (SIGTERM, then SIGKILL) and every descendant that left the group
    (sshd's per-connection children call setsid): like a server that dies, its connections go too.
    Return True if it was running."""
    if not is_alive(proc):
        return False
    for pid in descendants(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    await_group_end(proc.pid, grace)
    return True


def descendants(root: int) -> list[int]:
    """Every process below root in the process tree (by parent pid)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def pss_kib(pids: list[int]) -> int:
    """Proportional set size (shared pages split among sharers) of the processes, in KiB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total


def save(path: Path, procs: list[Running]) -> None:
    """Record the running servers."""
    path.write_text(json.dumps([asdict(p) for p in procs], indent=1), encoding="utf-8")


def load(path: Path) -> list[Running]:
    """The servers recorded by the last `lab up`, or none."""
    if not path.is_file():
        return []
    return [Running(**item) for item in json.loads(path.read_text(encoding="utf-8"))]

"""Where a benchmarked process spends its CPU: py-spy's GIL samples, summed by package and by function.

`BENCH_PROFILE=1 python -m bench.wave` records the wave's process and the Prefect server with py-spy
(`pip install py-spy`; not a dependency) into bench-results/profile-*.txt (py-spy's raw format: one
stack per line, then its sample count) and prints the summary below. `python -m bench.profile FILE`
prints it again for a recorded file.

Self samples are counted by the package of the innermost frame (where the CPU was spent); inclusive
samples by the functions of this project and a few of Prefect's on the stack (what the CPU was spent for).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def spy_argv(out: Path) -> list[str]:
    """The py-spy command to put in front of a command to record it (raw format): GIL samples, or with
    BENCH_PROFILE=cpu every thread on a core, named (CPU spent outside the GIL too: SQLite, crypto, waits
    for the GIL)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    mode = ["--threads"] if os.environ.get("BENCH_PROFILE") == "cpu" else ["--gil"]
    return [exe, "record", *mode, "--rate", "100", "--format", "raw", "--nonblocking", "-o", str(out), "--"]


def spy_pid(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """Record a running process until it ends or the returned py-spy is interrupted (send SIGINT)."""
    argv = [*spy_argv(out)[:-1], "--subprocesses", "--pid", str(pid)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def package(path: str) -> str:
    """The top-level package a frame's file belongs to: py-spy names a file relative to its sys.path entry
    ('prefect/server/api/logs.py' -> 'prefect'), or absolute when it is not under one."""
    parts = Path(path).parts
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1 :]
        return rest[0].removesuffix(".py") if rest else "?"
    for name in ("ikomm", "flows", "tasks", "lab", "bench"):
        if name in parts:
            return name
    if parts and not Path(path).is_absolute():
        return parts[0].removesuffix(".py")
    return Path(path).parent.name or Path(path).stem


def stacks(raw: Path) -> list[tuple[list[tuple[str, str]], int]]:
    """(frames outermost first as (function, file), samples) per line of py-spy's raw output."""
    out = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = []
        for part in stack.split(";"):
            m = FRAME.match(part)
            frames.append((m["func"], m["file"]) if m else (part, ""))
        out.append((frames, int(count)))
    return out


def summary(raw: Path, top: int = 25) -> str:
    """Self samples by package, and inclusive samples of the project's functions (and Prefect's), as text."""
    data = stacks(raw)
    total = sum(n for _, n in data) or 1
    by_package: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, n in data:
        real = [(f, p) for f, p in frames if p and not f.startswith("process ") and not f.startswith("thread ")]
        if real:
            by_package[package(real[-1][1])] += n
        seen = set()
        for func, path in real:
            pkg = package(path)
            if pkg in ("ikomm", "flows", "tasks") or (pkg == "prefect" and func in PREFECT_FUNCS):
                name = f"{pkg}.{Path(path).stem}.{func}"
                if name not in seen:
                    seen.add(name)
                    inclusive[name] += n
    lines = [f"{raw}: {total} samples (100 a second of GIL held)", "self, by package:"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in by_package.most_common(top)]
    lines.append("inclusive, by function:")
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


PREFECT_FUNCS = {
    "create_markdown_artifact",
    "create_progress_artifact",
    "update_progress_artifact",
    "emit_event",
    "submit",
    "set_state",
    "begin_run",
    "call_task_fn",
    "handle_success",
    "run_task_sync",
    "log",
    "emit",
    "send_logs",
}


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(summary(Path(arg)))

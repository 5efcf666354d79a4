"""The local Prefect server the project runs by default (`ikomm server start|stop`).

Not ephemeral mode, which loses records and leaves orphans (../shared/PREFECT-NOTES.md): a real
`prefect server start` on 127.0.0.1 with SQLite under the state folder, and the task-run recorder
set to write in batches of 200 so 2,500 users' task runs are all recorded. In production mode
(`ikomm server start --production`, ikomm.production) the same server runs on PostgreSQL with Redis as
its messaging broker and cache.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ikomm import access
from ikomm.errors import FatalError
from ikomm.processes import await_group_end, group_alive

HOST = "127.0.0.1"
NGINX = "/usr/sbin/nginx"  # Debian's (make setup installs it): the proxy that gives the UI its roles


def port() -> int:
    """The local server's port: IKOMM_PREFECT_PORT, or 4200."""
    return int(os.environ.get("IKOMM_PREFECT_PORT", "4200"))


SERVER_SETTINGS = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "200",
    # A batch not full is written after at most 1 s (Prefect's default 5 s): a user's page shows how they ended
    # sooner, and a wave's end waits less for its last task runs to be recorded (flows.wave.await_recorded)
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # No automations here: the triggers service read every event (3 or 4 a user) for none (4 % of the server's CPU)
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
    "PREFECT_UI_ENABLED": "true",
}


def state_dir() -> Path:
    """Where ikomm keeps its state: IKOMM_STATE, or .ikomm in the current folder."""
    return Path(os.environ.get("IKOMM_STATE", ".ikomm")).resolve()


def private_state_dir() -> Path:
    """The state folder, created 0700 (or made so) before anything is written in it; its path.

    It holds the ledger, the initial passwords and Prefect's database: root's eyes only.
    """
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    return folder


def api_url() -> str:
    return f"http://{HOST}:{port()}/api"


def ui_url() -> str:
    return f"http://{HOST}:{port()}/"


def ui_base() -> str:
    """The Prefect UI's address as links name it: PREFECT_UI_URL, else the API's address without /api."""
    if os.environ.get("PREFECT_UI_URL"):
        return os.environ["PREFECT_UI_URL"].rstrip("/")
    return (os.environ.get("PREFECT_API_URL") or api_url()).rstrip("/").removesuffix("/api")


def task_run_url(task_run_id: str) -> str:
    """The page of a task run in the Prefect UI (a user's story in a wave)."""
    return f"{ui_base()}/runs/task-run/{task_run_id}"


def internal_port() -> int:
    """Where Prefect itself listens, on 127.0.0.1 only: behind the proxy (ikomm.access)."""
    return port() + access.INTERNAL_OFFSET


def client_env() -> dict[str, str]:
    """Settings a process needs to talk to the local server (set before Prefect is imported): its address and the
    service's credential (none before the server first started)."""
    env = {"PREFECT_API_URL": api_url(), "PREFECT_HOME": str(state_dir() / "prefect")}
    credential = access.existing_service_credential(state_dir())
    if credential is not None:
        env["PREFECT_API_AUTH_STRING"] = credential
    return env


def healthy(timeout: float = 1.0, url: str | None = None) -> bool:
    """Whether the server answers its health probe through the proxy (or at url)."""
    try:
        with urllib.request.urlopen(f"{url or api_url()}/health", timeout=timeout) as resp:
            return bool(json.loads(resp.read()))
    except (OSError, ValueError):
        return False


def _internal_api() -> str:
    return f"http://{HOST}:{internal_port()}/api"


def start(timeout: float = 90.0, production: bool = False) -> str:
    """Start the server if it is not answering; return 'running' or 'started'.

    production (or production mode started before for this state folder): PostgreSQL and Redis first,
    and the server on them (ikomm.production).
    """
    if healthy():
        return "running"
    if not healthy(url=_internal_api()):
        _start_prefect(timeout, production)
    _start_proxy(timeout)
    return "started"


def _start_prefect(timeout: float, production: bool) -> None:
    """Prefect's server on the internal port, its own Basic auth on with the service's credential."""
    from ikomm import production as prod

    extra: dict[str, str] = {}
    if production or prod.enabled(state_dir()):
        prod.start(private_state_dir())
        extra = prod.prefect_env(state_dir())
    folder = private_state_dir() / "prefect"
    folder.mkdir(exist_ok=True, mode=0o700)
    for made_before in folder.glob("*.db*"):  # by an older version, with the default mode
        made_before.chmod(0o600)
    service = access.service_credential(state_dir())
    env = {
        **os.environ,
        **SERVER_SETTINGS,
        "PREFECT_HOME": str(folder),
        "PREFECT_SERVER_API_HOST": HOST,
        "PREFECT_SERVER_API_PORT": str(internal_port()),
        "PREFECT_SERVER_API_AUTH_STRING": service,
        "PREFECT_UI_API_URL": api_url(),  # the browser's way in: the proxy
        "PREFECT_API_URL": _internal_api(),
        "PREFECT_API_AUTH_STRING": service,
        **extra,
    }
    prefect = Path(sys.executable).with_name("prefect")
    argv = [str(prefect), "server", "start", "--host", HOST, "--port", str(internal_port())]
    _await(spawn("server", argv, env), _internal_api(), "the Prefect server", folder / "server.log", timeout)


def _start_proxy(timeout: float) -> None:
    """The proxy (nginx) on the public port, its files written afresh; reloaded instead if it runs."""
    if reload_proxy():
        _await(None, api_url(), "the proxy (nginx)", state_dir() / "access" / "proxy-error.log", timeout)
        return
    conf = state_dir() / "access" / "nginx.conf"
    log = conf.parent / "proxy-error.log"
    argv = [NGINX, "-c", str(conf), "-p", str(conf.parent), "-e", str(log)]
    _await(spawn("proxy", argv, dict(os.environ)), api_url(), "the proxy (nginx)", log, timeout)


def reload_proxy() -> bool:
    """Rewrite the proxy's files (people, roles, the service's credential) and let a running proxy reread them;
    False if none runs."""
    access.write_proxy_config(private_state_dir(), port(), HOST)
    running = spawned("proxy")
    if running is None:
        return False
    os.kill(running, signal.SIGHUP)  # nginx rereads its files; the old workers finish their requests first
    return True


def _await(proc: subprocess.Popen[bytes] | None, url: str, what: str, log: Path, timeout: float) -> None:
    """Wait until url's health probe answers; FatalError naming the log if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not healthy(url=url):
        if proc is not None and proc.poll() is not None:
            raise FatalError(f"{what} exited at once; see {log}")
        if time.monotonic() > deadline:
            raise FatalError(f"{what} did not answer within {timeout:.0f} s; see {log}")
        time.sleep(0.2)


def stop() -> bool:
    """Stop the server this state folder started (and PostgreSQL and Redis in production mode); False if none
    was running."""
    from ikomm import production as prod

    stop_spawned("proxy")
    stopped = stop_spawned("server")
    prod.stop()
    return stopped


def spawn(name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a background process of the state folder (the server, the served deployments): its own session,
    output to prefect/<name>.log, pid in prefect/<name>.pid, files it makes 0600."""
    folder = private_state_dir() / "prefect"
    folder.mkdir(exist_ok=True, mode=0o700)
    with open(folder / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            umask=0o077,
        )
    (folder / f"{name}.pid").write_text(str(proc.pid))
    return proc


def spawned(name: str) -> int | None:
    """The pid of the background process of that name if it still runs."""
    pid_file = state_dir() / "prefect" / f"{name}.pid"
    if not pid_file.is_file():
        return None
    pid = int(pid_file.read_text())
    try:
        return pid if group_alive(pid) else None
    except PermissionError:  # the pid is another user's now
        return None


def stop_spawned(name: str, grace: float = 10.0, leader_signal: signal.Signals | None = None) -> bool:
    """Stop the background process of that name and its whole session: SIGTERM to the session, or leader_signal to
    the process alone (which stops its own children), then SIGKILL to what is left after grace seconds. False if
    none was running."""
    pid_file = state_dir() / "prefect" / f"{name}.pid"
    if not pid_file.is_file():
        return False
    pid = int(pid_file.read_text())
    pid_file.unlink()
    try:
        if leader_signal is None:
            os.killpg(pid, signal.SIGTERM)
        else:
            os.kill(pid, leader_signal)
    except ProcessLookupError:
        return False
    await_group_end(pid, grace)
    return True

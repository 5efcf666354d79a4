"""The terminal-server broker (RD Connection Broker) over WinRM with pywinrm, HTTPS and a validated CA.

Every argument goes into the PowerShell script as a single-quoted literal (`ps_quote`), the one
PowerShell string form in which `$`, backticks, double quotes and semicolons are plain characters;
the quote characters themselves (ASCII ' and the typographic ‘ ’ ‚ ‛ that PowerShell also treats as
quotes) are doubled. Nothing is ever interpolated into a double-quoted string.

A collection's user list is read, changed and written back; one lock per collection serialises
those writes inside this process. Where several processes write (a wave on workers), `guard` is set to
a lock they share (flows.limits.collection_guard: a Prefect concurrency limit of one per collection).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import winrm
from winrm import exceptions as wx

from ikomm.errors import FatalError, IkommError, InvalidInputError, TransientError
from ikomm.inventory.models import BrokerConfig

PS_QUOTES = "'\u2018\u2019\u201a\u201b"


def ps_quote(value: str) -> str:
    """value as a PowerShell single-quoted literal that no character in it can end or expand."""
    if any(ord(c) < 32 and c not in "\t" for c in value):
        raise InvalidInputError(f"control characters are not allowed in a broker argument: {value!r}")
    return "'" + "".join(c * 2 if c in PS_QUOTES else c for c in value) + "'"


def ps_array(values: list[str]) -> str:
    return "@(" + ", ".join(ps_quote(v) for v in values) + ")"


@dataclass(frozen=True)
class Session:
    """A user's session on a terminal server, as the broker lists it."""

    id: int
    user: str
    host: str
    state: str


class Broker:
    """One RD Connection Broker: settings in, a WinRM session per thread inside, ikomm errors out."""

    def __init__(self, config: BrokerConfig, password: str, ca_file: Path | None, timeout: int = 20) -> None:
        if config.scheme != "https":
            raise FatalError(f"{config.host}: WinRM over plain HTTP would send the password in clear; use https")
        self.config = config
        self._password = password
        self._ca = str(ca_file) if ca_file else "legacy_requests"
        self._timeout = timeout
        self._local = threading.local()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        # held around a collection's read-change-write besides this process's lock; by default nothing
        self.guard: Callable[[str], AbstractContextManager[object]] = lambda collection: nullcontext()

    def __repr__(self) -> str:
        return f"Broker({self.config.host}:{self.config.port})"

    def _session(self) -> winrm.Session:
        session: winrm.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = winrm.Session(
                f"https://{self.config.host}:{self.config.port}/wsman",
                auth=(self.config.user, self._password),
                transport="basic",
                server_cert_validation="validate",
                ca_trust_path=self._ca,
                read_timeout_sec=self._timeout + 10,
                operation_timeout_sec=self._timeout,
            )
            self._local.session = session
        return session

    def run(self, script: str) -> Any:
        """Run a PowerShell script that ends in ConvertTo-Json (or prints nothing); return the parsed output."""
        doing = f"broker {self.config.host}: {script.split(' ', 1)[0]}"
        try:
            result = self._session().run_ps("$ErrorActionPreference = 'Stop'; " + script)
        except Exception as exc:
            self._local.session = None
            raise classify(exc, doing) from None
        if result.status_code != 0:
            err = result.std_err.decode("utf-8", "replace").strip().splitlines()
            text = f"{doing}: {err[0] if err else 'failed'}"
            raise InvalidInputError(text) if "does not exist" in text or "no session" in text else FatalError(text)
        out = result.std_out.decode("utf-8").strip()
        return json.loads(out) if out else None

    # --- collections ----------------------------------------------------------------------------

    def collection_users(self, collection: str) -> list[str]:
        """The users and groups allowed on the collection."""
        got = self.run(
            f"Get-RDSessionCollectionConfiguration -CollectionName {ps_quote(collection)} -UserGroup"
            " | ConvertTo-Json -Compress"
        )
        users = got.get("UserGroup") if isinstance(got, dict) else None
        return [users] if isinstance(users, str) else list(users or [])

    def set_collection_users(self, collection: str, users: list[str]) -> None:
        self.run(
            f"Set-RDSessionCollectionConfiguration -CollectionName {ps_quote(collection)} -UserGroup {ps_array(users)}"
        )

    def add_user(self, collection: str, user: str) -> bool:
        """Allow user on the collection; False if already allowed (nothing written)."""
        with self._lock(collection), self.guard(collection):
            users = self.collection_users(collection)
            if user.lower() in (u.lower() for u in users):
                return False
            self.set_collection_users(collection, [*users, user])
            return True

    def remove_user(self, collection: str, user: str) -> bool:
        """Take user off the collection; False if not on it (nothing written)."""
        with self._lock(collection), self.guard(collection):
            users = self.collection_users(collection)
            kept = [u for u in users if u.lower() != user.lower()]
            if len(kept) == len(users):
                return False
            self.set_collection_users(collection, kept)
            return True

    # --- sessions -------------------------------------------------------------------------------

    def sessions(self, user: str) -> list[Session]:
        """The user's sessions on every terminal server the broker knows."""
        got = self.run(f"Get-RDUserSession | Where-Object UserName -eq {ps_quote(user)} | ConvertTo-Json -Compress")
        rows = [got] if isinstance(got, dict) else list(got or [])
        return [Session(int(r["UnifiedSessionId"]), r["UserName"], r["HostServer"], r["SessionState"]) for r in rows]

    def log_off(self, user: str, host: str | None = None) -> list[Session]:
        """Log the user off (on host only, if given); return the sessions ended."""
        ended = []
        for s in self.sessions(user):
            if host is None or s.host.lower() == host.lower():
                self.run(f"Invoke-RDUserLogoff -HostServer {ps_quote(s.host)} -UnifiedSessionID {s.id} -Force")
                ended.append(s)
        return ended

    def _lock(self, collection: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(collection.lower(), threading.Lock())


def classify(exc: Exception, doing: str) -> IkommError:
    """Turn a pywinrm or requests exception into ikomm's error for what the caller should do next."""
    if isinstance(exc, IkommError):
        return exc
    if isinstance(exc, wx.InvalidCredentialsError):
        return FatalError(f"{doing}: the broker refused the credentials")
    if isinstance(exc, requests.exceptions.SSLError):
        return FatalError(f"{doing}: TLS certificate not valid for the configured CA")
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout | ConnectionError):
        return TransientError(f"{doing}: {type(exc).__name__}")
    if (isinstance(exc, wx.WinRMTransportError) and exc.code >= 500) or isinstance(exc, wx.WinRMOperationTimeoutError):
        return TransientError(f"{doing}: {type(exc).__name__} {getattr(exc, 'code', '')}".strip())
    return FatalError(f"{doing}: {type(exc).__name__}: {exc}")

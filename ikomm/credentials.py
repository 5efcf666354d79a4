"""The wave's initial passwords: made here, kept in a CSV that only root reads, handed over by the lead."""

from __future__ import annotations

import csv
import io
import os
import secrets
import string
import threading
from pathlib import Path


class CredentialFile:
    """The wave's initial passwords: a CSV readable by root alone (0600), rewritten atomically.

    Read once and kept in memory (the wave's process is its only writer); reading it again for every
    user made a 2,500-user wave spend 6 % of its CPU parsing this file. Nothing is created until the
    first password is put, so a dry run that opens one writes nothing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cache: dict[str, list[str]] | None = None

    def _rows(self) -> dict[str, list[str]]:
        if self._cache is None:
            self._cache = {}
            if self.path.is_file():
                with self.path.open(encoding="utf-8", newline="") as fh:
                    self._cache = {row[0]: row for row in csv.reader(fh) if row and row[0] != "user"}
        return self._cache

    def keys(self) -> list[str]:
        """The users (municipality/legacy_id) the file holds a password for."""
        with self._lock:
            return sorted(self._rows())

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._rows().get(key)
        return row[3] if row else None

    def put(self, key: str, account: str, upn: str, password: str) -> None:
        with self._lock:
            rows = self._rows()
            rows[key] = [key, account, upn, password]
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(["user", "account", "upn", "initial_password"])
            writer.writerows(rows[k] for k in sorted(rows))
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(out.getvalue())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)


def new_password(length: int = 18) -> str:
    """A random password meeting AD complexity (upper, lower, digit, symbol)."""
    alphabet = string.ascii_letters + string.digits + "!#%+-=?@_"
    while True:
        pw = "".join(secrets.choice(alphabet) for _ in range(length))
        if (
            any(c.islower() for c in pw)
            and any(c.isupper() for c in pw)
            and any(c.isdigit() for c in pw)
            and any(not c.isalnum() for c in pw)
        ):
            return pw

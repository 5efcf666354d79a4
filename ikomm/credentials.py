"""The wave's initial passwords: made here, kept in a CSV that only root reads, handed over by the lead."""

from __future__ import annotations

import csv
import fcntl
import io
import os
import secrets
import string
import threading
from pathlib import Path
from typing import ClassVar


class CredentialFile:
    """The wave's initial passwords: a CSV readable by root alone (0600), one row appended per password set.

    Several processes may write it (the workers of a wave on one machine, or on a shared folder): each
    appends its row under an exclusive flock, and a later row for a user wins over an earlier one. Each
    process keeps what it read and reads on from where it stopped when the file has grown; reading the
    whole file for every user made a 2,500-user wave spend 6 % of its CPU here.
    Nothing is created until the first password is put, so a dry run that opens one writes nothing.
    """

    HEADER: ClassVar[list[str]] = ["user", "account", "upn", "initial_password"]

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._rows: dict[str, list[str]] = {}
        self._read_to = 0  # bytes of the file read so far

    def _read_on(self) -> None:
        """Read the rows appended since the last read (the caller holds the lock)."""
        try:
            if self.path.stat().st_size == self._read_to:
                return
            fh = self.path.open("rb")
        except FileNotFoundError:
            return
        with fh:
            fcntl.flock(fh, fcntl.LOCK_SH)
            fh.seek(self._read_to)
            data = fh.read()
        whole = data[: data.rfind(b"\n") + 1]  # a row is read once its line is complete
        self._read_to += len(whole)
        for row in csv.reader(io.StringIO(whole.decode("utf-8"), newline="")):
            if row and row != self.HEADER:
                self._rows[row[0]] = row

    def keys(self) -> list[str]:
        """The users (municipality/legacy_id) the file holds a password for."""
        with self._lock:
            self._read_on()
            return sorted(self._rows)

    def get(self, key: str) -> str | None:
        with self._lock:
            self._read_on()  # another process may have set it again since: its later row wins
            row = self._rows.get(key)
        return row[3] if row else None

    def put(self, key: str, account: str, upn: str, password: str) -> None:
        row = [key, account, upn, password]
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8", newline="") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                out = io.StringIO()
                writer = csv.writer(out)
                if os.fstat(fd).st_size == 0:
                    writer.writerow(self.HEADER)
                writer.writerow(row)
                fh.write(out.getvalue())
                fh.flush()
            os.chmod(self.path, 0o600)
            self._rows[key] = row


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

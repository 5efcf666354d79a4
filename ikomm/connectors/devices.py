"""The thin-client config host: one `key=value` file per device, read and written atomically over SFTP.

A write goes to a temporary file that a POSIX rename puts in place, so a device never reads half a
config; the version it replaces is kept beside it as `<device>.conf.previous` (for an operator's
eye). Writing the config that is already there writes nothing. `restore` puts back both the config
and the `.previous` file as they were (or removes them if they were not there), so an undo leaves
the config host exactly as before.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ikomm.connectors.files import FileServer
from ikomm.errors import InvalidInputError

DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


@dataclass(frozen=True)
class ConfigChange:
    """A device config write: the text before (None if there was no file) and after, and whether it was written."""

    device_id: str
    changed: bool
    before: str | None
    after: str


def settings(text: str) -> dict[str, str]:
    """The key=value settings of a config (comments and blank lines ignored)."""
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def with_settings(text: str, changes: Mapping[str, str]) -> str:
    """text with the named keys set (in place where they are, appended where not); comments kept."""
    for key, value in changes.items():
        # "x" on both ends: a line break anywhere, even last, splits the text in more than one line
        if len(f"x{key}x".splitlines()) != 1 or len(f"x{value}x".splitlines()) != 1 or "=" in key:
            raise InvalidInputError(f"device setting {key!r}: keys and values are single lines without '=' in keys")
    lines, seen = [], set()
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else ""
        if key in changes:
            line = f"{key}={changes[key]}"
            seen.add(key)
        lines.append(line)
    lines += [f"{k}={v}" for k, v in changes.items() if k not in seen]
    return "\n".join(lines) + "\n"


class DeviceConfigs:
    """Device configs below root on the config host."""

    def __init__(self, server: FileServer, root: str) -> None:
        self.server = server
        self.root = root

    def path(self, device_id: str) -> str:
        if not DEVICE_ID.match(device_id):
            raise InvalidInputError(f"not a device id: {device_id!r}")
        return posixpath.join(self.root, f"{device_id}.conf")

    def read(self, device_id: str) -> str | None:
        """The device's config text, or None if it has none."""
        return self.server.read_text(self.path(device_id))

    def backup(self, device_id: str) -> str | None:
        """The device's `.previous` file, or None if it has none (recorded so an undo can put it back)."""
        return self.server.read_text(self.path(device_id) + ".previous")

    def write(self, device_id: str, text: str) -> ConfigChange:
        """Put text in place atomically, keeping the replaced version as .previous; equal text writes nothing."""
        path = self.path(device_id)
        before = self.server.read_text(path)
        if before == text:
            return ConfigChange(device_id, False, before, text)
        if before is not None:
            self.server.write_atomic(path + ".previous", before.encode("utf-8"))
        self.server.write_atomic(path, text.encode("utf-8"))
        return ConfigChange(device_id, True, before, text)

    def update(self, device_id: str, changes: Mapping[str, str]) -> ConfigChange:
        """Set the named keys of an existing config, leaving the rest as it is."""
        before = self.read(device_id)
        if before is None:
            raise InvalidInputError(f"device {device_id}: no config on {self.server.host}")
        return self.write(device_id, with_settings(before, changes))

    def restore(self, device_id: str, text: str | None, backup: str | None = None) -> ConfigChange:
        """Undo: put text back (None: remove the config), and the `.previous` file as backup says (None: none)."""
        path = self.path(device_id)
        before = self.server.read_text(path)
        if text is None:
            self.server.remove(path)
        elif before != text:
            self.server.write_atomic(path, text.encode("utf-8"))
        if backup is None:
            self.server.remove(path + ".previous")
        elif self.server.read_text(path + ".previous") != backup:
            self.server.write_atomic(path + ".previous", backup.encode("utf-8"))
        return ConfigChange(device_id, before != text, before, text or "")

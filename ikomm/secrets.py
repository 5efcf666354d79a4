"""Resolve credential references to values, at the moment of use, without ever logging them."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import cast

from ikomm.errors import FatalError
from ikomm.inventory import Inventory
from ikomm.inventory.models import CredentialRef


def read_secrets_file(path: Path) -> dict[str, str]:
    """Read a NAME=value file that only its owner may read (mode 0600 or stricter)."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise FatalError(f"{path}: secrets file must not be readable by group or others (chmod 600)")
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            if sep:
                values[name.strip()] = value
    return values


def resolve_secret(ref: CredentialRef, inventory: Inventory) -> str:
    """Return the secret ref points at: environment first, then the inventory's secrets file, or Prefect."""
    if ref.env is not None:
        if ref.env in os.environ:
            return os.environ[ref.env]
        if inventory.platform.secrets_file:
            path = inventory.path(inventory.platform.secrets_file)
            if path.is_file():
                values = read_secrets_file(path)
                if ref.env in values:
                    return values[ref.env]
        raise FatalError(f"credential {ref} is not set (environment or secrets_file)")
    from prefect.blocks.system import Secret

    try:
        block = cast(Secret[str], Secret.load(str(ref.prefect_secret), _sync=True))  # type: ignore[call-arg]
    except ValueError as exc:
        raise FatalError(f"credential {ref}: no such Prefect Secret block") from exc
    return str(block.get())

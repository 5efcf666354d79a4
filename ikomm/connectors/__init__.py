"""Connectors: each outside system behind one small class that takes its settings in its constructor.

`Connectors(inventory)` builds them from the inventory once and hands out the same instance for the
same system, so connections (one per thread for LDAP and WinRM, a pool per SFTP host) are reused.
`Connectors(inventory, tenant=id)` binds to the platform directory as that municipality's delegated
account (`ikomm tenant add`) instead of the inventory's administrator: a wave of that municipality
can then write only in its own OU and its own application groups.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ikomm.connectors.broker import Broker
from ikomm.connectors.devices import DeviceConfigs
from ikomm.connectors.directory import DirectoryConnector
from ikomm.connectors.files import AclEntry, FileServer, read_acls
from ikomm.errors import FatalError
from ikomm.inventory import Inventory
from ikomm.inventory.models import DirectoryConfig
from ikomm.secrets import resolve_secret

T = TypeVar("T")


def platform_directory(inv: Inventory, tenant: str | None = None) -> DirectoryConfig:
    """The platform directory's settings, with the tenant's delegated account as the bind when one is named."""
    if tenant is None:
        return inv.platform.directory
    delegation = inv.municipalities[tenant].delegation
    if delegation is None:
        raise FatalError(f"{tenant} has no delegated account on the platform (onboard it: ikomm tenant add {tenant})")
    return inv.platform.directory.model_copy(
        update={"bind_dn": delegation.account_upn, "password": delegation.password}
    )


class Connectors:
    """Every connector the inventory describes, made on first use and shared afterwards."""

    def __init__(self, inv: Inventory, sftp_pool: int = 4, tenant: str | None = None) -> None:
        self.inv = inv
        self._sftp_pool = sftp_pool
        self.tenant = tenant
        self._platform_config = platform_directory(inv, tenant)
        self._made: dict[tuple[str, str], Any] = {}
        self._lock = threading.RLock()  # devices() makes its sftp() inside

    def _once(self, key: tuple[str, str], make: Callable[[], T]) -> T:
        with self._lock:
            if key not in self._made:
                self._made[key] = make()
            found: T = self._made[key]
            return found

    def directory(self, config: DirectoryConfig) -> DirectoryConnector:
        """The connector of a directory (platform AD or a municipality's legacy directory)."""
        return self._once(
            ("ldap", f"{config.bind_dn}@{config.host}:{config.port}"),
            lambda: DirectoryConnector(
                config,
                resolve_secret(config.password, self.inv),
                self.inv.path(config.ca_file) if config.ca_file else None,
            ),
        )

    def platform(self) -> DirectoryConnector:
        """The platform directory, bound as the tenant's delegated account when one was given."""
        return self.directory(self._platform_config)

    def legacy(self, muni_id: str) -> DirectoryConnector:
        return self.directory(self.inv.municipalities[muni_id].legacy.directory)

    def sftp(self, host: str, port: int) -> FileServer:
        """The file server (or config host) at host:port, with the inventory's key and known_hosts."""
        ssh = self.inv.platform.ssh
        return self._once(
            ("sftp", f"{host}:{port}"),
            lambda: FileServer(
                host, port, ssh.user, self.inv.path(ssh.key_file), self.inv.path(ssh.known_hosts), self._sftp_pool
            ),
        )

    def legacy_files(self, muni_id: str) -> FileServer:
        fs = self.inv.municipalities[muni_id].legacy.file_server
        return self.sftp(fs.host, fs.port)

    def zone_files(self, zone_id: str) -> FileServer:
        fs = self.inv.zone(zone_id).file_server
        return self.sftp(fs.host, fs.port)

    def zone_acls(self, zone_id: str, folders: list[str]) -> dict[str, list[AclEntry]] | None:
        """The named POSIX ACL entries of the folders right under each of folders on the zone's file server,
        through its read-only ACL reader; None if the inventory gives the server no reader (acl_port)."""
        fs = self.inv.zone(zone_id).file_server
        if fs.acl_port is None:
            return None
        ssh = self.inv.platform.ssh
        return read_acls(
            fs.host, fs.acl_port, ssh.user, self.inv.path(ssh.key_file), self.inv.path(ssh.known_hosts), folders
        )

    def devices(self) -> DeviceConfigs:
        host = self.inv.platform.thin_client_config_host
        return self._once(
            ("devices", host.host), lambda: DeviceConfigs(self.sftp(host.host, host.port), host.config_root)
        )

    def broker(self) -> Broker:
        b = self.inv.platform.broker
        return self._once(
            ("broker", b.host),
            lambda: Broker(b, resolve_secret(b.password, self.inv), self._ca(b.ca_file)),
        )

    def _ca(self, ca_file: str | None) -> Path | None:
        return self.inv.path(ca_file) if ca_file else None

    def close(self) -> None:
        """Close every connection made."""
        for made in self._made.values():
            if isinstance(made, DirectoryConnector | FileServer):
                made.close()

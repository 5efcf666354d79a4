"""The validated inventory as one value: the world to migrate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ikomm.inventory.models import Application, Device, Municipality, PlatformFile, Server, User, Zone


@dataclass(frozen=True)
class Inventory:
    """Everything the inventory folder describes, after every file and link was validated."""

    root: Path
    platform: PlatformFile
    municipalities: dict[str, Municipality]
    applications: dict[str, Application]
    servers: list[Server]
    users: dict[str, list[User]]
    devices: dict[str, list[Device]]

    def path(self, relative: str) -> Path:
        """Resolve a path written in an inventory file (relative to the inventory folder)."""
        return (self.root / relative).resolve()

    @property
    def lab_dir(self) -> Path | None:
        """The lab folder when this inventory describes a lab, else None."""
        return self.path(self.platform.lab.dir) if self.platform.lab else None

    def all_users(self) -> list[tuple[str, User]]:
        """Every user with their municipality id, in inventory order."""
        return [(m, u) for m in self.municipalities for u in self.users.get(m, [])]

    def user_count(self) -> int:
        """How many users the inventory holds."""
        return sum(len(rows) for rows in self.users.values())

    def zone(self, zone_id: str) -> Zone:
        """The platform zone with this id."""
        for zone in self.platform.zones:
            if zone.id == zone_id:
                return zone
        raise KeyError(zone_id)

"""The inventory: municipalities, platform, applications, servers, users and devices."""

from ikomm.inventory.inventory import Inventory
from ikomm.inventory.load import load_inventory

__all__ = ["Inventory", "load_inventory"]

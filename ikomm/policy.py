"""Who moves, and when: the policy a wave and the campaign planner share.

- A user disabled in the legacy system (the inventory's `enabled: false`) is left out: a leaver's
  account is not recreated on the platform. A wave moves them only with `include_disabled: true`.
- A user moves only once every application they need (granted by their legacy groups) is ready on
  the platform (`ready_from`); until then they are held, and taken again when the date has passed.
"""

from __future__ import annotations

from datetime import date

from ikomm.inventory import Inventory
from ikomm.inventory.models import Application, User

DISABLED = "disabled in the legacy system: left out by policy (a wave with include_disabled: true moves them)"


def left_out_reason(user: User, include_disabled: bool = False) -> str | None:
    """Why policy leaves this user out, or None if it moves them."""
    return DISABLED if not user.enabled and not include_disabled else None


def needed_apps(inv: Inventory, muni: str, user: User) -> list[Application]:
    """The applications the user's legacy groups grant (as the inventory knows them)."""
    groups = set(user.legacy_groups)
    return [a for a in inv.applications.values() if groups & set(a.granted_by.get(muni, ()))]


def ready_date(inv: Inventory, muni: str, user: User) -> date | None:
    """The day every application the user needs is ready (None: they need none)."""
    return max((a.ready_from for a in needed_apps(inv, muni, user)), default=None)


def ready_by(inv: Inventory, muni: str, user: User, day: date) -> bool:
    """Whether the user's applications are all ready on day."""
    ready = ready_date(inv, muni, user)
    return ready is None or ready <= day

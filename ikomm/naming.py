"""The platform's naming policy: sAMAccountName and UPN from a legacy user's name.

`given.surname` in lower case, Norwegian letters transliterated (æ→ae, ø→o, å→aa), other accents
stripped, only a-z, 0-9, '.' and '-' kept, at most 20 characters (AD's limit for sAMAccountName).
Collisions (two Kari Nordmann across the municipalities, or names equal after truncation) are
settled over the whole inventory in one fixed order (municipalities by ownership, largest first,
then legacy id): the first keeps the plain name, the next get 2, 3, ... with the name shortened to
make room. The result depends only on the inventory, never on which wave runs first.
"""

from __future__ import annotations

import re
import unicodedata

from ikomm.inventory import Inventory
from ikomm.inventory.models import DirectoryConfig, Municipality

MAX_SAM = 20
LEGACY_DOMAIN = {"lillehammer": "LHMR", "gausdal": "GAUSDAL", "oyer": "OYER"}
FOLD = str.maketrans({"æ": "ae", "ø": "o", "å": "aa", "Æ": "Ae", "Ø": "O", "Å": "Aa"})


def fold(text: str) -> str:
    """Norwegian transliteration to ASCII (æ→ae, ø→o, å→aa), other accents stripped."""
    text = text.translate(FOLD)
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def searchable_name(given: str, surname: str) -> str:
    """A person's name as the helpdesk may type it into the UI's search: as written, and folded to ASCII when
    that differs ("Åse Sæther / Aase Saether"); in the users' task-run names."""
    name = f"{given} {surname}"
    folded = fold(name)
    return name if folded == name else f"{name} / {folded}"


def base_name(given: str, surname: str) -> str:
    """given.surname folded to a-z0-9.- (first given name, last surname part), without the length limit."""

    def part(text: str, pick: int) -> str:
        words = [w for w in re.split(r"[\s]+", fold(text).lower()) if w]
        word = words[pick] if words else "x"
        return re.sub(r"[^a-z0-9-]", "", word).strip("-") or "x"

    return f"{part(given, 0)}.{part(surname, -1)}"


def with_suffix(base: str, n: int) -> str:
    """base cut to fit MAX_SAM with the number n appended (n=1: no number)."""
    suffix = "" if n == 1 else str(n)
    return base[: MAX_SAM - len(suffix)].rstrip(".-") + suffix


def account_names(inv: Inventory) -> dict[tuple[str, str], str]:
    """(municipality, legacy_id) -> sAMAccountName for every user of the inventory."""
    order = sorted(inv.municipalities.values(), key=lambda m: (-m.ownership_pct, m.id))
    taken: set[str] = set()
    out: dict[tuple[str, str], str] = {}
    for muni in order:
        for user in sorted(inv.users.get(muni.id, []), key=lambda u: u.legacy_id):
            base = base_name(user.given_name, user.surname)
            n = 1
            while (name := with_suffix(base, n)) in taken:
                n += 1
            taken.add(name)
            out[(muni.id, user.legacy_id)] = name
    return out


def netbios_domain(muni: Municipality) -> str:
    """The legacy NetBIOS domain name of a municipality, as thin clients and sessions show it."""
    return LEGACY_DOMAIN.get(muni.id, muni.id.upper()[:15])


def platform_domain(directory: DirectoryConfig) -> str:
    """The platform's NetBIOS domain: the first label of its realm (PLATTFORM.IKOMM.NO -> PLATTFORM)."""
    return (directory.realm or directory.base_dn.split(",")[0].split("=")[1]).split(".")[0].upper()

"""A wave's users split into batches for its workers: by municipality, then department, a few hundred each.

A batch is one flow run of the `wave-batch` deployment, which whichever worker is free picks up. Users of
one department stay together where they fit (a department cuts over together, and the helpdesk reads one
batch per department); a department larger than a batch is cut into batches of its own, and small
departments of one municipality share a batch. Batches never mix municipalities (a municipality's
systems, limits and delegated account stay one per batch).
"""

from __future__ import annotations

from collections.abc import Iterable

from ikomm.waves import Wave

BATCH_SIZE = 200  # users per batch at most: the wave option `batch_size` says otherwise


def batches(wave: Wave, keys: Iterable[str], size: int = BATCH_SIZE) -> list[list[str]]:
    """The users (keys) in batches of at most `size`: by municipality, then department, in inventory order."""
    wanted = set(keys)
    groups: dict[tuple[str, str], list[str]] = {}
    for wu in wave.users:
        if wu.key in wanted:
            groups.setdefault((wu.muni, wu.user.department), []).append(wu.key)
    out: list[list[str]] = []
    current: list[str] = []
    current_muni: str | None = None
    for (muni, _), members in sorted(groups.items(), key=lambda item: (item[0][0], -len(item[1]), item[0][1])):
        if muni != current_muni or len(current) + len(members) > size:
            if current:
                out.append(current)
            current, current_muni = [], muni
        while len(members) > size:  # a department larger than a batch: whole batches of it first
            out.append(members[:size])
            members = members[size:]
        if len(current) + len(members) > size:
            out.append(current)
            current = []
        current += members
    if current:
        out.append(current)
    return out


def batch_name(wave: Wave, batch: list[str], phase: str) -> str:
    """The batch's flow-run name: '<wave> · <phase> · <municipality> <first department>… (<n> users)'."""
    by_key = {wu.key: wu for wu in wave.users}
    first = by_key[batch[0]]
    departments = {by_key[k].user.department for k in batch}
    more = f" +{len(departments) - 1}" if len(departments) > 1 else ""
    return f"{wave.id} · {phase} · {first.muni} {first.user.department}{more} ({len(batch)} users)"

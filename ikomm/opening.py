"""Opening a wave: where each of its users stands (policy, readiness, other waves), as the run and the
dry run both see it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ikomm.errors import ConflictError
from ikomm.inventory import Inventory
from ikomm.leases import live_waves
from ikomm.ledger import Ledger, Opening, UserRow
from ikomm.policy import left_out_reason, ready_by
from ikomm.waves import Wave


@dataclass(frozen=True)
class Selection:
    """The wave's users as the ledger takes them, with the policy's and the calendar's say."""

    users: list[tuple[str, str, str]]  # (key, municipality, legacy id)
    left_out: dict[str, str]  # key -> why policy leaves the user out
    ready: frozenset[str]  # keys whose applications are all ready today


def selection(inv: Inventory, wave: Wave) -> Selection:
    """The wave's users, who policy leaves out, and whose applications are ready today."""
    today = datetime.now(UTC).date()
    opts = wave.spec.options
    left_out = {
        wu.key: why for wu in wave.users if (why := left_out_reason(wu.user, opts.include_disabled)) is not None
    }
    ready = frozenset(wu.key for wu in wave.users if ready_by(inv, wu.muni, wu.user, today))
    return Selection([(u.key, u.muni, u.user.legacy_id) for u in wave.users], left_out, ready)


def open_wave(
    ledger: Ledger, inv: Inventory, wave: Wave, include: tuple[str, ...] = (), take_open: bool = False
) -> Opening:
    """Settle where each of the wave's users stands (policy, readiness, other waves); ConflictError if refused."""
    chosen = selection(inv, wave)
    opening = ledger.open_wave(
        wave.id,
        chosen.users,
        file=str(wave.path.resolve()),
        left_out=chosen.left_out,
        include=include,
        ready=chosen.ready,
        take_open=take_open,
        live=live_waves(ledger),
    )
    if opening.refused:
        listed = "; ".join(f"{k} ({state} in wave {w})" for k, w, state in opening.refused[:10])
        more = f" and {len(opening.refused) - 10} more" if len(opening.refused) > 10 else ""
        raise ConflictError(
            f"wave {wave.id}: {len(opening.refused)} user(s) are in another wave that is still open: {listed}{more}. "
            "Finish or roll back that wave first, or take them with --take-from-open-waves (refused while that "
            "wave is running)"
        )
    return opening


def preview(
    ledger: Ledger, inv: Inventory, wave: Wave, include: tuple[str, ...] = (), take_open: bool = False
) -> tuple[Selection, dict[str, tuple[str, UserRow | None]]]:
    """What open_wave would decide for each user, writing nothing (Ledger.preview_wave)."""
    chosen = selection(inv, wave)
    decided = ledger.preview_wave(
        wave.id, chosen.users, chosen.left_out, include, chosen.ready, take_open, live_waves(ledger)
    )
    return chosen, decided

"""What a wave did, for people: counts per municipality and state, failures with reasons, notes."""

from __future__ import annotations

from ikomm.inventory import Inventory
from ikomm.ledger import Ledger

UNMAPPED = "legacy groups with no platform application: "


def table_rows(ledger: Ledger, wave_id: str) -> list[dict[str, object]]:
    """One row per municipality and state, with the number of users."""
    return [{"municipality": m, "state": s, "users": n} for (m, s), n in sorted(ledger.counts(wave_id).items())]


def summary_markdown(ledger: Ledger, wave_id: str, inv: Inventory) -> str:
    """The wave's summary: totals, every failed or held user with the reason, unmapped legacy groups."""
    wave = ledger.wave(wave_id) or {}
    users = ledger.users(wave_id)
    lines = [f"# Wave {wave_id}", "", f"State: **{wave.get('state', '?')}** {wave.get('detail', '')}".rstrip(), ""]
    lines += ["| municipality | state | users |", "|---|---|---|"]
    lines += [f"| {r['municipality']} | {r['state']} | {r['users']} |" for r in table_rows(ledger, wave_id)]
    trouble = [u for u in users if u.state in ("failed", "held", "left_out")]
    if trouble:
        lines += ["", f"## Not moved ({len(trouble)})", "", "| user | state | reason |", "|---|---|---|"]
        lines += [f"| {u.key} | {u.state} | {u.reason.replace('|', '/')} |" for u in trouble]
    skipped = [u for u in users if u.state == "skipped"]
    if skipped:
        lines += ["", f"{len(skipped)} user(s) skipped: already moved by an earlier wave."]
    unmapped: dict[str, int] = {}
    for u in users:
        for event in ledger.events(u.key):
            if event["message"].startswith(UNMAPPED):
                for group in event["message"].removeprefix(UNMAPPED).split(", "):
                    unmapped[group] = unmapped.get(group, 0) + 1
    if unmapped:
        lines += ["", "## Legacy groups that map to no application", "", "| legacy group | users |", "|---|---|"]
        lines += [f"| {g} | {n} |" for g, n in sorted(unmapped.items())]
    return "\n".join(lines) + "\n"

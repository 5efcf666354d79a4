"""What a wave did, for people: counts per municipality and state, failures with reasons, notes."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from ikomm.errors import TransientError
from ikomm.inventory import Inventory
from ikomm.ledger import Ledger, UserRow
from ikomm.wave_run import WaveRun
from ikomm.waves import WaveUser

UNMAPPED = "legacy groups with no platform application: "


def table_rows(ledger: Ledger, wave_id: str) -> list[dict[str, object]]:
    """One row per municipality and state, with the number of users."""
    return [{"municipality": m, "state": s, "users": n} for (m, s), n in sorted(ledger.counts(wave_id).items())]


def outcome_words(state: str, failed: int) -> str:
    """How a wave's end is said everywhere (summary, terminal, flow run): "done", or "done with 5 failed"."""
    return f"{state} with {failed} failed" if failed else state


def downtime_words(seconds: Mapping[str, float]) -> str | None:
    """'downtime (cutover to verified) of 97 users: median 1.2 s, p95 3.4 s, worst 5.6 s (gausdal/gd10074)'."""
    if not seconds:
        return None
    ordered = sorted(seconds.values())
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    worst = max(seconds, key=lambda k: seconds[k])
    return (
        f"downtime (cutover to verified) of {len(ordered)} user(s): median {statistics.median(ordered):.1f} s, "
        f"p95 {p95:.1f} s, worst {seconds[worst]:.1f} s ({worst})"
    )


def summary_markdown(ledger: Ledger, wave_id: str, inv: Inventory, links: Mapping[str, str] | None = None) -> str:
    """The wave's summary: totals, every failed or held user with the reason (and a link to the user's page
    where links has one: user -> URL), unmapped legacy groups."""
    wave = ledger.wave(wave_id) or {}
    users = ledger.users(wave_id)
    failed = sum(1 for u in users if u.state == "failed")
    state = outcome_words(str(wave.get("state", "?")), failed)
    lines = [f"# Wave {wave_id}", "", f"State: **{state}** {wave.get('detail', '')}".rstrip(), ""]
    down = downtime_words(ledger.downtimes(wave_id))
    if down:
        lines += [down[0].upper() + down[1:] + ".", ""]
    lines += ["| municipality | state | users |", "|---|---|---|"]
    lines += [f"| {r['municipality']} | {r['state']} | {r['users']} |" for r in table_rows(ledger, wave_id)]
    trouble = [u for u in users if u.state in ("failed", "held", "left_out")]
    if trouble:
        lines += ["", f"## Not moved ({len(trouble)})", "", "| user | state | reason |", "|---|---|---|"]
        lines += [f"| {_linked(u.key, links)} | {u.state} | {_cell(u.reason)} |" for u in trouble]
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


# --- one user, for the helpdesk -----------------------------------------------------------------

RUNBOOK_USER = "runbooks/rollback-user.md"
RUNBOOK_FILES = "runbooks/file-server-died.md"
RUNBOOK_RESUME = "runbooks/wave-stopped.md"
DETAIL = " (detail: "
NO_ANSWER = " did not answer"


@dataclass(frozen=True)
class System:
    """An outside system a wave talks to, as people name it."""

    host: str
    port: int
    name: str
    runbook: str


def systems(inv: Inventory) -> list[System]:
    """Every outside system of the inventory, named in plain words, with the runbook for when it is down."""
    found = []
    for m in inv.municipalities.values():
        legacy = m.legacy
        found.append(System(legacy.file_server.host, legacy.file_server.port, f"{m.name}'s file server", RUNBOOK_FILES))
        found.append(System(legacy.directory.host, legacy.directory.port, f"{m.name}'s directory", RUNBOOK_RESUME))
    platform = inv.platform
    for z in platform.zones:
        found.append(
            System(z.file_server.host, z.file_server.port, f"the platform file server ({z.name})", RUNBOOK_FILES)
        )
    found.append(System(platform.directory.host, platform.directory.port, "the platform directory", RUNBOOK_RESUME))
    config = platform.thin_client_config_host
    found.append(System(config.host, config.port, "the thin-client configuration host", RUNBOOK_RESUME))
    found.append(System(platform.broker.host, platform.broker.port, "the connection broker", RUNBOOK_RESUME))
    return found


def _named(inv: Inventory, text: str) -> System | None:
    """The system an error's text speaks of: by host and port (as sftp or ldap3 write them), else by a host that
    only one system has."""
    every = systems(inv)
    for sys_ in every:
        if f"{sys_.host}:{sys_.port}" in text or f"('{sys_.host}', {sys_.port})" in text:
            return sys_
    hosts = [s for s in every if re.search(rf"(?<![\w.]){re.escape(s.host)}(?![\w.])", text)]
    return hosts[0] if len({s.host for s in hosts}) == 1 and len(hosts) == 1 else None


def plain_reason(inv: Inventory, error: Exception) -> str:
    """Why a user failed as the helpdesk reads it: the system in plain words first ("Gausdal's file server did
    not answer"), then the exact error for the operator (kept whole, after "detail:")."""
    exact = f"{type(error).__name__}: {error}"
    named = _named(inv, exact) if isinstance(error, TransientError) else None
    return f"{named.name}{NO_ANSWER}{DETAIL}{exact})" if named else exact


def runbook_for(inv: Inventory | None, reason: str) -> str:
    """The runbook a failed user's reason sends an operator to: a file server down, another system down (resume
    once it answers), or anything else (check and undo one user)."""
    if NO_ANSWER + DETAIL in reason:
        named = _named(inv, reason) if inv is not None else None
        if named is not None:
            return named.runbook
        return RUNBOOK_FILES if "file server" + NO_ANSWER in reason else RUNBOOK_RESUME
    return RUNBOOK_USER


def said_plainly(reason: str) -> str:
    """The reason without the operator's detail."""
    return reason.split(DETAIL, 1)[0]


def user_card(run: WaveRun, wu: WaveUser, row: UserRow | None) -> str:
    """A user's card for the helpdesk: who, old id, new account, what to tell them, and the timeline.

    row: the user's ledger row as it is now. Written to the user's task run in the Prefect UI; no
    password ever (the lead hands those out).
    """
    name = f"{wu.user.given_name} {wu.user.surname}"
    state = row.state if row else "pending"
    lines = [
        f"# {name}",
        "",
        "| | |",
        "|---|---|",
        f"| old id | {wu.key} ({run.inv.municipalities[wu.muni].name}) |",
        f"| new account | {run.account(wu)} ({run.upn(wu)}) |",
        f"| state | **{state}** {'(another wave owns this user)' if row and row.wave != run.wave.id else ''} |",
        f"| wave | {run.wave.id} |",
        "",
        "## What to tell the user",
        "",
        tell_user(run, wu, row),
    ]
    events = [e for e in run.ledger.events(wu.key) if e["wave"] == run.wave.id]
    if events:
        lines += ["", "## Timeline (UTC)", "", "| when | state | stage | what |", "|---|---|---|---|"]
        lines += [
            f"| {e['at'][:19].replace('T', ' ')} | {e['state']} | {e['stage']} | {_cell(e['message'])} |"
            for e in events
        ]
    return "\n".join(lines) + "\n"


def tell_user(run: WaveRun, wu: WaveUser, row: UserRow | None) -> str:
    """What the helpdesk says to the user whose ledger row this is, in plain words."""
    state = "pending" if row is None else row.state if row.wave == run.wave.id else "skipped"
    reason = row.reason if row else ""
    if state == "verified":
        device = f" Their thin client {wu.user.device} now opens the platform's desktop." if wu.user.device else ""
        return (
            f"They are moved. They log on as **{run.account(wu)}** (or {run.upn(wu)}).{device} The first password "
            "comes from the migration lead, never from the helpdesk; they must change it at first logon. Their "
            "profile and home folder were copied to the platform; the old account is disabled."
        )
    if state == "held":
        return (
            "Nothing has changed for them: they keep working on the old system as before. They are held until "
            f"every application they need is ready on the platform: {_plain(reason)}. The lead takes them again "
            "in a wave after that date."
        )
    if state == "failed":
        runbook = runbook_for(run.inv, reason)
        if runbook == RUNBOOK_USER:
            call = f"Call an operator: {RUNBOOK_USER} says how to check and undo one user."
        else:
            call = f"The lead takes them again once it answers (an operator follows {runbook})."
        return (
            "Nothing has changed for them: what was started was undone, and they keep working on the old system. "
            f"Why: {said_plainly(_plain(reason))}. {call}"
        )
    if state == "rolled_back" and row is not None and row.stage == "done":
        return (
            "Their move was rolled back: they work on the old system again, with their old account and their old "
            "thin client settings; their platform account is parked. The lead decides when they move again."
        )
    if state == "rolled_back":
        return (
            f"Part of their move was rolled back ({reason}); an operator finishes it. Call an operator: "
            f"{RUNBOOK_USER} says how to check one user."
        )
    if state == "left_out":
        return f"They are not moved: {reason}."
    if state == "skipped":
        return f"Another wave owns this user now ({row.wave if row else '?'}): look there."
    if row is not None and row.stage == "prepared":
        return "Their platform account is prepared; the move itself waits for the lead's approval. Nothing changes yet."
    return "Not moved yet: nothing has changed for them."


def _plain(reason: str) -> str:
    return reason.removeprefix("held back: ").removeprefix("not ready on the platform yet: ").rstrip(".")


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def _linked(key: str, links: Mapping[str, str] | None) -> str:
    url = (links or {}).get(key)
    return f"[{key}]({url})" if url else key

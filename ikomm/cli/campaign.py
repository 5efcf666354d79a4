"""`ikomm campaign plan|status|report`: every user on the platform by summer, wave after wave."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ikomm.cli.console import (
    InventoryDir,
    JsonFlag,
    console,
    err,
    existing_ledger,
    fail,
    load,
    use_local_server,
)
from ikomm.errors import IkommError
from ikomm.inventory import Inventory

if TYPE_CHECKING:
    from ikomm.campaign import Status

app = typer.Typer(help="Plan the whole campaign, follow it, report it.", no_args_is_help=True)

WavesDir = Annotated[Path, typer.Option("--waves", help="The folder of wave files.")]


def _status(waves: Path, inventory: Path) -> tuple[Inventory, Status]:
    """The inventory and the campaign's status from it, the wave files and the ledger (if any)."""
    from ikomm.campaign import campaign_status, wave_files

    inv = load(inventory)
    try:
        return inv, campaign_status(inv, existing_ledger(), wave_files(waves, inv))
    except IkommError as exc:
        raise fail(exc) from None


@app.command("plan")
def campaign_plan(
    campaign_file: Annotated[Path, typer.Argument(help="The campaign file.")] = Path("waves/campaign.yaml"),
    inventory: InventoryDir = Path("inventory"),
    out: Annotated[
        Path | None, typer.Option(help="Where to write the wave files (the campaign file's folder).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan, write nothing.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Write a wave file for every user not yet moved: by municipality, department and night; held users last."""
    from ikomm.campaign import load_campaign, plan_campaign, write_plan

    inv = load(inventory)
    try:
        campaign = load_campaign(campaign_file, inv)
    except IkommError as exc:
        raise fail(exc) from None
    ledger = existing_ledger()
    moved = frozenset(u.key for u in ledger.everyone() if u.state == "verified") if ledger else frozenset()
    plan = plan_campaign(inv, campaign, moved)
    try:
        written = [] if dry_run else write_plan(plan, inv, out or campaign_file.parent)
    except IkommError as exc:
        raise fail(exc) from None
    past = [w for w in plan.waves if w.night < date.today()]
    if past:
        err.print(
            f"warning: {len(past)} of the planned nights are before today ({past[0].night} to {past[-1].night}); "
            "they cannot run: move start in the campaign file to today or later, or run them outside their windows"
        )
    rows = [
        {
            "wave": w.id,
            "night": w.night.isoformat(),
            "kind": w.kind,
            "municipalities": w.municipalities,
            "users": len(w.users) if w.kind != "last-call" else None,
            "departments": sorted({f"{m}/{d}" for m, d in w.departments()}),
        }
        for w in plan.waves
    ]
    summary = {
        "campaign": campaign.spec.id,
        "capacity_per_night": plan.capacity,
        "waves": rows,
        "planned": sum(len(w.users) for w in plan.waves),
        "already_done": plan.already,
        "left_out": len(plan.left_out),
        "written": [str(p) for p in written],
    }
    if as_json:
        console.print_json(json.dumps(summary))
        return
    table = Table(title=f"campaign {campaign.spec.id}: {plan.capacity} users a night at most")
    for col in ("wave", "night", "kind", "users", "departments"):
        table.add_column(col, overflow="fold")
    for r, w in zip(rows, plan.waves, strict=True):
        depts = sorted({f"{m}/{d}" for m, d in w.departments()})
        table.add_row(
            str(r["wave"]),
            f"{r['night']} {datetime.fromisoformat(str(r['night'])):%a}",
            str(r["kind"]),
            "everyone not moved" if r["users"] is None else str(r["users"]),
            ", ".join(depts[:4]) + (f" +{len(depts) - 4}" if len(depts) > 4 else ""),
        )
    console.print(table)
    console.print(
        f"{summary['planned']} users planned in {len(rows)} waves; {plan.already} already done (pilot or moved); "
        f"{len(plan.left_out)} left out by policy (disabled in the legacy system)."
    )
    console.print(
        "dry run: nothing written" if dry_run else f"wrote {len(written)} wave files to {out or campaign_file.parent}"
    )


@app.command("status")
def campaign_status_cmd(
    waves: WavesDir = Path("waves"),
    inventory: InventoryDir = Path("inventory"),
    as_json: JsonFlag = False,
    publish: Annotated[bool, typer.Option("--publish", help="Also as the Prefect artifact campaign-status.")] = False,
) -> None:
    """Every user accounted for: moved, in progress, held until when, failed, left out, planned, in no wave."""
    from ikomm.campaign import STATUS_STATES, status_markdown

    inv, status = _status(waves, inventory)
    if publish:
        use_local_server()
        from flows.campaign import publish_status

        publish_status(status_markdown(status, inv))
    if as_json:
        console.print_json(json.dumps(status.as_dict()))
        return
    table = Table(title=f"campaign: {status.by_state.get('moved', 0)} of {status.total} users moved")
    table.add_column("municipality")
    for s in STATUS_STATES:
        table.add_column(s.replace("_", " "), justify="right")
    for muni, counts in status.by_municipality.items():
        table.add_row(inv.municipalities[muni].name, *(str(counts.get(s, 0)) for s in STATUS_STATES))
    table.add_section()
    table.add_row("all", *(str(status.by_state.get(s, 0)) for s in STATUS_STATES))
    console.print(table)
    waves_table = Table(title=f"waves ({len(status.waves)})")
    for col in ("wave", "night", "users", "state", "outcome"):
        waves_table.add_column(col, overflow="fold")
    for w in status.waves:
        outcome = ", ".join(f"{s} {n}" for s, n in w.users.items()) or "-"
        waves_table.add_row(w.id, (w.night or "-")[:10], str(w.selected), w.said, outcome)
    console.print(waves_table)
    if status.held_until:
        console.print("held until: " + ", ".join(f"{d}: {n}" for d, n in status.held_until.items()))
    console.print(f"users in no wave file: {status.in_no_wave}")


@app.command("report")
def campaign_report(
    out: Annotated[Path, typer.Option(help="The folder to write index.html (and status.json) into.")],
    waves: WavesDir = Path("waves"),
    inventory: InventoryDir = Path("inventory"),
) -> None:
    """A self-contained HTML page with a burn-up chart per municipality, to mail to the municipalities."""
    from ikomm.campaign import report_html

    inv, status = _status(waves, inventory)
    out.mkdir(parents=True, exist_ok=True)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    (out / "index.html").write_text(report_html(status, inv, "Ikomm: the migration campaign", generated), "utf-8")
    (out / "status.json").write_text(json.dumps(status.as_dict(), indent=1, ensure_ascii=False) + "\n", "utf-8")
    console.print(f"wrote {out / 'index.html'} and {out / 'status.json'}")

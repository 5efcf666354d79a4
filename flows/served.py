"""Launch and undo from the UI: the wave and the rollback served as deployments (`ikomm serve`).

Two deployments, each a thin flow around what the command line runs:

    start-wave/wave          parameters: wave (the file's name in the served waves folder), include,
                             take_from_open_waves, outside_window, skip_preflight. Preflight first (a
                             refusal writes nothing), then the wave's own flow run; its approval gate waits
                             in the UI as it does for `ikomm wave run`.
    start-rollback/rollback  parameters: wave, users, municipality, stages, purge, force, dry_run. A dry
                             run (the default) publishes what would be undone and changes nothing; an
                             operator looks, then runs it again with dry_run off.

The served process knows the inventory and the waves folder (IKOMM_INVENTORY, IKOMM_WAVES) and the
state folder; a flow run may start only a wave file in that folder, named as in `waves/<name>.yaml`.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from prefect import State, flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Completed, Failed
from prefect.utilities.callables import ParameterSchema

from flows.limits import wave_checks
from flows.rollback import run_rollback
from flows.wave import final_state, run_wave
from ikomm import server
from ikomm.errors import ConflictError, IkommError, InvalidInputError
from ikomm.inventory import load_inventory
from ikomm.ledger import TAKEABLE, Ledger, existing, url_for
from ikomm.preflight import problems
from ikomm.rollback import plan_rollback, recorded_run, select_users
from ikomm.waves import load_wave

WAVE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def served() -> tuple[Path, Path, Path]:
    """The inventory, the waves folder and the state folder the served process was started with."""
    inventory = Path(os.environ.get("IKOMM_INVENTORY", "inventory")).resolve()
    waves = Path(os.environ.get("IKOMM_WAVES", "waves")).resolve()
    return inventory, waves, server.state_dir()


def wave_path(waves: Path, name: str) -> Path:
    """waves/<name>.yaml; a name that is not a plain file name, or no such file, is refused."""
    stem = name.removesuffix(".yaml")
    if not WAVE_NAME.match(stem):
        raise InvalidInputError(f"wave {name!r}: give the wave file's name in {waves}, e.g. 'pilot' for pilot.yaml")
    path = waves / f"{stem}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in waves.glob("*.yaml"))) or "none"
        raise InvalidInputError(f"wave {name!r}: no file {path} (the served waves: {known})")
    return path


def _by(kind: str) -> str:
    return f"{kind} from the Prefect UI (flow run {flow_run.id})"


@flow(name="start-wave", flow_run_name="start {wave}", persist_result=False)
def start_wave(
    wave: str,
    include: list[str] | None = None,
    take_from_open_waves: bool = False,
    outside_window: bool = False,
    skip_preflight: bool = False,
) -> State[dict[str, Any]]:
    """Start (or resume) a wave as `ikomm wave run` does: preflight, then the wave (approval gate in the UI).

    include: this wave's users in these states taken again (held, failed, rolled_back, left_out).
    outside_window: run although the wave's window has ended (recorded on the wave).
    skip_preflight: emergencies only (recorded on the wave).
    """
    try:
        return _start_wave(wave, tuple(include or ()), take_from_open_waves, outside_window, skip_preflight)
    except (InvalidInputError, ConflictError) as exc:  # bad input or a refusal: said plainly, nothing written
        return _refused(exc)


def _refused(exc: IkommError) -> State[Any]:
    get_run_logger().error("refused: %s", exc)
    return Failed(message=f"refused: {exc}")


def _start_wave(
    wave: str, states: tuple[str, ...], take_from_open_waves: bool, outside_window: bool, skip_preflight: bool
) -> State[dict[str, Any]]:
    logger = get_run_logger()
    inventory, waves, state_dir = served()
    path = wave_path(waves, wave)
    wrong = [s for s in states if s not in TAKEABLE]
    if wrong:
        raise InvalidInputError(f"include {', '.join(wrong)}: choose from {', '.join(TAKEABLE)}")
    inv = load_inventory(inventory)
    spec = load_wave(path, inv)
    ledger_url = url_for(state_dir)
    if skip_preflight:
        logger.warning("preflight skipped; recorded on the wave")
    else:
        checks = wave_checks(inv, spec, existing(ledger_url), state_dir, outside_window)
        failed = problems(checks)
        lines = ["| check | | found |", "|---|---|---|"]
        lines += [f"| {c.name} | {'ok' if c.ok else '**FAILED**'} | {c.detail.replace('|', '/')} |" for c in checks]
        create_markdown_artifact("\n".join(lines), description=f"Preflight of wave {spec.id}")
        if failed:
            names = ", ".join(f"{c.name}: {c.detail}" for c in failed)
            return Failed(message=f"preflight found {len(failed)} problem(s); nothing was written: {names}")
    ledger = Ledger(ledger_url)
    window = spec.spec.window
    if outside_window and window is not None and not window.contains():
        ledger.note(spec.id, f"run outside its window ({window.start} to {window.end}) by {_by('outside_window')}")
    if skip_preflight:
        ledger.note(spec.id, f"preflight skipped by {_by('skip_preflight')}")
    result = run_wave(path, inventory, state_dir, False, states, take_from_open_waves)
    return final_state(ledger, spec.id, result)


@flow(name="start-rollback", flow_run_name="rollback {wave} from the UI", persist_result=False)
def start_rollback(
    wave: str,
    users: list[str] | None = None,
    municipality: str | None = None,
    stages: list[str] | None = None,
    purge: bool = False,
    force: bool = False,
    dry_run: bool = True,
) -> State[Any]:
    """Undo a wave, some of its users (key or account name), one municipality or some stages, newest first.

    dry_run (the default): publish every undo it would make and change nothing. purge: delete platform
    accounts instead of parking them. force: undo even what changed after the migration (drift).
    """
    try:
        return _start_rollback(wave, users, municipality, stages, purge, force, dry_run)
    except (InvalidInputError, ConflictError) as exc:
        return _refused(exc)


def _start_rollback(
    wave: str,
    users: list[str] | None,
    municipality: str | None,
    stages: list[str] | None,
    purge: bool,
    force: bool,
    dry_run: bool,
) -> State[Any]:
    inventory, _, state_dir = served()
    ledger = Ledger(url_for(state_dir))
    keys = select_users(ledger, wave, users, municipality, stages)
    if dry_run:
        run = recorded_run(ledger, load_inventory(inventory), wave, state_dir)
        try:
            plan = plan_rollback(run, keys, tuple(stages or ()) or None, purge)
        finally:
            run.c.close()
        changes = sum(len(f.undo) for f in plan)
        lines = [
            f"# Rollback of {wave}: dry run",
            "",
            "| user | stage | kind | undo | drift |",
            "|---|---|---|---|---|",
        ]
        for f in plan:
            for u in f.undo:
                lines.append(f"| {f.user} | {u['stage']} | {u['kind']} | {u['what']} | {u['drift']} |")
        create_markdown_artifact("\n".join(lines) + "\n", description=f"Rollback of {wave}: what it would undo")
        who = sum(1 for f in plan if f.undo)
        return Completed(
            name="Dry run",
            message=f"{changes} change(s) of {who} user(s) would be undone; nothing changed. "
            "Run again with dry_run off to undo them.",
        )
    reports = run_rollback(
        wave,
        inventory=str(inventory),
        state_dir=str(state_dir),
        users=keys,
        stages=list(stages or []),
        purge=purge,
        force=force,
    )
    trouble = [r for r in reports if r.problems or r.conflicts]
    message = f"{len(reports) - len(trouble)} user(s) rolled back, {len(trouble)} with conflicts or problems"
    return Failed(message=message) if trouble else Completed(message=message)


def serve() -> None:
    """Serve both deployments until stopped (the runner polls every few seconds for runs started in the UI)."""
    from prefect import serve as prefect_serve
    from prefect.deployments.runner import RunnerDeployment

    deployments = [
        f.to_deployment(name=name, description=f.__doc__, tags=["ikomm"])
        for f, name in ((start_wave, "wave"), (start_rollback, "rollback"))
    ]
    served = [d for d in deployments if isinstance(d, RunnerDeployment)]
    for deployment in served:  # Prefect keeps the schema it sends in a private attribute; no public way to close it
        schema = deployment._parameter_openapi_schema.model_dump()
        deployment._parameter_openapi_schema = ClosedParameters(**schema, additionalProperties=False)  # set: sent
    prefect_serve(*served, limit=4)


class ClosedParameters(ParameterSchema):
    """A flow's parameter schema that allows no other parameters: Prefect's API then refuses a run with an unknown
    one (409, "Additional properties are not allowed") before anything starts, where the run would crash."""

    additionalProperties: bool = False  # JSON Schema's spelling


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the wave and rollback deployments.")
    parser.add_argument("--inventory", type=Path, default=Path(os.environ.get("IKOMM_INVENTORY", "inventory")))
    parser.add_argument("--waves", type=Path, default=Path(os.environ.get("IKOMM_WAVES", "waves")))
    args = parser.parse_args()
    os.environ["IKOMM_INVENTORY"] = str(args.inventory.resolve())
    os.environ["IKOMM_WAVES"] = str(args.waves.resolve())
    serve()


if __name__ == "__main__":
    main()

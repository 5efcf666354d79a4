"""Wave definitions (waves/<id>.yaml): which users move together, when, and with what limits.

A wave is validated like the inventory: every problem names the file, line and field, and nothing
runs until there are none. Users are chosen by any mix of explicit ids, departments, sites (of the
user's thin client) and a CSV of `municipality,legacy_id` rows; a wave names one or more
municipalities and only their users are taken.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from ikomm.errors import InventoryError, Problem
from ikomm.inventory import Inventory
from ikomm.inventory.load import load_yaml_model
from ikomm.inventory.models import Model, Slug, User

SYSTEMS = ("platform_ad", "legacy_directory", "file_server", "config_host", "broker")


class Selection(Model):
    """Which users of the wave's municipalities move: the union of every list given."""

    legacy_ids: list[str] = Field(default_factory=list)
    departments: list[str] = Field(default_factory=list)
    sites: list[str] = Field(default_factory=list)
    csv: str | None = None
    all: bool = False

    @model_validator(mode="after")
    def _something(self) -> Selection:
        if not (self.legacy_ids or self.departments or self.sites or self.csv or self.all):
            raise ValueError("choose users with legacy_ids, departments, sites, csv or all: true")
        return self


class Window(Model):
    """When the wave may run (local time, ISO 8601)."""

    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class Limits(Model):
    """How many users may use each outside system at once (a Prefect global concurrency limit each)."""

    platform_ad: Annotated[int, Field(ge=1, le=64)] = 4
    legacy_directory: Annotated[int, Field(ge=1, le=64)] = 4
    file_server: Annotated[int, Field(ge=1, le=64)] = 4
    config_host: Annotated[int, Field(ge=1, le=64)] = 4
    broker: Annotated[int, Field(ge=1, le=64)] = 2


class Options(Model):
    """How the wave runs."""

    concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    limits: Limits = Field(default_factory=Limits)
    failure_budget: Annotated[float, Field(ge=0, le=1)] = 0.1
    min_failures: Annotated[int, Field(ge=1)] = 3
    approval_required: bool = True
    preseed: bool = True
    retries: Annotated[int, Field(ge=0, le=5)] = 3
    retry_delay: Annotated[float, Field(gt=0, le=600)] = 2.0


class WaveFile(Model):
    """waves/<id>.yaml."""

    id: Slug
    name: str
    municipalities: list[Slug] = Field(min_length=1)
    users: Selection
    window: Window | None = None
    options: Options = Field(default_factory=Options)


@dataclass(frozen=True)
class WaveUser:
    """One user of a wave: the municipality and the inventory row."""

    muni: str
    user: User

    @property
    def key(self) -> str:
        """municipality/legacy_id: unique across the platform, and what the helpdesk searches for."""
        return f"{self.muni}/{self.user.legacy_id}"


@dataclass(frozen=True)
class Wave:
    """A validated wave and the users it moves, in inventory order."""

    path: Path
    spec: WaveFile
    users: tuple[WaveUser, ...]

    @property
    def id(self) -> str:
        return self.spec.id


def load_wave(path: Path, inv: Inventory) -> Wave:
    """Read and check a wave file against the inventory; raise InventoryError with every problem."""
    problems: list[Problem] = []
    rel = path.name
    loaded = load_yaml_model(path.parent, rel, WaveFile, problems)
    if loaded is None:
        raise InventoryError(problems, "the wave file")
    spec, source = loaded
    if spec.id != path.stem:
        problems.append(source.problem(("id",), f"the wave id must match the file name ({path.stem!r})"))
    for i, muni in enumerate(spec.municipalities):
        if muni not in inv.municipalities:
            problems.append(source.problem(("municipalities", i), f"unknown municipality {muni!r}"))
    wanted: set[tuple[str, str]] = set()
    sel = spec.users
    known = {(m, u.legacy_id) for m, u in inv.all_users()}
    for i, legacy_id in enumerate(sel.legacy_ids):
        found = [m for m in spec.municipalities if (m, legacy_id) in known]
        if not found:
            problems.append(
                source.problem(("users", "legacy_ids", i), f"no user {legacy_id!r} in these municipalities")
            )
        wanted.update((m, legacy_id) for m in found)
    if sel.csv:
        wanted |= _csv_users(path.parent / sel.csv, sel.csv, spec.municipalities, known, problems)
    departments = set(sel.departments)
    sites = set(sel.sites)
    device_site = {d.device_id: d.site for devices in inv.devices.values() for d in devices}
    for i, dep in enumerate(sel.departments):
        if not any(u.department == dep for m in spec.municipalities for u in inv.users.get(m, [])):
            problems.append(source.problem(("users", "departments", i), f"no user in department {dep!r}"))
    for i, site in enumerate(sel.sites):
        if site not in device_site.values():
            problems.append(source.problem(("users", "sites", i), f"no thin client at site {site!r}"))
    chosen = [
        WaveUser(m, u)
        for m in spec.municipalities
        for u in inv.users.get(m, [])
        if sel.all
        or (m, u.legacy_id) in wanted
        or u.department in departments
        or (u.device is not None and device_site.get(u.device) in sites)
    ]
    if not chosen and not problems:
        problems.append(source.problem(("users",), "the selection matches no user"))
    if problems:
        raise InventoryError(problems, "the wave file")
    return Wave(path, spec, tuple(chosen))


def _csv_users(
    path: Path, rel: str, munis: list[str], known: set[tuple[str, str]], problems: list[Problem]
) -> set[tuple[str, str]]:
    """Rows `municipality,legacy_id` (with that header) of a user list; each bad row is a problem."""
    if not path.is_file():
        problems.append(Problem(rel, None, "", "file is missing"))
        return set()
    out = set()
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or [c.strip() for c in rows[0]] != ["municipality", "legacy_id"]:
        problems.append(Problem(rel, 1, "", "the header must be: municipality,legacy_id"))
        return set()
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            problems.append(Problem(rel, line, "", f"expected 2 fields, found {len(row)}"))
            continue
        muni, legacy_id = (c.strip() for c in row)
        if muni not in munis:
            problems.append(Problem(rel, line, "municipality", f"{muni!r} is not one of the wave's municipalities"))
        elif (muni, legacy_id) not in known:
            problems.append(Problem(rel, line, "legacy_id", f"no user {legacy_id!r} in {muni}"))
        else:
            out.add((muni, legacy_id))
    return out

"""Wave definitions (waves/<id>.yaml): which users move together, when, and with what limits.

A wave is validated like the inventory: every problem names the file, line and field, and nothing
runs until there are none. Users are chosen by any mix of explicit ids, departments, sites (of the
user's thin client) and a CSV of `municipality,legacy_id` rows; a wave names one or more
municipalities and only their users are taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from ikomm.errors import InventoryError, Problem
from ikomm.inventory import Inventory
from ikomm.inventory.load import CsvSyntaxError, csv_rows, decode, load_yaml_model
from ikomm.inventory.models import Model, Slug, User, Visible

SYSTEMS = ("platform_ad", "legacy_directory", "file_server", "config_host", "broker")


class Selection(Model):
    """Which users of the wave's municipalities move: the union of every list given."""

    legacy_ids: list[Visible] = Field(default_factory=list)
    departments: list[Visible] = Field(default_factory=list)
    sites: list[Visible] = Field(default_factory=list)
    csv: str | None = None
    all: bool = False

    @field_validator("csv")
    @classmethod
    def _beside(cls, value: str | None) -> str | None:
        if value is not None and (PurePosixPath(value).is_absolute() or ".." in PurePosixPath(value).parts):
            raise ValueError("must be a file beside the wave file (a relative path without '..')")
        return value

    @model_validator(mode="after")
    def _something(self) -> Selection:
        if not (self.legacy_ids or self.departments or self.sites or self.csv or self.all):
            raise ValueError("choose users with legacy_ids, departments, sites, csv or all: true")
        return self


class Window(Model):
    """When the wave may run (ISO 8601: local time, or both ends with a UTC offset)."""

    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if (self.start.tzinfo is None) != (self.end.tzinfo is None):
            raise ValueError("give both start and end with a UTC offset (e.g. 2027-01-12T18:00:00+01:00), or neither")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    def contains(self, when: datetime | None = None) -> bool:
        """Whether when (default: now, local or UTC as the window is written) lies inside the window."""
        if when is None:
            when = datetime.now(UTC) if self.start.tzinfo is not None else datetime.now()
        return self.start <= when <= self.end


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
    include_disabled: bool = False  # users disabled in the legacy system are left out unless this says so
    # 0: the wave's users are moved inside the `wave run` process; N: in batches, by the N workers of the
    # work pool `ikomm` (docs/scale-out.md), at most batch_size users a batch
    workers: Annotated[int, Field(ge=0, le=64)] = 0
    batch_size: Annotated[int, Field(ge=1, le=2000)] = 200


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

    def tenant(self, inv: Inventory) -> str | None:
        """The municipality whose delegated account the wave binds as (a wave of one onboarded tenant), or None."""
        munis = self.spec.municipalities
        if len(munis) == 1 and munis[0] in inv.municipalities and inv.municipalities[munis[0]].delegation:
            return munis[0]
        return None


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
        if muni in spec.municipalities[:i]:
            problems.append(source.problem(("municipalities", i), f"{muni!r} is listed twice"))
        elif len(spec.municipalities) > 1 and muni in inv.municipalities and inv.municipalities[muni].delegation:
            problems.append(
                source.problem(
                    ("municipalities", i),
                    f"{muni!r} has its own delegated account on the platform: its users move in waves of their "
                    "own (a wave binds as one municipality's account, never as another's)",
                )
            )
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
    """Rows `municipality,legacy_id` (with that header) of a user list (UTF-8); each bad row is a problem."""
    if not path.is_file():
        problems.append(Problem(rel, None, "", "file is missing"))
        return set()
    text = decode(path.read_bytes(), rel, problems)
    if text is None:
        return set()
    try:
        rows = list(csv_rows(text))
    except CsvSyntaxError as exc:
        problems.append(Problem(rel, exc.line, "", f"not valid CSV: {exc}"))
        return set()
    if not rows or [c.strip() for c in rows[0][1]] != ["municipality", "legacy_id"]:
        problems.append(Problem(rel, 1, "", "the header must be: municipality,legacy_id"))
        return set()
    out = set()
    for line, row in rows[1:]:
        if len(row) != 2:
            problems.append(Problem(rel, line, "", f"expected 2 fields, found {len(row)}"))
            continue
        muni, legacy_id = (c.strip() for c in row)
        if muni not in munis:
            problems.append(
                Problem(rel, line, "municipality", f"{muni[:40]!r} is not one of the wave's municipalities")
            )
        elif (muni, legacy_id) not in known:
            problems.append(Problem(rel, line, "legacy_id", f"no user {legacy_id[:40]!r} in {muni}"))
        else:
            out.add((muni, legacy_id))
    return out

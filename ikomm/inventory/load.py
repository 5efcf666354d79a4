"""Read the inventory folder, validate every file and the links between them, and collect all problems.

Each problem names the file (relative to the inventory), the line (YAML line or CSV row as an editor
shows it, header = 1), the field (a key path such as municipalities[1].legacy.directory.base_dn or a
CSV column), and what is wrong. Nothing is written; loading either returns a complete Inventory or
raises InventoryError with every problem found.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ikomm.errors import InventoryError, Problem
from ikomm.inventory.inventory import Inventory
from ikomm.inventory.models import (
    DEVICE_COLUMNS,
    USER_COLUMNS,
    ApplicationsFile,
    Device,
    MunicipalitiesFile,
    PlatformFile,
    ServersFile,
    TenantKit,
    User,
)

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]
SECRET_WORDS = ("password", "secret", "key")
MAX_DEPTH = 32  # the deepest inventory or wave file nests 6 levels
# csv's own limit (128 KiB a field) would stop a file at its first long field without naming the
# column; read it whole (the file is in memory already) and let the field's own check say what is wrong
csv.field_size_limit(64 * 1024 * 1024)


class _Loader(yaml.SafeLoader):
    """Safe YAML loading that keeps dates as text, so that pydantic validates them with a located error."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _field_name(loc: Sequence[str | int]) -> str:
    """Render a pydantic location as a key path: a.b[2].c."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _describe(error: Mapping[str, Any]) -> str:
    """Turn one pydantic error into a short sentence, never echoing a secret."""
    msg = str(error["msg"]).removeprefix("Value error, ")
    loc = [str(p).lower() for p in error["loc"]]
    if error["type"] == "extra_forbidden":
        return "unknown field (check its spelling)"
    if error["type"] == "missing":
        return "missing"
    if any(w in part for part in loc for w in SECRET_WORDS):
        return msg
    value = error.get("input")
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "...'"
        return f"{msg} (got {shown})"
    return msg


def _line_index(
    node: yaml.Node, path: Loc, out: dict[Loc, int], problems: list[Problem], rel: str, line: int | None = None
) -> None:
    """Record the line of every key (or list item) in a composed YAML tree; report duplicate keys on the way."""
    out[path] = line or node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(
                    Problem(rel, line, _field_name([*path, key]), f"duplicate key (first at line {seen[key]})")
                )
            seen[key] = line
            _line_index(value_node, (*path, key), out, problems, rel, line)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, i), out, problems, rel)


def _line_for(loc: Loc, lines: Mapping[Loc, int]) -> int | None:
    """The line of the deepest part of loc that exists in the file."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def decode(data: bytes, rel: str, problems: list[Problem]) -> str | None:
    """Decode UTF-8 strictly, reporting the line of the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problems.append(Problem(rel, line, "", f"not UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8"))
        return None


@dataclass(frozen=True)
class Source:
    """A YAML file as read: its name and the line of each key path, for locating later problems."""

    rel: str
    lines: Mapping[Loc, int]

    def problem(self, loc: Loc, message: str) -> Problem:
        """A problem at key path loc of this file."""
        return Problem(self.rel, _line_for(loc, self.lines), _field_name(loc), message)


def _shape_problem(text: str, rel: str) -> Problem | None:
    """Anchors, aliases and deep nesting, found in the event stream before anything is built from it.

    An alias is a reference: a few lines of them expand to gigabytes (or a loop) in anything that
    walks the document, so they are refused, as is nesting deeper than any real file needs.
    """
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            return Problem(rel, line, "", "anchors and aliases (&name, *name) are not allowed: write each value out")
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                return Problem(rel, line, "", f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1
    return None


def load_yaml_model(root: Path, rel: str, model: type[M], problems: list[Problem]) -> tuple[M, Source] | None:
    """Parse and validate one YAML file into model, adding its problems to problems."""
    path = root / rel
    if not path.is_file():
        problems.append(Problem(rel, None, "", "file is missing"))
        return None
    text = decode(path.read_bytes(), rel, problems)
    if text is None:
        return None
    try:
        shape = _shape_problem(text, rel)
        if shape is not None:
            problems.append(shape)
            return None
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        problems.append(Problem(rel, line, "", f"not valid YAML: {reason}"))
        return None
    lines: dict[Loc, int] = {}
    before = len(problems)
    if node is not None:
        _line_index(node, (), lines, problems, rel)
    if len(problems) > before:
        return None
    try:
        return model.model_validate(data if data is not None else {}), Source(rel, lines)
    except ValidationError as exc:
        source = Source(rel, lines)
        for err in exc.errors():
            problems.append(source.problem(tuple(err["loc"]), _describe(err)))
        return None


class CsvSyntaxError(ValueError):
    """A CSV file that cannot be read past a line (the line is in `line`)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line


def csv_rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number where the row starts, fields) for each non-blank row; CsvSyntaxError names the line."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CsvSyntaxError(start, str(exc)) from None
        if fields and any(f.strip() for f in fields):
            yield start, fields
        start = reader.line_num + 1


@dataclass(frozen=True)
class CsvRows(Generic[M]):
    """The valid rows of a CSV file with their lines, and the first column of every row, valid or not."""

    rows: list[tuple[int, M]]
    keys: set[str]


def load_csv_models(
    root: Path, rel: str, model: type[M], columns: Sequence[str], problems: list[Problem]
) -> CsvRows[M] | None:
    """Parse and validate a CSV file whose header must hold exactly columns (in any order).

    None means the file as a whole could not be read (encoding, CSV syntax, header); later checks
    that refer to its rows are then skipped rather than reported as a cascade of unknown ids.
    """
    path = root / rel
    text = decode(path.read_bytes(), rel, problems)
    if text is None:
        return None
    try:
        rows = list(csv_rows(text))
    except CsvSyntaxError as exc:
        problems.append(Problem(rel, exc.line, "", f"not valid CSV: {exc}"))
        return None
    if not rows:
        problems.append(Problem(rel, 1, "", "empty file: a header row is required"))
        return None
    header_line, header = rows[0]
    header = [h.strip() for h in header]
    bad_header = False
    for col in columns:
        if col not in header:
            problems.append(Problem(rel, header_line, col, "missing column in the header"))
            bad_header = True
    for col in header:
        if col not in columns:
            problems.append(Problem(rel, header_line, col, f"unknown column (expected: {', '.join(columns)})"))
            bad_header = True
    if len(set(header)) != len(header):
        problems.append(Problem(rel, header_line, "", "a column appears twice in the header"))
        bad_header = True
    if bad_header:
        return None
    out: list[tuple[int, M]] = []
    keys = {fields[header.index(columns[0])].strip() for _, fields in rows[1:] if len(fields) == len(header)}
    for line, fields in rows[1:]:
        if len(fields) != len(header):
            what = "more" if len(fields) > len(header) else "fewer"
            problems.append(
                Problem(
                    rel,
                    line,
                    header[min(len(fields), len(header)) - 1] if len(fields) < len(header) else "",
                    f"{len(fields)} fields but the header has {len(header)}: {what} than expected"
                    + (" (a stray delimiter? quote values that contain commas)" if what == "more" else ""),
                )
            )
            continue
        record = dict(zip(header, (f.strip() for f in fields), strict=True))
        try:
            out.append((line, model.model_validate(record)))
        except ValidationError as exc:
            for err in exc.errors():
                field = str(err["loc"][0]) if err["loc"] else ""
                problems.append(Problem(rel, line, field, _describe(err)))
    return CsvRows(out, keys)


def _models(found: CsvRows[M] | None) -> list[M]:
    return [model for _, model in found.rows] if found else []


def load_inventory(root: Path) -> Inventory:
    """Load and validate the whole inventory under root, raising InventoryError with every problem."""
    from ikomm.inventory.checks import check_links

    root = Path(root)
    if not root.is_dir():
        raise InventoryError([Problem(str(root), None, "", "inventory folder does not exist")])
    problems: list[Problem] = []
    platform = load_yaml_model(root, "platform.yaml", PlatformFile, problems)
    munis = load_yaml_model(root, "municipalities.yaml", MunicipalitiesFile, problems)
    apps = load_yaml_model(root, "applications.yaml", ApplicationsFile, problems)
    servers = load_yaml_model(root, "servers.yaml", ServersFile, problems)

    users: dict[str, CsvRows[User] | None] = {}
    for path in sorted((root / "users").glob("*.csv")):
        users[path.stem] = load_csv_models(root, f"users/{path.name}", User, USER_COLUMNS, problems)
    devices: dict[str, CsvRows[Device] | None] = {}
    for path in sorted((root / "devices").glob("*.csv")):
        devices[path.stem] = load_csv_models(root, f"devices/{path.name}", Device, DEVICE_COLUMNS, problems)

    if platform is None or munis is None or apps is None or servers is None:
        raise InventoryError(problems)
    check_links(platform, munis, apps, servers, users, devices, problems)
    if problems:
        raise InventoryError(problems)
    return Inventory(
        root=root.resolve(),
        platform=platform[0],
        municipalities={m.id: m for m in munis[0].municipalities},
        applications={a.id: a for a in apps[0].applications},
        servers=list(servers[0].servers),
        users={m.id: _models(users.get(m.id)) for m in munis[0].municipalities},
        devices={m.id: _models(devices.get(m.id)) for m in munis[0].municipalities},
    )


@dataclass(frozen=True)
class Kit:
    """A tenant kit: a municipality's legacy side and users, read before it is onboarded."""

    folder: Path
    spec: TenantKit
    users: list[User]
    devices: list[Device]


def load_tenant_kit(folder: Path) -> Kit:
    """Read and validate tenants/<id>/ (tenant.yaml, users.csv, devices.csv); InventoryError names every problem."""
    folder = Path(folder)
    if not (folder / "tenant.yaml").is_file():
        missing = Problem(str(folder), None, "", "not a tenant kit: no tenant.yaml in it")
        raise InventoryError([missing], "the tenant kit")
    problems: list[Problem] = []
    root, here = folder.resolve().parent.parent, f"{folder.resolve().parent.name}/{folder.resolve().name}"
    spec = load_yaml_model(root, f"{here}/tenant.yaml", TenantKit, problems)
    users = devices = None
    for csv_name in ("users.csv", "devices.csv"):
        rel = f"{here}/{csv_name}"
        if not (root / rel).is_file():
            problems.append(Problem(rel, None, "", "file is missing"))
        elif csv_name == "users.csv":
            users = load_csv_models(root, rel, User, USER_COLUMNS, problems)
        else:
            devices = load_csv_models(root, rel, Device, DEVICE_COLUMNS, problems)
    if spec is not None and spec[0].id != folder.resolve().name:
        problems.append(spec[1].problem(("id",), f"must be the kit folder's name {folder.resolve().name!r}"))
    if problems or spec is None:
        raise InventoryError(problems, "the tenant kit")
    return Kit(folder.resolve(), spec[0], _models(users), _models(devices))


def tenant_kits(root: Path) -> dict[str, Kit]:
    """Every tenant kit under the inventory's tenants/ folder, by id."""
    folder = Path(root) / "tenants"
    if not folder.is_dir():
        return {}
    return {p.parent.name: load_tenant_kit(p.parent) for p in sorted(folder.glob("*/tenant.yaml"))}

"""Change kinds: each kind of write to an outside system is one class that knows how to describe,
apply, undo and check itself for drift; a registry maps the ledger's record back to its class.

    Change                   (stage, system, target: the ledger's key for it)
    ├── ModifyEntry          modify          directory attributes set; undo: the values from before
    │   ├── EnableAccount    enable-account  the platform account enabled
    │   └── DisableLegacy    disable-legacy  the legacy account disabled (never deleted)
    ├── PlatformAccountChange                (the platform account at a DN)
    │   ├── CreateAccount    create-account  undo: disabled and parked in OU=Deaktivert (deleted with purge)
    │   ├── Unpark           unpark          a parked account brought back; undo: parked again
    │   └── SetPassword      set-password    the initial password (kept in the credential file); no undo
    ├── AddMember            add-member      an application group's member; a seat of the application
    ├── CopyTree             copy-tree       profile or home folder; undo: moved to .quarantine/<wave>/
    ├── DeviceConfig         device-config   the thin client's lines; undo: the file from before
    └── BrokerAdd            broker-add      the user on the zone's collection; undo: removed

A stage reads what is, returns the changes it wants (its plan), and `make` applies each: recorded in
the ledger before it is made, confirmed after (with what was only known afterwards). Rollback, drift
checks, the dry run and reports all go through these classes and `from_record`; nothing else knows
what a kind's undo data holds. The undo data's shape is the ledger's, kept as it was.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from ikomm.connectors.devices import settings
from ikomm.connectors.directory import DirectoryConnector
from ikomm.connectors.files import CopyReport, FileServer, copy_tree
from ikomm.errors import FatalError
from ikomm.inventory.models import Application

story = logging.getLogger("ikomm.story")  # the user's story (set up in wave_run; the flows send it to the UI)

if TYPE_CHECKING:
    from ikomm.ledger import ChangeRow
    from ikomm.wave_run import WaveRun
    from ikomm.waves import WaveUser

PARKED_OU = "OU=Deaktivert"
ALREADY = "already undone"  # drift's answer when the object holds what was there before the change


def parked_ou(run: WaveRun) -> str:
    """Where an undone account is set aside: the platform's OU=Deaktivert, or the tenant's own for its waves."""
    if run.c.tenant is not None:
        return tenant_parked_ou(run.inv.municipalities[run.c.tenant].target_ou)
    return f"{PARKED_OU},{run.inv.platform.directory.base_dn}"


def tenant_parked_ou(target_ou: str) -> str:
    """A tenant's own OU for accounts set aside, inside its OU (its delegated account may move them there)."""
    return f"{PARKED_OU},{target_ou}"


def directory_of(run: WaveRun, system: str) -> DirectoryConnector:
    """The directory a change's system names: ldap:platform or ldap:legacy:<municipality>."""
    if system == "ldap:platform":
        return run.c.platform()
    return run.c.legacy(system.removeprefix("ldap:legacy:"))


@dataclass(frozen=True)
class Change:
    """One write to one object of an outside system."""

    kind: ClassVar[str]
    stage: str

    @property
    def system(self) -> str:
        raise NotImplementedError

    @property
    def target(self) -> str:
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        """The undo data written to the ledger before the change is made."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line a lead reads: what this change will do."""
        raise NotImplementedError

    def describe_undo(self, purge: bool = False) -> str:
        """One line an operator reads: what undoing it will do."""
        raise NotImplementedError

    def settle(self, run: WaveRun) -> Change | None:
        """The change complete with what must be read just before it is made; None if nothing is left to do."""
        return self

    @contextmanager
    def claimed(self, run: WaveRun) -> Iterator[None]:
        """Hold what the change uses up (a seat) while it is recorded and made; given back if that fails."""
        yield

    def apply(self, run: WaveRun) -> Any:
        """Make the change; return what the stage wants to know of it."""
        raise NotImplementedError

    def learned(self, result: Any) -> dict[str, Any] | None:
        """Undo data known only once the change is made, added to its record."""
        return None

    def done(self, result: Any) -> str:
        """One line for the user's story once the change is made (what it did, where it differs from the plan)."""
        return self.describe()

    def undo(self, run: WaveRun, purge: bool = False) -> None:
        """Put back what was there before; safe to repeat."""
        raise NotImplementedError

    def drift(self, run: WaveRun) -> str | None:
        """Why the object no longer holds what the change wrote, ALREADY if it holds what was there before
        (undone, but the ledger never heard), or None."""
        return None

    def kept_data(self, run: WaveRun) -> str | None:
        """Where an undo keeps data it takes away (user data is never deleted), for the report."""
        return None

    def as_dict(self) -> dict[str, str]:
        """The change as the dry run and the reports show it."""
        return {"stage": self.stage, "kind": self.kind, "target": self.target, "what": self.describe()}

    @classmethod
    def from_record(cls, stage: str, system: str, target: str, undo: dict[str, Any]) -> Change:
        raise NotImplementedError


KINDS: dict[str, type[Change]] = {}


def kind(name: str) -> Any:
    """Register a change class under the ledger's name for its kind."""

    def register(cls: type[Change]) -> type[Change]:
        cls.kind = name
        KINDS[name] = cls
        return cls

    return register


def from_record(row: ChangeRow) -> Change:
    """The change a ledger row records."""
    if row.kind not in KINDS:
        raise FatalError(f"change {row.id}: unknown kind {row.kind!r} in the ledger")
    return KINDS[row.kind].from_record(row.stage, row.system, row.target, row.undo)


def make(run: WaveRun, wu: WaveUser, change: Change) -> Any:
    """Make one change: recorded before it is made, confirmed after; return what it applied (None: nothing to do)."""
    settled = change.settle(run)
    if settled is None:
        return None
    with settled.claimed(run):
        change_id = run.ledger.plan_change(
            wu.key, run.wave.id, settled.stage, settled.system, settled.kind, settled.target, settled.record()
        )
        result = settled.apply(run)
    run.ledger.confirm(change_id, settled.learned(result))
    story.info("%s · changed: %s", settled.stage, settled.done(result))
    return result


def _values(values: Sequence[str]) -> str:
    return ", ".join(values) if values else "(none)"


# --- directory --------------------------------------------------------------------------------


@kind("modify")
@dataclass(frozen=True)
class ModifyEntry(Change):
    """Attributes of a directory entry set to the wanted values; before holds what they were."""

    directory: str  # ldap:platform or ldap:legacy:<municipality>
    dn: str
    before: Mapping[str, Sequence[str]] = field(default_factory=dict)
    after: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @property
    def system(self) -> str:
        return self.directory

    @property
    def target(self) -> str:
        return self.dn

    def record(self) -> dict[str, Any]:
        return {
            "dn": self.dn,
            "before": {k: list(v) for k, v in self.before.items()},
            "after": {k: sorted(str(x) for x in v) for k, v in self.after.items()},  # to notice drift before an undo
        }

    def describe(self) -> str:
        said = "; ".join(f"{k}: {_values(self.before.get(k, ()))} -> {_values(v)}" for k, v in self.after.items())
        return f"set {said} on {self.dn}"

    def describe_undo(self, purge: bool = False) -> str:
        return f"put back {', '.join(self.before)} on {self.dn}"

    def apply(self, run: WaveRun) -> Any:
        return directory_of(run, self.directory).modify(self.dn, self.after)

    def undo(self, run: WaveRun, purge: bool = False) -> None:
        directory_of(run, self.directory).modify(self.dn, self.before)

    def drift(self, run: WaveRun) -> str | None:
        if not self.after:
            return None
        entry = directory_of(run, self.directory).read(self.dn, list(self.after))
        if entry is None:
            return f"{self.dn} is gone"
        now = {name: sorted(entry.get(name)) for name in self.after}
        if now == {name: sorted(self.before.get(name, [])) for name in self.after}:
            return ALREADY
        for name, values in self.after.items():
            if now[name] != sorted(values):
                return f"{self.dn}: {name} is {now[name]}, the migration wrote {list(values)}"
        return None

    @classmethod
    def from_record(cls, stage: str, system: str, target: str, undo: dict[str, Any]) -> Change:
        return cls(stage, system, undo["dn"], undo.get("before", {}), undo.get("after", {}))


@kind("enable-account")
@dataclass(frozen=True)
class EnableAccount(ModifyEntry):
    """The platform account enabled (its userAccountControl without the disabled bit).

    Without before and after, they are read just before the change (an account created a moment ago).
    """

    def describe(self) -> str:
        return f"enable the platform account {self.dn}"

    def settle(self, run: WaveRun) -> Change | None:
        if self.after:
            return self
        ad = directory_of(run, self.directory)
        current = ad.read(self.dn, ["userAccountControl"])
        if current is None or ad.is_enabled(current):
            return None
        uac = int(current.get("userAccountControl")[0])
        return type(self)(
            self.stage,
            self.directory,
            self.dn,
            {"userAccountControl": [str(uac)]},
            {"userAccountControl": [str(uac & ~2)]},
        )


@kind("disable-legacy")
@dataclass(frozen=True)
class DisableLegacy(ModifyEntry):
    """The legacy account disabled: never deleted before sign-off."""

    def describe(self) -> str:
        return f"disable the legacy account {self.dn}"

    def describe_undo(self, purge: bool = False) -> str:
        return f"enable the legacy account {self.dn} again"


@dataclass(frozen=True)
class PlatformAccountChange(Change):
    """A change to the platform account at dn: the platform directory is its system, the DN its target."""

    dn: str

    @property
    def system(self) -> str:
        return "ldap:platform"

    @property
    def target(self) -> str:
        return self.dn

    def record(self) -> dict[str, Any]:
        return {"dn": self.dn}


@kind("create-account")
@dataclass(frozen=True)
class CreateAccount(PlatformAccountChange):
    """A new platform account, created disabled; the link (employeeNumber) ties it to the legacy user."""

    link: str
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {**super().record(), "link": self.link}

    def describe(self) -> str:
        name = self.attributes.get("sAMAccountName", self.dn)
        return f"create the platform account {name} as {self.dn}"

    def describe_undo(self, purge: bool = False) -> str:
        if purge:
            return f"delete the platform account {self.dn} (--purge)"
        return f"disable {self.dn} and park it in {PARKED_OU} (deleted with --purge)"

    def apply(self, run: WaveRun) -> Any:
        run.c.platform().add(self.dn, ["user"], dict(self.attributes))

    def undo(self, run: WaveRun, purge: bool = False) -> None:
        ad = run.c.platform()
        if ad.read(self.dn, ["1.1"]) is None:
            return
        if purge:
            ad.delete(self.dn)
            return
        current = ad.read(self.dn, ["userAccountControl"])
        uac = int((current.get("userAccountControl") if current else ("512",))[0] or 512)
        ad.modify(self.dn, {"userAccountControl": [str(uac | 2)]})
        ad.move(self.dn, parked_ou(run))

    @classmethod
    def from_record(cls, stage: str, system: str, target: str, undo: dict[str, Any]) -> Change:
        return cls(stage, undo["dn"], undo.get("link", ""))


@kind("unpark")
@dataclass(frozen=True)
class Unpark(PlatformAccountChange):
    """An account parked by an earlier rollback moved back into its municipality's OU."""

    to: str = ""
    moved_to: str = ""

    def describe(self) -> str:
        return f"bring the parked account {self.dn} back into {self.to}"

    def describe_undo(self, purge: bool = False) -> str:
        return f"park {self.moved_to or self.dn} in {PARKED_OU} again"

    def apply(self, run: WaveRun) -> Any:
        return run.c.platform().move(self.dn, self.to)

    def learned(self, result: Any) -> dict[str, Any] | None:
        return {"moved_to": result}

    def undo(self, run: WaveRun, purge: bool = False) -> None:
        ad = run.c.platform()
        if self.moved_to and ad.read(self.moved_to, ["1.1"]) is not None:
            ad.move(self.moved_to, parked_ou(run))

    @classmethod
    def from_record(cls, stage: str, system: str, target: str, undo: dict[str, Any]) -> Change:
        return cls(stage, undo["dn"], moved_to=undo.get("moved_to", ""))


@kind("set-password")
@dataclass(frozen=True)
class SetPassword(PlatformAccountChange):
    """The initial password: made here, kept in the credential file before it is set, changed at first logon."""

    user: str = ""  # municipality/legacy_id: the credential file's key
    account: str = ""
    upn: str = ""

    def describe(self) -> str:
        return f"set an initial password on {self.dn} (must change at first logon; kept in the wave's credential file)"

    def describe_undo(self, purge: bool = False) -> str:
        return "nothing (the account is disabled or removed with create-account)"

    def apply(self, run: WaveRun) -> Any:
        from ikomm.credentials import new_password

        password = new_password()
        run.credentials.put(self.user, self.account, self.upn, password)  # kept before it is set: never lost
        run.c.platform().set_password(self.dn, password, must_change=True)

    def undo(self, run: WaveRun, purge: bool = False) -> None:
        return None

    @classmethod
    def from_record(cls, stage: str, system: str, target: str, undo: dict[str, Any]) -> Change:
        return cls(stage, undo["dn"])


@kind("add-member")
@dataclass(frozen=True)
class AddMember(Change):
    """The user made a member of an application's group: one seat of that application."""

    group: str
    member: str
    app: str
    application: Application | None = None  # for the seat; not in the record

    @property
    def system(self) -> str:
        return "ldap:platform"

    @property
    def target(self) -> str:
        return self.group

    def record(self) -> dict[str, Any]:
        return {"group": self.group, "member": self.member, "app": self.app}

    def describe(self) -> str:
        name = self.application.name if self.application else self.app
        return f"add to {self.group} ({name})"

    def describe_undo(self, purge: bool = False) -> str:
        return f"remove from {self.group} (gives the seat of {self.app} back)"

    @contextmanager
    def claimed(self, run: WaveRun) -> Iterator[None]:
        if self.application is None:
            raise FatalError(f"add-member {self.group}: no application to take a seat of")
        run.seats.reserve(self.application)
        try:
            yield
        except BaseException:
            run.seats.release(self.app)
            raise

    def apply(self, run: WaveRun) -> Any:
        return run.c.platform().add_member(self.group, self.member)

    def undo(self, run: WaveRun, purge: bool = False) -> None:
        if run.c.platform().remove_member(self.group, self.member):
            run.seats.release(self.app)

    @classmethod
    def from_record(cls, stage: str, system: str, target: str, undo: dict[str, Any]) -> Change:
        return cls(stage, undo["group"], undo["member"], undo.get("app", ""))


# --- files ------------------------------------------------------------------------------------


@kind("copy-tree")
@dataclass(frozen=True)
class CopyTree(Change):
    """A profile or home folder copied to the zone's file server (pre-seed, then the final delta)."""

    server: str  # the platform file server's name
    host: str
    port: int
    root: str  # the platform-side folder
    tree: str  # profile or home
    existed_before: bool = False
    muni: str = ""
    source_root: str = ""
    owner: tuple[int, int] | None = None
    estimate: tuple[int, int] | None = None  # (files, bytes) still to copy, when a dry run counted them

    @property
    def system(self) -> str:
        return f"sftp:{self.host}:{self.port}"

    @property
    def target(self) -> str:
        return f"{self.server}:{self.root}"

    def record(self) -> dict[str, Any]:
        return {"server": self.server, "root": self.root, "existed_before": self.existed_before, "kind": self.tree}

    def describe(self) -> str:
        counted = f": {self.estimate[0]} file(s), {self.estimate[1]:,} bytes to copy" if self.estimate else ""
        return f"copy the {self.tree} folder {self.source_root} to {self.server}:{self.root}{counted}"

    def describe_undo(self, purge: bool = False) -> str:
        return f"move {self.server}:{self.root} to .quarantine/ beside it (never deleted)"

    def done(self, result: Any) -> str:
        if not isinstance(result, CopyReport):
            return self.describe()
        return (
            f"copied the {self.tree} folder to {self.server}:{self.root}: {result.copied} file(s), "
            f"{result.bytes:,} bytes ({result.unchanged} unchanged)"
        )

    def apply(self, run: WaveRun) -> CopyReport:
        if self.owner is None:
            raise FatalError(f"{self.target}: copy planned without the owner's uid/gid")
        source, target = run.c.legacy_files(self.muni), self._server(run)
        return copy_tree(source, self.source_root, target, self.root, self.owner)

    def _server(self, run: WaveRun) -> FileServer:
        return run.c.sftp(self.host, self.port)

    def undo(self, run: WaveRun, purge: bool = False) -> None:
        server = self._server(run)
        if server.exists(self.root):
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            parent, name = os.path.dirname(self.root), os.path.basename(self.root)
            server.rename(self.root, f"{parent}/.quarantine/{run.wave.id}/{name}-{stamp}")

    def kept_data(self, run: WaveRun) -> str | None:
        return f"{self.server}:{self.root} -> .quarantine/{run.wave.id}/"

    @classmethod
    def from_record(cls, stage: str, system: str, target: str, undo: dict[str, Any]) -> Change:
        host, _, port = system.removeprefix("sftp:").rpartition(":")
        return cls(
            stage, undo["server"], host, int(port), undo["root"], undo.get("kind", ""), bool(undo.get("existed_before"))
        )


# --- thin clients and broker ------------------------------------------------------------------


@kind("device-config")
@dataclass(frozen=True)
class DeviceConfig(Change):
    """The thin client's config lines pointed at the platform; before (and its .previous) kept for the undo."""

    device: str
    before: str
    previous: str | None = None
    wanted: Mapping[str, str] = field(default_factory=dict)
    after: str | None = None

    @property
    def system(self) -> str:
        return "devices"

    @property
    def target(self) -> str:
        return self.device

    def record(self) -> dict[str, Any]:
        return {"device": self.device, "before": self.before, "previous": self.previous}

    def describe(self) -> str:
        old = settings(self.before)
        said = "; ".join(f"{k}: {old.get(k, '(none)')} -> {v}" for k, v in self.wanted.items() if old.get(k) != v)
        return f"thin client {self.device}: {said}"

    def describe_undo(self, purge: bool = False) -> str:
        return f"put the config of thin client {self.device} back as it was"

    def apply(self, run: WaveRun) -> Any:
        return run.c.devices().update(self.device, self.wanted)

    def learned(self, result: Any) -> dict[str, Any] | None:
        return {"after": result.after}

    def undo(self, run: WaveRun, purge: bool = False) -> None:
        run.c.devices().restore(self.device, self.before, self.previous)

    def drift(self, run: WaveRun) -> str | None:
        if self.after is None:
            return None
        current = run.c.devices().read(self.device)
        if current is not None and current == self.before:
            return ALREADY
        if current is not None and settings(current) != settings(self.after):
            return f"device {self.device}: its config changed after the cutover"
        return None

    @classmethod
    def from_record(cls, stage: str, system: str, target: str, undo: dict[str, Any]) -> Change:
        return cls(stage, undo["device"], undo["before"], undo.get("previous"), after=undo.get("after"))


@kind("broker-add")
@dataclass(frozen=True)
class BrokerAdd(Change):
    """The user's platform name allowed on the zone's terminal-server collection."""

    collection: str
    user: str

    @property
    def system(self) -> str:
        return "broker"

    @property
    def target(self) -> str:
        return f"{self.collection}:{self.user}"

    def record(self) -> dict[str, Any]:
        return {"collection": self.collection, "user": self.user}

    def describe(self) -> str:
        return f"let the broker know {self.user} on the collection {self.collection}"

    def describe_undo(self, purge: bool = False) -> str:
        return f"remove {self.user} from the collection {self.collection}"

    def apply(self, run: WaveRun) -> Any:
        return run.c.broker().add_user(self.collection, self.user)

    def undo(self, run: WaveRun, purge: bool = False) -> None:
        run.c.broker().remove_user(self.collection, self.user)

    @classmethod
    def from_record(cls, stage: str, system: str, target: str, undo: dict[str, Any]) -> Change:
        return cls(stage, undo["collection"], undo["user"])

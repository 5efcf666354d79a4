"""The directory connector: one AD or OpenLDAP server reached with ldap3, over validated TLS.

One bound connection per connector and thread, reused; paged searches; escaped filter values and
DN components; snapshots of an entry with its memberships; idempotent modifications that write only
the difference. Every ldap3 error leaves as one of ikomm's own (transient, conflict, invalid input,
fatal), and no password ever appears in one.

Directory kinds differ in three places:

| | Active Directory (Samba AD in the lab) | OpenLDAP (posixAccount, groupOfNames) |
|---|---|---|
| disabled | userAccountControl bit 2 (ACCOUNTDISABLE) | `shadowExpire: 1` (expired since 1970-01-02) |
| password | `unicodePwd`, quoted UTF-16-LE, LDAPS only; `pwdLastSet=0` = must change | not written |
| membership | `member` of group (add of an existing one: 68, remove of a missing one: 53) | same (20, 16) |

`shadowExpire` is what the legacy systems understand: their PAM/NSS stacks (pam_unix via
nss-ldap/sssd) refuse an expired shadow account, while `pwdAccountLockedTime` needs the ppolicy
overlay, which the legacy slapd servers do not load.
"""

from __future__ import annotations

import base64
import ssl
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ldap3
from ldap3.core import exceptions as lx
from ldap3.protocol.microsoft import security_descriptor_control
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from ikomm.errors import ConflictError, FatalError, IkommError, InvalidInputError, TransientError
from ikomm.inventory.models import DirectoryConfig

SECURITY_DESCRIPTOR = "nTSecurityDescriptor"
DACL_CONTROL = security_descriptor_control(sdflags=0x04)  # read and write the DACL only, as a delegate may
TRANSIENT_RESULTS = {3, 11, 51, 52, 80}  # time limit, admin limit, busy, unavailable, other (server-side)
CONFLICT_RESULTS = {19, 20, 66, 67, 68, 69}  # constraint, value exists, non-leaf, RDN, entry exists, OC mods
INVALID_RESULTS = {16, 17, 18, 21, 32, 34, 64, 65}  # no such attribute/object, syntax, naming, object class
ALREADY_MEMBER = {20, 68}  # OpenLDAP: attributeOrValueExists; AD: entryAlreadyExists
NOT_A_MEMBER = {16, 53}  # OpenLDAP: noSuchAttribute; AD: unwillingToPerform ("already deleted")
MUST_CHANGE = ("data 773", "data 532")  # AD bind refused, but the password was right: must change / expired
UAC_DISABLED = 0x2
Changes = dict[str, list[tuple[str, list[str]]]]


@dataclass(frozen=True)
class Snapshot:
    """An entry as read: its DN and attributes (names lower-cased, values as sorted text)."""

    dn: str
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def get(self, name: str) -> tuple[str, ...]:
        """The values of attribute name, or an empty tuple."""
        return self.attributes.get(name.lower(), ())


@dataclass(frozen=True)
class Change:
    """What a modification did: whether anything was written, and the attributes before and after."""

    dn: str
    changed: bool
    before: Mapping[str, tuple[str, ...]]
    after: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class EntryState:
    """An entry and the DNs of the groups it is a member of: what a rollback must restore."""

    entry: Snapshot
    groups: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the ledger and snapshots (JSON-able)."""
        return {
            "dn": self.entry.dn,
            "attributes": {k: list(v) for k, v in self.entry.attributes.items()},
            "groups": list(self.groups),
        }


def child_dn(attribute: str, value: str, parent: str) -> str:
    """attribute=value,parent with value escaped as a DN component (commas, plus, quotes, æøå safe); an empty value
    names nothing and is refused."""
    if not value:
        raise InvalidInputError(f"an empty {attribute} names no entry under {parent}")
    return f"{attribute}={escape_rdn(value)},{parent}"


def equality_filter(attribute: str, value: str) -> str:
    """(attribute=value) with value escaped, so that input can never change the filter's meaning."""
    if not attribute.replace("-", "").isalnum():
        raise InvalidInputError(f"not an attribute name: {attribute!r}")
    return f"({attribute}={escape_filter_chars(value)})"


def plan_modifications(current: Snapshot, wanted: Mapping[str, Sequence[str]]) -> Changes:
    """The ldap3 changes that turn current into wanted; attributes not named in wanted are left alone."""
    changes: Changes = {}
    for name, values in wanted.items():
        new = tuple(sorted(str(v) for v in values))
        if tuple(sorted(current.get(name))) == new:
            continue
        if new:
            changes[name] = [(ldap3.MODIFY_REPLACE, list(new))]
        elif current.get(name):
            changes[name] = [(ldap3.MODIFY_DELETE, [])]
    return changes


def classify(exc: Exception, doing: str) -> IkommError:
    """Turn an ldap3 exception into ikomm's error for what the caller should do next."""
    if isinstance(exc, IkommError):
        return exc
    if isinstance(exc, lx.LDAPOperationResult):
        code = exc.result or 0
        text = f"{doing}: {exc.description} ({code}) {exc.message or ''}".strip()
        if code in TRANSIENT_RESULTS:
            return TransientError(text)
        if code in CONFLICT_RESULTS:
            return ConflictError(text)
        if code in INVALID_RESULTS:
            return InvalidInputError(text)
        return FatalError(text)
    if isinstance(exc, lx.LDAPSocketOpenError | lx.LDAPCommunicationError | lx.LDAPSessionTerminatedByServerError):
        return TransientError(f"{doing}: {type(exc).__name__}: {exc}")
    if isinstance(exc, lx.LDAPInvalidDnError | lx.LDAPInvalidFilterError | lx.LDAPAttributeError):
        return InvalidInputError(f"{doing}: {exc}")
    return FatalError(f"{doing}: {type(exc).__name__}: {exc}")


class DirectoryConnector:
    """One directory server: settings in, a reused bound connection inside, ikomm errors out."""

    def __init__(self, config: DirectoryConfig, password: str, ca_file: Path | None, timeout: int = 10) -> None:
        if config.security == "plain":
            raise FatalError(f"{config.host}: plain LDAP would send the password in clear; use ldaps or starttls")
        self.config = config
        self._password = password
        self._tls = ldap3.Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=str(ca_file) if ca_file else None,
            valid_names=[config.tls_name] if config.tls_name else None,
        )
        self._timeout = timeout
        self._local = threading.local()

    @property
    def _server(self) -> ldap3.Server:
        """This thread's Server object (ldap3's is not thread-safe); no schema read, values are kept raw."""
        server: ldap3.Server | None = getattr(self._local, "server", None)
        if server is None:
            c = self.config
            server = ldap3.Server(
                c.host,
                port=c.port,
                use_ssl=c.security == "ldaps",
                tls=self._tls,
                connect_timeout=self._timeout,
                get_info=ldap3.NONE,
            )
            self._local.server = server
        return server

    def __repr__(self) -> str:  # never shows the password
        return f"DirectoryConnector({self.config.kind}, {self.config.host}:{self.config.port})"

    @property
    def _conn(self) -> ldap3.Connection | None:
        conn: ldap3.Connection | None = getattr(self._local, "conn", None)
        return conn

    @_conn.setter
    def _conn(self, conn: ldap3.Connection | None) -> None:
        self._local.conn = conn

    def connection(self) -> ldap3.Connection:
        """This thread's bound connection, opened (and StartTLS'd) on first use and reused afterwards."""
        conn = self._conn
        if conn is not None and conn.bound and not conn.closed:
            return conn
        self._conn = self._bind(self.config.bind_dn, self._password)
        return self._conn

    def _bind(self, login: str, password: str) -> ldap3.Connection:
        conn = ldap3.Connection(
            self._server, login, password, raise_exceptions=True, receive_timeout=self._timeout, auto_referrals=False
        )
        try:
            conn.open()
            if self.config.security == "starttls":
                conn.start_tls()
            conn.bind()
        except Exception as exc:
            conn.unbind()
            raise classify(exc, f"bind to {self.config.host} as {login}") from None
        return conn

    def close(self) -> None:
        """Unbind and forget this thread's connection."""
        if self._conn is not None:
            self._conn.unbind()
            self._conn = None

    def search(
        self, base: str, ldap_filter: str, attributes: Sequence[str] = ("*",), controls: list[Any] | None = None
    ) -> Iterator[Snapshot]:
        """Every entry below base matching ldap_filter, fetched page by page."""
        try:
            for entry in self.connection().extend.standard.paged_search(
                base, ldap_filter, attributes=list(attributes), paged_size=500, generator=True, controls=controls
            ):
                if entry["type"] == "searchResEntry":
                    yield _snapshot(entry["dn"], entry["raw_attributes"])
        except Exception as exc:
            raise self._failed(exc, f"search {base} {ldap_filter}") from None

    def read(self, dn: str, attributes: Sequence[str] = ("*",)) -> Snapshot | None:
        """The entry at dn with its attributes, or None if there is none."""
        try:
            conn = self.connection()
            conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=list(attributes))
        except lx.LDAPNoSuchObjectResult:
            return None
        except Exception as exc:
            raise self._failed(exc, f"read {dn}") from None
        return _snapshot(conn.response[0]["dn"], conn.response[0]["raw_attributes"]) if conn.response else None

    def find_user(self, legacy_id: str) -> Snapshot | None:
        """The user whose legacy id attribute (from the attribute map) equals legacy_id, or None."""
        attribute = self.config.attribute_map.get("legacy_id", "uid")
        found = list(self.search(self.config.users_dn, equality_filter(attribute, legacy_id)))
        if len(found) > 1:
            raise ConflictError(f"{len(found)} entries have {attribute}={legacy_id!r} below {self.config.users_dn}")
        return found[0] if found else None

    def add(self, dn: str, object_classes: Sequence[str], attributes: Mapping[str, Any]) -> None:
        """Create the entry; an existing one is a ConflictError (adopting it is the caller's decision)."""
        try:
            self.connection().add(dn, list(object_classes), dict(attributes))
        except Exception as exc:
            raise self._failed(exc, f"add {dn}") from None

    def modify(self, dn: str, wanted: Mapping[str, Sequence[str]]) -> Change:
        """Make the named attributes of dn equal wanted, writing only what differs."""
        current = self.read(dn, list(wanted))
        if current is None:
            raise InvalidInputError(f"modify {dn}: no such entry")
        changes = plan_modifications(current, wanted)
        before = {name: current.get(name) for name in changes}
        if changes:
            try:
                self.connection().modify(dn, changes)
            except Exception as exc:
                raise self._failed(exc, f"modify {dn}") from None
        after = {name: tuple(sorted(str(v) for v in wanted[name])) for name in changes}
        return Change(dn, bool(changes), before, after)

    def search_acl(self, base: str, ldap_filter: str, attributes: Sequence[str] = ()) -> Iterator[Snapshot]:
        """AD: like search, each entry with its DACL in nTSecurityDescriptor (as base64: text)."""
        yield from self.search(base, ldap_filter, [*attributes, SECURITY_DESCRIPTOR], DACL_CONTROL)

    def read_acl(self, dn: str) -> bytes | None:
        """AD: the entry's security descriptor with its DACL only (self-relative bytes), or None if no entry."""
        try:
            conn = self.connection()
            conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=[SECURITY_DESCRIPTOR], controls=DACL_CONTROL)
        except lx.LDAPNoSuchObjectResult:
            return None
        except Exception as exc:
            raise self._failed(exc, f"read the ACL of {dn}") from None
        if not conn.response:
            return None
        values = conn.response[0]["raw_attributes"].get(SECURITY_DESCRIPTOR) or [b""]
        return bytes(values[0])

    def write_acl(self, dn: str, descriptor: bytes) -> None:
        """AD: replace the entry's DACL with the one in descriptor (owner, group and SACL are left alone)."""
        try:
            self.connection().modify(
                dn, {SECURITY_DESCRIPTOR: [(ldap3.MODIFY_REPLACE, [descriptor])]}, controls=DACL_CONTROL
            )
        except Exception as exc:
            raise self._failed(exc, f"write the ACL of {dn}") from None

    def state(self, dn: str) -> EntryState | None:
        """The entry's complete state (every user attribute, and the groups it is in), or None."""
        entry = self.read(dn)
        return None if entry is None else EntryState(entry, self.groups_of(entry.dn))

    def groups_of(self, member_dn: str) -> tuple[str, ...]:
        """DNs of the groups below the directory's groups_dn that list member_dn as a member."""
        found = self.search(self.config.groups_dn, equality_filter("member", member_dn), ["1.1"])
        return tuple(sorted(s.dn for s in found))

    def add_member(self, group_dn: str, member_dn: str) -> bool:
        """Make member_dn a member of group_dn; False if it already was (nothing written)."""
        return self._membership(ldap3.MODIFY_ADD, group_dn, member_dn, ALREADY_MEMBER)

    def remove_member(self, group_dn: str, member_dn: str) -> bool:
        """Take member_dn out of group_dn; False if it was not a member (nothing written)."""
        return self._membership(ldap3.MODIFY_DELETE, group_dn, member_dn, NOT_A_MEMBER)

    def _membership(self, op: str, group_dn: str, member_dn: str, no_op_codes: set[int]) -> bool:
        try:
            self.connection().modify(group_dn, {"member": [(op, [member_dn])]})
        except lx.LDAPOperationResult as exc:
            if exc.result in no_op_codes:
                return False
            raise self._failed(exc, f"{'add' if op == ldap3.MODIFY_ADD else 'remove'} member of {group_dn}") from None
        except Exception as exc:
            raise self._failed(exc, f"membership in {group_dn}") from None
        return True

    def is_enabled(self, entry: Snapshot) -> bool:
        """Whether the entry may log on, in the way of this directory's kind."""
        if self.config.kind == "ad":
            return not int((entry.get("userAccountControl") or ("0",))[0]) & UAC_DISABLED
        return not entry.get("shadowExpire")

    def set_enabled(self, dn: str, enabled: bool) -> Change:
        """Enable or disable the account (AD: userAccountControl bit 2; OpenLDAP: shadowExpire=1)."""
        if self.config.kind != "ad":
            return self.modify(dn, {"shadowExpire": [] if enabled else ["1"]})
        entry = self.read(dn, ["userAccountControl"])
        if entry is None:
            raise InvalidInputError(f"enable/disable {dn}: no such entry")
        uac = int((entry.get("userAccountControl") or ("512",))[0])
        return self.modify(dn, {"userAccountControl": [str(uac & ~UAC_DISABLED if enabled else uac | UAC_DISABLED)]})

    def set_password(self, dn: str, password: str, must_change: bool = True) -> None:
        """AD only, LDAPS only: set unicodePwd (and pwdLastSet=0 so the user must change it at first logon)."""
        if self.config.kind != "ad" or self.config.security != "ldaps":
            raise FatalError(f"set password on {self.config.host}: only for Active Directory over LDAPS")
        changes: Changes = {"unicodePwd": [(ldap3.MODIFY_REPLACE, [f'"{password}"'.encode("utf-16-le")])]}  # type: ignore[list-item]
        if must_change:
            changes["pwdLastSet"] = [(ldap3.MODIFY_REPLACE, ["0"])]
        try:
            self.connection().modify(dn, changes)
        except lx.LDAPOperationResult as exc:  # the server's message never holds the password
            raise self._failed(exc, f"set password of {dn}") from None
        except Exception as exc:  # other ldap3 errors may quote values: name only the type
            raise self._failed(FatalError(type(exc).__name__), f"set password of {dn}") from None

    def check_password(self, login: str, password: str) -> bool:
        """Whether login (DN or UPN) binds with password; 'must change at next logon' counts as right."""
        try:
            self._bind(login, password).unbind()
        except IkommError as exc:
            if isinstance(exc, TransientError):
                raise
            return any(code in str(exc) for code in MUST_CHANGE)
        return True

    def move(self, dn: str, new_parent: str) -> str:
        """Move the entry under new_parent, keeping its RDN; return the new DN (idempotent)."""
        rdn = _first_rdn(dn)
        target = moved_dn(dn, new_parent)
        if self.read(target, ["1.1"]) is not None:
            return target
        try:
            self.connection().modify_dn(dn, rdn, new_superior=new_parent)
        except Exception as exc:
            raise self._failed(exc, f"move {dn} to {new_parent}") from None
        return target

    def delete(self, dn: str) -> bool:
        """Delete a leaf entry; False if it was already gone."""
        try:
            self.connection().delete(dn)
        except lx.LDAPNoSuchObjectResult:
            return False
        except Exception as exc:
            raise self._failed(exc, f"delete {dn}") from None
        return True

    def _failed(self, exc: Exception, doing: str) -> IkommError:
        """Classify exc; after a transient fault, forget the connection so the next call reconnects."""
        error = classify(exc, doing)
        if isinstance(error, TransientError):
            self._conn = None
        return error


def moved_dn(dn: str, new_parent: str) -> str:
    """The DN the entry has once moved under new_parent (its RDN kept)."""
    return f"{_first_rdn(dn)},{new_parent}"


def parent_dn(dn: str) -> str:
    """The DN of the entry's parent (dn without its first RDN)."""
    return dn[len(_first_rdn(dn)) + 1 :]


def same_rdn(a: str, b: str) -> bool:
    """Whether two DNs name their entries alike (first RDN, any case), wherever the entries lie."""
    return _first_rdn(a).lower() == _first_rdn(b).lower()


def _first_rdn(dn: str) -> str:
    """The first RDN of dn, honouring escaped commas."""
    i = 0
    while i < len(dn):
        if dn[i] == "\\":
            i += 2
            continue
        if dn[i] == ",":
            return dn[:i]
        i += 1
    return dn


def _text(value: bytes) -> str:
    """A raw LDAP value as the server sent it: UTF-8 text, or base64 for binary values (GUIDs, SIDs)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(value).decode("ascii")


def _snapshot(dn: str, raw: Mapping[str, Any]) -> Snapshot:
    """A Snapshot from ldap3's raw_attributes: exact server values, so a snapshot restores what was there."""
    values: dict[str, tuple[str, ...]] = {}
    for name, items in raw.items():
        text = [_text(v) if isinstance(v, bytes) else str(v) for v in items if v is not None]
        if text:
            values[name.lower()] = tuple(sorted(text))
    return Snapshot(dn, values)

"""The directory connector: one AD or OpenLDAP server reached with ldap3, over validated TLS.

A first slice of issue 3: a bound connection reused per connector, paged searches, escaped filter
values, snapshots of an entry, and idempotent modifications that write only the difference. Every
ldap3 error leaves as one of ikomm's own (transient, conflict, invalid input, fatal).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ldap3
from ldap3.core import exceptions as lx
from ldap3.utils.conv import escape_filter_chars

from ikomm.errors import ConflictError, FatalError, IkommError, InvalidInputError, TransientError
from ikomm.inventory.models import DirectoryConfig

TRANSIENT_RESULTS = {3, 11, 51, 52, 80}  # time limit, admin limit, busy, unavailable, other (server-side)
CONFLICT_RESULTS = {19, 20, 66, 67, 68, 69}  # constraint, value exists, non-leaf, RDN, entry exists, OC mods
INVALID_RESULTS = {16, 17, 18, 21, 32, 34, 64, 65}  # no such attribute/object, syntax, naming, object class
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
        tls = ldap3.Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=str(ca_file) if ca_file else None,
            valid_names=[config.tls_name] if config.tls_name else None,
        )
        self._server = ldap3.Server(
            config.host, port=config.port, use_ssl=config.security == "ldaps", tls=tls, connect_timeout=timeout
        )
        self._timeout = timeout
        self._conn: ldap3.Connection | None = None

    def __repr__(self) -> str:  # never shows the password
        return f"DirectoryConnector({self.config.kind}, {self.config.host}:{self.config.port})"

    def connection(self) -> ldap3.Connection:
        """The bound connection, opened (and StartTLS'd) on first use and reused afterwards."""
        if self._conn is not None and self._conn.bound and not self._conn.closed:
            return self._conn
        conn = ldap3.Connection(
            self._server,
            self.config.bind_dn,
            self._password,
            raise_exceptions=True,
            receive_timeout=self._timeout,
            auto_referrals=False,
        )
        try:
            conn.open()
            if self.config.security == "starttls":
                conn.start_tls()
            conn.bind()
        except Exception as exc:
            raise classify(exc, f"bind to {self.config.host}") from None
        self._conn = conn
        return conn

    def close(self) -> None:
        """Unbind and forget the connection."""
        if self._conn is not None:
            self._conn.unbind()
            self._conn = None

    def search(self, base: str, ldap_filter: str, attributes: Sequence[str] = ("*",)) -> Iterator[Snapshot]:
        """Every entry below base matching ldap_filter, fetched page by page."""
        try:
            for entry in self.connection().extend.standard.paged_search(
                base, ldap_filter, attributes=list(attributes), paged_size=500, generator=True
            ):
                if entry["type"] == "searchResEntry":
                    yield _snapshot(entry["dn"], entry["attributes"])
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
        return _snapshot(conn.response[0]["dn"], conn.response[0]["attributes"]) if conn.response else None

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

    def _failed(self, exc: Exception, doing: str) -> IkommError:
        """Classify exc; after a transient fault, forget the connection so the next call reconnects."""
        error = classify(exc, doing)
        if isinstance(error, TransientError):
            self._conn = None
        return error


def _snapshot(dn: str, attributes: Mapping[str, Any]) -> Snapshot:
    values: dict[str, tuple[str, ...]] = {}
    for name, raw in attributes.items():
        items = raw if isinstance(raw, list) else [raw]
        text = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in items if v is not None]
        if text:
            values[name.lower()] = tuple(sorted(text))
    return Snapshot(dn, values)

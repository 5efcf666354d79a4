"""Pydantic models of the inventory files: the edge where YAML and CSV become typed values."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from datetime import date
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, get_args

from ldap3.core.exceptions import LDAPInvalidDnError
from ldap3.utils.dn import parse_dn
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

SLUG = r"^[a-z][a-z0-9-]*$"
MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
DOMAIN = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
EMAIL = re.compile(r"^[^@\s]+@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


# Control, format, line- and paragraph-separator, surrogate and private-use characters: none belongs in a
# name, path, group or setting, and each can split a line in a config file, an LDAP filter or a terminal.
INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co"})
MAX_TEXT = 4096  # no name, path, DN or setting comes near it


def _visible(value: Any) -> Any:
    """Refuse a text with a control or invisible character in it, naming the character."""
    if isinstance(value, str):
        for ch in value:
            if unicodedata.category(ch) in INVISIBLE:
                name = unicodedata.name(ch, "control character")
                raise ValueError(
                    f"contains a control or invisible character (U+{ord(ch):04X} {name}); use one line of visible text"
                )
    return value


def _check_dn(value: str) -> str:
    """Accept a distinguished name only if ldap3 can parse it into non-empty RDNs."""
    try:
        parts = parse_dn(value)
    except LDAPInvalidDnError as exc:
        raise ValueError(f"not a valid DN ({exc})") from None
    if not parts or any(not attr or not val for attr, val, _ in parts):
        raise ValueError("not a valid DN (empty attribute or value)")
    return value


def _check_host(value: str) -> str:
    """Accept an IP address or a DNS host name."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not HOSTNAME.fullmatch(value):
            raise ValueError("not an IP address or host name") from None
    return value


def _check_attribute_name(value: str) -> str:
    """Accept an LDAP attribute's name as RFC 4512 spells one: nothing that could change a filter it goes into."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,63}", value):
        raise ValueError("not an LDAP attribute name (a letter, then letters, digits or '-')")
    return value


def _check_abs_posix(value: str) -> str:
    """Accept an absolute POSIX path without '..' components."""
    path = PurePosixPath(value)
    if not path.is_absolute() or ".." in path.parts:
        raise ValueError("must be an absolute path without '..'")
    return value


Visible = Annotated[str, BeforeValidator(_visible)]  # for items of lists and maps (plain fields: Model)
AttributeName = Annotated[Visible, AfterValidator(_check_attribute_name)]
Mapped = Literal["legacy_id", "given_name", "surname", "email", "department", "title"]  # what a legacy attribute is for
Name = Annotated[Visible, Field(min_length=1)]
DN = Annotated[str, AfterValidator(_check_dn)]
Host = Annotated[str, AfterValidator(_check_host)]
AbsPath = Annotated[str, AfterValidator(_check_abs_posix)]
Slug = Annotated[str, Field(pattern=SLUG, max_length=40)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Model(BaseModel):
    """Base of every inventory model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _plain_values(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse true/false where a number belongs, and control or invisible characters anywhere."""
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            types = {annotation, *get_args(annotation)}
            if types & {int, float} and bool not in types:
                raise ValueError("must be a number, not true or false")
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise ValueError(f"{len(value):,} characters long; at most {MAX_TEXT:,}")
        return _visible(value) if isinstance(value, str) else value  # items of lists and maps: `Visible`


class CredentialRef(Model):
    """Where a secret comes from: an environment variable or a Prefect Secret block, never a value."""

    env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")] | None = None
    prefect_secret: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")] | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_values(cls, data: object) -> object:
        if isinstance(data, str | int | float):
            raise ValueError("credentials are references ({env: NAME} or {prefect_secret: name}), never values")
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> CredentialRef:
        if (self.env is None) == (self.prefect_secret is None):
            raise ValueError("give exactly one of 'env' or 'prefect_secret'")
        return self

    def __str__(self) -> str:
        return f"env:{self.env}" if self.env else f"prefect_secret:{self.prefect_secret}"


class DirectoryConfig(Model):
    """A directory server reached with ldap3: Active Directory or OpenLDAP."""

    kind: Literal["ad", "openldap"]
    host: Host
    port: Port = 636
    security: Literal["ldaps", "starttls", "plain"] = "ldaps"
    base_dn: DN
    users_dn: DN
    groups_dn: DN
    bind_dn: str
    password: CredentialRef
    ca_file: str | None = None
    tls_name: str | None = Field(default=None, description="name to validate in the server certificate")
    realm: str | None = None
    attribute_map: dict[Mapped, AttributeName] = Field(default_factory=dict)

    @field_validator("tls_name")
    @classmethod
    def _one_server(cls, value: str | None) -> str | None:
        if value is not None and ("*" in value or not HOSTNAME.fullmatch(value)):
            raise ValueError("must name the one server (a host name, no wildcard): a wildcard trusts every server")
        return value

    @model_validator(mode="after")
    def _tls_needs_ca(self) -> DirectoryConfig:
        if self.security == "plain":
            raise ValueError("security 'plain' would send the bind password in clear; use ldaps or starttls")
        if not self.ca_file:
            raise ValueError("'ca_file' is required for ldaps and starttls (certificates are always validated)")
        for name in ("users_dn", "groups_dn"):
            dn = getattr(self, name)
            if not dn.lower().endswith(self.base_dn.lower()):
                raise ValueError(f"'{name}' must lie under base_dn {self.base_dn}")
        return self


class FileServerConfig(Model):
    """A file server holding profile and home trees, reached over SSH/SFTP.

    acl_port: where the same host's SSH serves its read-only ACL reader (ikomm/connectors/acl_reader.py, the
    forced command of that port), for `ikomm audit isolation` to read the POSIX ACLs of the folders; none, and
    the audit says it could not read them."""

    name: str
    host: Host
    port: Port = 22
    profile_root: AbsPath
    home_root: AbsPath
    acl_port: Port | None = None


class TerminalFarm(Model):
    """The terminal-server farm of a zone: an RDS session collection and its hosts."""

    collection: Name
    hosts: list[Name] = Field(min_length=1)


class Zone(Model):
    """A security zone of the platform, with its own file server and terminal-server farm."""

    id: Slug
    name: str
    file_server: FileServerConfig
    terminal_farm: TerminalFarm


class SshAccess(Model):
    """How ikomm reaches SSH hosts: a user, a private key and the known host keys."""

    user: str
    key_file: str
    known_hosts: str


class ConfigHost(Model):
    """The thin-client configuration host: one config file per device under config_root."""

    host: Host
    port: Port = 22
    config_root: AbsPath


class BrokerConfig(Model):
    """The terminal-server broker, reached with WinRM (WS-Management)."""

    host: Host
    port: Port = 5986
    scheme: Literal["https", "http"] = "https"
    user: str
    password: CredentialRef
    ca_file: str | None = None

    @model_validator(mode="after")
    def _https_needs_ca(self) -> BrokerConfig:
        if self.scheme != "https":
            raise ValueError("scheme 'http' would send the broker password in clear; use https")
        if not self.ca_file:
            raise ValueError("'ca_file' is required for https (certificates are always validated)")
        return self


class LabSettings(Model):
    """Marks an inventory as a lab: `ikomm lab` may start its servers under dir."""

    dir: str


class PlatformFile(Model):
    """platform.yaml: the shared platform the users move to."""

    lab: LabSettings | None = None
    secrets_file: str | None = None
    directory: DirectoryConfig
    zones: list[Zone] = Field(min_length=1)
    ssh: SshAccess
    thin_client_config_host: ConfigHost
    broker: BrokerConfig


class LegacyTerminalServer(Model):
    """The terminal server a municipality's thin clients point at before cutover."""

    name: str
    address: Host


class LegacySystems(Model):
    """A municipality's legacy directory, file server and terminal server."""

    directory: DirectoryConfig
    file_server: FileServerConfig
    terminal_server: LegacyTerminalServer


class Delegation(Model):
    """A municipality's own rights in the platform: its service account and admin group (`ikomm tenant add`).

    A wave of a municipality with a delegation binds to the platform directory as its account, which can
    write only in the municipality's own OU and the membership of its own application groups.
    """

    account_dn: DN
    account_upn: Annotated[str, Field(pattern=EMAIL.pattern, max_length=320)]
    admin_group_dn: DN
    password: CredentialRef


class Municipality(Model):
    """One owner municipality (or a customer onboarded with `ikomm tenant add`) and its legacy systems."""

    id: Slug
    name: str
    ownership_pct: float = Field(ge=0, le=100)
    target_ou: DN
    upn_suffix: Annotated[str, Field(pattern=DOMAIN.pattern, max_length=253)]
    legacy: LegacySystems
    delegation: Delegation | None = None


class TenantKit(Model):
    """tenants/<id>/tenant.yaml: what a municipality brings before it is onboarded (its legacy side).

    Beside it lie users.csv and devices.csv, in the columns of users/ and devices/.
    """

    id: Slug
    name: Name
    upn_suffix: Annotated[str, Field(pattern=DOMAIN.pattern, max_length=253)]
    legacy: LegacySystems
    granted_by: dict[Slug, list[Name]] = Field(default_factory=dict)  # application id -> legacy groups


class MunicipalitiesFile(Model):
    """municipalities.yaml."""

    municipalities: list[Municipality] = Field(min_length=1)


class Application(Model):
    """An ASP application: its zone, seat limit, AD group per municipality, and granting legacy groups."""

    id: Slug
    name: str
    zone: Slug
    seat_limit: int = Field(gt=0)
    groups: dict[Visible, Name] = Field(min_length=1)
    granted_by: dict[Visible, list[Name]] = Field(default_factory=dict)
    ready_from: date


class ApplicationsFile(Model):
    """applications.yaml."""

    applications: list[Application]


class Server(Model):
    """One platform server."""

    name: Annotated[str, Field(pattern=HOSTNAME.pattern)]
    role: Literal[
        "domain-controller",
        "file-server",
        "terminal-server",
        "broker",
        "app-server",
        "database",
        "config-host",
        "print",
        "backup",
        "monitoring",
    ]
    zone: Slug
    address: Host
    access: Literal["ssh", "winrm"]


class ServersFile(Model):
    """servers.yaml."""

    servers: list[Server]


class User(Model):
    """One row of users/<municipality>.csv: a legacy user as discovery found them."""

    legacy_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
    given_name: Annotated[str, Field(min_length=1)]
    surname: Annotated[str, Field(min_length=1)]
    email: Annotated[str, Field(pattern=EMAIL.pattern)]
    department: Annotated[str, Field(min_length=1)]
    title: str
    zone: Slug
    legacy_groups: tuple[str, ...]
    home_path: AbsPath
    profile_path: AbsPath
    device: str | None
    enabled: bool

    @field_validator("legacy_groups", mode="before")
    @classmethod
    def _split_groups(cls, value: object) -> object:
        if isinstance(value, str):
            _visible(value)  # before it is split: this validator may run before Model's own
            groups = tuple(g.strip() for g in value.split(";"))
            if value.strip() and not all(groups):
                raise ValueError("an empty group name (two ';' in a row, or one at either end)")
            return tuple(g for g in groups if g)
        return value

    @field_validator("device", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("enabled", mode="before")
    @classmethod
    def _strict_bool(cls, value: object) -> object:
        if isinstance(value, str) and value.lower() not in ("true", "false"):
            raise ValueError("must be 'true' or 'false'")
        return value


class Device(Model):
    """One row of devices/<municipality>.csv: a thin client."""

    device_id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    mac: Annotated[str, Field(pattern=MAC.pattern)]
    site: Annotated[str, Field(min_length=1)]
    assigned_user: str | None

    @field_validator("assigned_user", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value


USER_COLUMNS = tuple(User.model_fields)
DEVICE_COLUMNS = tuple(Device.model_fields)

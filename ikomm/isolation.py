"""`ikomm audit isolation`: read the platform and report every place where one municipality reaches another.

    ace          an explicit ACE in one municipality's OU (or on its application group) that gives
                 rights to a principal of another municipality, or write rights to a principal everyone is
                 (Everyone, Authenticated Users, Domain Users, ...); and an inheritable ACE above the
                 municipalities' OUs (OU=Kommuner, the domain) or their application groups that reaches
                 them so (it is reported where it is written, not on each object that inherits it)
    nesting      a group of one municipality (in its OU, or its admin group) with a member of another,
                 directly or through groups nested in it (of anyone, or of no one)
    placement    an account linked to one municipality (employeeNumber <id>:...) outside its OU (the
                 platform's OU=Deaktivert, where rollbacks park accounts, counts as inside)
    folder       a home, profile or tenant folder on a zone's file server that another municipality's
                 accounts can read: readable by others, by Domain Users, or by another's group; or owned
                 (as account or as group) by another municipality's principal, who can open it at will; or
                 whose POSIX ACL names such a principal or Domain Users (read through the file server's
                 read-only ACL reader, connectors/acl_reader.py; a server without one is said not read)
    entitlement  an application group of one municipality holding a member of another

A principal belongs to the municipality whose employeeNumber it carries, else whose OU it lies in, else
whose delegation (account, admin group) or application group it is. Folders are checked at the top of each
tree (a folder closed to others closes what is below it). Only the platform is read: nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from posixpath import basename

from ikomm.acl import (
    CONTAINER_INHERIT,
    CREATE_CHILD,
    DELETE,
    DELETE_CHILD,
    DELETE_TREE,
    EXTENDED_RIGHTS,
    SELF_WRITE,
    WRITE_DAC,
    WRITE_OWNER,
    WRITE_PROPERTY,
    Ace,
    aces,
    descriptor_bytes,
    rid,
    sid_text,
)
from ikomm.changes import PARKED_OU
from ikomm.connectors import Connectors
from ikomm.connectors.directory import Snapshot
from ikomm.connectors.files import AclEntry, Owned
from ikomm.inventory import Inventory
from ikomm.stages import DOMAIN_USERS_RID, ID_BASE
from ikomm.tenancy import tenants_root

OTHERS_ANY = 0o007
GROUP_READ = 0o050

GENERIC_ALL, GENERIC_WRITE = 0x10000000, 0x40000000
WRITES = (
    (CREATE_CHILD | DELETE_CHILD | SELF_WRITE | WRITE_PROPERTY | DELETE_TREE | DELETE | WRITE_DAC | WRITE_OWNER)
    | GENERIC_ALL
    | GENERIC_WRITE
)
RESET_PASSWORD = "00299570-246d-11d0-a768-00aa006e0529"  # the extended right to set a password without the old one
# Principals every account (or anyone) is: a grant to one of them is a grant to every municipality's accounts.
EVERYONE = {
    "S-1-1-0": "Everyone",
    "S-1-5-7": "Anonymous Logon",
    "S-1-5-11": "Authenticated Users",
    "S-1-5-2": "Network",
    "S-1-5-4": "Interactive",
    "S-1-5-32-545": "Users",
    "S-1-5-32-546": "Guests",
}
EVERYONE_IN_DOMAIN = {513: "Domain Users", 514: "Domain Guests", 515: "Domain Computers"}


def writes(ace: Ace) -> bool:
    """Whether the ACE grants a right that changes the object: a write, a delete, its ACL or owner, or resetting
    a password (all extended rights, or that one)."""
    if ace.mask & WRITES:
        return True
    return bool(ace.mask & EXTENDED_RIGHTS) and ace.object_type in (None, RESET_PASSWORD)


@dataclass(frozen=True)
class Finding:
    """One crossing: its kind, where it is, and what it lets happen."""

    kind: str
    where: str
    what: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class Principals:
    """Every user and group of the platform directory, with the municipality each belongs to."""

    def __init__(self, inv: Inventory, entries: list[Snapshot], app_groups: dict[str, tuple[str, str]]) -> None:
        self.inv = inv
        self.app_groups = app_groups
        self.groups_dn = inv.platform.directory.groups_dn.lower()
        self.ous = sorted(((m.target_ou.lower(), m.id) for m in inv.municipalities.values()), key=lambda t: -len(t[0]))
        self.delegated: dict[str, str] = {}
        for m in inv.municipalities.values():
            if m.delegation is not None:
                self.delegated[m.delegation.account_dn.lower()] = m.id
                self.delegated[m.delegation.admin_group_dn.lower()] = m.id
        self.entries = entries
        self.muni_of_dn: dict[str, str | None] = {}
        self.by_sid: dict[str, tuple[str, str]] = {}
        self.by_rid: dict[int, tuple[str, str]] = {}
        self.members: dict[str, tuple[str, ...]] = {}
        self.domain_sid = ""
        for entry in entries:
            self.members[entry.dn.lower()] = tuple(entry.get("member") or ())
            muni = self.municipality(entry)
            self.muni_of_dn[entry.dn.lower()] = muni
            sid = entry.get("objectSid")
            if sid and not self.domain_sid:
                self.domain_sid = sid_text(sid[0]).rsplit("-", 1)[0]
            if sid and muni is not None:
                text = sid_text(sid[0])
                self.by_sid[text] = (muni, entry.dn)
                self.by_rid[rid(text)] = (muni, entry.dn)

    def in_ou(self, dn: str) -> str | None:
        """The municipality whose OU holds dn, or None."""
        low = dn.lower()
        for ou, muni in self.ous:
            if low.endswith("," + ou):
                return muni
        return None

    def municipality(self, entry: Snapshot) -> str | None:
        link = entry.get("employeeNumber")
        if link and ":" in link[0] and link[0].split(":", 1)[0] in self.inv.municipalities:
            return link[0].split(":", 1)[0]
        return self.in_ou(entry.dn) or self.delegated.get(entry.dn.lower()) or self.app_group_of(entry.dn)

    def app_group_of(self, dn: str) -> str | None:
        """The municipality whose application group dn is, or None."""
        low = dn.lower()
        if not low.endswith("," + self.groups_dn):
            return None
        return self.app_groups.get(low.split(",", 1)[0].split("=", 1)[-1], (None, ""))[0]

    def of_dn(self, dn: str) -> str | None:
        low = dn.lower()
        if low in self.muni_of_dn:
            return self.muni_of_dn[low]
        return self.in_ou(dn) or self.delegated.get(low) or self.app_group_of(dn)

    def everyone(self, sid: str) -> str | None:
        """The name of the principal every account is, if sid is one (Everyone, Domain Users, ...)."""
        if sid in EVERYONE:
            return EVERYONE[sid]
        head, _, tail = sid.rpartition("-")
        if head == self.domain_sid and tail.isdigit():
            return EVERYONE_IN_DOMAIN.get(int(tail))
        return None


def audit(inv: Inventory, connectors: Connectors) -> list[Finding]:
    """Every crossing between municipalities on the platform, sorted by kind and place."""
    ad = connectors.platform()
    d = inv.platform.directory
    entries = list(
        ad.search(d.base_dn, "(|(objectClass=user)(objectClass=group))", ["objectSid", "employeeNumber", "member"])
    )
    app_groups = {
        group.lower(): (muni, app.name) for app in inv.applications.values() for muni, group in app.groups.items()
    }
    who = Principals(inv, entries, app_groups)
    findings = [
        *_aces(inv, connectors, who, app_groups),
        *_inheritable_aces(inv, connectors, who),
        *_memberships(inv, who, app_groups),
        *_placement(inv, who),
        *_folders(inv, connectors, who),
    ]
    return sorted(set(findings), key=lambda f: (f.kind, f.where, f.what))


def _aces(
    inv: Inventory, connectors: Connectors, who: Principals, app_groups: dict[str, tuple[str, str]]
) -> Iterator[Finding]:
    ad = connectors.platform()
    scopes: list[tuple[str, str, str | None]] = [
        (m.target_ou, "(objectClass=*)", m.id) for m in inv.municipalities.values()
    ]
    scopes.append((inv.platform.directory.groups_dn, "(objectClass=group)", None))
    for base, ldap_filter, owner in scopes:
        if ad.read(base, ["1.1"]) is None:
            continue
        for entry in ad.search_acl(base, ldap_filter, ["sAMAccountName"]):
            here = owner
            if here is None:
                name = (entry.get("sAMAccountName") or ("",))[0].lower()
                here = app_groups.get(name, (None, ""))[0]
            value = entry.get("nTSecurityDescriptor")
            if here is None or not value:
                continue
            for ace in aces(descriptor_bytes(value[0])):
                if ace.inherited or not ace.allow:
                    continue  # an inherited ACE is reported where it is written (_inheritable_aces)
                crossing = _crossing(who, ace, {here})
                if crossing:
                    yield Finding("ace", entry.dn, f"{crossing} on an object of {here}")


def _crossing(who: Principals, ace: Ace, reached: set[str]) -> str | None:
    """What the allowing ACE lets a principal outside the reached municipalities do to them (None: nothing)."""
    broad = who.everyone(ace.trustee)
    if broad is not None:
        return f"{broad}, every account, holds write rights {ace.mask:#x}" if writes(ace) else None
    principal = who.by_sid.get(ace.trustee)
    if principal is None or not reached - {principal[0]}:
        return None
    return f"{principal[1]} ({principal[0]}) holds rights {ace.mask:#x}"


def _inheritable_aces(inv: Inventory, connectors: Connectors, who: Principals) -> Iterator[Finding]:
    """Inheritable ACEs written above the municipalities' OUs or their application groups (OU=Kommuner, the
    domain): each reaches every municipality below it."""
    ad = connectors.platform()
    base = inv.platform.directory.base_dn.lower()
    below: dict[str, set[str]] = {}  # an ancestor's DN -> the municipalities whose objects lie below it
    places = [(m.target_ou, {m.id}, False) for m in inv.municipalities.values()]  # the OU's own: _aces
    places.append((inv.platform.directory.groups_dn, set(inv.municipalities), True))  # above every app group
    for dn, munis, itself in places:
        ancestors = [dn] if itself else []
        while dn.lower() != base and "," in dn:
            dn = dn.split(",", 1)[1]
            ancestors.append(dn)
        for ancestor in ancestors:
            below.setdefault(ancestor, set()).update(munis)
    for ancestor, munis in sorted(below.items()):
        descriptor = ad.read_acl(ancestor)
        if not descriptor:
            continue
        for ace in aces(descriptor):
            if ace.inherited or not ace.allow or not ace.flags & CONTAINER_INHERIT:
                continue
            crossing = _crossing(who, ace, munis)
            if crossing:
                yield Finding(
                    "ace", ancestor, f"{crossing}, inherited by the objects of {', '.join(sorted(munis))} below"
                )


def _memberships(inv: Inventory, who: Principals, app_groups: dict[str, tuple[str, str]]) -> Iterator[Finding]:
    for entry in who.entries:
        members = entry.get("member")
        if not members:
            continue
        name = entry.dn.split(",", 1)[0].split("=", 1)[-1].lower()
        app = app_groups.get(name) if entry.dn.lower().endswith(inv.platform.directory.groups_dn.lower()) else None
        owner = app[0] if app else who.of_dn(entry.dn)
        if owner is None:
            continue
        for member, via in _members(who, entry.dn):
            theirs = who.of_dn(member)
            if theirs is None or theirs == owner:
                continue
            through = f" (through {' and '.join(via)})" if via else ""
            if app:
                yield Finding(
                    "entitlement",
                    entry.dn,
                    f"{member} of {theirs} holds a seat of {app[1]} for {owner}{through}; {theirs} has no "
                    "entitlement here",
                )
            else:
                yield Finding("nesting", entry.dn, f"{owner}'s group has {member} of {theirs} as a member{through}")


def _members(who: Principals, group: str) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Every member of the group, directly or through nested groups, each once, with the groups it came through.
    A nested group of another municipality is not entered: it is reported as the member it is."""
    seen = {group.lower()}
    todo: list[tuple[str, tuple[str, ...]]] = [(m, ()) for m in who.members.get(group.lower(), ())]
    owner = who.of_dn(group)
    while todo:
        member, via = todo.pop()
        if member.lower() in seen:
            continue
        seen.add(member.lower())
        yield member, via
        theirs = who.of_dn(member)
        if theirs is None or theirs == owner:
            todo += [(m, (*via, member)) for m in who.members.get(member.lower(), ())]


def _placement(inv: Inventory, who: Principals) -> Iterator[Finding]:
    parked = f"{PARKED_OU},{inv.platform.directory.base_dn}".lower()
    for entry in who.entries:
        link = entry.get("employeeNumber")
        if not link or ":" not in link[0]:
            continue
        muni = link[0].split(":", 1)[0]
        if muni not in inv.municipalities:
            continue
        if entry.dn.lower().endswith("," + parked):
            continue
        where = who.in_ou(entry.dn)
        if where != muni:
            place = f"in {where}'s OU" if where else "outside every municipality's OU"
            yield Finding("placement", entry.dn, f"the account of {link[0]} ({muni}) lies {place}")


def _folders(inv: Inventory, connectors: Connectors, who: Principals) -> Iterator[Finding]:
    everyone = ID_BASE + DOMAIN_USERS_RID
    for zone in inv.platform.zones:
        fs_config = zone.file_server
        fs = connectors.zone_files(zone.id)
        whose: dict[str, str] = {}  # folder -> the municipality it belongs to
        tops: list[Owned] = []
        for root in (fs_config.home_root, fs_config.profile_root):
            tops += fs.listing(root)
        for top in tops:
            owner = who.by_rid.get(top.uid - ID_BASE)
            if owner is None:
                continue
            whose[top.path] = owner[0]
            yield from _folder(fs_config.name, top, owner[0], who, everyone)
        tenants = tenants_root(fs_config.home_root)
        for top in fs.listing(tenants):
            muni = basename(top.path)
            if muni in inv.municipalities:
                whose[top.path] = muni
                yield from _folder(fs_config.name, top, muni, who, everyone)
        acls = connectors.zone_acls(zone.id, [fs_config.home_root, fs_config.profile_root, tenants])
        for path, entries in (acls or {}).items():
            if path in whose:
                yield from _folder_acl(f"{fs_config.name}:{path}", whose[path], entries, who, everyone)


def _folder_acl(where: str, muni: str, entries: list[AclEntry], who: Principals, everyone: int) -> Iterator[Finding]:
    """A folder's POSIX ACL entries that open it to another municipality's principal, or to Domain Users."""
    for entry in entries:
        if entry.perms.strip("-") == "":
            continue
        said = f"{'default:' if entry.default else ''}{entry.kind}:{entry.id}:{entry.perms}"
        if entry.kind == "group" and entry.id == everyone:
            yield Finding("folder", where, f"{muni}'s folder is open to Domain Users, every municipality ({said})")
            continue
        principal = who.by_rid.get(entry.id - ID_BASE)
        if principal is not None and principal[0] != muni:
            yield Finding("folder", where, f"{muni}'s folder is open to {principal[1]} of {principal[0]} ({said})")


def unread(inv: Inventory) -> list[str]:
    """The zone file servers whose ACLs the audit cannot read (no acl_port in the inventory)."""
    return [z.file_server.name for z in inv.platform.zones if z.file_server.acl_port is None]


def _folder(server: str, top: Owned, muni: str, who: Principals, everyone: int) -> Iterator[Finding]:
    where = f"{server}:{top.path}"
    if top.mode & OTHERS_ANY:
        yield Finding("folder", where, f"{muni}'s folder is open to every account (mode {top.mode:o})")
    owner = who.by_rid.get(top.uid - ID_BASE)
    if owner is not None and owner[0] != muni:
        yield Finding("folder", where, f"{muni}'s folder is owned by {owner[1]} of {owner[0]}, who may open it")
    group = who.by_rid.get(top.gid - ID_BASE)
    if top.mode & GROUP_READ and top.gid == everyone:
        yield Finding("folder", where, f"{muni}'s folder is open to Domain Users, every municipality")
    elif group is not None and group[0] != muni:
        said = "open to" if top.mode & GROUP_READ else "owned as group by"
        yield Finding("folder", where, f"{muni}'s folder is {said} {group[1]} of {group[0]}")

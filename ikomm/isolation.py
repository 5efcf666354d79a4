"""`ikomm audit isolation`: read the platform and report every place where one municipality reaches another.

    ace          an explicit ACE in one municipality's OU (or on its application group) that gives
                 rights to a principal of another municipality
    nesting      a group of one municipality (in its OU, or its admin group) with a member of another
    placement    an account linked to one municipality (employeeNumber <id>:...) outside its OU (the
                 platform's OU=Deaktivert, where rollbacks park accounts, counts as inside)
    folder       a home, profile or tenant folder on a zone's file server that another municipality's
                 accounts can read: readable by others, by Domain Users, or by another's group
    entitlement  an application group of one municipality holding a member of another

A principal belongs to the municipality whose employeeNumber it carries, else whose OU it lies in, else
whose delegation (account, admin group) it is. Folders are checked at the top of each tree (a folder
closed to others closes what is below it). Only the platform is read: nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from posixpath import basename

from ikomm.acl import aces, descriptor_bytes, rid, sid_text
from ikomm.changes import PARKED_OU
from ikomm.connectors import Connectors
from ikomm.connectors.directory import Snapshot
from ikomm.connectors.files import Owned
from ikomm.inventory import Inventory
from ikomm.stages import DOMAIN_USERS_RID, ID_BASE
from ikomm.tenancy import tenants_root

OTHERS_ANY = 0o007
GROUP_READ = 0o050


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

    def __init__(self, inv: Inventory, entries: list[Snapshot]) -> None:
        self.inv = inv
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
        for entry in entries:
            muni = self.municipality(entry)
            self.muni_of_dn[entry.dn.lower()] = muni
            sid = entry.get("objectSid")
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
        return self.in_ou(entry.dn) or self.delegated.get(entry.dn.lower())

    def of_dn(self, dn: str) -> str | None:
        low = dn.lower()
        if low in self.muni_of_dn:
            return self.muni_of_dn[low]
        return self.in_ou(dn) or self.delegated.get(low)


def audit(inv: Inventory, connectors: Connectors) -> list[Finding]:
    """Every crossing between municipalities on the platform, sorted by kind and place."""
    ad = connectors.platform()
    d = inv.platform.directory
    entries = list(
        ad.search(d.base_dn, "(|(objectClass=user)(objectClass=group))", ["objectSid", "employeeNumber", "member"])
    )
    who = Principals(inv, entries)
    app_groups = {
        group.lower(): (muni, app.name) for app in inv.applications.values() for muni, group in app.groups.items()
    }
    findings = [
        *_aces(inv, connectors, who, app_groups),
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
                principal = who.by_sid.get(ace.trustee)
                if ace.inherited or not ace.allow or principal is None or principal[0] == here:
                    continue
                yield Finding(
                    "ace",
                    entry.dn,
                    f"{principal[1]} ({principal[0]}) holds rights {ace.mask:#x} on an object of {here}",
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
        for member in members:
            theirs = who.of_dn(member)
            if theirs is None or theirs == owner:
                continue
            if app:
                yield Finding(
                    "entitlement",
                    entry.dn,
                    f"{member} of {theirs} holds a seat of {app[1]} for {owner}; {theirs} has no entitlement here",
                )
            else:
                yield Finding("nesting", entry.dn, f"{owner}'s group has {member} of {theirs} as a member")


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
        tops: list[Owned] = []
        for root in (fs_config.home_root, fs_config.profile_root):
            tops += fs.listing(root)
        for top in tops:
            owner = who.by_rid.get(top.uid - ID_BASE)
            if owner is None:
                continue
            yield from _folder(fs_config.name, top, owner[0], who, everyone)
        for top in fs.listing(tenants_root(fs_config.home_root)):
            muni = basename(top.path)
            if muni in inv.municipalities:
                yield from _folder(fs_config.name, top, muni, who, everyone)


def _folder(server: str, top: Owned, muni: str, who: Principals, everyone: int) -> Iterator[Finding]:
    where = f"{server}:{top.path}"
    if top.mode & OTHERS_ANY:
        yield Finding("folder", where, f"{muni}'s folder is open to every account (mode {top.mode:o})")
    if top.mode & GROUP_READ:
        if top.gid == everyone:
            yield Finding("folder", where, f"{muni}'s folder is open to Domain Users, every municipality")
        else:
            group = who.by_rid.get(top.gid - ID_BASE)
            if group is not None and group[0] != muni:
                yield Finding("folder", where, f"{muni}'s folder is open to {group[1]} of {group[0]}")

"""A new municipality joins the platform without weakening the others: `ikomm tenant add | remove`.

Onboarding gives a tenant, from its kit (tenants/<id>/: legacy side, users, devices):

    directory   OU=<Name>,<users_dn> with OU=Deaktivert inside (its accounts set aside by a rollback)
                OU=Delegering,<base_dn>: its admin group <Name>-Admins and service account svc-<id>
                rights for the admin group on its own OU only: create and delete user objects, and full
                use of the user objects below (attributes, password reset, move within, delete); none
                on groups, OUs or ACLs; write of `member` on its own application groups only
                APP-<App>-<Name>: one group per application
    files       <zone file server>/<parent of home_root>/kommuner/<id>: root:<admin group> 2770
    inventory   its entry in municipalities.yaml (with `delegation`), its groups and granting legacy
                groups in applications.yaml, users/<id>.csv and devices/<id>.csv
    secret      the service account's password: in the inventory's secrets_file, or a 0600 file in
                the state folder for the operator's vault; never printed

Every step reads first and writes only what is missing, so `tenant add` can run again at any time
(after a crash, or to repair). The inventory files are written last, after a copy of the inventory
with them has loaded without a problem: a bad kit changes nothing. `tenant remove` undoes an
onboarding while the tenant has no accounts, members or files, and refuses otherwise.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ikomm.acl import (
    CONTAINER_INHERIT,
    CREATE_CHILD,
    DELETE,
    DELETE_CHILD,
    DELETE_TREE,
    EXTENDED_RIGHTS,
    INHERIT_ONLY,
    LIST_CHILDREN,
    LIST_OBJECT,
    MEMBER_ATTRIBUTE,
    READ_CONTROL,
    READ_PROPERTY,
    SELF_WRITE,
    USER_CLASS,
    WRITE_PROPERTY,
    Ace,
    descriptor_bytes,
    granted,
    revoked,
    rid,
    sid_text,
)
from ikomm.changes import tenant_parked_ou
from ikomm.connectors import Connectors
from ikomm.connectors.directory import DirectoryConnector, child_dn
from ikomm.credentials import new_password
from ikomm.errors import ConflictError, FatalError, InvalidInputError
from ikomm.inventory import Inventory, load_inventory
from ikomm.inventory.load import Kit
from ikomm.inventory.models import CredentialRef
from ikomm.naming import fold
from ikomm.secrets import read_secrets_file, resolve_secret
from ikomm.stages import ID_BASE

Say = Callable[[str], None]
DELEGATION_OU = "OU=Delegering"
GROUP_GLOBAL_SECURITY = "-2147483646"
UAC_DISABLED_ACCOUNT, UAC_NORMAL_ACCOUNT = "514", "512"
FOLDER_MODE = 0o2770  # the tenant's admin group reads and writes; nobody else, new files keep the group
USER_RIGHTS = (
    READ_PROPERTY
    | WRITE_PROPERTY
    | EXTENDED_RIGHTS
    | DELETE
    | DELETE_TREE
    | READ_CONTROL
    | LIST_CHILDREN
    | LIST_OBJECT
    | SELF_WRITE
)


@dataclass(frozen=True)
class Layout:
    """Where everything of one tenant lives on the platform, derived from the inventory and the tenant's name."""

    tenant: str
    name: str
    target_ou: str
    parked_ou: str
    delegation_ou: str
    admin_group: str  # sAMAccountName
    admin_group_dn: str
    account: str  # sAMAccountName
    account_dn: str
    account_upn: str
    secret: str  # the environment variable that names the service account's password
    app_groups: dict[str, str]  # application id -> group name
    folders: dict[str, str]  # zone id -> the tenant's folder on the zone's file server

    def app_group_dn(self, inv: Inventory, app_id: str) -> str:
        return child_dn("CN", self.app_groups[app_id], inv.platform.directory.groups_dn)


def tenants_root(home_root: str) -> str:
    """Where the tenants' own folders lie on a zone's file server: kommuner/ beside the home and profile roots."""
    return str(PurePosixPath(home_root).parent / "kommuner")


def tenant_folder(home_root: str, tenant: str) -> str:
    """A tenant's own folder on a zone's file server."""
    return f"{tenants_root(home_root)}/{tenant}"


def layout_of(inv: Inventory, tenant: str, name: str) -> Layout:
    """The tenant's OU, delegation, application groups and folders."""
    d = inv.platform.directory
    realm = (d.realm or ".".join(p.split("=", 1)[1] for p in d.base_dn.split(","))).lower()
    delegation_ou = f"{DELEGATION_OU},{d.base_dn}"
    label = fold(name).replace(" ", "")
    target_ou = child_dn("OU", name, d.users_dn)
    admin_group, account = f"{label}-Admins", f"svc-{tenant}"
    return Layout(
        tenant=tenant,
        name=name,
        target_ou=target_ou,
        parked_ou=tenant_parked_ou(target_ou),
        delegation_ou=delegation_ou,
        admin_group=admin_group,
        admin_group_dn=f"CN={admin_group},{delegation_ou}",
        account=account,
        account_dn=f"CN={account},{delegation_ou}",
        account_upn=f"{account}@{realm}",
        secret=f"IKOMM_TENANT_{tenant.upper().replace('-', '_')}_PASSWORD",
        app_groups={a.id: f"APP-{fold(a.name).replace(' ', '')}-{label}"[:64] for a in inv.applications.values()},
        folders={z.id: tenant_folder(z.file_server.home_root, tenant) for z in inv.platform.zones},
    )


def ou_rights(admin_sid: str) -> list[Ace]:
    """The admin group's rights on the tenant's OU: user objects only, and only below it."""
    return [
        Ace(admin_sid, CREATE_CHILD | DELETE_CHILD, USER_CLASS, None, CONTAINER_INHERIT),
        Ace(admin_sid, USER_RIGHTS, None, USER_CLASS, CONTAINER_INHERIT | INHERIT_ONLY),
    ]


def group_rights(admin_sid: str) -> list[Ace]:
    """The admin group's right on one of the tenant's application groups: its membership."""
    return [Ace(admin_sid, WRITE_PROPERTY, MEMBER_ATTRIBUTE)]


# --- the secret -------------------------------------------------------------------------------------


class SecretStore:
    """Where the service account's password is kept: the inventory's secrets_file, or a 0600 state file."""

    def __init__(self, inv: Inventory, state_dir: Path) -> None:
        self.inv = inv
        secrets_file = inv.platform.secrets_file
        self.path = inv.path(secrets_file) if secrets_file else state_dir / "tenants" / "secrets.env"

    def get(self, name: str) -> str | None:
        try:
            return resolve_secret(CredentialRef(env=name), self.inv)
        except FatalError:
            pass
        return read_secrets_file(self.path).get(name) if self.path.is_file() else None

    def put(self, name: str, value: str | None) -> None:
        """Set (or, with None, remove) name in the file, rewritten atomically and owner-only."""
        values = read_secrets_file(self.path) if self.path.is_file() else {}
        if value is None:
            if values.pop(name, None) is None:
                return
        else:
            values[name] = value
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("".join(f"{k}={v}\n" for k, v in values.items()))
        os.replace(tmp, self.path)


# --- the inventory files ----------------------------------------------------------------------------


def _yaml_text(path: Path, data: Any) -> str:
    """data as YAML under the file's own leading comment lines."""
    header = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)
    return "\n".join(header) + ("\n" if header else "") + body


def _raw(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def files_with_tenant(inv: Inventory, kit: Kit, lay: Layout) -> dict[str, str | None]:
    """The inventory files as they are once the tenant is onboarded (relative path -> text)."""
    root = inv.root
    munis = _raw(root / "municipalities.yaml")
    spec = kit.spec
    entry = {
        "id": spec.id,
        "name": spec.name,
        "ownership_pct": 0,
        "target_ou": lay.target_ou,
        "upn_suffix": spec.upn_suffix,
        "legacy": spec.legacy.model_dump(mode="json", exclude_none=True),
        "delegation": {
            "account_dn": lay.account_dn,
            "account_upn": lay.account_upn,
            "admin_group_dn": lay.admin_group_dn,
            "password": {"env": lay.secret},
        },
    }
    listed = munis["municipalities"]
    at = next((i for i, m in enumerate(listed) if m.get("id") == spec.id), len(listed))
    munis["municipalities"] = [*listed[:at], entry, *listed[at + 1 :]]  # in place when onboarded before
    apps = _raw(root / "applications.yaml")
    for app in apps["applications"]:
        app.setdefault("groups", {})[spec.id] = lay.app_groups[app["id"]]
        if spec.granted_by.get(app["id"]):
            app.setdefault("granted_by", {})[spec.id] = list(spec.granted_by[app["id"]])
    return {
        "municipalities.yaml": _yaml_text(root / "municipalities.yaml", munis),
        "applications.yaml": _yaml_text(root / "applications.yaml", apps),
        f"users/{spec.id}.csv": (kit.folder / "users.csv").read_text(encoding="utf-8"),
        f"devices/{spec.id}.csv": (kit.folder / "devices.csv").read_text(encoding="utf-8"),
    }


def files_without_tenant(inv: Inventory, tenant: str) -> dict[str, str | None]:
    """The inventory files as they are once the tenant is removed (None: the file is deleted)."""
    root = inv.root
    munis = _raw(root / "municipalities.yaml")
    munis["municipalities"] = [m for m in munis["municipalities"] if m.get("id") != tenant]
    apps = _raw(root / "applications.yaml")
    for app in apps["applications"]:
        for key in ("groups", "granted_by"):
            (app.get(key) or {}).pop(tenant, None)
    return {
        "municipalities.yaml": _yaml_text(root / "municipalities.yaml", munis),
        "applications.yaml": _yaml_text(root / "applications.yaml", apps),
        f"users/{tenant}.csv": None,
        f"devices/{tenant}.csv": None,
    }


def checked(inv: Inventory, files: dict[str, str | None]) -> Inventory:
    """Load a copy of the inventory with these files in place: InventoryError names every problem, nothing written."""
    with tempfile.TemporaryDirectory(prefix="ikomm-tenant-") as tmp:
        copy = Path(tmp) / inv.root.name
        shutil.copytree(inv.root, copy, ignore=shutil.ignore_patterns("tenants"), symlinks=True)
        _write_files(copy, files)
        # paths in the inventory are relative to its folder: the copy must resolve them the same way
        loaded = load_inventory(copy)
    return loaded


def _write_files(root: Path, files: dict[str, str | None]) -> None:
    for rel, text in files.items():
        path = root / rel
        if text is None:
            path.unlink(missing_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)


# --- the directory ----------------------------------------------------------------------------------


class Steps:
    """What an onboarding or removal did, step by step: each line also goes to say() as it happens."""

    def __init__(self, say: Say) -> None:
        self.say = say
        self.lines: list[str] = []
        self.changed = 0

    def done(self, changed: bool, what: str) -> None:
        line = f"{'done   ' if changed else 'present'}  {what}"
        self.changed += changed
        self.lines.append(line)
        self.say(line)


def _ensure_entry(ad: DirectoryConnector, dn: str, classes: list[str], attributes: dict[str, Any]) -> bool:
    if ad.read(dn, ["1.1"]) is not None:
        return False
    ad.add(dn, classes, attributes)
    return True


def _sid_of(ad: DirectoryConnector, dn: str) -> str:
    entry = ad.read(dn, ["objectSid"])
    if entry is None or not entry.get("objectSid"):
        raise FatalError(f"{dn}: no objectSid")
    return sid_text(entry.get("objectSid")[0])


def _grant(ad: DirectoryConnector, dn: str, wanted: list[Ace]) -> bool:
    descriptor = ad.read_acl(dn)
    if descriptor is None:
        raise FatalError(f"{dn}: no such entry to grant rights on")
    new = granted(descriptor, wanted)
    if new is not None:
        ad.write_acl(dn, new)
    return new is not None


def _ensure_account(ad: DirectoryConnector, lay: Layout, store: SecretStore) -> tuple[bool, str]:
    """The service account, enabled, with a password kept in the store; (changed, how)."""
    created = _ensure_entry(
        ad,
        lay.account_dn,
        ["user"],
        {
            "sAMAccountName": lay.account,
            "userPrincipalName": lay.account_upn,
            "description": f"ikomm: waves of {lay.name} bind as this account",
            "userAccountControl": UAC_DISABLED_ACCOUNT,
        },
    )
    known = store.get(lay.secret)
    renewed = created or known is None or not ad.check_password(lay.account_upn, known)
    if renewed:
        password = new_password(24)
        ad.set_password(lay.account_dn, password, must_change=False)
        store.put(lay.secret, password)
    how = "created" if created else "password set anew (the one kept did not bind)" if renewed else "present"
    enabled = ad.set_enabled(lay.account_dn, True).changed
    return renewed or enabled, how


def onboard(inv: Inventory, kit: Kit, connectors: Connectors, store: SecretStore, say: Say) -> Steps:
    """Onboard the kit's municipality (idempotent): directory, rights, groups, folders, then the inventory."""
    spec = kit.spec
    known = inv.municipalities.get(spec.id)
    if known is not None and known.delegation is None:
        raise InvalidInputError(
            f"{spec.id} is a municipality of the platform already, without a delegation: it is not a tenant kit's"
        )
    lay = layout_of(inv, spec.id, spec.name)
    files = files_with_tenant(inv, kit, lay)
    checked(inv, files)  # a bad kit stops here, before any server is touched
    steps = Steps(say)
    ad = connectors.platform()
    d = inv.platform.directory
    steps.done(_ensure_entry(ad, lay.target_ou, ["organizationalUnit"], {"description": spec.name}), lay.target_ou)
    steps.done(
        _ensure_entry(ad, lay.delegation_ou, ["organizationalUnit"], {"description": "Tenants' delegated accounts"}),
        lay.delegation_ou,
    )
    steps.done(
        _ensure_entry(
            ad,
            lay.admin_group_dn,
            ["group"],
            {
                "sAMAccountName": lay.admin_group,
                "groupType": GROUP_GLOBAL_SECURITY,
                "description": f"ikomm: rights in {lay.target_ou} and {spec.name}'s application groups",
            },
        ),
        f"admin group {lay.admin_group_dn}",
    )
    admin_sid = _sid_of(ad, lay.admin_group_dn)
    changed, how = _ensure_account(ad, lay, store)
    steps.done(changed, f"service account {lay.account_upn} ({how}; password kept in {store.path})")
    steps.done(ad.add_member(lay.admin_group_dn, lay.account_dn), f"{lay.account} in {lay.admin_group}")
    steps.done(_grant(ad, lay.target_ou, ou_rights(admin_sid)), f"rights of {lay.admin_group} on {lay.target_ou}")
    steps.done(
        _ensure_entry(ad, lay.parked_ou, ["organizationalUnit"], {"description": "Accounts set aside by a rollback"}),
        lay.parked_ou,
    )
    made = granted_groups = 0
    for app in inv.applications.values():
        group_dn = lay.app_group_dn(inv, app.id)
        made += _ensure_entry(
            ad,
            group_dn,
            ["group"],
            {
                "sAMAccountName": lay.app_groups[app.id],
                "groupType": GROUP_GLOBAL_SECURITY,
                "description": f"{app.name} ({app.zone})",
            },
        )
        granted_groups += _grant(ad, group_dn, group_rights(admin_sid))
    steps.done(
        bool(made or granted_groups),
        f"{len(inv.applications)} application groups in {d.groups_dn} ({made} made, membership granted on "
        f"{granted_groups})",
    )
    owner = (0, ID_BASE + rid(admin_sid))
    for zone in inv.platform.zones:
        fs = connectors.zone_files(zone.id)
        path = lay.folders[zone.id]
        steps.done(
            fs.ensure_folder(path, FOLDER_MODE, owner),
            f"{zone.file_server.name}:{path} (root:{owner[1]} {FOLDER_MODE:o})",
        )
    current = {rel: _current(inv.root / rel) for rel in files}
    _write_files(inv.root, files)
    steps.done(any(current[rel] != text for rel, text in files.items()), "inventory: " + ", ".join(files))
    return steps


def _current(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def remove(inv: Inventory, tenant: str, connectors: Connectors, store: SecretStore, say: Say) -> Steps:
    """Undo an onboarding that has no users yet; refuse (changing nothing) while anything of theirs remains."""
    muni = inv.municipalities.get(tenant)
    if muni is None:
        raise InvalidInputError(f"no municipality {tenant!r} in the inventory")
    if muni.delegation is None:
        raise InvalidInputError(f"{tenant} was not onboarded with `ikomm tenant add` (no delegation): not removed")
    lay = layout_of(inv, tenant, muni.name)
    ad = connectors.platform()
    files = files_without_tenant(inv, tenant)
    checked(inv, files)
    blockers = [f"account {e.dn}" for e in ad.search(muni.target_ou, "(objectClass=user)", ["1.1"])]
    for app_id in lay.app_groups:
        group = ad.read(lay.app_group_dn(inv, app_id), ["member"])
        blockers += [f"{m} in {lay.app_groups[app_id]}" for m in (group.get("member") if group else ())]
    for zone in inv.platform.zones:
        fs = connectors.zone_files(zone.id)
        blockers += [f"{zone.file_server.name}:{e.path}" for e in fs.listing(lay.folders[zone.id])]
    if blockers:
        listed = "; ".join(blockers[:10]) + (f" (and {len(blockers) - 10} more)" if len(blockers) > 10 else "")
        raise ConflictError(
            f"{tenant} has users or data on the platform, so its onboarding stays: {listed}. "
            "Roll its waves back with --purge first (runbooks/onboard-a-municipality.md)."
        )
    steps = Steps(say)
    admin = ad.read(lay.admin_group_dn, ["objectSid"])
    admin_sid = sid_text(admin.get("objectSid")[0]) if admin and admin.get("objectSid") else None
    for zone in inv.platform.zones:
        path = lay.folders[zone.id]
        steps.done(connectors.zone_files(zone.id).remove_folder(path), f"removed {zone.file_server.name}:{path}")
    removed = 0
    for app_id in lay.app_groups:
        removed += ad.delete(lay.app_group_dn(inv, app_id))
    steps.done(bool(removed), f"removed {removed} application groups of {muni.name}")
    for dn in (lay.parked_ou, lay.target_ou, lay.account_dn, lay.admin_group_dn):
        steps.done(ad.delete(dn), f"removed {dn}")
    if admin_sid is not None:  # ACEs naming the group elsewhere (none by design; a planted one is cleaned too)
        for entry in ad.search_acl(inv.platform.directory.base_dn, "(objectClass=*)"):
            value = entry.get("ntsecuritydescriptor")
            new = revoked(descriptor_bytes(value[0]), admin_sid) if value else None
            if new is not None:
                ad.write_acl(entry.dn, new)
                steps.done(True, f"revoked {lay.admin_group}'s rights on {entry.dn}")
    if not any(ad.search(lay.delegation_ou, "(|(objectClass=user)(objectClass=group))", ["1.1"])):
        steps.done(ad.delete(lay.delegation_ou), f"removed {lay.delegation_ou} (no tenant left)")
    _write_files(inv.root, files)
    store.put(lay.secret, None)
    steps.done(True, "inventory: " + ", ".join(files) + f"; {lay.secret} removed from {store.path}")
    return steps

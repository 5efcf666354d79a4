"""The directory connector against the lab's real Samba AD and slapd."""

from __future__ import annotations

import pytest
from ldap3.utils.dn import escape_rdn

from ikomm.connectors.directory import DirectoryConnector, equality_filter
from ikomm.errors import ConflictError, FatalError, TransientError
from ikomm.inventory import Inventory
from ikomm.inventory.models import DirectoryConfig
from ikomm.secrets import resolve_secret
from lab.manager import Lab

pytestmark = pytest.mark.integration


def connector(inv: Inventory, d: DirectoryConfig) -> DirectoryConnector:
    return DirectoryConnector(d, resolve_secret(d.password, inv), inv.path(d.ca_file) if d.ca_file else None)


@pytest.mark.parametrize("muni_id", ["lillehammer", "gausdal"])
def test_find_user_and_idempotent_modify(lab: Lab, lab_inventory: Inventory, muni_id: str) -> None:
    """A legacy user is found by legacy id; writing equal values changes nothing, a new value reports before/after."""
    inv = lab_inventory
    d = inv.municipalities[muni_id].legacy.directory
    user = inv.users[muni_id][2]
    conn = connector(inv, d)
    found = conn.find_user(user.legacy_id)
    assert found is not None and found.get("mail") == (user.email,)
    assert conn.find_user("*") is None  # a wildcard is data, not a pattern
    title = d.attribute_map["title"]
    assert conn.modify(found.dn, {title: [user.title]}).changed is False
    change = conn.modify(found.dn, {title: ["prosjektleder æøå"]})
    assert change.changed and change.before == {title: (user.title,)}
    assert conn.modify(found.dn, {title: [user.title]}).after == {title: (user.title,)}
    assert conn.connection() is conn.connection()  # one bound connection, reused
    conn.close()


def test_special_characters_round_trip(lab: Lab, lab_inventory: Inventory) -> None:
    """A group named with * ( ) \\ , + = # " ; and æøå is created, found and read back unharmed."""
    inv = lab_inventory
    d = inv.platform.directory
    conn = connector(inv, d)
    name = 'Test *(x)\\ a,b+c=d #1 "q"; Ærlig Øy Å'
    dn = f"CN={escape_rdn(name)},{d.groups_dn}"
    conn.add(dn, ["group"], {"sAMAccountName": "test-special-1", "description": name})
    try:
        with pytest.raises(ConflictError):
            conn.add(dn, ["group"], {"sAMAccountName": "test-special-2"})
        [found] = conn.search(d.groups_dn, equality_filter("description", name), ["cn", "description"])
        assert found.get("cn") == (name,) and found.get("description") == (name,)
        read = conn.read(dn, ["cn"])
        assert read is not None and read.get("cn") == (name,)
    finally:
        conn.connection().delete(dn)


def test_unreachable_server_is_transient_and_plain_is_refused(lab_inventory: Inventory) -> None:
    """No server listening is a TransientError; a plain-LDAP config is refused before any password is sent."""
    inv = lab_inventory
    d = inv.municipalities["gausdal"].legacy.directory
    nowhere = d.model_copy(update={"host": "127.0.0.99"})
    with pytest.raises(TransientError):
        connector(inv, nowhere).connection()
    with pytest.raises(FatalError, match="plain LDAP"):
        connector(inv, d.model_copy(update={"security": "plain"}))


def test_starttls_and_wrong_password(lab: Lab, lab_inventory: Inventory) -> None:
    """StartTLS on 389 works with the same CA; a wrong password is fatal, not retried."""
    inv = lab_inventory
    d = inv.municipalities["oyer"].legacy.directory
    starttls = d.model_copy(update={"security": "starttls", "port": 389})
    assert connector(inv, starttls).find_user(inv.users["oyer"][0].legacy_id) is not None
    with pytest.raises(FatalError, match="invalidCredentials"):
        DirectoryConnector(d, "wrong-password", inv.path(d.ca_file or "")).connection()

"""The directory connector's pure parts: the diff it writes, filter escaping, error classification."""

from __future__ import annotations

import ldap3
import pytest
from ldap3.core import exceptions as lx

from ikomm.connectors.directory import Snapshot, classify, equality_filter, plan_modifications
from ikomm.errors import ConflictError, FatalError, InvalidInputError, TransientError


def test_equal_values_plan_nothing() -> None:
    """When what is equals what should be, nothing is written (order of values does not matter)."""
    current = Snapshot("cn=x", {"title": ("lærer",), "member": ("a", "b")})
    assert plan_modifications(current, {"Title": ["lærer"], "member": ["b", "a"]}) == {}


def test_only_differences_are_planned() -> None:
    """A changed value is replaced, an emptied one deleted, an unnamed one left alone."""
    current = Snapshot("cn=x", {"title": ("lærer",), "mail": ("a@b.no",), "sn": ("Ø",)})
    assert plan_modifications(current, {"title": ["rektor"], "mail": [], "description": []}) == {
        "title": [(ldap3.MODIFY_REPLACE, ["rektor"])],
        "mail": [(ldap3.MODIFY_DELETE, [])],
    }


def test_filter_values_are_escaped() -> None:
    """Filter metacharacters in input stay data."""
    assert equality_filter("uid", "*)(uid=*") == r"(uid=\2a\29\28uid=\2a)"
    assert equality_filter("cn", "a\\b") == r"(cn=a\5cb)"
    with pytest.raises(InvalidInputError):
        equality_filter("uid)(x", "a")


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (51, TransientError),
        (52, TransientError),
        (68, ConflictError),
        (19, ConflictError),
        (34, InvalidInputError),
        (49, FatalError),
        (50, FatalError),
    ],
)
def test_result_codes_are_classified(code: int, kind: type[Exception]) -> None:
    """Busy and unavailable retry; entry exists is a conflict; bad syntax is input; bad credentials are fatal."""
    assert isinstance(classify(lx.LDAPOperationResult(result=code, description="x"), "op"), kind)


def test_socket_errors_are_transient() -> None:
    """A refused or broken connection is worth a retry."""
    assert isinstance(classify(lx.LDAPSocketOpenError("refused"), "bind"), TransientError)

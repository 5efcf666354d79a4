"""Access control entries of Active Directory objects: read, granted, revoked; the SDDL-free core of tenancy.

A security descriptor arrives from `DirectoryConnector.read_acl` as self-relative bytes holding the
DACL only. `winacl` (pure Python, PyPI) parses and writes that format; this module keeps its untyped
objects inside and hands out plain `Ace` values:

    aces(descriptor)            every ACE, explicit and inherited, as Ace values
    granted(descriptor, wanted) the descriptor with the wanted explicit ACEs added (None: all there)
    revoked(descriptor, sid)    the descriptor without the trustee's explicit ACEs (None: it had none)

New explicit ACEs go before the first inherited one, the canonical order Windows and Samba expect.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from winacl.dtyp.ace import ACE, ACEType
from winacl.dtyp.security_descriptor import SECURITY_DESCRIPTOR
from winacl.dtyp.sid import SID

from ikomm.errors import FatalError

# Schema GUIDs (the same in every AD forest): classes and the attribute a delegate may write.
USER_CLASS = "bf967aba-0de6-11d0-a285-00aa003049e2"
GROUP_CLASS = "bf967a9c-0de6-11d0-a285-00aa003049e2"
MEMBER_ATTRIBUTE = "bf9679c0-0de6-11d0-a285-00aa003049e2"

# Access rights of directory objects (ADS_RIGHTS_ENUM).
CREATE_CHILD, DELETE_CHILD, LIST_CHILDREN, SELF_WRITE = 0x1, 0x2, 0x4, 0x8
READ_PROPERTY, WRITE_PROPERTY, DELETE_TREE, LIST_OBJECT = 0x10, 0x20, 0x40, 0x80
EXTENDED_RIGHTS, DELETE, READ_CONTROL = 0x100, 0x10000, 0x20000
WRITE_DAC, WRITE_OWNER = 0x40000, 0x80000

# ACE flags.
CONTAINER_INHERIT, INHERIT_ONLY, INHERITED = 0x02, 0x08, 0x10

ALLOWED = (ACEType.ACCESS_ALLOWED_ACE_TYPE, ACEType.ACCESS_ALLOWED_OBJECT_ACE_TYPE)


@dataclass(frozen=True)
class Ace:
    """One access control entry: who (a SID), what (a mask, maybe one attribute or class), and inheritance."""

    trustee: str
    mask: int
    object_type: str | None = None  # the attribute or class the rights are limited to
    inherited_object_type: str | None = None  # the class of descendants the ACE is inherited by
    flags: int = 0
    allow: bool = True

    @property
    def inherited(self) -> bool:
        return bool(self.flags & INHERITED)

    def covers(self, other: Ace) -> bool:
        """Whether this explicit ACE grants at least what other would (same trustee, scope and inheritance)."""
        return (
            self.allow == other.allow
            and self.trustee == other.trustee
            and self.object_type == other.object_type
            and self.inherited_object_type == other.inherited_object_type
            and (self.flags & ~INHERITED) == other.flags
            and self.mask & other.mask == other.mask
        )

    def sddl(self) -> str:
        """The ACE in SDDL, with the mask in hex (as `winacl` parses it)."""
        scoped = self.object_type or self.inherited_object_type
        kind = ("O" if scoped else "") + ("A" if self.allow else "D")
        flags = ("CI" if self.flags & CONTAINER_INHERIT else "") + ("IO" if self.flags & INHERIT_ONLY else "")
        types = f"{self.object_type or ''};{self.inherited_object_type or ''}"
        return f"({kind};{flags};{hex(self.mask)};{types};{self.trustee})"


def sid_text(value: str | bytes) -> str:
    """An objectSid as S-1-5-21-...: from raw bytes or from a snapshot's base64: text."""
    raw = value if isinstance(value, bytes) else base64.b64decode(value.removeprefix("base64:"))
    return str(SID.from_bytes(raw))


def descriptor_bytes(value: str) -> bytes:
    """A security descriptor as a snapshot holds it (base64: text) back to its bytes."""
    return base64.b64decode(value.removeprefix("base64:")) if value.startswith("base64:") else value.encode("utf-8")


def rid(sid: str) -> int:
    """The relative id: the last part of a SID (ids on the file servers are derived from it)."""
    return int(sid.rsplit("-", 1)[1])


def _parse(descriptor: bytes) -> SECURITY_DESCRIPTOR:
    try:
        return SECURITY_DESCRIPTOR.from_bytes(descriptor)
    except Exception as exc:  # winacl raises plain exceptions on malformed input
        raise FatalError(f"a security descriptor that cannot be read ({type(exc).__name__})") from None


def _ace(raw: object) -> Ace | None:
    kind = getattr(raw, "AceType", None)
    if kind not in (*ALLOWED, ACEType.ACCESS_DENIED_ACE_TYPE, ACEType.ACCESS_DENIED_OBJECT_ACE_TYPE):
        return None  # audit and callback ACEs carry no grant of their own
    obj = getattr(raw, "ObjectType", None)
    inh = getattr(raw, "InheritedObjectType", None)
    return Ace(
        trustee=str(raw.Sid),  # type: ignore[attr-defined]
        mask=int(raw.Mask),  # type: ignore[attr-defined]
        object_type=str(obj).lower() if obj is not None else None,
        inherited_object_type=str(inh).lower() if inh is not None else None,
        flags=int(raw.AceFlags),  # type: ignore[attr-defined]
        allow=kind in ALLOWED,
    )


def aces(descriptor: bytes) -> list[Ace]:
    """Every ACE of the descriptor's DACL, in order (none if it has no DACL)."""
    sd = _parse(descriptor)
    if sd.Dacl is None:
        return []
    return [ace for ace in (_ace(raw) for raw in sd.Dacl.aces) if ace is not None]


def granted(descriptor: bytes, wanted: Sequence[Ace]) -> bytes | None:
    """The descriptor with each wanted explicit ACE that it lacks; None if nothing is missing."""
    sd = _parse(descriptor)
    if sd.Dacl is None:
        raise FatalError("the object has no DACL to add to (the connection may not read it)")
    have = [a for a in aces(descriptor) if not a.inherited]
    missing = [w for w in wanted if not any(h.covers(w) for h in have)]
    if not missing:
        return None
    entries = sd.Dacl.aces
    first_inherited = next((i for i, raw in enumerate(entries) if int(raw.AceFlags) & INHERITED), len(entries))
    for offset, ace in enumerate(missing):
        entries.insert(first_inherited + offset, ACE.from_sddl(ace.sddl()))
    result: bytes = sd.to_bytes()
    return result


def revoked(descriptor: bytes, trustee: str) -> bytes | None:
    """The descriptor without the trustee's explicit ACEs; None if it has none."""
    sd = _parse(descriptor)
    if sd.Dacl is None:
        return None
    keep = [raw for raw in sd.Dacl.aces if int(raw.AceFlags) & INHERITED or str(getattr(raw, "Sid", "")) != trustee]
    if len(keep) == len(sd.Dacl.aces):
        return None
    sd.Dacl.aces = keep
    result: bytes = sd.to_bytes()
    return result

"""The change registry maps every ledger record back to its class, and the core imports without Prefect."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import ikomm
from ikomm.changes import KINDS, Change, from_record
from ikomm.ledger import ChangeRow

REPO = Path(__file__).resolve().parents[2]


def test_every_change_kind_comes_back_from_its_ledger_record() -> None:
    """The registry maps each kind's record back to an equal change: rollback and reports rely on it."""
    samples = {
        "modify": {"dn": "CN=a,OU=x", "before": {"sn": ["A"]}, "after": {"sn": ["B"]}},
        "enable-account": {
            "dn": "CN=a,OU=x",
            "before": {"userAccountControl": ["514"]},
            "after": {"userAccountControl": ["512"]},
        },
        "disable-legacy": {"dn": "uid=a,ou=p", "before": {"shadowExpire": []}, "after": {"shadowExpire": ["1"]}},
        "create-account": {"dn": "CN=a,OU=x", "link": "gausdal:a"},
        "unpark": {"dn": "CN=a,OU=Deaktivert", "moved_to": "CN=a,OU=x"},
        "set-password": {"dn": "CN=a,OU=x"},
        "add-member": {"group": "CN=g,OU=grp", "member": "CN=a,OU=x", "app": "app1"},
        "copy-tree": {"server": "fs-office", "root": "/data/home/a", "existed_before": False, "kind": "home"},
        "device-config": {"device": "tc-1", "before": "user=old\n", "previous": None, "after": "user=a\n"},
        "broker-add": {"collection": "Office", "user": "IKOMM\\a"},
    }
    assert set(samples) == set(KINDS), "a new change kind needs a sample here"
    systems = {"copy-tree": "sftp:127.0.0.21:2222", "device-config": "devices", "broker-add": "broker"}
    for kind, undo in samples.items():
        system = systems.get(kind, "ldap:platform")
        change = from_record(ChangeRow(1, "g/a", "w", "s", system, kind, "t", undo, "done", "", None))
        assert isinstance(change, Change) and change.kind == kind
        assert change.system == system
        recorded = change.record()
        assert {k: v for k, v in undo.items() if k in recorded} == recorded, kind
        assert change.describe() and change.describe_undo(), kind


def test_the_core_imports_without_prefect() -> None:
    """Every module of ikomm/ but the CLI imports in a Python where `import prefect` fails."""
    modules = [
        m.name
        for m in pkgutil.walk_packages(ikomm.__path__, "ikomm.")
        if not m.name.startswith("ikomm.cli") and m.name != "ikomm.__main__"
    ]
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'prefect' or name.startswith('prefect.'):\n"
        "            raise ImportError('prefect is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for name in {modules!r}:\n"
        "    __import__(name)\n"
        "print(len([m for m in sys.modules if m.startswith('ikomm')]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(modules) >= 25 and int(proc.stdout) >= len(modules)

"""The file servers' read-only ACL reader (a forced SSH command): what it answers, what it refuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ikomm.connectors import acl_reader
from ikomm.connectors.files import AclEntry, parse_acls

READER = Path(acl_reader.__file__)


def ask(root: Path, command: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SSH_ORIGINAL_COMMAND": command}
    return subprocess.run([sys.executable, "-I", str(READER), str(root)], env=env, capture_output=True, text=True)


def test_the_reader_names_folders_as_sftp_sees_them_and_reads_only_under_its_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "data/home/kari").mkdir(parents=True)
    (root / "data/home/plain").mkdir()
    subprocess.run(["setfacl", "-m", "g:10513:rx", str(root / "data/home/kari")], check=True)
    subprocess.run(["setfacl", "-d", "-m", "u:10777:rwx", str(root / "data/home/kari")], check=True)
    answer = ask(root, "acls /data/home /data/missing")
    assert answer.returncode == 0, answer.stderr
    assert parse_acls(answer.stdout) == {
        "/data/home/kari": [AclEntry(False, "group", 10513, "r-x"), AclEntry(True, "user", 10777, "rwx")]
    }  # the folder with only the base entries is not listed
    (root / "data/out").symlink_to(tmp_path)  # a link that leads out of the served root
    assert ask(root, "acls /../..").stdout == ""  # / as a chrooted client sees it: the root itself, nothing above
    for refused in ("acls /data/out", "acls data/home", "rm -rf /data", "acls", "getfacl -R /"):
        said = ask(root, refused)
        assert said.returncode == 2 and "refused" in said.stderr, refused

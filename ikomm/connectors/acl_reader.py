"""The read-only ACL reader a file server runs for `ikomm audit isolation`: the forced command of an SSH port.

SFTP cannot read POSIX ACLs, so the file server gives the audit one more door, which can only read: an SSH
port (or key) whose forced command is this script (standard library only, Python 3.9+), with the folder the
SFTP clients see as / (their chroot) as its argument:

    Match LocalPort 2223
        ChrootDirectory none
        ForceCommand /usr/bin/python3 /opt/ikomm/acl_reader.py /srv/sftp-root

The client asks `acls /data/home /data/profiles ...` (SSH_ORIGINAL_COMMAND): for each folder given (a path as
the SFTP clients see it), the folders right under it that carry an extended ACL, as `getfacl --numeric
--skip-base` prints them, with the paths as the SFTP clients see them. Anything else asked is refused, and
nothing is ever written. The lab runs it on every zone file server (lab/manager.py).
"""

from __future__ import annotations

import os
import posixpath
import shlex
import subprocess
import sys


def _inside(root: str, path: str) -> str | None:
    """The real path of an SFTP path under root, or None if it leaves root or is not absolute."""
    if not path.startswith("/") or "\x00" in path:
        return None
    clean = posixpath.normpath(path)
    real = os.path.realpath(os.path.join(root, clean.lstrip("/")))
    return real if real == root or real.startswith(root.rstrip("/") + "/") else None


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: acl_reader.py SFTP_ROOT (as an SSH forced command)", file=sys.stderr)
        return 2
    root = os.path.realpath(sys.argv[1])
    asked = shlex.split(os.environ.get("SSH_ORIGINAL_COMMAND", ""))
    if not asked or asked[0] != "acls" or len(asked) < 2:
        print("refused: only 'acls FOLDER...' is served here", file=sys.stderr)
        return 2
    tops: list[str] = []
    for path in asked[1:]:
        real = _inside(root, path)
        if real is None:
            print(f"refused: {path!r} is not a folder under the served root", file=sys.stderr)
            return 2
        if os.path.isdir(real):
            with os.scandir(real) as entries:
                tops += sorted(e.path for e in entries if e.is_dir(follow_symlinks=False))
    if not tops:
        return 0
    found = subprocess.run(
        ["getfacl", "--numeric", "--skip-base", "--absolute-names", "--physical", "--", *tops],
        capture_output=True,
        text=True,
        check=False,
    )
    prefix = root.rstrip("/")
    for line in found.stdout.splitlines():
        if line.startswith("# file: "):
            line = "# file: " + (line.removeprefix("# file: ").removeprefix(prefix) or "/")
        print(line)
    if found.returncode != 0:
        print(found.stderr.strip(), file=sys.stderr)
    return found.returncode


if __name__ == "__main__":
    sys.exit(main())

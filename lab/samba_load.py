"""Load directory entries into a stopped Samba AD DC's sam.ldb, offline, in one transaction.

Run with the system Python that has Samba's bindings (/usr/bin/python3), not the project's venv:
    /usr/bin/python3 lab/samba_load.py <samba dir> <entries.json> <secrets file> <password variable>
The entries' DNs are given in full; this is several times faster than adding them over LDAP. The
Administrator password is read from the secrets file, never from the command line.
"""

import json
import sys


def main() -> int:
    from samba.auth import system_session
    from samba.param import LoadParm
    from samba.samdb import SamDB

    folder, entries_file, secrets_file, password_var = sys.argv[1:5]
    with open(secrets_file, encoding="utf-8") as fh:
        secrets = dict(line.rstrip("\n").split("=", 1) for line in fh if "=" in line)
    lp = LoadParm()
    lp.load(f"{folder}/etc/smb.conf")
    db = SamDB(url=f"{folder}/private/sam.ldb", session_info=system_session(), lp=lp)
    with open(entries_file, encoding="utf-8") as fh:
        entries = json.load(fh)
    db.transaction_start()
    try:
        for entry in entries:
            db.add(entry)
        db.setpassword("(sAMAccountName=Administrator)", secrets[password_var])
    except Exception as exc:
        db.transaction_cancel()
        print(f"loading failed: {exc}", file=sys.stderr)
        return 1
    db.transaction_commit()
    print(f"loaded {len(entries)} entries")
    return 0


if __name__ == "__main__":
    sys.exit(main())

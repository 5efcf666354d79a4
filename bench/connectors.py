"""Connector throughput against the lab, beside the raw library doing the same operations (the floor).

Each pair runs in the same process, one after the other, on one thread, alternating the order over
rounds so neither side gets the warmer server; the median run counts:
- directory: add a user, set its password (unicodePwd over LDAPS, pwdLastSet=0), enable it;
- memberships: add a user to a group;
- SFTP: copy whole home trees from a legacy file server to a zone file server (files/s, MB/s).
"""

from __future__ import annotations

import json
import posixpath
import shutil
import ssl
import stat
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import ldap3
import paramiko
from rich.console import Console
from rich.table import Table

from ikomm.connectors import Connectors
from ikomm.connectors.directory import child_dn
from ikomm.connectors.files import copy_tree
from ikomm.inventory import Inventory, load_inventory
from ikomm.secrets import resolve_secret
from lab.manager import Lab

RESULTS = Path("bench-results")
USERS = 150
TREES = 60
ROUNDS = 2
MEMBER_REPS = 4
PASSWORD = "Bench-Passord-1!æ"


def raw_ldap(inv: Inventory) -> ldap3.Connection:
    d = inv.platform.directory
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(inv.path(d.ca_file or "")), valid_names=[d.tls_name])
    server = ldap3.Server(d.host, port=d.port, use_ssl=True, tls=tls)
    return ldap3.Connection(server, d.bind_dn, resolve_secret(d.password, inv), auto_bind=True, raise_exceptions=True)


def raw_sftp(inv: Inventory, host: str, port: int) -> paramiko.SFTPClient:
    ssh = inv.platform.ssh
    client = paramiko.SSHClient()
    client.load_host_keys(str(inv.path(ssh.known_hosts)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(host, port=port, username=ssh.user, key_filename=str(inv.path(ssh.key_file)), look_for_keys=False)
    return client.open_sftp()


def raw_copy(src: paramiko.SFTPClient, src_root: str, dst: paramiko.SFTPClient, dst_root: str) -> tuple[int, int]:
    """The floor for a tree copy: walk, mkdir, stream each file, rename, chmod, utime; no manifests or checks."""
    files = size = 0
    dst.mkdir(dst_root)
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        for attr in src.listdir_attr(posixpath.join(src_root, rel_dir)):
            rel = posixpath.join(rel_dir, attr.filename)
            if stat.S_ISDIR(attr.st_mode or 0):
                dst.mkdir(posixpath.join(dst_root, rel))
                pending.append(rel)
                continue
            target = posixpath.join(dst_root, rel)
            with src.open(posixpath.join(src_root, rel), "rb") as fin, dst.open(target + ".part", "wb") as fout:
                fout.set_pipelined(True)
                length = attr.st_size or 0
                for start in range(0, length, 16 * 32768):
                    end = min(length, start + 16 * 32768)
                    for chunk in fin.readv([(o, min(32768, end - o)) for o in range(start, end, 32768)]):
                        fout.write(chunk)
            dst.posix_rename(target + ".part", target)
            dst.chmod(target, 0o600)
            dst.utime(target, (attr.st_mtime or 0, attr.st_mtime or 0))
            files += 1
            size += attr.st_size or 0
    return files, size


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    console = Console()
    inv = load_inventory(Path("inventory"))
    lab = Lab(inv, progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    lab.up()
    made = Connectors(inv)
    ad = made.platform()
    d = inv.platform.directory
    raw = raw_ldap(inv)
    parent = f"OU=Deaktivert,{d.base_dn}"
    group = f"CN={next(iter(inv.applications.values())).groups['lillehammer']},{d.groups_dn}"
    encoded = f'"{PASSWORD}"'.encode("utf-16-le")
    times: dict[str, list[float]] = {k: [] for k in ("dir-raw", "dir-ikomm", "mem-raw", "mem-ikomm")}
    times |= {"sftp-raw": [], "sftp-ikomm": []}

    def dns(tag: str, r: int) -> list[str]:
        return [child_dn("CN", f"bench {tag} {r} {i} Ærlig", parent) for i in range(USERS)]

    def raw_adds(names: list[str]) -> None:
        for dn in names:
            raw.add(dn, ["user"], {"sAMAccountName": f"b{hash(dn) & 0xFFFFFFF:x}"[:20], "userAccountControl": "514"})
            raw.modify(
                dn, {"unicodePwd": [(ldap3.MODIFY_REPLACE, [encoded])], "pwdLastSet": [(ldap3.MODIFY_REPLACE, ["0"])]}
            )
            raw.modify(dn, {"userAccountControl": [(ldap3.MODIFY_REPLACE, ["512"])]})

    def ikomm_adds(names: list[str]) -> None:
        for dn in names:
            ad.add(dn, ["user"], {"sAMAccountName": f"b{hash(dn) & 0xFFFFFFF:x}"[:20], "userAccountControl": "514"})
            ad.set_password(dn, PASSWORD)
            ad.set_enabled(dn, True)

    def raw_members(names: list[str]) -> None:
        for dn in names:
            raw.modify(group, {"member": [(ldap3.MODIFY_ADD, [dn])]})

    def ikomm_members(names: list[str]) -> None:
        for dn in names:
            ad.add_member(group, dn)

    users = [u for u in inv.users["lillehammer"]][:TREES]
    src_fs = inv.municipalities["lillehammer"].legacy.file_server
    zone = inv.zone("office")
    src_raw = raw_sftp(inv, src_fs.host, src_fs.port)
    dst_raw = raw_sftp(inv, zone.file_server.host, zone.file_server.port)
    source, target = made.legacy_files("lillehammer"), made.zone_files("office")
    moved = {"files": 0, "bytes": 0}

    def raw_trees(r: int) -> None:
        moved["files"] = moved["bytes"] = 0
        for u in users:
            files, size = raw_copy(
                src_raw, u.home_path, dst_raw, f"{zone.file_server.home_root}/bench-raw-{r}-{u.legacy_id}"
            )
            moved["files"] += files
            moved["bytes"] += size

    def ikomm_trees(r: int) -> None:
        for u in users:
            copy_tree(source, u.home_path, target, f"{zone.file_server.home_root}/bench-ikomm-{r}-{u.legacy_id}")

    all_dns: list[str] = []
    try:
        for r in range(ROUNDS):
            a, b = dns("raw", r), dns("ikomm", r)
            all_dns += a + b
            sides = ["raw", "ikomm"] if r % 2 == 0 else ["ikomm", "raw"]  # neither side always goes first
            names = {"raw": a, "ikomm": b}
            for side in sides:
                times[f"dir-{side}"].append(timed(partial(raw_adds if side == "raw" else ikomm_adds, names[side])))
            for side in sides:
                times[f"mem-{side}"].append(
                    timed(partial(raw_members if side == "raw" else ikomm_members, names[side]))
                )
                raw.modify(group, {"member": [(ldap3.MODIFY_DELETE, names[side])]})  # same group size for both
            for side in sides:
                times[f"sftp-{side}"].append(timed(partial(raw_trees if side == "raw" else ikomm_trees, r)))
    finally:
        for dn in all_dns:
            ad.delete(dn)
        for folder in lab.server_path(zone.file_server.name, zone.file_server.home_root).glob("bench-*"):
            shutil.rmtree(folder)

    def best(key: str) -> float:
        return statistics.median(times[key])

    rows = [
        ("directory: add + password + enable", USERS, "users/s", best("dir-raw"), best("dir-ikomm")),
        ("directory: membership add", USERS, "adds/s", best("mem-raw"), best("mem-ikomm")),
        ("SFTP: home trees copied", moved["files"], "files/s", best("sftp-raw"), best("sftp-ikomm")),
    ]
    table = Table(title="connectors vs raw library (median of runs, one thread)")
    for col in ("operation", "raw", "ikomm", "overhead"):
        table.add_column(col)
    out = []
    for name, count, unit, raw_s, ik_s in rows:
        overhead = ik_s / raw_s - 1
        table.add_row(name, f"{count / raw_s:.0f} {unit}", f"{count / ik_s:.0f} {unit}", f"{overhead:+.1%}")
        out.append(
            {
                "operation": name,
                "count": count,
                "raw_s": round(raw_s, 3),
                "ikomm_s": round(ik_s, 3),
                "overhead": round(overhead, 4),
            }
        )
    mb = moved["bytes"] / 1e6
    table.add_row("SFTP: MB/s", f"{mb / best('sftp-raw'):.1f} MB/s", f"{mb / best('sftp-ikomm'):.1f} MB/s", "")
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "connectors.json").write_text(
        json.dumps({"rows": out, "sftp_mb": round(mb, 2), "times": times}, indent=1)
    )


if __name__ == "__main__":
    main()

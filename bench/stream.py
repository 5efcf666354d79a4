"""One file's copy and hash over SFTP against OpenSSH's own relay, on the same two lab servers, in one run.

From a legacy file server to a zone file server of the lab (the inventory given, default `inventory/`), three
rounds, alternating nothing (each measure is short and the same every round; the spread is printed):
- `copy_tree` of one file of SIZE_MB random bytes, and of SMALL files of 20 KB (an Office folder);
- `scp -3` of the same large file between the same two sshds (the relay through this host, as copy_tree);
- `_sha256` of the large file over SFTP (what `verify_tree` pays per byte, during the user's downtime).

The bytes are written on the servers' disks directly and removed afterwards. Results: bench-results/stream.json.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ikomm.connectors import Connectors
from ikomm.connectors.files import _sha256, copy_tree
from ikomm.inventory import load_inventory
from lab.manager import Lab

RESULTS = Path("bench-results")
SIZE_MB = int(os.environ.get("BENCH_SIZE_MB", "200"))
SMALL = int(os.environ.get("BENCH_SMALL_FILES", "1000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def main() -> None:
    console = Console()
    inv = load_inventory(Path(sys.argv[1] if len(sys.argv) > 1 else "inventory"))
    lab = Lab(inv)
    lab.up()
    muni = next(iter(inv.municipalities.values()))
    zone = inv.platform.zones[0]
    src_root, dst_root = "/srv/home/bench-stream", zone.file_server.home_root
    real = lab.server_path(muni.legacy.file_server.name, src_root)
    shutil.rmtree(real, ignore_errors=True)
    (real / "big").mkdir(parents=True)
    (real / "small").mkdir()
    with open(real / "big" / "file.bin", "wb") as fh:
        for _ in range(SIZE_MB):
            fh.write(os.urandom(1 << 20))
    for i in range(SMALL):
        (real / "small" / f"f{i:04d}.docx").write_bytes(os.urandom(20 * 1024))
    made = Connectors(inv)
    src, dst = made.legacy_files(muni.id), made.zone_files(zone.id)
    key, known = inv.path(inv.platform.ssh.key_file), inv.path(inv.platform.ssh.known_hosts)
    fs_src, fs_dst = muni.legacy.file_server, zone.file_server
    rates: dict[str, list[float]] = {"copy_tree, one file": [], "scp -3, one file": [], "_sha256, one file": []}
    rates[f"copy_tree, {SMALL} x 20 KB"] = []

    def timed(label: str, mb: float, run: Callable[[], object]) -> None:
        t0 = time.monotonic()
        run()
        rates[label].append(mb / (time.monotonic() - t0))

    scp = ["scp", "-q", "-3", "-i", str(key), "-o", f"UserKnownHostsFile={known}"]
    scp += ["-o", "StrictHostKeyChecking=yes", "-P", str(fs_src.port)]
    scp += [f"root@{fs_src.host}:{src_root}/big/file.bin", f"root@{fs_dst.host}:{dst_root}/bench-scp.bin"]
    if fs_src.port != fs_dst.port:
        raise SystemExit("scp -3 takes one port for both ends: the two servers must share theirs")
    try:
        for r in range(ROUNDS):
            for sub, label, mb in (
                ("big", "copy_tree, one file", float(SIZE_MB)),
                ("small", f"copy_tree, {SMALL} x 20 KB", SMALL * 20 / 1024),
            ):
                target = f"{dst_root}/bench-stream-{sub}-{r}"
                timed(label, mb, partial(copy_tree, src, f"{src_root}/{sub}", dst, target))
                shutil.rmtree(lab.server_path(fs_dst.name, target))
            timed("scp -3, one file", SIZE_MB, partial(subprocess.run, scp, check=True))
            os.remove(lab.server_path(fs_dst.name, f"{dst_root}/bench-scp.bin"))
            with src.session() as sftp:
                timed("_sha256, one file", SIZE_MB, partial(_sha256, sftp, f"{src_root}/big/file.bin", SIZE_MB << 20))
    finally:
        made.close()
        shutil.rmtree(real, ignore_errors=True)
    table = Table(title=f"{SIZE_MB} MB file and {SMALL} x 20 KB, {muni.legacy.file_server.name} -> {fs_dst.name}")
    for col in ("path", "MB/s, each round", "median"):
        table.add_column(col)
    for label, got in rates.items():
        table.add_row(label, ", ".join(f"{x:.1f}" for x in got), f"{statistics.median(got):.1f}")
    console.print(table)
    ratio = statistics.median(rates["copy_tree, one file"]) / statistics.median(rates["scp -3, one file"])
    console.print(f"copy_tree / scp -3 on one file: {ratio:.2f} x")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stream.json").write_text(json.dumps({"size_mb": SIZE_MB, "small": SMALL, "mb_per_s": rates}, indent=1))


if __name__ == "__main__":
    main()

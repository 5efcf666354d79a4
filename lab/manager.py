"""`ikomm lab up | down | status`: the inventory's servers, for real, on loopback.

A lab lives in the folder the inventory names (platform.yaml `lab.dir`):

    tls/ ssh/ secrets.env      key material and passwords (0600), referenced by the inventory
    samba/<name>/               Samba AD DCs (platform AD, Lillehammer's legacy AD)
    slapd/<name>/               OpenLDAP instances (Gausdal's and Øyer's legacy directories)
    sshd/<name>/root/           file servers and the thin-client config host (sshd chroots here); an
                                overlay mount of the cached tree, so a warm start copies no user file
    broker/state.json           the terminal-server broker's state
    logs/ pids.json             server output; what `lab up` started
    overlay/<name>/             the overlay's upper layer: what the lab's file servers changed
    cache/<key>/                the same tree, pristine, for a warm start from the same inventory
                                (roots/<name>/ holds the seeded file trees, the overlays' lower layers)

The first `lab up` for an inventory builds everything (cold); later ones reuse the cache (warm). Where
overlay mounts are not allowed (an unprivileged container), the file trees are copied instead.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from ikomm.connectors import acl_reader
from ikomm.connectors.directory import child_dn
from ikomm.errors import LabError
from ikomm.inventory import Inventory
from ikomm.inventory.load import tenant_kits
from ikomm.inventory.models import DirectoryConfig, FileServerConfig, Municipality
from ikomm.naming import netbios_domain
from ikomm.processes import pgid_of
from lab import process, seed
from lab.keys import LabCA, new_password, new_ssh_key, write_private

BUILD_CODE = ("manager.py", "seed.py", "keys.py", "samba_load.py")  # a change to these invalidates caches
STATE_ITEMS = ("tls", "ssh", "secrets.env", "samba", "slapd", "sshd", "broker", "overlay")
SYSTEM_PYTHON = "/usr/bin/python3"
SSHD = "/usr/sbin/sshd"
SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SAMBA = "/usr/sbin/samba"
SAMBA_TOOL = "/usr/bin/samba-tool"
Progress = Callable[[str], None]
SambaJob = tuple["subprocess.Popen[bytes]", list[dict[str, object]], str]  # provision, entries, password variable


@dataclass(frozen=True)
class Server:
    """One server of the lab: what it is, where it listens, and how it was built."""

    name: str
    kind: str  # samba | slapd | sshd | broker
    host: str
    port: int
    tls: bool
    role: str


def servers_of(inv: Inventory) -> list[Server]:
    """Every server the inventory asks the lab to run, in start order."""
    out: list[Server] = []

    def directory(name: str, d: DirectoryConfig, role: str) -> None:
        out.append(Server(name, "samba" if d.kind == "ad" else "slapd", d.host, d.port, d.security == "ldaps", role))

    def files(fs: FileServerConfig, role: str) -> None:
        out.append(Server(fs.name, "sshd", fs.host, fs.port, False, role))

    directory("platform-ad", inv.platform.directory, "platform AD")
    for muni in inv.municipalities.values():
        directory(f"legacy-dir-{muni.id}", muni.legacy.directory, f"{muni.name} legacy directory")
    for muni in inv.municipalities.values():
        files(muni.legacy.file_server, f"{muni.name} legacy file server")
    for zone in inv.platform.zones:
        files(zone.file_server, f"platform file server, zone {zone.id}")
    ch = inv.platform.thin_client_config_host
    out.append(Server("config-host", "sshd", ch.host, ch.port, False, "thin-client config host"))
    b = inv.platform.broker
    out.append(Server("broker", "broker", b.host, b.port, b.scheme == "https", "terminal-server broker (WinRM)"))
    for s in out:
        if not ipaddress.ip_address(s.host).is_loopback:
            raise LabError(f"{s.name}: the lab runs servers on loopback only, not on {s.host}")
    seen: dict[tuple[str, int], str] = {}
    for s in out:
        if (s.host, s.port) in seen:
            raise LabError(f"{s.name} and {seen[(s.host, s.port)]} both want {s.host}:{s.port}")
        seen[(s.host, s.port)] = s.name
    return out


def with_kits(inv: Inventory) -> tuple[Inventory, set[str]]:
    """The inventory with the legacy side of each tenant kit not yet onboarded, and those kits' ids.

    A neighbour's legacy directory and file server run in the lab before `ikomm tenant add` names the
    municipality in municipalities.yaml; nothing of theirs is on the platform until then.
    """
    kits = {k: kit for k, kit in tenant_kits(inv.root).items() if k not in inv.municipalities}
    if not kits:
        return inv, set()
    users_dn = inv.platform.directory.users_dn
    munis = dict(inv.municipalities)
    users, devices = dict(inv.users), dict(inv.devices)
    for kit_id, kit in kits.items():
        spec = kit.spec
        munis[kit_id] = Municipality(
            id=kit_id,
            name=spec.name,
            ownership_pct=0,
            target_ou=child_dn("OU", spec.name, users_dn),
            upn_suffix=spec.upn_suffix,
            legacy=spec.legacy,
        )
        users[kit_id], devices[kit_id] = kit.users, kit.devices
    return replace(inv, municipalities=munis, users=users, devices=devices), set(kits)


class Lab:
    """The lab of one inventory: build it, start it, tell its state, stop it."""

    def __init__(self, inv: Inventory, progress: Progress | None = None) -> None:
        if inv.lab_dir is None:
            raise LabError("this inventory is not a lab inventory (platform.yaml has no 'lab: {dir: ...}')")
        self.inv, self.kits = with_kits(inv)
        self.wanted = inv.lab_dir
        self.dir = lab_home(inv.lab_dir)
        self.servers = servers_of(self.inv)
        self.say: Progress = progress or (lambda _msg: None)
        self.pids = self.dir / "pids.json"
        self.logs = self.dir / "logs"

    # --- public verbs ---------------------------------------------------------------------------

    def up(self) -> str:
        """Start the lab (stopping a stale one first); return 'cold' or 'warm'."""
        self._check_dir()
        self.down()
        cache = self.dir / "cache" / self.cache_key()
        mode = "warm"
        if not (cache / "complete").is_file():
            self.say("cold start: building the lab from the inventory")
            mode = "cold"
            self._clear()
            if cache.parent.exists():
                shutil.rmtree(cache.parent)  # one cached lab per folder is enough
            self._build(cache / "roots")
            self._save(cache)
        self._restore(cache)
        self._start()
        return mode

    def down(self) -> list[str]:
        """Stop exactly the servers `lab up` started; return the names of those that were running."""
        stopped = [p.name for p in process.load(self.pids) if process.stop(p)]
        self.pids.unlink(missing_ok=True)
        for mountpoint in self._mounts():
            subprocess.run(["umount", mountpoint], check=False, capture_output=True)
        return stopped

    def server_path(self, server: str, path: str) -> Path:
        """Where a path on one of the lab's SSH servers lives on this machine (to set up or inspect a test)."""
        return self.dir / "sshd" / server / "root" / path.lstrip("/")

    def stop_server(self, name: str) -> None:
        """Stop one running server (to inject a fault); `start_server` brings it back with its data."""
        procs = process.load(self.pids)
        for proc in procs:
            if proc.name == name:
                process.stop(proc)
                return
        raise LabError(f"no running lab server named {name!r}")

    def start_server(self, name: str) -> None:
        """Start one server of the lab again, as `up` started it, and wait until it answers."""
        server = next((s for s in self.servers if s.name == name), None)
        if server is None:
            raise LabError(f"the lab has no server named {name!r}")
        procs = [p for p in process.load(self.pids) if p.name != name]
        proc = process.spawn(name, self._argv(server), self.logs / f"{name}.log", server.host, server.port, server.tls)
        process.save(self.pids, [*procs, proc])
        process.wait_ready([proc], self.dir / "tls" / "lab-ca.pem", self.logs)

    def _mounts(self) -> list[str]:
        """Overlay mounts of this lab that are in place now."""
        prefix = f"{self.dir / 'sshd'}/"
        with open("/proc/mounts", encoding="utf-8") as fh:
            points = [line.split()[1] for line in fh]
        return [p for p in points if p.startswith(prefix)]

    def status(self) -> list[tuple[Server, bool, bool]]:
        """Each server with (running, answering)."""
        running = {p.name: p for p in process.load(self.pids)}
        ca = self.dir / "tls" / "lab-ca.pem"
        out = []
        for s in self.servers:
            proc = running.get(s.name)
            alive = proc is not None and process.is_alive(proc)
            out.append((s, alive, alive and proc is not None and process.answers(proc, ca)))
        return out

    def cache_key(self) -> str:
        """A digest of everything the built lab depends on: the inventory, the code that builds it, its folder."""
        h = hashlib.sha256(f"{self.dir}\0".encode())
        for name in BUILD_CODE:
            h.update(Path(__file__).with_name(name).read_bytes())
        root = self.inv.root
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix in (".yaml", ".csv"):
                h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
        return h.hexdigest()[:16]

    def memory_kib(self) -> int:
        """Proportional set size (shared pages split among sharers) of every lab process, in KiB."""
        groups = {p.pid for p in process.load(self.pids) if process.is_alive(p)}
        members = [int(e) for e in os.listdir("/proc") if e.isdigit() and pgid_of(int(e)) in groups]
        return process.pss_kib(members)

    # --- building -------------------------------------------------------------------------------

    def _check_dir(self) -> None:
        if self.dir != self.wanted and not self.wanted.is_symlink():
            # sshd may not chroot below the checkout (in /tmp, say): the lab lives under /var/lib, and
            # the inventory's folder is a link to it, so every path the inventory names still works
            if self.wanted.is_dir() and not any(self.wanted.iterdir()):
                self.wanted.rmdir()  # left empty by an earlier attempt
            if self.wanted.exists():
                raise LabError(
                    f"lab folder {self.wanted}: sshd cannot chroot below it, and it is not empty; "
                    f"remove it, and the lab will live in {self.dir} with {self.wanted} linking to it"
                )
            self.dir.mkdir(parents=True, exist_ok=True)
            self.wanted.parent.mkdir(parents=True, exist_ok=True)
            self.wanted.symlink_to(self.dir)
            self.say(f"{self.wanted} is below a folder sshd refuses to chroot in: the lab lives in {self.dir}")
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        unsafe = chroot_unsafe_parent(self.dir)
        if unsafe is not None:
            raise LabError(
                f"lab folder {self.dir}: {unsafe} must be owned by root and not writable by group or others "
                "(sshd chroots the file servers below it); put the lab elsewhere in platform.yaml lab.dir"
            )

    def _clear(self) -> None:
        for item in STATE_ITEMS:
            path = self.dir / item
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def _save(self, cache: Path) -> None:
        cache.mkdir(parents=True, exist_ok=True)
        for item in STATE_ITEMS:
            _copy(self.dir / item, cache / item)
        (cache / "complete").write_text("ok\n")

    def _restore(self, cache: Path) -> None:
        """Copy the small state from the cache; lay each file server's tree over its cached one."""
        t0 = time.monotonic()
        self._clear()
        for item in STATE_ITEMS:
            _copy(cache / item, self.dir / item)
        how = "overlay"
        for s in self.servers:
            if s.kind != "sshd":
                continue
            lower, root = cache / "roots" / s.name, self.dir / "sshd" / s.name / "root"
            upper, work = self.dir / "overlay" / s.name / "upper", self.dir / "overlay" / s.name / "work"
            for folder in (root, upper, work):
                folder.mkdir(parents=True, exist_ok=True, mode=0o755)
            mounted = subprocess.run(
                [
                    "mount",
                    "-t",
                    "overlay",
                    "overlay",
                    "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}",
                    str(root),
                ],
                capture_output=True,
            )
            if mounted.returncode != 0:
                how = "copy"
                root.rmdir()
                _copy(lower, root)
        self.say(f"restored the lab from its cache ({how}) in {time.monotonic() - t0:.1f} s")

    def _secrets(self) -> dict[str, str]:
        refs = [self.inv.platform.directory.password, self.inv.platform.broker.password]
        refs += [m.legacy.directory.password for m in self.inv.municipalities.values()]
        names = sorted({r.env for r in refs if r.env})
        if any(r.prefect_secret for r in refs):
            raise LabError("a lab inventory keeps its credentials in env references, not Prefect Secret blocks")
        return {name: new_password() for name in names}

    def _build(self, roots: Path) -> None:
        t0 = time.monotonic()
        secrets = self._secrets()
        write_private(self.dir / "secrets.env", "".join(f"{k}={v}\n" for k, v in secrets.items()).encode())
        ca = LabCA(self.dir / "tls")
        pub = new_ssh_key(self.dir / "ssh" / "id_ed25519")
        samba_jobs = self._provision_sambas(ca)  # slow: runs while the rest is written
        known_hosts: list[str] = []
        for s in self.servers:
            if s.kind == "slapd":
                self._build_slapd(s, ca, secrets)
            elif s.kind == "sshd":
                known_hosts.append(self._build_sshd(s, pub, roots / s.name))
        (self.dir / "ssh" / "known_hosts").write_text("".join(known_hosts))
        self.say(f"seeded files, device configs and OpenLDAP in {time.monotonic() - t0:.1f} s")
        broker = self.inv.platform.broker
        ca.issue("broker", ["broker.ikomm.lab"], broker.host)
        seed.write_json(self.dir / "broker" / "state.json", seed.broker_state(self.inv))
        loads = []
        for name, (job, entries, password_var) in samba_jobs.items():
            if job.wait() != 0:
                raise LabError(
                    f"{name}: samba-tool domain provision failed; see {self.logs / (name + '.provision.log')}"
                )
            entries_file = self.dir / "samba" / name / "seed.json"
            seed.write_json(entries_file, entries)
            log = open(self.logs / f"{name}.load.log", "wb")  # noqa: SIM115 - closed after wait below
            argv = [
                SYSTEM_PYTHON,
                str(Path(__file__).with_name("samba_load.py")),
                str(self.dir / "samba" / name),
                str(entries_file),
                str(self.dir / "secrets.env"),
                password_var,
            ]
            loads.append((name, log, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)))
        for name, log, job in loads:
            code = job.wait()
            log.close()
            if code != 0:
                raise LabError(f"{name}: loading the seed entries failed; see {self.logs / (name + '.load.log')}")
        self.say(f"built the lab in {time.monotonic() - t0:.1f} s")

    def _directory(self, s: Server) -> tuple[DirectoryConfig, str]:
        if s.name == "platform-ad":
            return self.inv.platform.directory, "IKOMM"
        muni = self.inv.municipalities[s.name.removeprefix("legacy-dir-")]
        return muni.legacy.directory, netbios_domain(muni)

    def _provision_sambas(self, ca: LabCA) -> dict[str, SambaJob]:
        """Start `samba-tool domain provision` for every AD of the lab; return each job with what to load."""
        jobs: dict[str, SambaJob] = {}
        self.logs.mkdir(parents=True, exist_ok=True)
        for s in self.servers:
            if s.kind != "samba":
                continue
            d, netbios = self._directory(s)
            if not d.realm or not d.password.env:
                raise LabError(f"{s.name}: a lab AD needs 'realm' and an env password reference")
            target = self.dir / "samba" / s.name
            cert, key = ca.issue(s.name, [d.tls_name or f"dc1.{d.realm.lower()}", f"dc1.{d.realm.lower()}"], s.host)
            options = {
                "interfaces": f"{s.host}/8",
                "bind interfaces only": "yes",
                "pid directory": f"{target}/run",
                "ncalrpc dir": f"{target}/run/ncalrpc",
                "winbindd socket directory": f"{target}/run/winbindd",
                "ntp signd socket directory": f"{target}/run/ntp_signd",
                "log file": f"{target}/log/log.%m",
                "server services": "ldap",
                "tls enabled": "yes",
                "tls keyfile": str(key),
                "tls certfile": str(cert),
                "tls cafile": str(ca.ca_file),
                "prefork children": "2",
            }
            argv = [
                SAMBA_TOOL,
                "domain",
                "provision",
                f"--targetdir={target}",
                f"--realm={d.realm}",
                f"--domain={netbios}",
                "--server-role=dc",
                "--dns-backend=NONE",
                "--host-name=dc1",
                "--use-rfc2307",
                *[f"--option={k}={v}" for k, v in options.items()],
            ]
            log = open(self.logs / f"{s.name}.provision.log", "wb")  # noqa: SIM115 - child keeps it
            job = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            if s.name == "platform-ad":
                entries = seed.platform_entries(self.inv, leave_out=self.kits)
            else:
                entries = seed.ad_legacy_entries(self.inv, self.inv.municipalities[s.name.removeprefix("legacy-dir-")])
            jobs[s.name] = (job, entries, d.password.env)
        return jobs

    def _build_slapd(self, s: Server, ca: LabCA, secrets: dict[str, str]) -> None:
        d, _ = self._directory(s)
        muni = self.inv.municipalities[s.name.removeprefix("legacy-dir-")]
        folder = self.dir / "slapd" / s.name
        (folder / "db").mkdir(parents=True)
        cert, key = ca.issue(s.name, [d.tls_name or s.host], s.host)
        password = secrets[(d.password.env or "")]
        salt = os.urandom(8)
        digest = hashlib.sha1(password.encode() + salt).digest()
        ssha = "{SSHA}" + base64.b64encode(digest + salt).decode()
        conf = "\n".join(
            [
                *[f"include /etc/ldap/schema/{n}.schema" for n in ("core", "cosine", "inetorgperson", "nis")],
                f"pidfile {folder}/slapd.pid",
                f"argsfile {folder}/slapd.args",
                "modulepath /usr/lib/ldap",
                "moduleload back_mdb",
                f"TLSCACertificateFile {ca.ca_file}",
                f"TLSCertificateFile {cert}",
                f"TLSCertificateKeyFile {key}",
                "security simple_bind=128",
                "database mdb",
                "maxsize 1073741824",
                f'suffix "{d.base_dn}"',
                f'rootdn "{d.bind_dn}"',
                f"rootpw {ssha}",
                f"directory {folder}/db",
                "index objectClass,uid,cn,memberUid,member,mail eq",
                "dbnosync",
                "",
            ]
        )
        (folder / "slapd.conf").write_text(conf)
        ldif = folder / "seed.ldif"
        ldif.write_text(seed.openldap_ldif(self.inv, muni), encoding="utf-8")
        result = subprocess.run(
            [SLAPADD, "-q", "-f", str(folder / "slapd.conf"), "-l", str(ldif)], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise LabError(f"{s.name}: slapadd failed: {result.stderr.strip()[-500:]}")

    def _build_sshd(self, s: Server, client_pub: str, root: Path) -> str:
        folder = self.dir / "sshd" / s.name
        folder.mkdir(parents=True)
        root.mkdir(parents=True)
        host_pub = new_ssh_key(folder / "host_ed25519")
        (folder / "authorized_keys").write_text(client_pub + "\n")
        conf = "\n".join(
            [
                f"Port {s.port}",
                f"ListenAddress {s.host}",
                f"HostKey {folder}/host_ed25519",
                f"PidFile {folder}/sshd.pid",
                f"AuthorizedKeysFile {folder}/authorized_keys",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",
                f"ChrootDirectory {folder / 'root'}",
                "ForceCommand internal-sftp",
                "Subsystem sftp internal-sftp",
                "MaxSessions 64",
                "MaxStartups 64:30:256",
                "LogLevel ERROR",
                *self._acl_reader(s, folder / "root"),
                "",
            ]
        )
        (folder / "sshd_config").write_text(conf)
        self._seed_files(s, root)
        for path in [root, *root.rglob("*")]:
            if path.is_dir():
                os.chmod(path, 0o755)
        ports = [s.port, *(p for p in [self._acl_port(s)] if p is not None)]
        return "".join(f"{s.host if p == 22 else f'[{s.host}]:{p}'} {host_pub}\n" for p in ports)

    def _acl_port(self, s: Server) -> int | None:
        """The ACL reader's port of a zone file server, if the inventory gives it one."""
        return next((z.file_server.acl_port for z in self.inv.platform.zones if z.file_server.name == s.name), None)

    def _acl_reader(self, s: Server, root: Path) -> list[str]:
        """sshd lines for the server's read-only ACL reader: a second port whose only command reads ACLs."""
        port = self._acl_port(s)
        if port is None:
            return []
        reader = Path(acl_reader.__file__).resolve()
        return [
            f"ListenAddress {s.host}:{port}",  # a second port, same host key; what follows applies to it alone
            f"Match LocalPort {port}",
            "    ChrootDirectory none",
            f"    ForceCommand {sys.executable} -I {reader} {root}",
        ]

    def _seed_files(self, s: Server, root: Path) -> None:
        for muni in self.inv.municipalities.values():
            fs = muni.legacy.file_server
            if fs.name == s.name:
                for top in (fs.profile_root, fs.home_root):
                    (root / PurePosixPath(top).relative_to("/")).mkdir(parents=True, exist_ok=True)
                for user in self.inv.users.get(muni.id, []):
                    seed.write_user_trees(root, user)
        for zone in self.inv.platform.zones:
            fs = zone.file_server
            if fs.name == s.name:
                for top in (fs.profile_root, fs.home_root):
                    (root / PurePosixPath(top).relative_to("/")).mkdir(parents=True, exist_ok=True)
        if s.name == "config-host":
            folder = root / PurePosixPath(self.inv.platform.thin_client_config_host.config_root).relative_to("/")
            folder.mkdir(parents=True)
            for muni_id, devices in self.inv.devices.items():
                muni = self.inv.municipalities[muni_id]
                for dev in devices:
                    text = seed.device_config(muni, dev.device_id, dev.mac, dev.site, dev.assigned_user)
                    (folder / f"{dev.device_id}.conf").write_text(text, encoding="utf-8")

    # --- starting -------------------------------------------------------------------------------

    def _start(self) -> None:
        t0 = time.monotonic()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        procs: list[process.Running] = []
        try:
            for s in self.servers:
                procs.append(process.spawn(s.name, self._argv(s), self.logs / f"{s.name}.log", s.host, s.port, s.tls))
                process.save(self.pids, procs)
            process.wait_ready(procs, self.dir / "tls" / "lab-ca.pem", self.logs)
        except BaseException:
            self.down()
            raise
        self.say(f"{len(procs)} servers answer after {time.monotonic() - t0:.1f} s")

    def _argv(self, s: Server) -> list[str]:
        if s.kind == "samba":
            return [SAMBA, "-s", str(self.dir / "samba" / s.name / "etc" / "smb.conf"), "-i"]
        if s.kind == "slapd":
            folder = self.dir / "slapd" / s.name
            scheme = "ldaps" if s.tls else "ldap"
            urls = f"{scheme}://{s.host}:{s.port}/" + ("" if s.port == 389 else f" ldap://{s.host}:389/")
            return [SLAPD, "-f", str(folder / "slapd.conf"), "-h", urls, "-d", "0"]
        if s.kind == "sshd":
            return [SSHD, "-D", "-e", "-f", str(self.dir / "sshd" / s.name / "sshd_config")]
        b = self.inv.platform.broker
        argv = [
            sys.executable,
            "-P",  # not the current folder on the path: a folder named lab/ there would shadow the package
            "-m",
            "lab.broker",
            "--state",
            str(self.dir / "broker" / "state.json"),
            "--host",
            s.host,
            "--port",
            str(s.port),
            "--user",
            b.user,
            "--secrets",
            str(self.dir / "secrets.env"),
            "--password-var",
            b.password.env or "",
        ]
        if s.tls:
            argv += ["--cert", str(self.dir / "tls" / "broker.crt"), "--key", str(self.dir / "tls" / "broker.key")]
        return argv


SAFE_LAB_ROOT = Path("/var/lib/ikomm-lab")


def lab_home(wanted: Path) -> Path:
    """Where the lab lives: wanted if sshd may chroot below it, else a root-owned folder under /var/lib.

    A checkout inside /tmp (world-writable) cannot hold sshd's chroots; its lab then lives in
    /var/lib/ikomm-lab/<digest of wanted>, and wanted becomes a link to it (made by `lab up`).
    """
    if wanted.is_symlink():
        return wanted.resolve()
    if chroot_unsafe_parent(wanted) is None:
        return wanted
    return SAFE_LAB_ROOT / hashlib.sha256(str(wanted).encode()).hexdigest()[:12]


def chroot_unsafe_parent(folder: Path) -> Path | None:
    """The first existing folder at or above folder that sshd's ChrootDirectory would refuse, or None."""
    for parent in [folder, *folder.parents]:
        if parent.exists():
            st = parent.stat()
            if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return parent
    return None


def _copy(src: Path, dst: Path) -> None:
    """Copy a file or tree keeping modes, owners and times (cp -a is several times faster than shutil)."""
    if not src.exists():
        return
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)

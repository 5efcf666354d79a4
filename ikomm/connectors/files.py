"""File servers over SFTP (paramiko): a small connection pool per host, manifests, streaming copies.

Host keys come from the inventory's known_hosts and are checked with RejectPolicy, always; only
key authentication is tried. A copy streams each file in chunks (bounded memory), writes it under a
temporary name and renames it into place, then sets mode, owner and modification time, so a copy
interrupted anywhere resumes by skipping what is already complete.

Nothing leaves the user's folder, on either side:
- source: names come from listings one level at a time and links are never followed while walking.
  A symlink is kept only if the source server resolves it (through every link in between) to a path
  inside the user's real folder (a link to a name that does not exist yet counts if that name would
  be inside); it is then recreated with that resolved path, relative, as its text, so no chain of
  links survives the copy. A link leaving the folder, one the server cannot resolve (a loop), or a
  user folder that is itself a link, is refused and reported by name.
- target: every folder below the user's target folder is checked with lstat before anything is
  written into it; a symlink found where a folder belongs is replaced by a real folder (only the
  link is removed), never written through. Files are written to a fresh `name.ikomm-part` opened
  with O_EXCL (a planted link there is removed first, never followed), given mode, owner and mtime
  while still under that name, and only then renamed into place. A target folder that is a link is
  refused outright.
"""

from __future__ import annotations

import hashlib
import posixpath
import queue
import shlex
import socket
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import paramiko
from paramiko.message import Message
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_HANDLE,
    CMD_NAME,
    CMD_OPENDIR,
    CMD_READDIR,
    CMD_SETSTAT,
)

from ikomm.errors import ConflictError, FatalError, IkommError, InvalidInputError, TransientError

CHUNK = 32 * 1024  # paramiko's largest SFTP read
BATCH = 16  # reads in flight per file
WINDOW = 512  # chunks a copy reads as one stretch per file (16 MiB buffered at most): the reads wait on each other
# only between stretches (measured, 200 MB file: 16 chunks 10.5 MB/s, 256: 24-30, 512: see docs/benchmarks.md)
READS_IN_FLIGHT = 128  # of a stretch, reads sent and not yet answered
IN_FLIGHT = 128  # SFTP requests in flight at once while listing folders (an answer is at most a few tens of KB)
PART = ".ikomm-part"
JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", ".ds_store", "~$lock"})
JUNK_FOLDERS = frozenset({"temp", "tmp", "inetcache", "temporary internet files", "cache", "$recycle.bin"})


def is_junk(rel: str, folder: bool = False) -> bool:
    """Whether a relative path is temp or cache material a migration should not carry over."""
    parts = [p.lower() for p in rel.split("/")]
    name = parts[-1]
    if folder:
        return name in JUNK_FOLDERS
    return name in JUNK_NAMES or name.endswith((".tmp", PART)) or name.startswith("~$")


@dataclass(frozen=True)
class FileEntry:
    """One file of a manifest; sha256 is empty when the manifest was taken without hashing."""

    size: int
    mtime: int
    sha256: str = ""


@dataclass
class Manifest:
    """A tree as seen on one server: files (relative path -> entry), folders, and symlinks kept."""

    root: str
    files: dict[str, FileEntry] = field(default_factory=dict)
    folders: set[str] = field(default_factory=set)
    links: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    real_root: str = ""

    @property
    def bytes(self) -> int:
        return sum(e.size for e in self.files.values())

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the ledger (JSON-able)."""
        return {
            "root": self.root,
            "files": {p: [e.size, e.mtime, e.sha256] for p, e in sorted(self.files.items())},
            "folders": sorted(self.folders),
            "links": dict(sorted(self.links.items())),
            "refused": dict(sorted(self.refused.items())),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        files = {p: FileEntry(int(v[0]), int(v[1]), str(v[2])) for p, v in data["files"].items()}
        return cls(data["root"], files, set(data["folders"]), dict(data["links"]), dict(data["refused"]))


@dataclass
class CopyReport:
    """What a copy did: files copied and skipped as unchanged, bytes moved, and every failure with its reason."""

    source: Manifest
    copied: int = 0
    unchanged: int = 0
    bytes: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)  # target symlinks replaced by the folder the source has


@dataclass(frozen=True)
class Verification:
    """The target compared with the source manifest: missing and different files, extra files on the target."""

    missing: tuple[str, ...]
    different: tuple[str, ...]
    extra: tuple[str, ...]
    source: Manifest
    target: Manifest

    @property
    def ok(self) -> bool:
        return not self.missing and not self.different


def inside(rel_dir: str, target: str) -> str | None:
    """The link target relative to the root, or None if it would leave the root."""
    if target.startswith("/"):
        return None
    path = posixpath.normpath(posixpath.join(rel_dir, target))
    return None if path == ".." or path.startswith("../") else path


class FileServer:
    """One SFTP server: settings in, a pool of authenticated connections inside, ikomm errors out."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        key_file: Path,
        known_hosts: Path,
        pool_size: int = 4,
        timeout: float = 10.0,
    ) -> None:
        if not known_hosts.is_file():
            raise FatalError(f"{host}: known_hosts file {known_hosts} is missing; host keys are never trusted blindly")
        self.host, self.port, self.user = host, port, user
        self._key_file, self._known_hosts, self._timeout = key_file, known_hosts, timeout
        self._idle: queue.LifoQueue[tuple[paramiko.SSHClient, paramiko.SFTPClient]] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(pool_size)

    def __repr__(self) -> str:
        return f"FileServer({self.host}:{self.port})"

    def _connect(self) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
        client = _ssh_client(self._known_hosts)
        try:
            _ssh_connect(client, self.host, self.port, self.user, self._key_file, self._timeout)
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(self._timeout)  # type: ignore[union-attr]
        except Exception as exc:
            client.close()
            raise classify(exc, f"connect to {self.host}:{self.port}") from None
        return client, sftp

    @contextmanager
    def session(self) -> Iterator[paramiko.SFTPClient]:
        """An SFTP session from the pool (at most pool_size at once); a broken one is closed, not returned."""
        self._slots.acquire()
        try:
            pair = self._checkout()
            try:
                yield pair[1]
            except BaseException as exc:
                pair[0].close()
                if isinstance(exc, OSError | EOFError | paramiko.SSHException):  # the caller's own errors pass
                    raise classify(exc, f"sftp on {self.host}") from None
                raise
            self._idle.put(pair)
        finally:
            self._slots.release()

    def _checkout(self) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
        """An idle connection whose transport is still up, or a new one."""
        while True:
            try:
                client, sftp = self._idle.get_nowait()
            except queue.Empty:
                return self._connect()
            transport = client.get_transport()
            if transport is not None and transport.is_active():
                return client, sftp
            client.close()

    def close(self) -> None:
        """Close every idle connection."""
        while True:
            try:
                self._idle.get_nowait()[0].close()
            except queue.Empty:
                return

    # --- reading --------------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        with self.session() as sftp:
            try:
                sftp.lstat(path)
            except FileNotFoundError:
                return False
        return True

    def read_text(self, path: str) -> str | None:
        """The file's text (UTF-8), or None if there is no such file."""
        with self.session() as sftp:
            try:
                with sftp.open(path, "rb") as fh:
                    return fh.read().decode("utf-8")
            except FileNotFoundError:
                return None

    def manifest(self, root: str, hashes: bool = True, skip: Callable[[str, bool], bool] = is_junk) -> Manifest:
        """Walk root without following symlinks: every file's size, mtime (and sha256), folders, links.

        A link is kept (with its resolved path, relative, as text) only when the server resolves it
        inside root; every other link is in `refused` with the reason. Root itself must be a folder.
        """
        found = self.manifests([root], hashes, skip)[root]
        if isinstance(found, IkommError):
            raise found
        return found

    def manifests(
        self, roots: Sequence[str], hashes: bool = True, skip: Callable[[str, bool], bool] = is_junk
    ) -> dict[str, Manifest | IkommError]:
        """`manifest` of each root, walked together over one session: the folders of a level of every tree are
        listed with their requests in flight at once (`_list_folders`), not four round trips a folder one after
        another. A root that is missing (InvalidInputError) or not a folder (ConflictError) is answered with
        the error; any other fault raises, as for one root."""
        found: dict[str, Manifest | IkommError] = {}
        with self.session() as sftp:
            walking: list[Manifest] = []
            for root in dict.fromkeys(roots):
                try:
                    top = sftp.lstat(root)
                except FileNotFoundError:
                    found[root] = InvalidInputError(f"{self.host}:{root}: no such folder")
                    continue
                if stat.S_ISLNK(top.st_mode or 0) or not stat.S_ISDIR(top.st_mode or 0):
                    found[root] = ConflictError(
                        f"{self.host}:{root}: is a symlink or not a folder; refusing to read or write it"
                    )
                    continue
                manifest = found[root] = Manifest(root)
                manifest.real_root = sftp.normalize(root)
                walking.append(manifest)
            level = [(manifest, "") for manifest in walking]
            while level:
                listed = _list_folders(sftp, [_below(m.root, rel_dir) for m, rel_dir in level])
                below: list[tuple[Manifest, str]] = []
                for manifest, rel_dir in level:
                    for attr in listed[_below(manifest.root, rel_dir)]:
                        folder = _take(sftp, manifest, rel_dir, attr, hashes, skip)
                        if folder is not None:
                            below.append((manifest, folder))
                level = below
        return found

    def listing(self, path: str) -> list[Owned]:
        """The entries of a folder with owner, group and mode (not followed if links); [] if there is no folder."""
        with self.session() as sftp:
            try:
                attrs = sftp.listdir_attr(path)
            except FileNotFoundError:
                return []
        return [_owned(posixpath.join(path, a.filename), a) for a in attrs if a.filename not in (".", "..")]

    def free_bytes(self, path: str) -> int:
        """Bytes free to an unprivileged writer on the file system holding path (OpenSSH's statvfs extension)."""
        with self.session() as sftp:
            try:
                # paramiko has no public call for SFTP extensions; _request sends one and reads its reply
                kind, msg = sftp._request(CMD_EXTENDED, "statvfs@openssh.com", path)  # type: ignore[attr-defined]
            except OSError as exc:
                raise classify(exc, f"free space of {self.host}:{path}") from None
            if kind != CMD_EXTENDED_REPLY or msg is None:
                raise FatalError(f"{self.host}: the SFTP server does not report free space (statvfs@openssh.com)")
            _bsize, frsize, _blocks, _bfree, bavail = (msg.get_int64() for _ in range(5))
            return int(frsize * bavail)

    # --- writing --------------------------------------------------------------------------------

    def write_atomic(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write data to path through a temporary file and a POSIX rename: readers see old or new, never half."""
        tmp = path + PART
        with self.session() as sftp:
            with _open_fresh(sftp, tmp) as fh:
                fh.write(data)
            sftp.chmod(tmp, mode)
            sftp.posix_rename(tmp, path)

    def ensure_folder(self, path: str, mode: int, owner: tuple[int, int]) -> bool:
        """Make path a folder with exactly this mode and owner (parents 0755 as needed); False if it was already."""
        with self.session() as sftp:
            found = _lstat(sftp, path)
            if found is not None and not stat.S_ISDIR(found.st_mode or 0):
                raise ConflictError(f"{self.host}:{path} exists and is not a folder; refusing to use it")
            if found is not None:
                now = _owned(path, found)
                if (now.mode, now.uid, now.gid) == (mode, *owner):
                    return False
            if found is None:
                _makedirs(sftp, posixpath.dirname(path), 0o755)
                sftp.mkdir(path, 0o700)
            sftp.chown(path, *owner)
            sftp.chmod(path, mode)  # after chown, which clears the set-group-id bit
        return True

    def remove_folder(self, path: str) -> bool:
        """Remove an empty folder; False if it was not there. A folder with anything in it is a ConflictError."""
        with self.session() as sftp:
            if _lstat(sftp, path) is None:
                return False
            if sftp.listdir(path):
                raise ConflictError(f"{self.host}:{path} is not empty; nothing removed")
            sftp.rmdir(path)
        return True

    def remove(self, path: str) -> bool:
        """Remove a file; False if it was not there."""
        with self.session() as sftp:
            try:
                sftp.remove(path)
            except FileNotFoundError:
                return False
        return True

    def rename(self, old: str, new: str) -> None:
        """Rename within the server, creating the new parent folders."""
        with self.session() as sftp:
            _makedirs(sftp, posixpath.dirname(new), 0o700)
            sftp.posix_rename(old, new)


class Owned(NamedTuple):
    """A file system entry's path, permission bits (with set-id bits), owner and group."""

    path: str
    mode: int  # permission bits with set-id and sticky bits, no file type
    uid: int
    gid: int
    is_dir: bool


def _owned(path: str, attr: paramiko.SFTPAttributes) -> Owned:
    mode = attr.st_mode or 0
    return Owned(path, mode & 0o7777, attr.st_uid or 0, attr.st_gid or 0, stat.S_ISDIR(mode))


def _ssh_client(known_hosts: Path) -> paramiko.SSHClient:
    """An SSH client that trusts only the host keys in known_hosts (an unknown or changed key is refused)."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def _ssh_connect(client: paramiko.SSHClient, host: str, port: int, user: str, key_file: Path, timeout: float) -> None:
    """Connect with the key file alone (no agent, no other keys), every wait bounded by timeout."""
    client.connect(
        host,
        port=port,
        username=user,
        key_filename=str(key_file),
        allow_agent=False,
        look_for_keys=False,
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
    )


class AclEntry(NamedTuple):
    """A named entry of a folder's POSIX ACL (`group:10513:r-x`; default: the one new files inherit)."""

    default: bool
    kind: str  # user or group
    id: int
    perms: str  # as getfacl prints them: r-x


def read_acls(
    host: str, port: int, user: str, key_file: Path, known_hosts: Path, folders: Sequence[str], timeout: float = 30.0
) -> dict[str, list[AclEntry]]:
    """The named ACL entries of the folders right under each of folders, read through the file server's read-only
    ACL reader (its forced command: acl_reader.py); only folders that have any are in the answer."""
    client = _ssh_client(known_hosts)
    doing = f"read ACLs on {host}:{port}"
    try:
        _ssh_connect(client, host, port, user, key_file, timeout)
        _, out, err = client.exec_command("acls " + " ".join(shlex.quote(f) for f in folders), timeout=timeout)
        text = out.read().decode("utf-8", "replace")
        problem = err.read().decode("utf-8", "replace").strip()
        code = out.channel.recv_exit_status()
    except Exception as exc:
        raise classify(exc, doing) from None
    finally:
        client.close()
    if code != 0:
        raise FatalError(f"{doing}: the reader answered {code}: {problem[:300]}")
    return parse_acls(text)


def parse_acls(text: str) -> dict[str, list[AclEntry]]:
    """getfacl's output (numeric) as folder -> its named entries (user:ID, group:ID, and their default: ones)."""
    found: dict[str, list[AclEntry]] = {}
    path = ""
    for line in text.splitlines():
        if line.startswith("# file: "):
            path = line.removeprefix("# file: ")
            continue
        if not line or line.startswith("#") or not path:
            continue
        parts = line.split(":")
        default = parts[0] == "default"
        if default:
            parts = parts[1:]
        if len(parts) == 3 and parts[0] in ("user", "group") and parts[1].isdigit():
            found.setdefault(path, []).append(AclEntry(default, parts[0], int(parts[1]), parts[2]))
    return found


def unchanged(have: FileEntry | None, want: FileEntry) -> bool:
    """Whether the copy may skip a file: the target has it with the same size and mtime."""
    return have is not None and have.size == want.size and have.mtime == want.mtime


def _both_sides(
    source: FileServer, src_root: str, target: FileServer, dst_root: str
) -> tuple[Manifest, dict[str, FileEntry]]:
    """The source tree's listing and the files the target has already (none if its folder is missing)."""
    listing = source.manifest(src_root, hashes=False)
    existing = target.manifest(dst_root, hashes=False).files if target.exists(dst_root) else {}
    return listing, existing


def pending_copy(source: FileServer, src_root: str, target: FileServer, dst_root: str) -> tuple[int, int]:
    """(files, bytes) a copy_tree would move now: the files the target lacks or has with another size or mtime."""
    listing, existing = _both_sides(source, src_root, target, dst_root)
    todo = [e for rel, e in listing.files.items() if not unchanged(existing.get(rel), e)]
    return len(todo), sum(e.size for e in todo)


def copy_tree(
    source: FileServer,
    src_root: str,
    target: FileServer,
    dst_root: str,
    owner: tuple[int, int] | None = None,
    file_mode: int = 0o600,
    dir_mode: int = 0o700,
    on_file: Callable[[str, int], None] | None = None,
) -> CopyReport:
    """Copy src_root on source to dst_root on target, moving only files whose size or mtime differ.

    Streams each file in bounded batches to a temporary name, sets mode, owner and mtime, renames it
    into place, so an interrupted copy resumes where it stopped. Junk is skipped; links the source
    resolves inside the root are recreated, others refused; nothing is written through a link on the
    target (module docstring); every entry not copied is reported by name.
    """
    listing, existing = _both_sides(source, src_root, target, dst_root)
    report = CopyReport(listing)
    report.failed.update(listing.refused)
    blocked: set[str] = set()  # folders not written into (and everything below them)

    def under_blocked(rel: str) -> bool:
        parent = posixpath.dirname(rel)
        return any(parent == b or parent.startswith(b + "/") for b in blocked)

    with source.session() as src, target.session() as dst:
        _makedirs(dst, posixpath.dirname(dst_root), 0o755)
        if _ensure_folder(dst, dst_root, dir_mode, owner) == "symlink":
            raise ConflictError(f"{target.host}:{dst_root}: is a symlink; refusing to write through it")
        for folder in sorted(listing.folders):
            if under_blocked(folder):
                continue
            outcome = _ensure_folder(dst, posixpath.join(dst_root, folder), dir_mode, owner)
            if outcome == "symlink":
                report.replaced.append(folder)
            elif outcome == "other":
                report.failed[folder] = "the platform side has a file where the source has a folder; not written"
                blocked.add(folder)
        real_folders: set[str] = set()
        for rel, entry in sorted(listing.files.items()):
            if under_blocked(rel):
                continue
            folder = posixpath.dirname(rel)
            if folder not in real_folders:  # swapped for a link since the listing? then do not read through it
                real = posixpath.join(listing.real_root, folder).rstrip("/")
                if src.normalize(posixpath.join(src_root, folder)) != real:
                    report.failed[folder] = "the source folder became a link during the copy; not read through"
                    blocked.add(folder)
                    continue
                real_folders.add(folder)
            if unchanged(existing.get(rel), entry):
                report.unchanged += 1
                continue
            try:
                _stream(src, posixpath.join(src_root, rel), dst, posixpath.join(dst_root, rel), entry, file_mode, owner)
            except (PermissionError, FileNotFoundError, IsADirectoryError) as exc:  # this file only
                report.failed[rel] = f"{type(exc).__name__}: {exc.strerror or exc}"
                continue
            report.copied += 1
            report.bytes += entry.size
            report.written.append(rel)
            if on_file:
                on_file(rel, entry.size)
        for rel, link in sorted(listing.links.items()):
            if under_blocked(rel):
                continue
            path = posixpath.join(dst_root, rel)
            st = _lstat(dst, path)
            if st is not None and stat.S_ISLNK(st.st_mode or 0) and dst.readlink(path) != link:
                dst.remove(path)  # a link with other text: only the link goes, never what it points at
                st = None
            if st is None:
                dst.symlink(link, path)
                report.written.append(rel)
    return report


def verify_tree(source: FileServer, src_root: str, target: FileServer, dst_root: str) -> Verification:
    """Take a hashed manifest on each side and compare: missing, different (size, mtime, sha256), extra."""
    want = source.manifest(src_root, hashes=True)
    have = target.manifest(dst_root, hashes=True) if target.exists(dst_root) else Manifest(dst_root)
    missing = sorted(set(want.files) - set(have.files))
    different = sorted(rel for rel, e in want.files.items() if rel in have.files and have.files[rel] != e)
    extra = sorted(set(have.files) - set(want.files))
    return Verification(tuple(missing), tuple(different), tuple(extra), want, have)


def classify(exc: Exception, doing: str) -> IkommError:
    """Turn a paramiko or socket exception into ikomm's error for what the caller should do next."""
    if isinstance(exc, IkommError):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        return FatalError(f"{doing}: the host key has changed; refusing to connect")
    if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
        return FatalError(f"{doing}: unknown host key; refusing to connect")
    if isinstance(exc, paramiko.AuthenticationException):
        return FatalError(f"{doing}: key authentication failed")
    if isinstance(exc, socket.timeout | TimeoutError | ConnectionError | EOFError | paramiko.SSHException | OSError):
        return TransientError(f"{doing}: {type(exc).__name__}: {exc}")
    return FatalError(f"{doing}: {type(exc).__name__}: {exc}")


def _chunks(fh: paramiko.SFTPFile, size: int, window: int = BATCH) -> Iterator[bytes]:
    """The file's bytes, CHUNK at a time, read window chunks at a time (at most READS_IN_FLIGHT unanswered, the
    next sent as each answer comes): memory bounded by window * CHUNK."""
    for start in range(0, size, window * CHUNK):
        end = min(size, start + window * CHUNK)
        chunks = [(o, min(CHUNK, end - o)) for o in range(start, end, CHUNK)]
        yield from fh.readv(chunks, max_concurrent_prefetch_requests=min(window, READS_IN_FLIGHT))


def _sha256(sftp: paramiko.SFTPClient, path: str, size: int) -> str:
    digest = hashlib.sha256()
    with sftp.open(path, "rb") as fh:
        for chunk in _chunks(fh, size, WINDOW):
            digest.update(chunk)
    return digest.hexdigest()


def _lstat(sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPAttributes | None:
    """The entry itself (a link is not followed), or None if there is none."""
    try:
        return sftp.lstat(path)
    except FileNotFoundError:
        return None


def _open_fresh(sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPFile:
    """Open path for writing as a new file (O_EXCL): a link planted there is removed first, never followed."""
    st = _lstat(sftp, path)
    if st is not None:
        if stat.S_ISDIR(st.st_mode or 0):
            raise IsADirectoryError(21, "a folder stands where the temporary file goes", path)
        sftp.remove(path)
    return sftp.open(path, "wxb")  # w: writable, x: O_CREAT|O_EXCL


def _below(root: str, rel_dir: str) -> str:
    return posixpath.join(root, rel_dir) if rel_dir else root


def _take(
    sftp: paramiko.SFTPClient,
    manifest: Manifest,
    rel_dir: str,
    attr: paramiko.SFTPAttributes,
    hashes: bool,
    skip: Callable[[str, bool], bool],
) -> str | None:
    """Put one listed entry into the manifest; return its relative path if it is a folder to walk into."""
    rel = posixpath.join(rel_dir, attr.filename) if rel_dir else attr.filename
    mode = attr.st_mode or 0
    if attr.filename in (".", "..") or "/" in attr.filename or skip(rel, stat.S_ISDIR(mode)):
        return None
    if stat.S_ISDIR(mode):
        manifest.folders.add(rel)
        return rel
    if stat.S_ISLNK(mode):
        text, why = _kept_link(sftp, manifest.real_root, manifest.root, rel)
        if why:
            manifest.refused[rel] = why
        else:
            manifest.links[rel] = text
    elif stat.S_ISREG(mode):
        digest = _sha256(sftp, posixpath.join(manifest.root, rel), attr.st_size or 0) if hashes else ""
        manifest.files[rel] = FileEntry(attr.st_size or 0, int(attr.st_mtime or 0), digest)
    else:
        manifest.refused[rel] = "not a regular file, folder or symlink"
    return None


class _InFlight:
    """SFTP requests in flight together over one session, each answer handed to its own callback as it comes.

    Built on paramiko's own request numbering and dispatch (`_async_request` with this object as the file
    object, `_read_response` handing answers to `_async_response`), as its file prefetch does; at most
    IN_FLIGHT requests are outstanding, the rest wait in a queue. A callback may send more."""

    def __init__(self, sftp: paramiko.SFTPClient) -> None:
        self.sftp = sftp
        self.queued: deque[tuple[int, tuple[Any, ...], Callable[[int, Message], None]]] = deque()
        self.waiting: dict[int, Callable[[int, Message], None]] = {}
        self.answers: deque[tuple[int, int, Message]] = deque()

    def send(self, t: int, args: tuple[Any, ...], then: Callable[[int, Message], None]) -> None:
        self.queued.append((t, args, then))

    def _async_response(self, t: int, msg: Message, num: int) -> None:  # called by paramiko
        self.answers.append((num, t, msg))

    def run(self) -> None:
        """Until every request sent (and every one its callbacks sent) is answered."""
        while self.queued or self.waiting:
            while self.queued and len(self.waiting) < IN_FLIGHT:
                t, args, then = self.queued.popleft()
                self.waiting[self.sftp._async_request(self, t, *args)] = then  # type: ignore[attr-defined]
            while not self.answers:
                self.sftp._read_response()  # type: ignore[attr-defined]
            num, t, msg = self.answers.popleft()
            self.waiting.pop(num)(t, msg)


def _list_folders(sftp: paramiko.SFTPClient, paths: list[str]) -> dict[str, list[paramiko.SFTPAttributes]]:
    """Each folder's entries (without . and ..), as `listdir_attr` gives them, the folders' requests in flight
    together: open, read until the end, close. A folder that cannot be listed raises what listdir_attr would
    (FileNotFoundError, PermissionError ...), after every handle opened here is closed."""
    listed: dict[str, list[paramiko.SFTPAttributes]] = {path: [] for path in paths}
    failed: dict[str, Exception] = {}
    flight = _InFlight(sftp)

    def status(msg: Message) -> Exception | None:
        """The error an SFTP status answer stands for; None for OK and for the end of a listing."""
        try:
            sftp._convert_status(msg)  # type: ignore[attr-defined]
        except EOFError:
            return None
        except OSError as exc:
            return exc
        return None

    def opened(path: str) -> Callable[[int, Message], None]:
        def then(t: int, msg: Message) -> None:
            if t != CMD_HANDLE:
                failed[path] = status(msg) or paramiko.SFTPError("Expected handle")
                return
            flight.send(CMD_READDIR, (handle := msg.get_binary(),), read(path, handle))

        return then

    def read(path: str, handle: bytes) -> Callable[[int, Message], None]:
        def then(t: int, msg: Message) -> None:
            if t == CMD_NAME:
                for _ in range(msg.get_int()):
                    name, longname = msg.get_text(), msg.get_text()
                    attr = paramiko.SFTPAttributes._from_msg(msg, name, longname)  # type: ignore[attr-defined]
                    if name not in (".", ".."):
                        listed[path].append(attr)
                flight.send(CMD_READDIR, (handle,), then)
                return
            problem = status(msg)
            if problem is not None:
                failed[path] = problem
            flight.send(CMD_CLOSE, (handle,), lambda t, msg: None)

        return then

    for path in listed:
        flight.send(CMD_OPENDIR, (path,), opened(path))
    flight.run()
    for path in paths:
        if path in failed:
            raise failed[path]
    return listed


def _kept_link(sftp: paramiko.SFTPClient, real_root: str, root: str, rel: str) -> tuple[str, str]:
    """(text to recreate the link with, "") if the server resolves it inside the root; else ("", why)."""
    path = posixpath.join(root, rel)
    text = sftp.readlink(path) or ""
    if inside(posixpath.dirname(rel), text) is None:
        return "", f"symlink to {text!r} points outside the user's folder"
    try:
        resolved = sftp.normalize(path)
    except OSError:
        return "", f"symlink to {text!r} cannot be resolved (it loops, or passes through a missing folder)"
    if resolved != real_root and not resolved.startswith(real_root.rstrip("/") + "/"):
        return "", f"symlink to {text!r} resolves outside the user's folder (through another link)"
    return posixpath.relpath(resolved, posixpath.join(real_root, posixpath.dirname(rel))), ""


def _stream(
    src: paramiko.SFTPClient,
    src_path: str,
    dst: paramiko.SFTPClient,
    dst_path: str,
    entry: FileEntry,
    mode: int,
    owner: tuple[int, int] | None,
) -> None:
    """Copy one file in bounded chunks to a fresh temporary name, finish it there, then rename it into place."""
    tmp = dst_path + PART
    with src.open(src_path, "rb") as fin, _open_fresh(dst, tmp) as fout:
        fout.set_pipelined(True)
        for chunk in _chunks(fin, entry.size, WINDOW):
            fout.write(chunk)
    _set_attributes(dst, tmp, mode, owner, entry.mtime)
    dst.posix_rename(tmp, dst_path)  # replaces a link at dst_path itself; never writes through it


def _set_attributes(sftp: paramiko.SFTPClient, path: str, mode: int, owner: tuple[int, int] | None, mtime: int) -> None:
    """Mode, owner and times in one SETSTAT: one round trip a file, not three (chmod, chown, utime). The server
    applies them in the order chmod, utime, chown (OpenSSH's sftp-server), as the three calls did."""
    attr = paramiko.SFTPAttributes()
    attr.st_mode = mode
    if owner is not None:
        attr.st_uid, attr.st_gid = owner
    attr.st_atime = attr.st_mtime = mtime
    sftp._request(CMD_SETSTAT, path, attr)  # type: ignore[attr-defined]  # as SFTPClient.chmod sends it, all at once


def _ensure_folder(sftp: paramiko.SFTPClient, path: str, mode: int, owner: tuple[int, int] | None) -> str:
    """Make path a real folder without following links: 'folder', 'created', 'symlink' (replaced) or 'other'."""
    st = _lstat(sftp, path)
    if st is not None:
        if stat.S_ISDIR(st.st_mode or 0):
            return "folder"
        if not stat.S_ISLNK(st.st_mode or 0):
            return "other"
        sftp.remove(path)  # unlink the link itself; what it points at is not touched
    sftp.mkdir(path, mode)
    if owner is not None:
        sftp.chown(path, *owner)
    return "symlink" if st is not None else "created"


def _makedirs(sftp: paramiko.SFTPClient, path: str, mode: int, owner: tuple[int, int] | None = None) -> None:
    """mkdir -p, setting mode and owner on the folders it creates."""
    missing = []
    while path not in ("", "/"):
        try:
            sftp.stat(path)
            break
        except FileNotFoundError:
            missing.append(path)
            path = posixpath.dirname(path)
    for folder in reversed(missing):
        sftp.mkdir(folder, mode)
        if owner is not None:
            sftp.chown(folder, *owner)

"""A legacy user's tree cannot make the copy write (or read) outside that user's folder: the lab's sshd, real links."""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ikomm.connectors import Connectors
from ikomm.connectors.files import FileServer, copy_tree, is_junk, verify_tree
from ikomm.errors import ConflictError
from ikomm.inventory import Inventory
from lab.manager import Lab

pytestmark = pytest.mark.integration

SECRET = b"the victim's own words, never to be overwritten\n"


@dataclass
class Scene:
    """An attacker's legacy home and platform home, and a victim's, on the lab's real file servers."""

    source: FileServer
    target: FileServer
    src_root: str  # the attacker's legacy home (as the server sees it)
    dst_root: str  # the attacker's platform home
    src: Path  # the same, as this machine sees them
    dst: Path
    victim_src: Path  # the victim's legacy home
    victim_dst: Path  # the victim's platform home

    def copy(self) -> tuple[object, ...]:
        report = copy_tree(self.source, self.src_root, self.target, self.dst_root, (4242, 4243))
        return report.failed, report.replaced, report.written

    def victims(self) -> dict[str, str]:
        """sha256 of every file below both of the victim's folders."""
        return {
            str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for root in (self.victim_src, self.victim_dst)
            for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()
        }


@pytest.fixture
def scene(connectors: Connectors, lab: Lab, lab_inventory: Inventory) -> Iterator[Scene]:
    inv = lab_inventory
    legacy = inv.municipalities["gausdal"].legacy.file_server
    zone = inv.platform.zones[0].file_server
    src_root, dst_root = f"{legacy.home_root}/safety-attacker", f"{zone.home_root}/safety-attacker"
    made = Scene(
        connectors.sftp(legacy.host, legacy.port),
        connectors.sftp(zone.host, zone.port),
        src_root,
        dst_root,
        lab.server_path(legacy.name, src_root),
        lab.server_path(zone.name, dst_root),
        lab.server_path(legacy.name, f"{legacy.home_root}/safety-victim"),
        lab.server_path(zone.name, f"{zone.home_root}/safety-victim"),
    )
    for folder in (made.src, made.victim_src, made.victim_dst):
        (folder / "Documents").mkdir(parents=True)
    (made.src / "Documents" / "notat.txt").write_text("mine\n", encoding="utf-8")
    (made.victim_src / "Documents" / "secret.txt").write_bytes(SECRET)
    (made.victim_dst / "Documents" / "secret.txt").write_bytes(SECRET)
    yield made
    for folder in (made.src, made.dst, made.victim_src, made.victim_dst):
        if folder.is_symlink():
            folder.unlink()
        shutil.rmtree(folder, ignore_errors=True)


def test_link_chains_absolute_and_dangling_links_are_refused_by_name(scene: Scene) -> None:
    """Links the server resolves outside the folder (or cannot resolve) are refused and named; inside ones kept."""
    before = scene.victims()
    (scene.src / "sub").mkdir()
    os.symlink("..", scene.src / "sub" / "up")  # resolves to the root itself: kept
    os.symlink("sub/up/..", scene.src / "esc")  # lexically inside, really the home root: refused
    os.symlink("sub/up/../safety-victim", scene.src / "victim")  # a chain into another user's folder
    os.symlink("/srv/home/safety-victim", scene.src / "abs")
    os.symlink("..", scene.src / "parent")
    os.symlink("nowhere", scene.src / "dangling")  # resolves inside, to nothing yet: kept, harmless
    os.symlink("loop", scene.src / "loop")
    os.symlink("sub/up/Documents", scene.src / "docs")  # a chain that stays inside: kept, flattened
    failed, replaced, _ = scene.copy()
    assert set(failed) == {"esc", "victim", "abs", "parent", "loop"}  # type: ignore[arg-type]
    assert "through another link" in failed["esc"] and "through another link" in failed["victim"]  # type: ignore[index]
    assert "outside" in failed["abs"] and "outside" in failed["parent"]  # type: ignore[index]
    assert "loops" in failed["loop"]  # type: ignore[index]
    assert replaced == []
    assert os.readlink(scene.dst / "docs") == "Documents"  # the chain is gone: the resolved path, relative
    assert os.readlink(scene.dst / "sub" / "up") == ".."
    assert os.readlink(scene.dst / "dangling") == "nowhere"
    for name in ("esc", "victim", "abs", "parent", "loop"):
        assert not os.path.lexists(scene.dst / name)
    assert scene.victims() == before


def test_link_swapped_for_a_folder_after_the_preseed_is_not_written_through(scene: Scene) -> None:
    """A link the platform side already has (planted, or from an older copy) is replaced, never written through."""
    before = scene.victims()
    scene.copy()
    os.symlink("../safety-victim", scene.dst / "inn")  # what the pre-seed of an older version would have left
    (scene.src / "inn" / "Documents").mkdir(parents=True)
    (scene.src / "inn" / "Documents" / "secret.txt").write_text("overwritten!\n", encoding="utf-8")
    failed, replaced, written = scene.copy()
    assert replaced == ["inn"] and failed == {}
    assert "inn/Documents/secret.txt" in written  # type: ignore[operator]
    assert (scene.dst / "inn").is_dir() and not (scene.dst / "inn").is_symlink()
    assert (scene.dst / "inn" / "Documents" / "secret.txt").read_text(encoding="utf-8") == "overwritten!\n"
    assert scene.victims() == before
    assert verify_tree(scene.source, scene.src_root, scene.target, scene.dst_root).ok


def test_folder_swapped_for_a_link_between_preseed_and_cutover(scene: Scene) -> None:
    """A folder turned into a link to another user's folder: refused at cutover, the victim's files not read."""
    before = scene.victims()
    scene.copy()
    shutil.rmtree(scene.src / "Documents")
    os.symlink("../safety-victim/Documents", scene.src / "Documents")
    failed, _, written = scene.copy()
    assert "Documents" in failed and "outside" in failed["Documents"]  # type: ignore[index,operator]
    assert written == []
    assert not (scene.dst / "Documents" / "secret.txt").exists()  # nothing of the victim's was read over
    assert (scene.dst / "Documents" / "notat.txt").read_text(encoding="utf-8") == "mine\n"
    assert scene.victims() == before


def test_planted_temporary_file_link_is_removed_not_followed(scene: Scene) -> None:
    """A link planted at the copy's temporary name would truncate its target if followed; it is replaced."""
    before = scene.victims()
    (scene.dst / "Documents").mkdir(parents=True)
    os.symlink("../../safety-victim/Documents/secret.txt", scene.dst / "Documents" / "notat.txt.ikomm-part")
    os.symlink("../../safety-victim/Documents/secret.txt", scene.dst / "Documents" / "notat.txt")
    failed, _, written = scene.copy()
    assert failed == {} and written == ["Documents/notat.txt"]
    assert not (scene.dst / "Documents" / "notat.txt").is_symlink()
    assert (scene.dst / "Documents" / "notat.txt").read_text(encoding="utf-8") == "mine\n"
    assert not os.path.lexists(scene.dst / "Documents" / "notat.txt.ikomm-part")
    assert scene.victims() == before


def test_target_or_source_folder_that_is_a_link_is_refused(scene: Scene) -> None:
    """A user's platform folder that is itself a link, or a legacy folder that is one, is refused before any write."""
    before = scene.victims()
    os.symlink("safety-victim", scene.dst)
    with pytest.raises(ConflictError, match="symlink"):
        scene.copy()
    scene.dst.unlink()
    shutil.rmtree(scene.src)
    os.symlink("safety-victim", scene.src)
    with pytest.raises(ConflictError, match="symlink"):
        scene.copy()
    assert not os.path.lexists(scene.dst)
    assert scene.victims() == before


def test_folders_walked_together_give_what_one_folder_at_a_time_gives(scene: Scene) -> None:
    """`manifests` (several roots, listings in flight together) agrees with a plain listdir walk of each root:
    a folder of 250 files (several SFTP reads), nested folders, junk, a kept and a refused link; a missing
    root and a root that is a link are answered with their errors, the others still walked."""
    big = scene.src / "Documents" / "mange"
    big.mkdir()
    for i in range(250):
        (big / f"fil-{i:03d}.txt").write_text("x" * i, encoding="utf-8")
    (scene.src / "a" / "b" / "c").mkdir(parents=True)
    (scene.src / "a" / "b" / "c" / "dypt.txt").write_text("deep\n", encoding="utf-8")
    (scene.src / "a" / "Thumbs.db").write_bytes(b"junk")
    os.symlink("../Documents/notat.txt", scene.src / "a" / "inne")
    os.symlink("/etc/passwd", scene.src / "a" / "ute")
    os.symlink("safety-attacker", scene.victim_src.parent / "safety-link")
    victim_root = scene.src_root.replace("safety-attacker", "safety-victim")
    link_root = scene.src_root.replace("safety-attacker", "safety-link")
    missing = scene.src_root.replace("safety-attacker", "safety-nobody")
    try:
        found = scene.source.manifests([scene.src_root, missing, victim_root, link_root], hashes=False)
    finally:
        (scene.victim_src.parent / "safety-link").unlink()
    assert "no such folder" in str(found[missing])
    assert "symlink" in str(found[link_root])
    for root in (scene.src_root, victim_root):
        walked = found[root]
        assert not isinstance(walked, Exception)
        files, folders, others = _walk_one_folder_at_a_time(scene.source, root)
        assert {rel: (e.size, e.mtime) for rel, e in walked.files.items()} == files
        assert walked.folders == folders
        assert set(walked.links) | set(walked.refused) == others
        assert walked.as_dict() == scene.source.manifest(root, hashes=False).as_dict()
    attacker = found[scene.src_root]
    assert not isinstance(attacker, Exception)
    assert len([rel for rel in attacker.files if rel.startswith("Documents/mange/")]) == 250
    assert "a/Thumbs.db" not in attacker.files
    assert set(attacker.links) == {"a/inne"} and set(attacker.refused) == {"a/ute"}


def _walk_one_folder_at_a_time(server: FileServer, root: str) -> tuple[dict[str, tuple[int, int]], set[str], set[str]]:
    """Files (size, mtime), folders and other entries below root, by paramiko's listdir_attr, one folder at a time."""
    files: dict[str, tuple[int, int]] = {}
    folders: set[str] = set()
    others: set[str] = set()
    with server.session() as sftp:
        pending = [""]
        while pending:
            rel_dir = pending.pop()
            for attr in sftp.listdir_attr(posixpath.join(root, rel_dir) if rel_dir else root):
                rel = posixpath.join(rel_dir, attr.filename) if rel_dir else attr.filename
                mode = attr.st_mode or 0
                if is_junk(rel, stat.S_ISDIR(mode)):
                    continue
                if stat.S_ISDIR(mode):
                    folders.add(rel)
                    pending.append(rel)
                elif stat.S_ISREG(mode):
                    files[rel] = (attr.st_size or 0, int(attr.st_mtime or 0))
                else:
                    others.add(rel)
    return files, folders, others

"""Fixtures of the collector tests: literal guest trees in tmp dirs, and a copy of the
real debootstrap tree (``fixtures/rootfs.py``) to modify with the real shadow tools."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vmaudit.guest.tree import TreeFS
from vmaudit.models import ImageInfo

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


class Guest:
    """A guest root under construction: write literal files, then read it as ``fs``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def host(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def write(self, path: str, content: str | bytes, mode: int | None = None) -> Path:
        target = self.host(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            target.write_text(content)
        else:
            target.write_bytes(content)
        if mode is not None:
            target.chmod(mode)
        return target

    def symlink(self, path: str, target: str) -> None:
        link = self.host(path)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)

    def mkdir(self, path: str) -> None:
        self.host(path).mkdir(parents=True, exist_ok=True)

    @property
    def fs(self) -> TreeFS:
        return TreeFS(self.root)


@pytest.fixture
def guest(tmp_path: Path) -> Guest:
    return Guest(tmp_path / "guest")


def image_info(mtime: str = "2024-01-15T10:00:00Z") -> ImageInfo:
    return ImageInfo(
        path="/datastore/vm.qcow2",
        format="qcow2",
        size_bytes=0,
        mtime=mtime,
        sha256_head="0" * 64,
        vm=None,
        disks=("/datastore/vm.qcow2",),
    )


def _load_rootfs_module() -> object:
    spec = importlib.util.spec_from_file_location(
        "vmaudit_fixture_rootfs", REPO / "fixtures" / "rootfs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def debian_rootfs() -> Path:
    """The cached real debootstrap tree; skipped only when debootstrap is not installed."""
    if shutil.which("debootstrap") is None and not os.path.exists("/usr/sbin/debootstrap"):
        pytest.skip("debootstrap is not installed (make setup installs it)")
    module = _load_rootfs_module()
    root: Path = module.ensure_rootfs()  # type: ignore[attr-defined]
    return root


def _overlay(lower: Path, folder: Path, view: Path) -> bool:
    """``view`` as a copy-on-write overlay of ``lower`` (nothing copied up front), if this
    host lets us mount one (root, overlayfs, a path the mount options can carry)."""
    if os.geteuid() != 0 or any(c in str(lower) + str(folder) for c in ",:\\"):
        return False
    upper, work = folder / "upper", folder / "work"
    for path in (upper, work, view):
        path.mkdir()
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    mount = ["mount", "-t", "overlay", "overlay", "-o", options, str(view)]
    if subprocess.run(mount, capture_output=True, check=False).returncode == 0:
        return True
    view.rmdir()
    return False


@pytest.fixture
def debian_tree(debian_rootfs: Path, tmp_path: Path) -> Iterator[Guest]:
    """A private, modifiable copy of the debootstrap tree: an overlay mount over the cached
    tree where the host allows one (the 190 MB copy took seconds per test), else ``cp -a``.
    The cached tree is never written either way."""
    copy = tmp_path / "debian"
    mounted = _overlay(debian_rootfs, tmp_path, copy)
    if not mounted:
        subprocess.run(["cp", "-a", str(debian_rootfs), str(copy)], check=True)
    try:
        yield Guest(copy)
    finally:
        if mounted:  # lazily, should a process a test started still have a file open in it
            subprocess.run(["umount", "-l", str(copy)], check=True)

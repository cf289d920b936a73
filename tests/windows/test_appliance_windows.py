"""virt-inspector and the collector agree on the built Windows images (slow: appliances).

One libguestfs appliance holds both images (read-only drives, formats pinned) for the
collector; virt-inspector runs once over both. Both read the same hives through NTFS, and
the collector's config section through NTFS is the one it reads from a tree of the hives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fixtures.windows.build import build_tree, build_windows_images, guest
from vmaudit.collect.windows import collect_windows, detect_windows
from vmaudit.errors import GuestFileError
from vmaudit.guest.base import DEFAULT_CAP, GuestStat
from vmaudit.guest.tree import TreeFS
from vmaudit.models import Facts, ImageInfo

pytestmark = pytest.mark.appliance
FORMATS = {".vhdx": "vhdx", ".vmdk": "vmdk"}


class HandleFS:
    """A minimal ``GuestFS`` over a libguestfs handle with the guest mounted (test only)."""

    def __init__(self, handle: Any) -> None:
        self.g = handle

    def read(self, path: str, cap: int = DEFAULT_CAP) -> bytes:
        try:
            size = self.g.filesize(path)
            if size > cap:
                raise GuestFileError(path, "over the cap")
            return b"".join(
                self.g.pread(path, min(2 << 20, size - off), off) for off in range(0, size, 2 << 20)
            )
        except RuntimeError as exc:
            raise GuestFileError(path, "not found" if "No such" in str(exc) else str(exc)) from None

    def listdir(self, path: str) -> list[str]:
        try:
            return list(self.g.ls(path))
        except RuntimeError as exc:
            raise GuestFileError(path, str(exc)) from None

    def _stat(self, path: str, fn: str) -> GuestStat | None:
        try:
            st = getattr(self.g, fn)(path)
        except RuntimeError:
            return None
        mode = st["st_mode"]
        kind = (
            "dir"
            if mode & 0o170000 == 0o040000
            else "file"
            if mode & 0o170000 == 0o100000
            else "other"
        )
        return GuestStat(kind, st["st_size"], float(st["st_mtime_sec"]), mode)  # type: ignore[arg-type]

    def stat(self, path: str) -> GuestStat | None:
        return self._stat(path, "statns")

    def lstat(self, path: str) -> GuestStat | None:
        return self._stat(path, "lstatns")

    def readlink(self, path: str) -> str:
        raise GuestFileError(path, "not a symlink")


@dataclass(frozen=True)
class Inspected:
    product: str
    hostname: str
    version: str
    applications: list[tuple[str, str]]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    if shutil.which("virt-inspector") is None:
        pytest.skip("virt-inspector not installed")
    base = tmp_path_factory.mktemp("windows-images")
    return build_windows_images(base / "datastore", base / "cache")


@pytest.fixture(scope="module")
def inspector(images: list[Path]) -> dict[str, Inspected]:
    """virt-inspector's view, by hostname."""
    args = ["virt-inspector"]
    for image in images:
        args += [f"--format={FORMATS[image.suffix]}", "-a", str(image)]
    env = {**os.environ, "LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}
    out = subprocess.run(args, check=True, capture_output=True, env=env, timeout=900).stdout
    found = {}
    for system in ET.fromstring(out).iter("operatingsystem"):
        apps = [
            (app.findtext("display_name") or "", app.findtext("version") or "")
            for app in system.iter("application")
        ]
        hostname = system.findtext("hostname") or ""
        found[hostname] = Inspected(
            system.findtext("product_name") or "",
            hostname,
            f"{system.findtext('major_version')}.{system.findtext('minor_version')}",
            sorted(apps),
        )
    return found


@pytest.fixture(scope="module")
def collected(images: list[Path]) -> Iterator[dict[str, Facts]]:
    """The collector's facts through one appliance, by hostname."""
    import guestfs

    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend("direct")
    g.set_backend_settings(["force_tcg"])
    for image in images:
        g.add_drive_opts(str(image), format=FORMATS[image.suffix], readonly=True)
    g.launch()
    facts = {}
    try:
        for root in g.inspect_os():
            g.mount_ro(root, "/")
            fs = HandleFS(g)
            warnings: list[str] = []
            os_info = detect_windows(fs, warnings)
            assert os_info is not None
            image_info = ImageInfo("x", "raw", 0, "2020-01-01T00:00:00Z", "", None, ())
            result = collect_windows(fs, image_info, datetime.now(UTC), warnings)
            assert result.os == os_info
            facts[result.os.hostname or ""] = result
            g.umount_all()
        yield facts
    finally:
        g.shutdown()
        g.close()


def test_both_guests_are_found(
    inspector: dict[str, Inspected], collected: dict[str, Facts]
) -> None:
    assert sorted(inspector) == sorted(collected) == ["erp-legacy-02", "web-prod-01"]


@pytest.mark.parametrize("hostname", ["web-prod-01", "erp-legacy-02"])
def test_virt_inspector_agrees_with_the_collector(
    inspector: dict[str, Inspected], collected: dict[str, Facts], hostname: str
) -> None:
    theirs, ours = inspector[hostname], collected[hostname]
    assert ours.warnings == ()
    assert ours.os.product == theirs.product
    assert ours.os.version == theirs.version
    assert sorted((p.name, p.version) for p in ours.packages) == theirs.applications
    assert len(theirs.applications) >= 5


@pytest.mark.parametrize(
    ("hostname", "name"), [("web-prod-01", "win2019-patched"), ("erp-legacy-02", "win2016-dormant")]
)
def test_the_config_section_through_ntfs_is_the_trees(
    collected: dict[str, Facts], hostname: str, name: str, tmp_path: Path
) -> None:
    """Same hives read through the appliance's NTFS and from a tree: same settings (only
    the signature time, relative to each build, differs)."""
    tree = build_tree(guest(name), tmp_path / "root", datetime.now(UTC))
    image_info = ImageInfo("x", "raw", 0, "2020-01-01T00:00:00Z", "", None, ())
    from_tree = collect_windows(TreeFS(tree), image_info, datetime.now(UTC), []).config.windows
    through_ntfs = collected[hostname].config.windows
    assert from_tree is not None and through_ntfs is not None
    assert through_ntfs.defender_signatures_updated is not None
    assert replace(through_ntfs, defender_signatures_updated=None) == replace(
        from_tree, defender_signatures_updated=None
    )
    assert through_ntfs.autologon_password_stored is (name == "win2016-dormant")

"""A Linux root in a btrfs subvolume (Ubuntu's ``@`` layout) with ``/home`` in ``@home``."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import guestfs
import pytest

from tests.imaging import MINI_FILES, write_tree
from tests.safety.test_opening import scan_env, vmaudit

UUID = "5b6c7d8e-1f2a-4b3c-9d4e-5f6a7b8c9d0e"


def btrfs_guest(tmp: Path) -> Path:
    """Built in an appliance of the test's own: btrfs subvolumes need a mounted filesystem,
    and guest filesystems are never mounted on the host."""
    files = dict(MINI_FILES)
    files["etc/fstab"] = (
        f"UUID={UUID} / btrfs defaults,subvol=@ 0 0\n"
        f"UUID={UUID} /home btrfs defaults,subvol=@home 0 0\n"
    )
    files["etc/hostname"] = "btrfs-01\n"
    tree = write_tree(tmp / "tree", files)
    home = tree / "home"
    with tarfile.open(tmp / "root.tar", "w") as archive:
        for child in tree.iterdir():
            # /home itself stays in the root, empty: the mount point of @home.
            archive.add(child, arcname=child.name, recursive=child.name != "home")
    with tarfile.open(tmp / "home.tar", "w") as archive:
        for child in home.iterdir():
            archive.add(child, arcname=child.name)
    disk = tmp / "btrfs.raw"
    with open(disk, "wb") as handle:
        handle.truncate(400 * 1024 * 1024)
    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend_settings(["force_tcg"])
    g.add_drive_opts(str(disk), format="raw")
    g.launch()
    try:
        g.part_disk("/dev/sda", "mbr")
        g.mkfs_btrfs(["/dev/sda1"], label="root")
        g.set_uuid("/dev/sda1", UUID)
        g.mount("/dev/sda1", "/")
        g.btrfs_subvolume_create("/@")
        g.btrfs_subvolume_create("/@home")
        g.tar_in(str(tmp / "root.tar"), "/@")
        g.tar_in(str(tmp / "home.tar"), "/@home")
        g.umount_all()
    finally:
        g.shutdown()
        g.close()
    out = tmp / "store" / "btrfs.qcow2"
    out.parent.mkdir()
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(disk), str(out)], check=True)
    return out


@pytest.mark.appliance
def test_root_and_home_in_btrfs_subvolumes_are_found_and_mounted(tmp_path: Path) -> None:
    image = btrfs_guest(tmp_path)
    proc = vmaudit("inspect", str(image), env=scan_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["os"]["hostname"] == "btrfs-01"
    assert facts["warnings"] == []
    alice = next(u for u in facts["users"] if u["name"] == "alice")
    assert alice["authorized_keys"] == 1  # read from /home, the @home subvolume

"""Disk layouts nobody on this project installed by hand, built for real and inspected through
the CLI: an LVM root (RHEL's default), LVM on md RAID 1 across the two disks of one VM, and
Flatcar's /usr on a partition named ``USR-B`` that no fstab line mounts.

All three are built in ONE appliance of the test's own (md arrays and volume groups need a
kernel, and guest filesystems are never mounted on the host).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import guestfs
import pytest

from tests.imaging import MINI_FILES, write_tree
from tests.safety.test_opening import scan_env, vmaudit

pytestmark = pytest.mark.appliance

MIB = 1024 * 1024
BOOT_UUID = "0b5e8a52-7c1d-4f3e-9a6b-2d4c6e8f0a1b"
# GPT attributes as Flatcar's gptprio reads them: priority in bits 48-51, successful bit 56.
SUCCESSFUL = 1 << 56


def priority(value: int) -> int:
    return (value << 48) | SUCCESSFUL


def flatcar_release(version: str) -> str:
    return (
        'NAME="Flatcar Container Linux by Kinvolk"\nID=flatcar\nID_LIKE=coreos\n'
        f"VERSION={version}\nVERSION_ID={version}\n"
        f'PRETTY_NAME="Flatcar Container Linux by Kinvolk {version} (Oklo)"\n'
    )


def tar_of(tree: Path, out: Path) -> Path:
    """``tree``'s content (symlinks kept as links) as a tar for ``tar_in``."""
    with tarfile.open(out, "w") as archive:
        for child in sorted(tree.iterdir()):
            archive.add(child, arcname=child.name)
    return out


def lvm_tree(tmp: Path) -> Path:
    files = dict(MINI_FILES)
    files["etc/hostname"] = "lvm-01\n"
    files["etc/fstab"] = (
        "/dev/mapper/vgsys-root / ext4 defaults 0 1\n"
        f"UUID={BOOT_UUID} /boot ext4 defaults 0 2\n"
        "/dev/mapper/vgsys-home /home ext4 defaults 0 2\n"
    )
    files["boot/grub/grub.cfg"] = "set default=0\n"
    return write_tree(tmp / "lvm-tree", files)


def raid_tree(tmp: Path) -> Path:
    files = dict(MINI_FILES)
    files["etc/hostname"] = "raid-01\n"
    files["etc/fstab"] = (
        "/dev/vgraid/root / ext4 defaults 0 1\n"
        "/dev/md/raidboot /boot ext4 defaults 0 2\n"
        "/dev/mapper/vgraid-home /home ext4 defaults 0 2\n"
    )
    files["etc/mdadm/mdadm.conf"] = "ARRAY /dev/md/raidboot metadata=1.2 name=raid-01:raidboot\n"
    files["boot/grub/grub.cfg"] = "set default=0\n"
    return write_tree(tmp / "raid-tree", files)


def flatcar_trees(tmp: Path) -> tuple[Path, Path, Path]:
    """ROOT (no fstab, /etc/os-release -> ../usr/lib/os-release, /bin -> usr/bin), and the
    /usr of USR-A (the first install) and USR-B (updated since, and booted)."""
    root = tmp / "flatcar-root"
    for rel, text in {
        "etc/hostname": "flatcar-01\n",
        "etc/passwd": "root:x:0:0:root:/root:/bin/bash\n"
        "core:x:500:500:Flatcar Admin:/home/core:/bin/bash\n",
        "etc/shadow": "root:*:19000:0:99999:7:::\ncore:*:19000:0:99999:7:::\n",
        "etc/group": "root:x:0:\nsudo:x:150:core\ncore:x:500:\n",
        "etc/ssh/sshd_config": "PermitRootLogin no\nPasswordAuthentication no\n",
        "home/core/.ssh/authorized_keys": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF core@ops\n",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "usr").mkdir()
    (root / "root").mkdir()
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    (root / "bin").symlink_to("usr/bin")
    usrs = []
    for name, version in (("usr-a", "3374.2.0"), ("usr-b", "3510.2.0")):
        usr = tmp / name
        for rel in ("bin", "lib", "share/flatcar", "local"):
            (usr / rel).mkdir(parents=True)
        (usr / "share/flatcar/os-release").write_text(flatcar_release(version))
        (usr / "lib/os-release").symlink_to("../share/flatcar/os-release")
        shutil.copy2("/bin/sh", usr / "bin/sh")
        usrs.append(usr)
    return root, usrs[0], usrs[1]


def raw(path: Path, size_mb: int) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(size_mb * MIB)
    return path


def build(tmp: Path) -> None:
    """Every layout's raw disks, in one appliance."""
    lvm = raw(tmp / "lvm.raw", 160)
    raid_a, raid_b = raw(tmp / "raid-a.raw", 160), raw(tmp / "raid-b.raw", 160)
    flatcar = raw(tmp / "flatcar.raw", 160)
    lvm_tar = tar_of(lvm_tree(tmp), tmp / "lvm.tar")
    raid_tar = tar_of(raid_tree(tmp), tmp / "raid.tar")
    root, usr_a, usr_b = flatcar_trees(tmp)
    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend_settings(["force_tcg"])
    for disk in (lvm, raid_a, raid_b, flatcar):
        g.add_drive_opts(str(disk), format="raw", readonly=False)
    g.launch()
    try:
        # LVM: /boot on a partition, / and /home in a volume group on the second.
        g.part_init("/dev/sda", "mbr")
        g.part_add("/dev/sda", "p", 2048, 2048 + 32 * 2048 - 1)
        g.part_add("/dev/sda", "p", 2048 + 32 * 2048, -2048)
        g.part_set_mbr_id("/dev/sda", 2, 0x8E)
        g.mkfs("ext4", "/dev/sda1")
        g.set_uuid("/dev/sda1", BOOT_UUID)
        g.pvcreate("/dev/sda2")
        g.vgcreate("vgsys", ["/dev/sda2"])
        fill_volume_group(g, "vgsys", lvm_tar, boot="/dev/sda1")

        # RAID 1 across both disks of one VM: /boot on md "raidboot", LVM on md "raidpv".
        for whole in ("/dev/sdb", "/dev/sdc"):
            g.part_init(whole, "gpt")
            g.part_add(whole, "p", 2048, 2048 + 32 * 2048 - 1)
            g.part_add(whole, "p", 2048 + 32 * 2048, -2048)
        g.md_create("raidboot", ["/dev/sdb1", "/dev/sdc1"], level="raid1", nrdevices=2)
        g.md_create("raidpv", ["/dev/sdb2", "/dev/sdc2"], level="raid1", nrdevices=2)
        g.mkfs("ext4", "/dev/md/raidboot")
        g.pvcreate("/dev/md/raidpv")
        g.vgcreate("vgraid", ["/dev/md/raidpv"])
        fill_volume_group(g, "vgraid", raid_tar, boot="/dev/md/raidboot")

        # Flatcar: USR-A, USR-B (higher priority: the boot loader picks it), ROOT.
        g.part_init("/dev/sdd", "gpt")
        for number, (name, start, end) in enumerate(
            (
                ("USR-A", 2048, 2048 + 40 * 2048 - 1),
                ("USR-B", 2048 + 40 * 2048, 2048 + 80 * 2048 - 1),
                ("ROOT", 2048 + 80 * 2048, -2048),
            ),
            start=1,
        ):
            g.part_add("/dev/sdd", "p", start, end)
            g.part_set_name("/dev/sdd", number, name)
        g.part_set_gpt_attributes("/dev/sdd", 1, priority(1))
        g.part_set_gpt_attributes("/dev/sdd", 2, priority(2))
        for number, tree in ((1, usr_a), (2, usr_b), (3, root)):
            device = f"/dev/sdd{number}"
            g.mkfs("ext2" if number < 3 else "ext4", device)
            g.mount(device, "/")
            g.tar_in(str(tar_of(tree, tmp / f"flatcar-{number}.tar")), "/")
            g.umount_all()
        g.set_label("/dev/sdd3", "ROOT")
        g.sync()
        g.shutdown()
    finally:
        g.close()


def fill_volume_group(g: Any, vg: str, tree_tar: Path, boot: str) -> None:
    g.lvcreate("root", vg, 64)
    g.lvcreate("home", vg, 24)
    for lv in ("root", "home"):
        g.mkfs("ext4", f"/dev/{vg}/{lv}")
    g.mount(f"/dev/{vg}/root", "/")
    for mountpoint, device in (("/boot", boot), ("/home", f"/dev/{vg}/home")):
        g.mkdir(mountpoint)
        g.mount(device, mountpoint)
    g.tar_in(str(tree_tar), "/")
    g.umount_all()


@dataclass(frozen=True)
class Store:
    root: Path
    lvm: Path  # one qcow2
    raid_vm: Path  # a folder: libvirt domain XML naming both disks
    flatcar: Path  # one qcow2


def qcow2(raw_disk: Path, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw_disk), str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    tmp = tmp_path_factory.mktemp("layouts")
    build(tmp)
    root = tmp / "store"
    lvm = qcow2(tmp / "lvm.raw", root / "lvm" / "lvm.qcow2")
    raid_vm = root / "raid-vm"
    for name in ("raid-a", "raid-b"):
        qcow2(tmp / f"{name}.raw", raid_vm / f"{name}.qcow2")
    (raid_vm / "raid-vm.xml").write_text(
        "<domain type='kvm'><name>raid-01</name><devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        "<source file='raid-a.qcow2'/><target dev='vda'/></disk>"
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        "<source file='raid-b.qcow2'/><target dev='vdb'/></disk>"
        "</devices></domain>\n"
    )
    # A clone of the RAID VM beside it: the same array UUID on two images' disks.
    shutil.copytree(raid_vm, root / "raid-vm-clone")
    flatcar = qcow2(tmp / "flatcar.raw", root / "flatcar" / "flatcar.qcow2")
    for disk in tmp.glob("*.raw"):
        disk.unlink()
    return Store(root, lvm, raid_vm, flatcar)


def inspect(target: Path, tmp: Path) -> dict[str, Any]:
    proc = vmaudit("inspect", str(target), env=scan_env(tmp))
    assert proc.returncode == 0, proc.stderr
    facts: dict[str, Any] = json.loads(proc.stdout)
    return facts


def summary(facts: dict[str, Any]) -> tuple[object, ...]:
    """What a root found and mounted whole shows: OS, users, keys read from /home."""
    os_info = facts["os"]
    users = {u["name"]: u["authorized_keys"] for u in facts["users"]}
    return (
        os_info["distro"],
        os_info["version"],
        os_info["product"],
        os_info["hostname"],
        users,
        tuple(facts["warnings"]),
    )


def test_lvm_root_is_found_the_same_on_every_run(store: Store, tmp_path: Path) -> None:
    runs = [summary(inspect(store.lvm, tmp_path)) for _ in range(5)]
    assert runs == [runs[0]] * 5
    assert runs[0] == (
        "debian",
        "12.8",
        "Debian GNU/Linux 12 (bookworm)",
        "lvm-01",
        {"root": 0, "toor": 0, "alice": 1},
        (),
    )


def test_lvm_on_raid1_across_the_two_disks_of_one_vm(store: Store, tmp_path: Path) -> None:
    facts = inspect(store.raid_vm, tmp_path)
    assert facts["image"]["vm"] == "raid-01"
    assert len(facts["image"]["disks"]) == 2
    # No warning: /boot (the md array by its name) and /home (an LV on md) were mounted.
    assert summary(facts) == (
        "debian",
        "12.8",
        "Debian GNU/Linux 12 (bookworm)",
        "raid-01",
        {"root": 0, "toor": 0, "alice": 1},
        (),
    )


def test_flatcar_usr_is_mounted_from_the_partition_the_boot_loader_picks(
    store: Store, tmp_path: Path
) -> None:
    facts = inspect(store.flatcar, tmp_path)
    assert summary(facts) == (
        "flatcar",
        "3510.2",
        "Flatcar Container Linux by Kinvolk 3510.2.0 (Oklo)",
        "flatcar-01",
        {"root": 0, "core": 1},
        ("packages: no known package database found",),
    )
    assert facts["os"]["arch"] == "x86_64"  # /bin/sh through /bin -> usr/bin, on USR-B


def test_every_layout_in_one_appliance_keeps_to_its_own_disks(store: Store, tmp_path: Path) -> None:
    # The RAID VM and its clone assemble one array from members of two images: both are
    # re-run alone, each with its own two disks.
    proc = vmaudit(
        "scan",
        str(store.root),
        "--format",
        "json",
        "--fail-on",
        "never",
        "--batch",
        "4",
        "-j",
        "1",
        env=scan_env(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    images = json.loads(proc.stdout)["images"]
    found = {
        os.path.relpath(i["path"], store.root): (i["status"], i["os"]["hostname"]) for i in images
    }
    assert found == {
        "lvm/lvm.qcow2": ("audited", "lvm-01"),
        "raid-vm/raid-vm.xml": ("audited", "raid-01"),
        "raid-vm-clone/raid-vm.xml": ("audited", "raid-01"),
        "flatcar/flatcar.qcow2": ("audited", "flatcar-01"),
    }

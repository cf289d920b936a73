"""Hostile disk images and guest trees for tests/hostile, each built here from nothing.

Guests are written as literal trees and put into ext4 with ``mke2fs -d`` (no appliance);
the other hazards are bytes written with Python, ``qemu-img``, ``sfdisk`` or ``cryptsetup``.
``SECRET`` marks every host file an image might try to reach: it must never appear in any
output of a scan.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
from pathlib import Path

from tests.discover.test_discover import make_differencing_vhd
from tests.imaging import MINI_FILES, convert, write_tree

SECRET = "HOST-SECRET-41c7e2-must-not-leak"
MIB = 1024 * 1024

# Guest text that reaches the reports: a terminal escape (set the window title, clear the
# screen, colour) and spreadsheet formula starts.
ESC_HOSTNAME = "-2+3\x1b]0;owned\x07\x1b[2J\x1b[31mred"
FORMULA_USER = "=cmd|' /C calc'!A0"  # no colon: it is a passwd field
ESC_USER = "ev\x1b[31mil"


def run(*args: str, stdin: bytes | None = None) -> None:
    subprocess.run(list(args), input=stdin, check=True, capture_output=True)


def random_bytes(size: int, seed: int) -> bytes:
    data = bytearray(random.Random(seed).randbytes(size))
    if len(data) >= 512:
        data[510:512] = b"\0\0"  # never an MBR signature by chance
    return bytes(data)


def secret_file(path: Path, size: int = MIB) -> Path:
    """A host file full of the marker (also a valid raw disk, were anything to open it)."""
    line = (SECRET + "\n").encode()
    path.write_bytes(line * (size // len(line) + 1))
    return path


def ext4_from_tree(
    tree: Path, out: Path, size_mb: int, label: str, inodes: int | None = None
) -> Path:
    with open(out, "wb") as handle:
        handle.truncate(size_mb * MIB)
    extra = ["-N", str(inodes)] if inodes else []
    run("mke2fs", "-q", "-F", "-t", "ext4", "-L", label, *extra, "-d", str(tree), str(out))
    return out


def partitioned_disk(out: Path, partitions: list[Path], part_type: str = "83") -> Path:
    """An MBR disk holding each file of ``partitions`` as one partition, 1 MiB aligned."""
    sizes = [-(-p.stat().st_size // MIB) for p in partitions]
    with open(out, "wb") as handle:
        handle.truncate((2 + sum(sizes)) * MIB)
    script, start = "", 1
    for size in sizes:
        script += f"start={start * 2048}, size={size * 2048}, type={part_type}\n"
        start += size
    run("sfdisk", "-q", str(out), stdin=script.encode())
    start = 1
    for part, size in zip(partitions, sizes, strict=True):
        run(
            "dd",
            f"if={part}",
            f"of={out}",
            "bs=1M",
            f"seek={start}",
            "conv=notrunc,sparse",
            "status=none",
        )
        start += size
    return out


def guest_disk(
    tree: Path, out: Path, label: str, size_mb: int = 40, inodes: int | None = None
) -> Path:
    """A raw MBR disk whose one ext4 partition, labelled ``label``, holds ``tree``.

    Each guest gets a label of its own, named by its fstab: guests sharing one appliance
    whose fstab names a label (or UUID) that several disks carry cannot be told apart, and
    vmaudit then re-runs each of them in an appliance of its own (slow, tested elsewhere).
    """
    (tree / "etc").mkdir(parents=True, exist_ok=True)
    (tree / "etc" / "fstab").write_text(f"LABEL={label} / ext4 errors=remount-ro 0 1\n")
    part = ext4_from_tree(tree, out.with_suffix(".ext4"), size_mb, label, inodes)
    partitioned_disk(out, [part])
    part.unlink()
    return out


def sparse_file(path: Path, size: int, tail: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size - len(tail))
        handle.seek(size - len(tail))
        handle.write(tail)


# ---------------------------------------------------------------- guests


def mini_guest(work: Path, out: Path, name: str) -> Path:
    """The small Debian-like guest of tests/imaging.py, hostname and label ``name``."""
    tree = write_tree(work / f"{name}-tree", {**MINI_FILES, "etc/hostname": f"{name}\n"})
    return convert(guest_disk(tree, work / f"{name}.raw", name), "qcow2", out)


def slow_to_list_guest(work: Path, out: Path, name: str, entries: int = 60000) -> Path:
    """The mini guest with a /etc/sudoers.d of ``entries`` names that sudo skips (they hold
    a dot): listing it keeps the appliance busy for seconds, long enough to be caught."""
    files = {
        **MINI_FILES,
        "etc/hostname": f"{name}\n",
        "etc/sudoers": "root ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n",
    }
    tree = write_tree(work / f"{name}-tree", files)
    folder = tree / "etc" / "sudoers.d"
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(entries):
        (folder / f"skipped.{index}").touch()
    disk = guest_disk(tree, work / f"{name}.raw", name, size_mb=96, inodes=entries + 4096)
    return convert(disk, "qcow2", out)


def no_os_guest(work: Path, out: Path) -> Path:
    """A plain ext4 partition with random files and folders: no operating system."""
    tree = work / "noos-tree"
    for index in range(20):
        folder = tree / f"data{index % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"blob{index}.bin").write_bytes(random_bytes(4096, index))
    (tree / "etc").mkdir()
    (tree / "etc" / "notes.txt").write_text("not an OS\n")
    return guest_disk(tree, out, "data", size_mb=8)


def unknown_fs_guest(work: Path, out: Path) -> Path:
    """A partition table whose one partition holds random bytes: no filesystem known."""
    part = work / "junk.part"
    part.write_bytes(random_bytes(8 * MIB, 7))
    return partitioned_disk(out, [part])


def luks_file(out: Path, size_mb: int = 20) -> Path:
    """``cryptsetup luksFormat`` on a plain file (no loop device, no appliance)."""
    with open(out, "wb") as handle:
        handle.truncate(size_mb * MIB)
    key = out.with_suffix(".key")
    key.write_bytes(b"correct horse battery staple")
    run(
        "cryptsetup",
        "luksFormat",
        "--batch-mode",
        "--type",
        "luks2",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--key-file",
        str(key),
        str(out),
    )
    key.unlink()
    return out


def luks_partition_guest(work: Path, out: Path) -> Path:
    """A qcow2 disk whose only partition is a LUKS volume."""
    volume = luks_file(work / "volume.luks")
    raw = partitioned_disk(work / "luks-disk.raw", [volume])
    return convert(raw, "qcow2", out)


def two_os_guest(work: Path, out: Path) -> Path:
    """Two partitions, each the root of a Linux system with its own hostname and label."""
    parts = []
    for name in ("first-os", "second-os"):
        files = {
            **MINI_FILES,
            "etc/hostname": f"{name}\n",
            "etc/fstab": f"LABEL={name} / ext4 errors=remount-ro 0 1\n",
        }
        tree = write_tree(work / f"{name}-tree", files)
        parts.append(ext4_from_tree(tree, work / f"{name}.ext4", 24, name))
    return convert(partitioned_disk(work / "two.raw", parts), "qcow2", out)


def links_guest(work: Path, out: Path, host_dir: Path) -> Path:
    """Symlinks out of the root: relative ``../``, absolute to host paths, loops.

    ``host_dir`` is a real host folder whose files hold ``SECRET``; the guest holds a file
    of its own at the same absolute path, so a read resolved inside the guest is told apart
    from one that escaped to the host.
    """
    tree = write_tree(work / "links-tree")
    etc = tree / "etc"
    (etc / "passwd").unlink()
    os.symlink("../../../../etc/passwd", etc / "passwd")  # resolves to itself in the guest
    (etc / "shadow").unlink()
    os.symlink(str(host_dir / "shadow"), etc / "shadow")  # no such file in the guest
    (etc / "hostname").unlink()
    os.symlink(str(host_dir / "hostname"), etc / "hostname")
    guest_side = tree / str(host_dir).lstrip("/")
    guest_side.mkdir(parents=True)
    (guest_side / "hostname").write_text("resolved-inside-guest\n")
    (etc / "ssh" / "sshd_config").unlink()
    os.symlink("/etc/ssh/sshd_config", etc / "ssh" / "sshd_config")  # a loop
    (etc / "sudoers").write_text("root ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n")
    (etc / "sudoers.d").mkdir()
    os.symlink("loop-b", etc / "sudoers.d" / "loop-a")
    os.symlink("loop-a", etc / "sudoers.d" / "loop-b")
    os.symlink(str(host_dir / "sudoers"), etc / "sudoers.d" / "host")
    os.symlink("..", etc / "sudoers.d" / "up")  # a folder loop
    return convert(guest_disk(tree, work / "links.raw", "links"), "qcow2", out)


BIG_SHADOW = 128 * MIB
BIG_SUDOERS = 150 * MIB
BIG_WTMP = 1024 * MIB
LONG_LINE = 8 * MIB
DPKG_FIELD = MIB


def content_guest(work: Path, out: Path) -> Path:
    """Hostile file content: huge and sparse files where collectors read, a sudoers that
    includes itself, a 1 MB dpkg field, names that are not UTF-8, terminal escapes and
    spreadsheet formulas in the hostname and user names."""
    files = dict(MINI_FILES)
    files["etc/hostname"] = ESC_HOSTNAME + "\n"
    files["etc/passwd"] += (
        f"{FORMULA_USER}:x:0:0::/root:/bin/bash\n{ESC_USER}:x:0:0::/root:/bin/bash\n"
    )
    files["etc/sudoers"] = (
        "root ALL=(ALL:ALL) ALL\n@include /etc/sudoers\n"
        "#include /etc/sudoers\n@includedir /etc/sudoers.d\n"
    )
    files["var/lib/dpkg/status"] += (
        "Package: bloated\nStatus: install ok installed\nVersion: 1.0\nArchitecture: amd64\n"
        "Description: " + "A" * DPKG_FIELD + "\n\n"
        "Package: after-bloat\nStatus: install ok installed\nVersion: 2.0\n"
        "Architecture: all\nDescription: comes after the big one\n\n"
    )
    tree = write_tree(work / "content-tree", files)
    etc = tree / "etc"
    # /etc/shadow: 128 MiB, sparse, its one real line at the very end.
    sparse_file(etc / "shadow", BIG_SHADOW, b"root:$6$x$y:19000:0:99999:7:::\n")
    sparse_file(tree / "var" / "log" / "wtmp", BIG_WTMP)
    sparse_file(etc / "sudoers.d" / "00-huge", BIG_SUDOERS)
    # An 8 MiB file that is one single line, read through the line-length cap.
    (etc / "sudoers.d" / "01-one-line").write_text("# " + "x" * LONG_LINE + "\n")
    with open(os.path.join(os.fsencode(etc / "sudoers.d"), b"ops\xff\xfe"), "wb") as handle:
        handle.write(b"alice ALL=(ALL) NOPASSWD: ALL\n")
    os.makedirs(os.path.join(os.fsencode(tree / "home"), b"caf\xe9\xff"))
    return convert(guest_disk(tree, work / "content.raw", "content", size_mb=64), "qcow2", out)


# ---------------------------------------------------------------- broken containers


def truncated_mbr(out: Path) -> Path:
    """A 1 MiB raw disk whose partition table claims 1 GiB beyond its end (sfdisk refuses
    to write that, so the MBR is written by hand)."""
    mbr = bytearray(512)
    mbr[446:462] = struct.pack(
        "<B3sB3sII", 0, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", 2048, 2 * 1024 * 1024
    )
    mbr[510:512] = b"\x55\xaa"
    with open(out, "wb") as handle:
        handle.write(mbr)
        handle.truncate(MIB)
    return out


def huge_virtual_qcow2(out: Path) -> Path:
    """A valid qcow2 of a few hundred KiB that claims a 1 PiB disk."""
    run("qemu-img", "create", "-q", "-f", "qcow2", str(out), "1P")
    return out


def lying_qcow2(out: Path) -> Path:
    """A qcow2 header claiming an 8 EiB disk with a one-entry L1 table: qemu refuses it."""
    run("qemu-img", "create", "-q", "-f", "qcow2", str(out), "1M")
    with open(out, "r+b") as handle:
        handle.seek(24)
        handle.write(struct.pack(">Q", 1 << 63))
    return out


def truncated_qcow2(good: Path, out: Path, keep: int) -> Path:
    with open(good, "rb") as source, open(out, "wb") as target:
        target.write(source.read(keep))
    return out


def data_file_qcow2(out: Path, secret: Path) -> Path:
    """A qcow2 whose data lives in an external host file, filled with the secret afterwards
    (``qemu-img create`` makes the data file itself)."""
    run(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        f"data_file={secret},data_file_raw=on",
        str(out),
        "1M",
    )
    secret_file(secret)
    return out


def backing_qcow2(out: Path, backing: str, backing_format: str = "raw") -> Path:
    run(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        backing,
        "-F",
        backing_format,
        str(out),
        "1M",
    )
    return out


def missing_extent_vmdk(out: Path) -> Path:
    out.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\n\nRW 2048 FLAT "gone-flat.vmdk" 0\n'
    )
    return out


# ---------------------------------------------------------------- the datastore

# Relative path -> (status, error kind) the scan must report. Guests whose content matters
# are checked further by the tests.
EXPECTED: dict[str, tuple[str, str | None]] = {
    "good/good.qcow2": ("audited", None),
    "inuse/held.qcow2": ("audited", None),
    "links/links.qcow2": ("audited", None),
    "content/content.qcow2": ("audited", None),
    "twoos/two.qcow2": ("audited", None),
    "noos/plain.img": ("error", "no-operating-system"),
    "unknownfs/junk.img": ("error", "no-operating-system"),
    "luks/bare.img": ("error", "encrypted"),
    "luks/part.qcow2": ("error", "encrypted"),
    "huge/petabyte.qcow2": ("error", "no-operating-system"),
    "huge/beyond-end.img": ("error", "no-operating-system"),
    "huge/lying.qcow2": ("error", "corrupt-image"),
    "truncated/half.qcow2": ("error", "no-operating-system"),
    "truncated/header.qcow2": ("error", "corrupt-image"),
    "junk/empty.qcow2": ("error", "corrupt-image"),
    "junk/empty.img": ("error", "corrupt-image"),
    "junk/random.vmdk": ("error", "corrupt-image"),
    "junk/random.vhd": ("error", "corrupt-image"),
    "junk/random.img": ("error", "corrupt-image"),
    os.fsdecode(b"junk/\xff\xfe-not-utf8.qcow2"): ("error", "corrupt-image"),
    "datafile/external.qcow2": ("error", "unsafe-data-file"),
    "jsonbacking/leaf.qcow2": ("error", "unsafe-backing-file"),
    "nbdbacking/leaf.qcow2": ("error", "unsafe-backing-file"),
    "vmdk/missing-extent.vmdk": ("error", "missing-parent"),
    "loop/self.qcow2": ("error", "not-a-regular-file"),
    # opening_hazards (spec/safety.md "Opening the disk")
    "probe/evil.img": ("error", "format-mismatch"),
    "escape/leaf.qcow2": ("error", "unsafe-backing-file"),
    "extent/evil.vmdk": ("error", "unsafe-extent"),
    "orphan/child.vhd": ("error", "missing-parent"),
    "special/link.qcow2": ("error", "not-a-regular-file"),
    "special/fifo.qcow2": ("error", "not-a-regular-file"),
}


def build_datastore(work: Path, host_dir: Path) -> Path:
    """Every hazard of EXPECTED under ``work/datastore``; host secrets under ``host_dir``."""
    store = work / "datastore"
    host_dir.mkdir(parents=True, exist_ok=True)
    secret = secret_file(host_dir / "secret.raw")
    for name in ("shadow", "hostname", "sudoers"):
        secret_file(host_dir / name, 4096)

    def place(rel: str) -> Path:
        path = store / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    mini_guest(work, place("good/good.qcow2"), "good")
    mini_guest(work, place("inuse/held.qcow2"), "held")
    links_guest(work, place("links/links.qcow2"), host_dir)
    content_guest(work, place("content/content.qcow2"))
    two_os_guest(work, place("twoos/two.qcow2"))
    no_os_guest(work, place("noos/plain.img"))
    unknown_fs_guest(work, place("unknownfs/junk.img"))
    luks_file(place("luks/bare.img"))
    luks_partition_guest(work, place("luks/part.qcow2"))
    huge_virtual_qcow2(place("huge/petabyte.qcow2"))
    truncated_mbr(place("huge/beyond-end.img"))
    lying_qcow2(place("huge/lying.qcow2"))
    whole = mini_guest(work, work / "whole.qcow2", "trunc")
    truncated_qcow2(whole, place("truncated/half.qcow2"), whole.stat().st_size // 2)
    truncated_qcow2(whole, place("truncated/header.qcow2"), 50)
    place("junk/empty.qcow2").write_bytes(b"")
    place("junk/empty.img").write_bytes(b"")
    place("junk/random.vmdk").write_bytes(random_bytes(MIB, 1))
    place("junk/random.vhd").write_bytes(random_bytes(MIB, 2))
    place("junk/random.img").write_bytes(random_bytes(MIB, 3))
    with open(os.path.join(os.fsencode(store), b"junk", b"\xff\xfe-not-utf8.qcow2"), "wb") as f:
        f.write(random_bytes(4096, 4))
    data_file_qcow2(place("datafile/external.qcow2"), host_dir / "data.raw")
    backing_qcow2(
        place("jsonbacking/leaf.qcow2"),
        f'json:{{"driver":"raw","file":{{"driver":"file","filename":"{secret}"}}}}',
    )
    backing_qcow2(place("nbdbacking/leaf.qcow2"), "nbd:127.0.0.1:10809")
    missing_extent_vmdk(place("vmdk/missing-extent.vmdk"))
    # A datastore folder with symlink loops: to itself, to its parent, an image to itself.
    os.symlink(".", place("loop/here"))
    os.symlink("..", place("loop/up"))
    os.symlink("self.qcow2", place("loop/self.qcow2"))
    opening_hazards(store, secret)
    return store


def opening_hazards(store: Path, secret: Path) -> None:
    """spec/safety.md "Opening the disk": images that reach a host file, or are no file."""
    # A raw image whose first sector is a qcow2 header with a backing file on the host.
    (store / "probe").mkdir()
    qcow2_header = ["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", str(secret), "-F"]
    subprocess.run([*qcow2_header, "raw", str(store / "probe" / "evil.img"), "1M"], check=True)
    # A qcow2 whose backing file is outside its folder.
    (store / "escape").mkdir()
    subprocess.run([*qcow2_header, "raw", str(store / "escape" / "leaf.qcow2"), "1M"], check=True)
    # A VMDK descriptor whose extent is a host file.
    (store / "extent").mkdir()
    (store / "extent" / "evil.vmdk").write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        f'createType="monolithicFlat"\n\nRW 2048 FLAT "{secret}" 0\n'
    )
    # A VHD differencing disk without its parent.
    (store / "orphan").mkdir()
    make_differencing_vhd(store / "orphan" / "child.vhd", "parent.vhd")
    # A symlink and a FIFO named like images.
    (store / "special").mkdir()
    os.symlink(secret, store / "special" / "link.qcow2")
    os.mkfifo(store / "special" / "fifo.qcow2")

"""Building small guest disk images for tests, without an appliance.

A literal root tree is written into an ext4 filesystem with ``mke2fs -d`` inside an MBR
partition made by ``sfdisk``, then converted with ``qemu-img convert``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
from pathlib import Path

MINI_FILES = {
    "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
    'VERSION_ID="12"\nVERSION="12 (bookworm)"\nID=debian\n',
    "etc/debian_version": "12.8\n",
    "etc/hostname": "mini-01\n",
    "etc/fstab": "LABEL=root / ext4 errors=remount-ro 0 1\n",
    "etc/passwd": "root:x:0:0:root:/root:/bin/bash\n"
    "toor:x:0:0:backdoor:/root:/bin/bash\n"
    "alice:x:1000:1000:Alice:/home/alice:/bin/bash\n",
    "etc/shadow": "root:$6$abc$def:19000:0:99999:7:::\ntoor::19000:0:99999:7:::\n"
    "alice:$6$x$y:19000:0:99999:7:::\n",
    "etc/group": "root:x:0:\nsudo:x:27:alice\nalice:x:1000:\n",
    "etc/shells": "/bin/sh\n/bin/bash\n",
    "etc/ssh/sshd_config": "PermitRootLogin yes\nPasswordAuthentication yes\n",
    "var/lib/dpkg/status": "Package: openssh-server\nStatus: install ok installed\n"
    "Priority: optional\nSection: net\nInstalled-Size: 1800\nMaintainer: Debian OpenSSH "
    "Maintainers <debian-ssh@lists.debian.org>\nArchitecture: amd64\nSource: openssh\n"
    "Version: 1:9.2p1-2+deb12u3\nDescription: secure shell (SSH) server\n\n",
    "home/alice/.ssh/authorized_keys": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE alice@laptop\n",
}


def write_tree(root: Path, files: dict[str, str] | None = None) -> Path:
    """A small Debian-like root: the files above, plus the host's /bin/sh for the ELF arch."""
    for rel, text in (files or MINI_FILES).items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy2("/bin/sh", root / "bin" / "sh")
    for rel in ("usr/bin", "root", "tmp", "var/log"):
        (root / rel).mkdir(parents=True, exist_ok=True)
    return root


def raw_disk_from_tree(tree: Path, out: Path, size_mb: int = 48) -> Path:
    """An MBR disk whose one partition is ext4 populated from ``tree`` (no appliance)."""
    fs = out.with_suffix(".fs")
    with open(fs, "wb") as handle:
        handle.truncate((size_mb - 2) * 1024 * 1024)
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-L", "root", "-d", str(tree), str(fs)],
        check=True,
        capture_output=True,
    )
    with open(out, "wb") as handle:
        handle.truncate(size_mb * 1024 * 1024)
    subprocess.run(
        ["sfdisk", "-q", str(out)], input=b"start=2048, type=83\n", check=True, capture_output=True
    )
    subprocess.run(
        ["dd", f"if={fs}", f"of={out}", "bs=1M", "seek=1", "conv=notrunc", "status=none"],
        check=True,
    )
    fs.unlink()
    return out


CONVERT_ARGS = {
    "qcow2": ["-O", "qcow2"],
    "vmdk": ["-O", "vmdk"],
    "vhd": ["-O", "vpc"],
    "vhdx": ["-O", "vhdx"],
}


def convert(raw: Path, fmt: str, out: Path) -> Path:
    if fmt == "raw":
        shutil.copyfile(raw, out)
    else:
        subprocess.run(
            ["qemu-img", "convert", *CONVERT_ARGS[fmt], str(raw), str(out)],
            check=True,
            capture_output=True,
        )
    return out


def fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime (ns) of every regular file below ``folder``."""
    prints: dict[str, tuple[str, int]] = {}
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            prints[str(path)] = (digest, path.stat().st_mtime_ns)
    return prints


def qemu_processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that mention ``text`` (left-behind appliances)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if text.encode() in cmdline and b"pytest" not in cmdline:
            found.append(cmdline.decode(errors="replace"))
    return found


def vhd_checksum(footer: bytearray) -> None:
    """Set a VHD footer's checksum (one's complement of its byte sum)."""
    footer[64:68] = b"\0\0\0\0"
    footer[64:68] = struct.pack(">I", (~sum(footer)) & 0xFFFFFFFF)


def differencing_vhd(parent_raw: Path, child_raw: Path, parent_name: str, out: Path) -> Path:
    """A VHD differencing disk holding exactly the sectors where ``child_raw`` differs from
    ``parent_raw``, naming ``parent_name`` as its parent. qemu cannot write one, so a
    dynamic VHD made by ``qemu-img convert`` is cut down to those sectors and retyped."""
    subprocess.run(
        ["qemu-img", "convert", "-O", "vpc", "-o", "force_size=on", str(child_raw), str(out)],
        check=True,
        capture_output=True,
    )
    data = bytearray(out.read_bytes())
    parent = parent_raw.read_bytes()
    child = child_raw.read_bytes()
    dyn = struct.unpack(">Q", data[16:24])[0]
    (table,) = struct.unpack(">Q", data[dyn + 16 : dyn + 24])
    entries, block_size = struct.unpack(">II", data[dyn + 28 : dyn + 36])
    bitmap_bytes = -(-(block_size // 512 // 8) // 512) * 512
    for index in range(entries):
        entry = table + 4 * index
        (offset,) = struct.unpack(">I", data[entry : entry + 4])
        if offset == 0xFFFFFFFF:
            continue
        base = index * block_size
        bitmap = bytearray(bitmap_bytes)
        for sector in range(block_size // 512):
            at = base + sector * 512
            if child[at : at + 512] != parent[at : at + 512]:
                bitmap[sector // 8] |= 0x80 >> (sector % 8)
        if any(bitmap):
            data[offset * 512 : offset * 512 + bitmap_bytes] = bitmap
        else:
            data[entry : entry + 4] = struct.pack(">I", 0xFFFFFFFF)
    name = parent_name.encode("utf-16-be")
    data[dyn + 0x40 : dyn + 0x240] = name + bytes(0x200 - len(name))
    for at in (0, len(data) - 512):
        footer = bytearray(data[at : at + 512])
        footer[60:64] = struct.pack(">I", 4)
        vhd_checksum(footer)
        data[at : at + 512] = footer
    out.write_bytes(bytes(data))
    return out

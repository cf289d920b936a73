"""Small disk images made with qemu-img and a few bytes of Python: no appliance needed."""

from __future__ import annotations

import subprocess
from pathlib import Path


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def raw_with_mbr(path: Path, size: int = 4 * 1024 * 1024) -> Path:
    """A raw disk holding just an MBR partition table."""
    with open(path, "wb") as handle:
        handle.truncate(size)
    subprocess.run(
        ["sfdisk", "-q", str(path)], input=b"start=2048, type=83\n", check=True, capture_output=True
    )
    return path

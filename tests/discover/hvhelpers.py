"""Domain XMLs and a scan run the way a user runs it, for the hypervisor inventory tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def domain(name: str, disks: str, extra: str = "") -> str:
    """A ``type='qemu'`` domain (software emulation) with the disks given as XML."""
    return f"""<domain type='qemu'>
  <name>{name}</name>{extra}
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>{disks}
  </devices>
</domain>
"""


def file_disk(path: Path | str, dev: str = "vda", readonly: bool = False) -> str:
    flag = "<readonly/>" if readonly else ""
    return (
        f"\n    <disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='{path}'/><target dev='{dev}' bus='virtio'/>{flag}</disk>"
    )


def block_disk(device: str, dev: str = "vda") -> str:
    return (
        f"\n    <disk type='block' device='disk'><driver name='qemu' type='raw'/>"
        f"<source dev='{device}'/><target dev='{dev}' bus='virtio'/></disk>"
    )


def volume_disk(pool: str, volume: str, dev: str = "vda") -> str:
    return (
        f"\n    <disk type='volume' device='disk'><driver name='qemu' type='raw'/>"
        f"<source pool='{pool}' volume='{volume}'/><target dev='{dev}' bus='virtio'/></disk>"
    )


def dir_pool(name: str, path: Path) -> str:
    return f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>\n"


def logical_pool(name: str, vg: str, device: str) -> str:
    return (
        f"<pool type='logical'><name>{name}</name><source><device path='{device}'/>"
        f"<name>{vg}</name><format type='lvm2'/></source>"
        f"<target><path>/dev/{vg}</path></target></pool>\n"
    )


def scan(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> tuple[int, dict[str, Any], str]:
    """``vmaudit scan ... -f json``: exit code, the report, stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "vmaudit.cli", "scan", "--format", "json", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=env,
    )
    assert done.returncode in (0, 1, 3), done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def by_vm(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {image["vm"]["name"]: image for image in report["images"] if image["vm"]["name"]}

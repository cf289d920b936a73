"""Guests with something to remediate, built without an appliance (``mke2fs -d``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.imaging import MINI_FILES, write_tree

SHADOW_LABEL = b"system_u:object_r:shadow_t:s0\0"
SHADOW_GID = 42
MALLORY_HASH = "$6$m$mallorysecret"
SHADOW = (
    "root:$6$abc$def:19000:0:99999:7:::\n"
    f"mallory:{MALLORY_HASH}:19000:0:99999:7:::\n"
    "alice:$6$x$y:19000:0:99999:7:::\n"
    "eve:$6$e$f:19000:0:99999:7:::\n"
)
SUDOERS_DROP_IN = (
    "# contractors of the 2024 migration\n"
    "Defaults:mallory !lecture\n"
    "mallory ALL=(ALL) NOPASSWD: ALL\n"
    "alice ALL=(ALL) ALL\n"
)
FILES = {
    **MINI_FILES,
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n"
    "mallory:x:1001:1001:Mallory (contractor):/home/mallory:/bin/sh\n"
    "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
    "eve:x:1002:1002:Eve:/home/eve:/bin/sh\n",
    "etc/shadow": SHADOW,
    "etc/group": "root:x:0:\nshadow:x:42:\nsudo:x:27:alice\nalice:x:1000:\nmallory:x:1001:\n"
    "eve:x:1002:\n",
    "etc/sudoers": "root ALL=(ALL:ALL) ALL\n%sudo ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n",
    "etc/sudoers.d/90-contractors": SUDOERS_DROP_IN,
    "etc/ssh/sshd_config": "Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin yes\n"
    "PasswordAuthentication yes\n",
    "etc/ssh/sshd_config.d/50-local.conf": "X11Forwarding no\n",
    "home/mallory/.ssh/authorized_keys": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM mallory@home\n",
    "home/eve/.ssh/authorized_keys": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN eve@laptop\n"
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ eve@old\n",
}
BASELINE = """\
apiVersion: vmaudit/v1
kind: Baseline
metadata:
  name: remediate-test
  description: revoked contractor, approved admins, keys and root login
accounts:
  revoked: [mallory]
  allowed_admins: [root, alice]
  forbid_authorized_keys: [eve]
ssh:
  permit_root_login: "no"
"""


def remedy_tree(root: Path, files: dict[str, str] | None = None) -> Path:
    """The guest tree: a revoked account with keys and a sudoers drop-in, a forbidden key,
    root login allowed; /etc/shadow 0640 root:shadow with an SELinux label."""
    write_tree(root, files or FILES)
    shadow = root / "etc/shadow"
    if shadow.is_file() and not shadow.is_symlink():
        os.chown(shadow, 0, SHADOW_GID)
        shadow.chmod(0o640)
        os.setxattr(shadow, "security.selinux", SHADOW_LABEL)
    return root


def baseline_file(folder: Path) -> Path:
    path = folder / "remediate-test.yaml"
    path.write_text(BASELINE)
    return path


def vmaudit(
    *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmaudit.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def run_env(tmp: Path) -> dict[str, str]:
    (tmp / "tmpdir").mkdir(exist_ok=True)
    return {
        **os.environ,
        "TMPDIR": str(tmp / "tmpdir"),
        "LIBGUESTFS_CACHEDIR": os.environ.get("LIBGUESTFS_CACHEDIR", "/var/tmp"),
        "XDG_STATE_HOME": str(tmp / "state"),
    }


def guestfs_handle(disks: list[Path], work: Path, formats: list[str] | None = None) -> Any:
    """A launched handle over private overlays of ``disks`` (qcow2 unless ``formats`` say
    otherwise), the format of each disk pinned."""
    import guestfs

    handle = guestfs.GuestFS(python_return_dict=True, close_on_exit=False)
    handle.set_backend("direct")
    handle.set_backend_settings(["force_tcg"])
    handle.set_network(False)
    for index, disk in enumerate(disks):
        mine = work / f"check{index}.qcow2"
        fmt = formats[index] if formats else "qcow2"
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                fmt,
                "-b",
                str(disk.resolve()),
                str(mine),
            ],
            check=True,
            capture_output=True,
        )
        handle.add_drive_opts(str(mine), format="qcow2", readonly=False)
    handle.launch()
    return handle

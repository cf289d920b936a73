"""A private libvirtd for tests: started as root in the foreground, in its own mount namespace.

Its /etc/libvirt, /run, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt are
folders of the test, so the host's libvirt (if any) is not touched; ``stop`` destroys every
running domain and stops the daemon. Used by the power-on gate's tests and the libvirt
inventory's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

LIBVIRTD = shutil.which("libvirtd") or "/usr/sbin/libvirtd"

QEMU_CONF = """user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
"""

NAMESPACE = """set -e
mount --make-rprivate /
mount --bind "$ROOT/etc-libvirt" /etc/libvirt
mount -t tmpfs tmpfs /run
for d in lib cache log; do mount --bind "$ROOT/var-$d" "/var/$d/libvirt"; done
exec "$LIBVIRTD" -f /etc/libvirt/libvirtd.conf
"""


class Libvirt:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = f"qemu:///system?socket={root / 'sock' / 'libvirt-sock'}"
        self.hooks_dir = root / "etc-libvirt" / "hooks"
        self.process: subprocess.Popen[bytes] | None = None

    def virsh(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["virsh", "-c", self.uri, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> None:
        log = (self.root / "libvirtd.log").open("wb")
        self.process = subprocess.Popen(
            ["unshare", "--mount", "sh", "-c", NAMESPACE],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ROOT": str(self.root), "LIBVIRTD": LIBVIRTD},
        )
        deadline = time.monotonic() + 60
        while self.virsh("list", "--all", timeout=30).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.root / "libvirtd.log").read_text()[-2000:])
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None:
            return
        for line in self.virsh("list", "--name").stdout.split():
            self.virsh("destroy", line)
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def private_libvirt(root: Path) -> Libvirt:
    etc = root / "etc-libvirt"
    shutil.copytree(
        "/etc/libvirt",
        etc,
        symlinks=True,
        ignore=shutil.ignore_patterns("hooks", "qemu", "storage", "secrets"),
    )
    (etc / "hooks").mkdir()
    (etc / "qemu").mkdir()
    for folder in ("sock", "var-lib", "var-cache", "var-log"):
        (root / folder).mkdir()
    (etc / "libvirtd.conf").write_text(
        f'unix_sock_dir = "{root / "sock"}"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\n'
    )
    (etc / "qemu.conf").write_text(QEMU_CONF)
    return Libvirt(root)


def usable() -> bool:
    """Whether a private libvirtd can be started here (root, Debian's libvirt installed)."""
    return os.path.exists(LIBVIRTD) and shutil.which("virsh") is not None and os.geteuid() == 0

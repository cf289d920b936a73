"""The gate installed in a real libvirtd: ``virsh start`` refused with vmaudit's reason.

The test starts its own libvirtd as root in the foreground, in a private mount namespace
whose /etc/libvirt, /run, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt are
folders of the test: the host's libvirt (if any) is not touched, and the daemon is stopped
at the end. The domains are ``type='qemu'`` (software emulation); their disks have facts
cached in the state database, so no appliance starts.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.act.gatehelpers import (
    COMPLIANT,
    OUT_OF_BASELINE,
    build_image,
    cache_facts,
    vmaudit_gate,
    write_policy,
)
from tests.imaging import fingerprint
from tests.libvirtd import LIBVIRTD, Libvirt, private_libvirt
from vmaudit.state import StateDB

pytestmark = pytest.mark.skipif(
    not (os.path.exists(LIBVIRTD) and shutil.which("virsh") and os.geteuid() == 0),
    reason="needs root and Debian's libvirt-daemon-system and libvirt-clients",
)


def domain(name: str, disk: Path) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, object]]:
    store = tmp_path / "images"
    bad, bad_tree = build_image(store, "legacy.img", OUT_OF_BASELINE)
    good, good_tree = build_image(store, "clean.img", COMPLIANT)
    state = tmp_path / "state.db"
    cache_facts(state, bad, bad_tree)
    cache_facts(state, good, good_tree)
    policy = write_policy(tmp_path / "gate.yaml", [store], state)
    (tmp_path / "libvirt").mkdir()
    libvirt = private_libvirt(tmp_path / "libvirt")
    # An unrelated hook of the site's own, which the install must keep.
    other = libvirt.hooks_dir / "qemu.d" / "site-hook"
    other.parent.mkdir(parents=True)
    other.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "site-hook.log"}\ncat >/dev/null\n')
    other.chmod(0o755)
    installed = vmaudit_gate(
        "install", "libvirt", "--policy", str(policy), "--hooks-dir", str(libvirt.hooks_dir)
    )
    assert installed.returncode == 0, installed.stderr
    libvirt.start()  # libvirt looks for hook scripts when it starts
    try:
        for name, disk in (("legacy", bad), ("clean", good)):
            xml = tmp_path / f"{name}.xml"
            xml.write_text(domain(name, disk))
            defined = libvirt.virsh("define", str(xml))
            assert defined.returncode == 0, defined.stderr
        yield {
            "libvirt": libvirt,
            "state": state,
            "store": store,
            "bad": bad,
            "good": good,
            "site_log": tmp_path / "site-hook.log",
        }
    finally:
        libvirt.stop()


def test_virsh_start_of_an_out_of_baseline_vm_fails_with_vmaudits_reason(
    site: dict[str, object],
) -> None:
    libvirt = site["libvirt"]
    assert isinstance(libvirt, Libvirt)
    store = site["store"]
    assert isinstance(store, Path)
    before = fingerprint(store)
    started = time.monotonic()
    refused = libvirt.virsh("start", "legacy")
    assert refused.returncode == 1
    assert "Hook script execution failed" in refused.stderr
    assert (
        "vmaudit gate: refused legacy: 1 finding(s) at or above critical: "
        "account.extra-uid0 (toor) (cached facts)" in refused.stderr
    )
    assert time.monotonic() - started < 30
    assert libvirt.virsh("domstate", "legacy").stdout.strip() == "shut off"
    assert fingerprint(store) == before  # the hook never writes to a disk image

    # libvirt is not left locked: the other domain starts at once, and stops
    allowed = libvirt.virsh("start", "clean")
    assert allowed.returncode == 0, allowed.stderr
    assert libvirt.virsh("domstate", "clean").stdout.strip() == "running"
    assert libvirt.virsh("destroy", "clean").returncode == 0

    with StateDB(Path(str(site["state"]))) as db:
        decisions = [(d.domain, d.decision, d.source) for d in db.power_ons()]
    assert decisions == [("legacy", "refuse", "libvirt"), ("clean", "allow", "libvirt")]
    # the site's own hook still ran, for every call, beside ours
    calls = Path(str(site["site_log"])).read_text().splitlines()
    assert "legacy prepare begin -" in calls and "clean started begin -" in calls
    assert "clean release end -" in calls


def test_install_is_idempotent_and_uninstall_removes_only_its_own(
    site: dict[str, object],
    tmp_path: Path,
) -> None:
    libvirt = site["libvirt"]
    assert isinstance(libvirt, Libvirt)
    hooks = libvirt.hooks_dir
    again = vmaudit_gate(
        "install", "libvirt", "--policy", str(tmp_path / "gate.yaml"), "--hooks-dir", str(hooks)
    )
    assert again.returncode == 0 and b"already installed" in again.stdout
    assert sorted(p.name for p in (hooks / "qemu.d").iterdir()) == ["site-hook", "vmaudit"]
    removed = vmaudit_gate("uninstall", "libvirt", "--hooks-dir", str(hooks))
    assert removed.returncode == 0
    assert sorted(p.name for p in (hooks / "qemu.d").iterdir()) == ["site-hook"]
    # A file of someone else's under our name is never overwritten or removed.
    (hooks / "qemu.d" / "vmaudit").write_text("#!/bin/sh\nexit 0\n")
    clash = vmaudit_gate("install", "libvirt", "--hooks-dir", str(hooks))
    assert clash.returncode == 2 and b"is not vmaudit's hook" in clash.stderr
    assert vmaudit_gate("uninstall", "libvirt", "--hooks-dir", str(hooks)).returncode == 2
    assert (hooks / "qemu.d" / "vmaudit").read_text() == "#!/bin/sh\nexit 0\n"

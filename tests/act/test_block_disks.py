"""The gate on block disks: a device inside the policy's datastores is decided like a file.

Real loop devices over small raw disks; their facts are cached under the devices' own
identities (device, size, head hash), so the decisions come from cache, no appliance. A
libvirt ``<disk type='block'>`` and a Proxmox disk given as a device path are both decided;
a device outside the datastores gets ``on_error``; nothing is written to the devices.
"""

from __future__ import annotations

import hashlib
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
from tests.discover.hvhelpers import block_disk, domain
from tests.loopdev import loop_device, usable

pytestmark = pytest.mark.skipif(not usable(), reason="needs root and losetup")


def _sha(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@pytest.fixture
def devices(tmp_path: Path) -> Iterator[dict[str, object]]:
    bad_file, bad_tree = build_image(tmp_path / "disks", "bad.raw", OUT_OF_BASELINE)
    good_file, good_tree = build_image(tmp_path / "disks", "good.raw", COMPLIANT)
    state = tmp_path / "state.db"
    with loop_device(bad_file) as bad, loop_device(good_file) as good:
        cache_facts(state, Path(bad), bad_tree)
        cache_facts(state, Path(good), good_tree)
        policy = write_policy(tmp_path / "gate.yaml", [Path(bad), Path(good)], state)
        yield {"bad": bad, "good": good, "policy": policy, "tmp": tmp_path}


def _hook(policy: object, name: str, xml: str) -> tuple[int, str]:
    done = vmaudit_gate(
        "libvirt", "--policy", str(policy), name, "prepare", "begin", "-", stdin=xml.encode()
    )
    return done.returncode, done.stderr.decode()


def test_a_libvirt_block_disk_is_decided_from_its_cached_facts(
    devices: dict[str, object],
) -> None:
    bad, good = str(devices["bad"]), str(devices["good"])
    before = (_sha(bad), _sha(good))
    code, err = _hook(devices["policy"], "legacy", domain("legacy", block_disk(bad)))
    assert code == 1
    assert "refused legacy:" in err and "account.extra-uid0 (toor) (cached facts)" in err
    code, err = _hook(devices["policy"], "clean", domain("clean", block_disk(good)))
    assert code == 0, err
    assert (_sha(bad), _sha(good)) == before


def test_a_proxmox_disk_on_a_device_is_decided_and_one_outside_refused(
    devices: dict[str, object],
) -> None:
    tmp = Path(str(devices["tmp"]))
    pve = tmp / "pve"
    (pve / "qemu-server").mkdir(parents=True)
    (pve / "storage.cfg").write_text(f"dir: local\n\tpath {tmp}/vz\n\tcontent images\n")
    (pve / "qemu-server" / "201.conf").write_text(f"name: dev-ok\nscsi0: {devices['good']}\n")
    (pve / "qemu-server" / "202.conf").write_text("name: dev-out\nscsi0: /dev/zero\n")

    def hookscript(vmid: str) -> tuple[int, str]:
        done = vmaudit_gate(
            "proxmox",
            "--policy",
            str(devices["policy"]),
            "--pve-dir",
            str(pve),
            vmid,
            "pre-start",
        )
        return done.returncode, done.stderr.decode()

    assert hookscript("201")[0] == 0
    code, err = hookscript("202")
    assert code == 1 and "scsi0: /dev/zero is outside the allowed datastores" in err


def test_gate_check_takes_a_block_device(devices: dict[str, object]) -> None:
    done = vmaudit_gate("check", "--policy", str(devices["policy"]), str(devices["bad"]))
    assert done.returncode == 1
    assert "account.extra-uid0 (toor) (cached facts)" in done.stdout.decode()

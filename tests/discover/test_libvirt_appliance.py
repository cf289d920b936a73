"""The one appliance test of the hypervisor inventories: a libvirt domain's file disk and a
block disk (a logical volume where device-mapper exists, else a loop device) audited for
real, read-only, in one appliance.

The block disk holds a sample image of the datastore (``web-01``), copied with
``qemu-img convert``; the file disk is a small raw disk built from a literal tree. The scan
opens both through our overlays (``host_device`` for the device) and reads their guests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.build import build_datastore
from tests.act.gatehelpers import OUT_OF_BASELINE, build_image
from tests.discover.hvhelpers import block_disk, by_vm, dir_pool, domain, file_disk, scan
from tests.imaging import fingerprint
from tests.libvirtd import Libvirt, private_libvirt
from tests.libvirtd import usable as libvirtd_usable
from tests.loopdev import dm_available, loop_device, run, volume_group

REPO = Path(__file__).resolve().parents[2]
DATASTORE = REPO / "build" / "datastore"
VG = "vmauditappvg"

pytestmark = [
    pytest.mark.appliance,
    pytest.mark.skipif(not libvirtd_usable(), reason="needs root and Debian's libvirt"),
]


def _digest(backing: Path) -> tuple[str, int]:
    """The file under the block device (its PV or its loop device): bytes and mtime.

    Read from the file, not the device (a loop device reads ten times slower); a write
    through the device would change both.
    """
    hasher = hashlib.sha256()
    with open(backing, "rb") as handle:
        while chunk := handle.read(8 << 20):
            hasher.update(chunk)
    return hasher.hexdigest(), backing.stat().st_mtime_ns


@pytest.fixture
def block(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A block device for the sample image (an LV on a loop-device VG, else a loop device)
    and the file under it."""
    if dm_available():
        backing = tmp_path / "pv.img"
        with volume_group(backing, VG, size_mb=1200):
            try:
                made = run("lvcreate", "-q", "-y", "-L", "1G", "-n", "web01", VG)
                assert made.returncode == 0, made.stderr
                yield f"/dev/{VG}/web01", backing
            finally:
                run("lvremove", "-q", "-f", "-y", VG)
        return
    backing = tmp_path / "blockdisk.img"
    with open(backing, "wb") as handle:
        handle.truncate(1 << 30)
    with loop_device(backing) as device:
        yield device, backing


@pytest.fixture(scope="module")
def sample() -> Path:
    """The sample datastore's web-01 (built, or taken from the builder's cache)."""
    build_datastore(DATASTORE)
    return DATASTORE / "web-01" / "web-01.qcow2"


@pytest.fixture
def site(tmp_path: Path, block: tuple[str, Path], sample: Path) -> Iterator[dict[str, Any]]:
    device, backing = block
    copied = run("qemu-img", "convert", "-n", "-f", "qcow2", "-O", "raw", str(sample), device)
    assert copied.returncode == 0, copied.stderr
    store = tmp_path / "images"
    legacy, _tree = build_image(store, "legacy.img", OUT_OF_BASELINE)
    (tmp_path / "libvirt").mkdir()
    libvirt = private_libvirt(tmp_path / "libvirt")
    libvirt.start()
    try:
        xml = tmp_path / "pool.xml"
        xml.write_text(dir_pool("images", store))
        for args in (("pool-define", str(xml)), ("pool-start", "images")):
            assert libvirt.virsh(*args).returncode == 0
        for name, disks in (("legacy", file_disk(legacy)), ("web-01", block_disk(device))):
            path = tmp_path / f"{name}.xml"
            path.write_text(domain(name, disks))
            assert libvirt.virsh("define", str(path)).returncode == 0
        yield {
            "libvirt": libvirt,
            "store": store,
            "block": device,
            "backing": backing,
            "tmp": tmp_path,
        }
    finally:
        libvirt.stop()


def test_a_file_disk_and_a_block_disk_of_libvirt_domains_are_audited(
    site: dict[str, Any],
) -> None:
    libvirt: Libvirt = site["libvirt"]
    run("sync")  # the copy's pages on the backing file before its mtime is taken
    before = (fingerprint(site["store"]), _digest(site["backing"]))
    code, report, err = scan(
        "--libvirt",
        libvirt.uri,
        site["block"],  # the device given as a PATH: allowed for the domain that names it
        "--state",
        str(site["tmp"] / "state.db"),
        "--feeds-db",
        str(site["tmp"] / "no-feeds.db"),
        "--jobs",
        "1",
        "--batch",
        "2",  # one appliance for both guests
        "--fail-on",
        "critical",
        timeout=900,
    )
    assert code == 1, err  # legacy's second uid 0 account is critical
    guests = by_vm(report)
    web, legacy = guests["web-01"], guests["legacy"]
    assert web["status"] == "audited", web["error"]
    assert web["path"] == site["block"] and web["format"] == "raw" and not web["from_cache"]
    assert web["os"]["hostname"] == "web-01" and web["os"]["distro"] == "debian"
    assert web["vm"] == {
        "name": "web-01",
        "source": "libvirt",
        "template": False,
        "state": "shut off",
    }
    assert legacy["status"] == "audited" and legacy["vm"]["state"] == "shut off"
    assert any(f["rule"] == "account.extra-uid0" for f in legacy["findings"])
    assert (fingerprint(site["store"]), _digest(site["backing"])) == before  # read-only

"""``vmaudit scan --libvirt URI`` against a real libvirtd started by the test.

The daemon (tests/libvirtd.py) holds a ``dir`` pool and a ``logical`` pool whose volume
group lies on a loop device; domains are defined shut off, one is running (``type='qemu'``,
software emulation, destroyed at the end). The guests' facts are cached in the state
database under their disks' real identities, so no appliance starts: the scan lists the
domains read-only, names them, checks every disk (a file in the pool, a loop device given as
a PATH, a logical volume) and judges the cached facts. Bad disks (outside the datastores, a
symlink to a device) are error rows and the scan goes on; nothing is written to libvirt.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.act.gatehelpers import COMPLIANT, OUT_OF_BASELINE, build_image, cache_facts
from tests.discover.hvhelpers import (
    block_disk,
    by_vm,
    dir_pool,
    domain,
    file_disk,
    logical_pool,
    scan,
    volume_disk,
)
from tests.imaging import fingerprint
from tests.libvirtd import Libvirt, private_libvirt
from tests.libvirtd import usable as libvirtd_usable
from tests.loopdev import dm_available, loop_device, run, volume_group
from vmaudit.discover.libvirt import list_domains
from vmaudit.errors import ErrorKind, VmauditError

pytestmark = pytest.mark.skipif(
    not libvirtd_usable(), reason="needs root and Debian's libvirt-daemon-system"
)

VG = "vmauditinvvg"
METADATA = (
    "\n  <title>Payroll database</title>"
    "\n  <description>dormant since the 2024 migration</description>"
    "\n  <metadata><app:business xmlns:app='https://example.org/business'>"
    "<app:application>payroll</app:application><app:owner>finance-it</app:owner>"
    "</app:business></metadata>"
)
INVENTORY = """apiVersion: vmaudit/v1
kind: Inventory
applications:
  - name: payroll
    owner: finance-it
    criticality: critical
    match: {metadata: {application: payroll}}
  - name: web
    match: [{name: "web-*", source: libvirt}]
"""


def _define(libvirt: Libvirt, folder: Path, name: str, xml: str) -> None:
    path = folder / f"{name}.xml"
    path.write_text(xml)
    done = libvirt.virsh("define", str(path))
    assert done.returncode == 0, done.stderr


def _pool(libvirt: Libvirt, folder: Path, name: str, xml: str) -> None:
    path = folder / f"pool-{name}.xml"
    path.write_text(xml)
    for args in (("pool-define", str(path)), ("pool-start", name)):
        done = libvirt.virsh(*args)
        assert done.returncode == 0, done.stderr


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    store = tmp_path / "images"
    legacy, legacy_tree = build_image(store, "legacy.img", OUT_OF_BASELINE)
    web, web_tree = build_image(store, "web.img", COMPLIANT)
    blockfile, block_tree = build_image(tmp_path / "blockdisks", "vm.raw", COMPLIANT)
    state = tmp_path / "state.db"
    cache_facts(state, legacy, legacy_tree)
    cache_facts(state, web, web_tree)
    (tmp_path / "libvirt").mkdir()
    libvirt = private_libvirt(tmp_path / "libvirt")
    with (
        loop_device(blockfile, read_only=True) as loop,
        volume_group(tmp_path / "pv.img", VG) as pv,
    ):
        cache_facts(state, Path(loop), block_tree)  # the block disk's facts, by its identity
        os.symlink(loop, store / "alias.img")  # a pool file that is a link to a device
        lv = None
        if dm_available():  # an LV to audit: the compliant image copied into it
            made = run("lvcreate", "-q", "-y", "-L", "16M", "-n", "lv1", VG)
            assert made.returncode == 0, made.stderr
            lv = f"/dev/{VG}/lv1"
            copied = run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(blockfile), lv)
            assert copied.returncode == 0, copied.stderr
            cache_facts(state, Path(lv), block_tree)
        libvirt.start()
        try:
            _pool(libvirt, tmp_path, "images", dir_pool("images", store))
            _pool(libvirt, tmp_path, "lvpool", logical_pool("lvpool", VG, pv))
            _define(
                libvirt,
                tmp_path,
                "legacy-payroll",
                domain("legacy-payroll", volume_disk("images", "legacy.img"), METADATA),
            )
            _define(libvirt, tmp_path, "web-01", domain("web-01", file_disk(web, readonly=True)))
            _define(libvirt, tmp_path, "blockvm", domain("blockvm", block_disk(loop)))
            _define(libvirt, tmp_path, "lvvm", domain("lvvm", volume_disk("lvpool", "lv1")))
            _define(libvirt, tmp_path, "outside", domain("outside", file_disk("/etc/hostname")))
            _define(libvirt, tmp_path, "aliased", domain("aliased", file_disk(store / "alias.img")))
            started = libvirt.virsh("start", "web-01")
            assert started.returncode == 0, started.stderr
            yield {
                "libvirt": libvirt,
                "state": state,
                "store": store,
                "loop": loop,
                "lv": lv,
                "tmp": tmp_path,
            }
        finally:
            libvirt.stop()
            run("lvremove", "-q", "-f", "-y", VG)


def test_a_libvirt_inventory_is_scanned_read_only_by_domain(site: dict[str, Any]) -> None:
    libvirt: Libvirt = site["libvirt"]
    tmp: Path = site["tmp"]
    inventory = tmp / "inventory.yaml"
    inventory.write_text(INVENTORY)
    definitions = {
        n: libvirt.virsh("dumpxml", "--inactive", n).stdout for n in ("legacy-payroll", "lvvm")
    }
    before = fingerprint(site["store"])
    code, report, err = scan(
        "--libvirt",
        libvirt.uri,
        site["loop"],  # a block device given as a PATH: allowed, and the domain's row
        "--state",
        str(site["state"]),
        "-i",
        str(inventory),
        "--feeds-db",
        str(tmp / "no-feeds.db"),
    )
    assert code == 1, err  # legacy-payroll has a second uid 0 account
    guests = by_vm(report)
    assert set(guests) == {"legacy-payroll", "web-01", "blockvm", "lvvm", "outside", "aliased"}
    legacy = guests["legacy-payroll"]
    assert legacy["vm"] == {
        "name": "legacy-payroll",
        "source": "libvirt",
        "template": False,
        "state": "shut off",
    }
    assert legacy["path"] == str(site["store"] / "legacy.img")  # the pool volume, resolved
    assert legacy["from_cache"] and legacy["business"]["application"] == "payroll"
    assert legacy["business"]["criticality"] == "critical"
    assert any(f["rule"] == "account.extra-uid0" for f in legacy["findings"])
    web = guests["web-01"]
    assert web["vm"]["state"] == "running" and web["in_use"] is True
    assert web["business"]["application"] == "web" and web["status"] == "audited"
    block = guests["blockvm"]
    assert block["path"] == site["loop"] and block["status"] == "audited" and block["from_cache"]
    assert block["vm"]["state"] == "shut off"
    assert len([i for i in report["images"] if i["path"] == site["loop"]]) == 1  # not twice
    outside = guests["outside"]
    assert outside["status"] == "error" and outside["error"]["kind"] == "outside-datastore"
    assert "/etc/hostname is outside the allowed datastores" in outside["error"]["message"]
    aliased = guests["aliased"]
    assert aliased["error"]["kind"] == "not-a-regular-file"
    lvvm = guests["lvvm"]
    if site["lv"] is not None:
        assert lvvm["path"] == site["lv"] and lvvm["status"] == "audited" and lvvm["from_cache"]
    else:  # no device-mapper on this host: the VG exists, its LV cannot: an error row
        assert lvvm["status"] == "error" and f"/dev/{VG}/lv1" in lvvm["error"]["message"]
    # nothing was written to libvirt or to a disk
    after = {n: libvirt.virsh("dumpxml", "--inactive", n).stdout for n in definitions}
    assert after == definitions
    assert libvirt.virsh("domstate", "legacy-payroll").stdout.strip() == "shut off"
    assert fingerprint(site["store"]) == before


def test_the_listing_names_states_pools_and_metadata(site: dict[str, Any]) -> None:
    listing = list_domains(site["libvirt"].uri, timeout=30)
    guests = {g.name: g for g in listing.guests}
    assert guests["web-01"].state == "running" and guests["web-01"].in_use
    legacy = guests["legacy-payroll"]
    assert legacy.state == "shut off" and not legacy.in_use
    assert legacy.notes == "Payroll database dormant since the 2024 migration"
    assert ("application", "payroll") in legacy.labels and ("owner", "finance-it") in legacy.labels
    assert {(p.name, p.type, p.root) for p in listing.pools} == {
        ("images", "dir", str(site["store"])),
        ("lvpool", "logical", f"/dev/{VG}"),
    }
    assert guests["lvvm"].disks[0].path == f"/dev/{VG}/lv1"
    assert guests["lvvm"].disks[0].kind == "block"


def test_a_libvirt_uri_that_does_not_answer_is_an_error_after_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX) as silent:
        silent.bind(str(path))
        silent.listen(1)  # accepts the connection, never answers
        started = time.monotonic()
        with pytest.raises(VmauditError) as caught:
            list_domains(f"qemu:///system?socket={path}", timeout=2)
        assert caught.value.kind is ErrorKind.HYPERVISOR_UNREACHABLE
        assert "no answer within 2 s" in caught.value.message
        assert time.monotonic() - started < 10

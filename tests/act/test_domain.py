"""Domain XML and Proxmox configurations read as hostile input."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmaudit.act.domain import MAX_XML_BYTES, DiskSpec, domain_disks
from vmaudit.act.proxmox import vm_disks

DOMAIN = b"""<domain type='qemu'>
  <name>web01</name>
  <uuid>0b0c3a0e-2d6f-4bb5-a0ff-3a9d2d1e4c11</uuid>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/web01.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <source dev='/dev/vg0/web01-data'/><target dev='vdb'/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='pool/web01-logs'/><target dev='vdc'/>
    </disk>
    <disk type='volume' device='disk'>
      <source pool='default' volume='web01-extra.qcow2'/><target dev='vdd'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/var/lib/libvirt/images/debian.iso'/><target dev='sda'/>
    </disk>
  </devices>
</domain>"""


def test_every_kind_of_disk_is_described_and_media_are_not_disks(tmp_path: Path) -> None:
    guest = domain_disks(DOMAIN, str(tmp_path))  # a storage folder without the pool
    assert guest.problem is None
    assert (guest.name, guest.uuid) == ("web01", "0b0c3a0e-2d6f-4bb5-a0ff-3a9d2d1e4c11")
    assert guest.disks == (
        DiskSpec("vda", "file", "/var/lib/libvirt/images/web01.qcow2", "", "qcow2"),
        DiskSpec("vdb", "block", "/dev/vg0/web01-data"),
        DiskSpec("vdc", "network", None, "rbd pool/web01-logs"),
        DiskSpec(
            "vdd", "volume", None, "volume default/web01-extra.qcow2: pool 'default' is not defined"
        ),
    )


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"this is not xml", "not well-formed XML"),
        (b"<domain><name>x</name>", "not well-formed XML"),
        (b"<network><name>x</name></network>", "root element is <network>"),
        (
            b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            b"<domain><name>&b;</name></domain>",
            "a DOCTYPE refused",
        ),
        (
            b'<!DOCTYPE d SYSTEM "file:///etc/passwd"><domain/>',
            "a DOCTYPE refused",
        ),
        (b"<domain>" + b"<a>" * 100 + b"</a>" * 100 + b"</domain>", "nested deeper than 64"),
        (b"<domain>" + b" " * MAX_XML_BYTES + b"</domain>", "larger than"),
    ],
)
def test_unreadable_xml_is_a_problem_never_an_exception(data: bytes, problem: str) -> None:
    guest = domain_disks(data)
    assert guest.disks == ()
    assert guest.problem is not None and problem in guest.problem


def test_a_domain_without_devices_names_no_disk() -> None:
    guest = domain_disks(b"<domain type='qemu'><name>empty</name></domain>")
    assert guest.problem is None and guest.name == "empty" and guest.disks == ()


STORAGE = """dir: local
\tpath /var/lib/vz
\tcontent iso,vztmpl,backup,images

lvmthin: local-lvm
\tthinpool data
\tvgname pve
\tcontent rootdir,images

rbd: ceph
\tpool vms
\tcontent images

nfs: shared
\tserver 192.0.2.10
\texport /exports/vms
\tcontent images
"""

VM_CONF = """boot: order=scsi0
name: payroll-db
scsi0: local:101/vm-101-disk-0.qcow2,size=8G
scsi1: local-lvm:vm-101-disk-1,size=4G
virtio0: ceph:vm-101-disk-2,size=4G
sata0: shared:101/vm-101-disk-3.raw,size=1G
ide2: local:iso/debian-12.iso,media=cdrom
unused0: local:101/vm-101-disk-9.qcow2
efidisk0: /srv/disks/efi.raw,size=4M
scsi5: local:101/../../../etc/shadow

[before-upgrade]
scsi0: local:101/vm-101-old.qcow2
"""


def test_proxmox_disks_from_the_vm_config_and_directory_storages(tmp_path: Path) -> None:
    (tmp_path / "qemu-server").mkdir()
    (tmp_path / "storage.cfg").write_text(STORAGE)
    (tmp_path / "qemu-server" / "101.conf").write_text(VM_CONF)
    guest = vm_disks("101", str(tmp_path))
    assert guest.problem is None and guest.name == "payroll-db"
    assert guest.disks == (
        DiskSpec("scsi0", "file", "/var/lib/vz/images/101/vm-101-disk-0.qcow2", "", "qcow2"),
        DiskSpec(
            "scsi1",
            "block",
            "/dev/pve/vm-101-disk-1",
            "lvmthin storage local-lvm: vm-101-disk-1",
            "raw",
        ),
        DiskSpec("virtio0", "network", None, "rbd storage ceph: vm-101-disk-2"),
        DiskSpec("sata0", "file", "/mnt/pve/shared/images/101/vm-101-disk-3.raw", "", "raw"),
        DiskSpec("efidisk0", "file", "/srv/disks/efi.raw"),
        DiskSpec("scsi5", "unknown", None, "volume name '101/../../../etc/shadow' refused"),
    )


def test_a_proxmox_vm_id_must_be_a_number_and_its_config_must_exist(tmp_path: Path) -> None:
    assert "not a Proxmox VM id" in str(vm_disks("../../etc/passwd", str(tmp_path)).problem)
    missing = vm_disks("999", str(tmp_path))
    assert missing.disks == () and "999.conf" in str(missing.problem)

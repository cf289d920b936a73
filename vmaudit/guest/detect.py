"""Finding each image's Linux or Windows root in a launched appliance, cheaply.

libguestfs's ``inspect_os()`` reads far more than an audit needs and, in software emulation,
costs more than the launch (measured on six sample guests in one appliance: 84 s for
inspection against about 10 s for this). Here: list the devices, their filesystem types, md
arrays and LVM volumes once; mount each candidate filesystem read-only at ``/`` just long
enough to see whether it holds ``/etc/fstab`` (or ``os-release``) or
``/Windows/System32/config``; then resolve the root's ``/etc/fstab`` (UUID=, LABEL=, LVM, md
and ``/dev/sdXN`` names) against the filesystems of the same image only, and find the /usr
of a root whose os-release links into a /usr that no fstab line mounts (CoreOS, Flatcar).
Every device is tied to the drive, hence the image, it lives on (an md array or a volume
group to all its members' drives), so that images sharing an appliance never mount each
other's filesystems. Device names are only ever passed in, never read back from libguestfs
1.48 outputs that may give the appliance's own (``pvs_full``, ``md_stat``).
"""

from __future__ import annotations

import posixpath
import re
import struct
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from vmaudit.guest.sniff import HEAD_BYTES, sniff_fs_type, sniff_ids

ROOT_FS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "ntfs", "jfs", "reiserfs"}
ENCRYPTED_FS = {"crypto_LUKS", "BitLocker"}
FSTAB_CAP = 256 * 1024
_WHOLE_DISK = re.compile(r"^(/dev/(?:sd|vd|hd|xvd)[a-z]+)(\d+)$")
_GUEST_MD = re.compile(r"^/dev/md/?([A-Za-z0-9_.-]+)$")
USR_LABELS = ("USR-A", "USR-B")
GPT_MAX_ENTRIES = 256
_GUEST_DISK = re.compile(r"^/dev/(?:sd|vd|hd|xvd)([a-z]+)(\d*)$")
_SKIPPED_MOUNTS = (
    "swap",
    "none",
    "proc",
    "sysfs",
    "tmpfs",
    "devpts",
    "devtmpfs",
    "nfs",
    "nfs4",
    "cifs",
    "smbfs",
    "autofs",
    "cgroup",
    "cgroup2",
    "overlay",
    "fuse",
    "squashfs",
    "iso9660",
    "udf",
    "bind",
    "efivarfs",
    "securityfs",
    "debugfs",
)


@dataclass
class Layout:
    """The appliance's block devices: which drive each lives on, and what it holds."""

    drive_of: dict[str, int] = field(default_factory=dict)  # device -> drive index
    whole: dict[int, str] = field(default_factory=dict)  # drive index -> /dev/sdX
    fs_types: dict[str, str] = field(default_factory=dict)  # device -> filesystem type
    lvs: dict[str, str] = field(default_factory=dict)  # /dev/VG/LV -> VG
    vg_drives: dict[str, set[int]] = field(default_factory=dict)  # VG -> drives of its PVs
    md_drives: dict[str, set[int]] = field(default_factory=dict)  # /dev/mdN -> its members'
    md_names: dict[str, str] = field(default_factory=dict)  # /dev/mdN -> name ("boot", "0")
    orphan_pvs: set[str] = field(default_factory=set)  # PVs in no active VG (a clone's twin)
    ids: dict[str, tuple[str, str]] = field(default_factory=dict)  # device -> (UUID, label)

    def drives_of(self, device: str) -> set[int]:
        """Every drive ``device`` stands on: its members' for an md array."""
        if device in self.md_drives:
            return self.md_drives[device]
        return {self.drive_of[device]} if device in self.drive_of else set()


def _call(handle: Any, name: str, *args: Any, default: Any = None) -> Any:
    try:
        return getattr(handle, name)(*args)
    except (RuntimeError, UnicodeError):
        return default


def survey(handle: Any) -> Layout:
    """Devices, partitions, LVM volumes and filesystem types, each tied to its drive."""
    layout = Layout()
    partitions = _tie_devices_to_drives(handle, layout)
    with_partitions = {layout.drive_of[p] for p in partitions if p in layout.drive_of}
    raw = [*partitions, *(dev for i, dev in layout.whole.items() if i not in with_partitions)]
    # Superblocks read from the devices' heads, not blkid (a process in the appliance, dear
    # in software emulation), unless an md array was assembled: its members may keep their
    # RAID superblock at the end, where the head cannot show it.
    sniff = not _call(handle, "list_md_devices", default=[])
    _record_fs_types(handle, layout, raw, sniff)
    _tie_arrays_to_drives(handle, layout)
    _record_fs_types(handle, layout, list(layout.md_drives), sniff)
    if "LVM2_member" in layout.fs_types.values():
        _tie_volumes_to_drives(handle, layout)
        _record_fs_types(handle, layout, list(layout.lvs), sniff)
    return layout


def _tie_devices_to_drives(handle: Any, layout: Layout) -> list[str]:
    """Whole disks and partitions by drive index; returns the partitions."""
    for device in _call(handle, "list_devices", default=[]) or []:
        index = _call(handle, "device_index", device)
        if isinstance(index, int):
            layout.whole[index] = device
            layout.drive_of[device] = index
    partitions: list[str] = _call(handle, "list_partitions", default=[]) or []
    for partition in partitions:
        match = _WHOLE_DISK.match(partition)
        parent = match.group(1) if match else _call(handle, "part_to_dev", partition)
        if parent in layout.drive_of:
            layout.drive_of[partition] = layout.drive_of[parent]
    return partitions


def _record_fs_types(
    handle: Any, layout: Layout, devices: Sequence[str], sniff: bool = False
) -> None:
    for device in devices:
        fs_type = None
        if sniff:
            head = _call(handle, "pread_device", device, HEAD_BYTES, 0, default=b"")
            fs_type = sniff_fs_type(head) if isinstance(head, bytes) else None
            ids = sniff_ids(head, fs_type) if fs_type else None
            if ids is not None:
                layout.ids[device] = ids
        fs_type = fs_type or _call(handle, "vfs_type", device)
        if fs_type:
            layout.fs_types[device] = fs_type


def _tie_arrays_to_drives(handle: Any, layout: Layout) -> None:
    """Each md array the appliance assembled, tied to the drives of its members.

    Members are the ``linux_raid_member`` devices we already know whose array UUID
    (``vfs_uuid``) is the array's (``md_detail``): both calls take our device names, while
    the member names that ``md_detail`` and ``md_stat`` give back are the appliance's own.
    An array whose UUID is also on another image's disks (a clone beside its original) is
    tied to all their drives, so that inspect_roots sees it span images.
    """
    members_of_uuid: dict[str, list[str]] = {}
    for device, fs_type in layout.fs_types.items():
        if fs_type == "linux_raid_member":
            uuid = _call(handle, "vfs_uuid", device)
            if isinstance(uuid, str) and _bare_uuid(uuid):
                members_of_uuid.setdefault(_bare_uuid(uuid), []).append(device)
    for md in _call(handle, "list_md_devices", default=[]) or []:
        detail = _call(handle, "md_detail", md, default={}) or {}
        members = members_of_uuid.get(_bare_uuid(str(detail.get("uuid", ""))), [])
        drives = {layout.drive_of[m] for m in members if m in layout.drive_of}
        if not drives:
            continue  # assembled from no device we know: not ours to mount
        layout.md_drives[md] = drives
        layout.drive_of[md] = min(drives)
        name = str(detail.get("name", "")).rsplit(":", 1)[-1]
        if name:
            layout.md_names[md] = name


def _tie_volumes_to_drives(handle: Any, layout: Layout) -> None:
    """Each volume group's logical volumes, tied to the drive its physical volumes are on.

    Physical volumes are named by asking ``pvuuid`` of each device we already know, not by
    ``pvs_full``: libguestfs 1.48 sometimes names a PV there by the appliance's internal
    disk (``/dev/sdb2`` for the caller's ``/dev/sda2``; reverse translation came in 1.51.6),
    which tied a volume group to no drive or to another image's.
    """
    devices_of_uuid: dict[str, list[str]] = {}
    for device, fs_type in layout.fs_types.items():
        if fs_type == "LVM2_member":
            uuid = _call(handle, "pvuuid", device)
            if isinstance(uuid, str) and uuid:
                devices_of_uuid.setdefault(_bare_uuid(uuid), []).append(device)
    # A UUID on two devices is a cloned image beside its original: LVM activated one of
    # them, and which one cannot be told here, so neither is tied (each image is re-audited
    # alone, see inspect_roots).
    pv_of_uuid = {
        uuid: devices[0] for uuid, devices in devices_of_uuid.items() if len(devices) == 1
    }
    twins = {
        device for devices in devices_of_uuid.values() if len(devices) > 1 for device in devices
    }
    active: set[str] = set()
    all_lvs = _call(handle, "lvs", default=[]) or []
    for vg in _call(handle, "vgs", default=[]) or []:
        uuids = _call(handle, "vgpvuuids", vg, default=[]) or []
        pvs = [pv_of_uuid[_bare_uuid(u)] for u in uuids if _bare_uuid(u) in pv_of_uuid]
        active.update(pvs)
        drives = {drive for pv in pvs for drive in layout.drives_of(pv)}
        if len(pvs) < len(uuids) or not drives:
            continue  # a physical volume on no drive we know: the group is not ours to mount
        layout.vg_drives[vg] = drives
        for lv in all_lvs:
            if lv.split("/")[2:3] == [vg]:
                layout.lvs[lv] = vg
                layout.drive_of[lv] = min(drives)
    layout.orphan_pvs = (set(pv_of_uuid.values()) - active) | twins


def _bare_uuid(uuid: str) -> str:
    return "".join(ch for ch in uuid.lower() if ch in "0123456789abcdef")


@dataclass(frozen=True)
class Root:
    """One operating system found: where its root is and what to mount where."""

    device: str
    os_type: str  # linux | windows
    mountpoints: tuple[tuple[str, str], ...]  # (mountpoint, device), shortest first
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Candidate:
    """A root seen by ``_probe``, before its fstab is resolved."""

    os_type: str  # linux | windows
    mountable: str
    fstab: bytes = b""
    # Where /etc/os-release points inside a /usr that this filesystem does not hold
    # ("/lib/os-release"): CoreOS and Flatcar mount /usr without an fstab entry.
    usr_release: str | None = None


def _probe(handle: Any, device: str, fs_type: str) -> list[_Candidate]:
    """Mount ``device`` read-only at / and see the Linux or Windows roots it holds.

    A plain root stays mounted (its audit mounts it once); anything else is unmounted. A
    btrfs root may sit in a subvolume (Ubuntu's ``@``), mounted as libguestfs's
    ``btrfsvol:DEVICE/SUBVOLUME``.
    """
    with suppress(RuntimeError):
        handle.umount_all()
    try:
        handle.mount_ro(device, "/")
    except RuntimeError:
        return []
    keep = False
    try:
        linux = _linux_root(handle, "", device)
        if linux is not None:
            keep = True
            return [linux]
        config = _call(handle, "case_sensitive_path", "/windows/system32/config")
        if config and _call(handle, "is_dir", config, default=False):
            keep = True
            return [_Candidate("windows", device)]
        if fs_type != "btrfs":
            return []
        found = []
        for volume in _call(handle, "btrfs_subvolume_list", "/", default=[]) or []:
            path = str(volume.get("btrfssubvolume_path", "")).strip("/")
            linux = _linux_root(handle, "/" + path, f"btrfsvol:{device}/{path}") if path else None
            if linux is not None:
                found.append(linux)
        return found
    finally:
        if not keep:
            with suppress(RuntimeError):
                handle.umount_all()


def _linux_root(handle: Any, prefix: str, mountable: str) -> _Candidate | None:
    """A Linux root at ``prefix``: ``/etc`` with an fstab, an os-release, or an os-release
    link into a /usr kept elsewhere."""
    if not _call(handle, "is_dir", f"{prefix}/etc", default=False):
        return None
    usr_release = _usr_release(handle, prefix)
    if usr_release is None and not (
        _call(handle, "is_file", f"{prefix}/etc/fstab", True, default=False)
        or _call(handle, "exists", f"{prefix}/etc/os-release", default=False)
    ):
        return None
    return _Candidate("linux", mountable, _read_fstab(handle, prefix), usr_release)


def _usr_release(handle: Any, prefix: str) -> str | None:
    """The path inside /usr that ``/etc/os-release`` links to, when this filesystem does
    not hold it (``../usr/lib/os-release`` -> ``/lib/os-release``)."""
    link = f"{prefix}/etc/os-release"
    if not _call(handle, "is_symlink", link, default=False):
        return None
    target = _call(handle, "readlink", link, default="")
    if not isinstance(target, str) or not target:
        return None
    resolved = posixpath.normpath(posixpath.join("/etc", target))
    if not resolved.startswith("/usr/") or _call(
        handle, "exists", prefix + resolved, default=False
    ):
        return None
    return resolved[len("/usr") :]


def _read_fstab(handle: Any, prefix: str) -> bytes:
    path = f"{prefix}/etc/fstab"
    stat = _call(handle, "statns", path)
    if not stat or stat["st_size"] > FSTAB_CAP:
        return b""
    data = _call(handle, "pread", path, int(stat["st_size"]), 0, default=b"")
    return data if isinstance(data, bytes) else b""


def _mapper_name(lv: str) -> str:
    _, _, vg, name = lv.split("/", 3)
    return "/dev/mapper/" + vg.replace("-", "--") + "-" + name.replace("-", "--")


class _Resolver:
    """fstab device specs -> devices, among one image's filesystems only."""

    def __init__(self, handle: Any, layout: Layout, drives: Sequence[int]) -> None:
        self.handle = handle
        self.layout = layout
        self.drives = sorted(drives)
        self.devices = [
            d for d, i in layout.drive_of.items() if i in drives and d in layout.fs_types
        ]
        self._ids: dict[str, tuple[str, str]] = {}
        self._gpt: dict[str, dict[int, tuple[str, int]]] = {}

    def label(self, device: str) -> str:
        return self._ids_of(device)[1]

    def gpt_entry(self, device: str) -> tuple[str, int]:
        """(name, attributes) of ``device``'s GPT entry; ("", 0) when it has none."""
        match = _WHOLE_DISK.match(device)
        if match is None or device not in self.layout.drive_of:
            return "", 0
        whole, number = match.group(1), int(match.group(2))
        if whole not in self._gpt:
            self._gpt[whole] = _gpt_entries(self.handle, whole)
        return self._gpt[whole].get(number, ("", 0))

    def _ids_of(self, device: str) -> tuple[str, str]:
        if device in self.layout.ids:  # read from the superblock by survey
            uuid, label = self.layout.ids[device]
            return uuid.lower(), label
        if device not in self._ids:
            uuid = _call(self.handle, "vfs_uuid", device, default="") or ""
            label = _call(self.handle, "vfs_label", device, default="") or ""
            self._ids[device] = (uuid.lower(), label)
        return self._ids[device]

    def resolve(self, spec: str) -> str | None:
        if spec.startswith(("UUID=", "/dev/disk/by-uuid/")):
            wanted = spec.split("=", 1)[1] if "=" in spec else spec.rsplit("/", 1)[1]
            return self._find(lambda d: self._ids_of(d)[0] == wanted.strip('"').lower())
        if spec.startswith(("LABEL=", "/dev/disk/by-label/")):
            wanted = spec.split("=", 1)[1] if "=" in spec else spec.rsplit("/", 1)[1]
            return self._find(lambda d: self._ids_of(d)[1] == wanted.strip('"'))
        for lv in self.layout.lvs:
            if spec in (lv, _mapper_name(lv)) and lv in self.devices:
                return lv
        md_match = _GUEST_MD.match(spec)
        if md_match:  # the guest's /dev/md0 or /dev/md/boot: the array's name, not ours
            return self._find(lambda d: self.layout.md_names.get(d) == md_match.group(1))
        match = _GUEST_DISK.match(spec)
        if match:
            letters, number = match.groups()
            position = 0
            for letter in letters:
                position = position * 26 + (ord(letter) - ord("a") + 1)
            if 0 < position <= len(self.drives):
                whole = self.layout.whole[self.drives[position - 1]]
                device = whole + number
                return device if device in self.devices else None
        return None

    def _find(self, predicate: Callable[[str], bool]) -> str | None:
        return next((d for d in self.devices if predicate(d)), None)


def _gpt_entries(handle: Any, whole: str) -> dict[int, tuple[str, int]]:
    """Partition number -> (name, attributes) from the GPT of the disk ``whole``.

    Read from the disk's own bytes: libguestfs 1.48's ``part_get_gpt_attributes`` answers 0
    whatever the attributes are. The entry count and size come from the guest, so both are
    bounded before anything is read.
    """
    for sector in (512, 4096):
        header = _call(handle, "pread_device", whole, 92, sector, default=b"")
        if isinstance(header, bytes) and len(header) == 92 and header[:8] == b"EFI PART":
            break
    else:
        return {}
    first_lba, count, size = struct.unpack_from("<QII", header, 72)
    if not 128 <= size <= 1024 or size % 8 or count == 0:
        return {}
    count = min(count, GPT_MAX_ENTRIES)
    table = _call(handle, "pread_device", whole, count * size, first_lba * sector, default=b"")
    if not isinstance(table, bytes):
        return {}
    entries: dict[int, tuple[str, int]] = {}
    for index in range(min(count, len(table) // size)):
        entry = table[index * size : (index + 1) * size]
        if entry[:16] == bytes(16):
            continue  # an unused slot
        attributes = int.from_bytes(entry[48:56], "little")
        name = entry[56:128].decode("utf-16-le", errors="replace").split("\0", 1)[0]
        entries[index + 1] = (name, attributes)
    return entries


def _fstab_mounts(fstab: bytes, root: str, resolver: _Resolver) -> Root:
    mounts = {"/": root}
    warnings: list[str] = []
    for raw_line in fstab.decode("utf-8", errors="replace").splitlines()[:1000]:
        fields = raw_line.split("#", 1)[0].split()
        if len(fields) < 3:
            continue
        spec, mountpoint, fs_type = fields[0], fields[1], fields[2]
        if mountpoint == "/" or not mountpoint.startswith("/") or fs_type in _SKIPPED_MOUNTS:
            continue
        options = fields[3].split(",") if len(fields) > 3 else []
        if "noauto" in options:
            continue
        device = resolver.resolve(spec)
        if device is None:
            warnings.append(f"fstab: {spec[:100]} for {mountpoint[:100]} not found on this image")
            continue
        subvolume = next((o.split("=", 1)[1] for o in options if o.startswith("subvol=")), "")
        if fs_type == "btrfs" and subvolume.strip("/"):
            device = f"btrfsvol:{device}/{subvolume.strip('/')}"
        mounts[mountpoint] = device
    ordered = tuple(sorted(mounts.items(), key=lambda item: (len(item[0]), item[0])))
    return Root(root, "linux", ordered, tuple(warnings))


def find_roots(
    handle: Any,
    layout: Layout,
    drives_of_image: dict[int, list[int]],
) -> dict[int, list[Root]]:
    """Image index -> the roots on its drives (``drives_of_image``: image -> drive indices).

    Nothing is left mounted."""
    found: dict[int, list[Root]] = {}
    for image, drives in sorted(drives_of_image.items()):
        roots, _ = find_image_roots(handle, layout, drives)
        if roots:
            found[image] = roots
    with suppress(RuntimeError):
        handle.umount_all()
    return found


def find_image_roots(
    handle: Any, layout: Layout, drives: Sequence[int]
) -> tuple[list[Root], str | None]:
    """The roots on one image's ``drives``, and the device left mounted at / (or None).

    Filesystems are probed in device order; one that a root found earlier mounts elsewhere
    (its /boot, /var) is not probed again, so that the root probed last stays mounted for
    its audit (mount_root): each filesystem is mounted once.
    """
    mine = set(drives)
    resolver = _Resolver(handle, layout, drives)
    roots: list[Root] = []
    claimed: set[str] = set()
    mounted: str | None = None
    for device, fs_type in sorted(layout.fs_types.items()):
        if fs_type not in ROOT_FS or layout.drive_of.get(device) not in mine:
            continue
        if device in claimed:
            continue
        candidates = _probe(handle, device, fs_type)
        kept = len(candidates) == 1 and candidates[0].mountable == device
        mounted = device if kept else None
        for candidate in candidates:
            if candidate.os_type == "windows":
                root = Root(candidate.mountable, "windows", (("/", candidate.mountable),))
            else:
                root = _fstab_mounts(candidate.fstab, candidate.mountable, resolver)
                if candidate.usr_release and "/usr" not in dict(root.mountpoints):
                    root = _with_usr(handle, root, candidate.usr_release, resolver)
                    mounted = None  # /usr was looked for by mounting the others
            roots.append(root)
            claimed.update(dev for point, dev in root.mountpoints if point != "/")
    return roots, mounted


def _with_usr(handle: Any, root: Root, usr_release: str, resolver: _Resolver) -> Root:
    """``root`` with the /usr its os-release links into, found without an fstab entry.

    CoreOS and Flatcar keep the OS in a read-only /usr on the partition labelled ``USR-A``
    or ``USR-B`` (GPT name or filesystem label) and mount it from the kernel command line.
    When both are there, the one the boot loader picks (highest GPT priority) comes first;
    any other filesystem of the image is tried last. The /usr is the first that holds the
    os-release the root links to. libguestfs's inspection does the same by content.
    """

    def rank(device: str) -> tuple[bool, int, str]:
        name, attributes = resolver.gpt_entry(device)
        name = name if name in USR_LABELS else resolver.label(device)
        labelled = name in USR_LABELS
        priority = (attributes >> 48) & 0xF  # as GRUB's gptprio reads it
        return (not labelled, -priority if labelled else 0, name)

    others = [
        d
        for d in resolver.devices
        if d != root.device and resolver.layout.fs_types.get(d) in ROOT_FS
    ]
    for device in sorted(others, key=rank):
        with suppress(RuntimeError):
            handle.umount_all()
        try:
            handle.mount_ro(device, "/")
        except RuntimeError:
            continue
        try:
            if _call(handle, "is_file", usr_release, True, default=False) or _call(
                handle, "is_symlink", usr_release, default=False
            ):
                mounts = (*root.mountpoints, ("/usr", device))
                ordered = tuple(sorted(mounts, key=lambda item: (len(item[0]), item[0])))
                return Root(root.device, root.os_type, ordered, root.warnings)
        finally:
            with suppress(RuntimeError):
                handle.umount_all()
    warning = (
        "/etc/os-release links into /usr, and no filesystem of this image holds "
        + usr_release[:100]
    )
    return Root(root.device, root.os_type, root.mountpoints, (*root.warnings, warning))

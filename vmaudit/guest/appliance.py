"""Opening images safely in a libguestfs appliance, and ``ApplianceFS`` over the mounted guest.

What spec/safety.md requires, in order: every file of a disk's chain is a regular file in
the image's folder (discovery); ``qemu-img info -U -f <fmt>`` of each link, never
``--backing-chain``, under memory and CPU limits, agrees with what discovery read; the
appliance gets our own qcow2 overlay (format pinned for the layer below) in a private temp
dir, never the image itself; no network; a failed KVM launch is retried with ``force_tcg``.
Guest filesystems are only ever mounted inside the appliance.
"""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import tempfile
from collections.abc import Collection, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from vmaudit.discover.formats import qcow2_over, qemu_driver
from vmaudit.errors import ErrorKind, GuestFileError, VmauditError, os_error_kind
from vmaudit.guest.base import (
    DEFAULT_CAP,
    FileKind,
    GuestStat,
    ModeWalk,
    OwnedStat,
    walked_below,
)
from vmaudit.guest.blockdev import device_file_node, validate_block_disk
from vmaudit.guest.detect import (
    ENCRYPTED_FS,
    Layout,
    Root,
    find_image_roots,
    find_roots,
    survey,
)
from vmaudit.guest.statcache import STAT_PREFETCH, StatCache, batchable
from vmaudit.guest.vhd import merge_chain
from vmaudit.models import DiskRef, ImageRef

QEMU_IMG_TIMEOUT = 30
QEMU_IMG_MEMORY = 1 << 30
QEMU_IMG_CPU_SECONDS = 20
# The appliance's RAM. qemu's resident size is this plus ~150 MiB of its own, so that N
# jobs stay under N x 1.3 GiB (spec/performance.md); reading a guest needs far less.
APPLIANCE_MEMSIZE_MB = 1024
PREAD_CHUNK = 2 * 1024 * 1024  # the protocol refuses preads over ~4 MB


@dataclass(frozen=True)
class LaunchOptions:
    force_tcg: bool = False
    # Every appliance gets a fixed memory bound, so N jobs cost at most N times this,
    # whatever the images hold (and however many images share the appliance).
    memsize_mb: int | None = APPLIANCE_MEMSIZE_MB
    smp: int | None = None
    trace: bool = False


def _limit_resources() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (QEMU_IMG_MEMORY, QEMU_IMG_MEMORY))
    resource.setrlimit(resource.RLIMIT_CPU, (QEMU_IMG_CPU_SECONDS, QEMU_IMG_CPU_SECONDS))


def qemu_img_info(path: str, fmt: str) -> dict[str, Any]:
    """``qemu-img info`` of one file, format pinned, shared lock, bounded in memory and time."""
    try:
        proc = subprocess.run(
            ["qemu-img", "info", "-U", "-f", qemu_driver(fmt), "--output=json", path],
            capture_output=True,
            timeout=QEMU_IMG_TIMEOUT,
            preexec_fn=_limit_resources,
            check=False,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
        )
    except subprocess.TimeoutExpired:
        raise VmauditError(ErrorKind.TIMEOUT, f"qemu-img info timed out on {path}") from None
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", errors="replace").strip().splitlines()
        text = message[-1] if message else f"qemu-img info failed ({proc.returncode})"
        kind = (
            ErrorKind.PERMISSION_DENIED if "Permission denied" in text else ErrorKind.CORRUPT_IMAGE
        )
        raise VmauditError(kind, text[:500])
    try:
        info: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise VmauditError(ErrorKind.CORRUPT_IMAGE, "qemu-img info gave no JSON") from None
    return info


def _same_file(folder: str, written: str, expected: str) -> bool:
    if written.startswith("json:") or "://" in written:
        return False
    return os.path.normpath(os.path.join(folder, written)) == os.path.normpath(expected)


def validate_disk(disk: DiskRef) -> int:
    """Check every link of ``disk`` with qemu's own reading of its header; raise if unsafe.

    Returns the leaf's virtual size, as qemu read it.
    """
    if disk.block:  # an LV, a zvol, a device given by hand: vmaudit/guest/blockdev.py
        return validate_block_disk(disk, qemu_img_info)
    links = [(p, f) for p, f in zip(disk.chain, disk.chain_formats, strict=True) if f != "extent"]
    extents = {p for p, f in zip(disk.chain, disk.chain_formats, strict=True) if f == "extent"}
    vhd_chain = is_vhd_chain(disk)
    leaf_size = 0
    if any(fmt == "vhd" for _, fmt in links) and len(links) > 1 and not vhd_chain:
        raise VmauditError(ErrorKind.UNSUPPORTED_FORMAT, "a VHD chain mixed with other formats")
    for index, (path, fmt) in enumerate(links):
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise VmauditError(ErrorKind.NOT_A_REGULAR_FILE, f"{path} is not a regular file")
        info = qemu_img_info(path, fmt)
        folder = os.path.dirname(path)
        backing = info.get("backing-filename")
        if backing is not None:
            expected = links[index + 1][0] if index + 1 < len(links) else None
            if expected is None or not _same_file(folder, str(backing), expected):
                raise VmauditError(
                    ErrorKind.UNSAFE_BACKING_FILE,
                    f"{os.path.basename(path)}: backing file not in its folder",
                )
        elif index + 1 < len(links) and not vhd_chain:  # qemu knows no VHD parents
            raise VmauditError(
                ErrorKind.CORRUPT_IMAGE, f"{os.path.basename(path)}: qemu sees no backing file"
            )
        specific = info.get("format-specific", {}).get("data", {})
        if isinstance(specific, dict):
            if specific.get("data-file"):
                raise VmauditError(
                    ErrorKind.UNSAFE_DATA_FILE,
                    f"{os.path.basename(path)}: external data file refused",
                )
            for extent in specific.get("extents", []) or []:
                name = str(extent.get("filename", "")) if isinstance(extent, dict) else ""
                if (
                    name
                    and os.path.normpath(name) != os.path.normpath(path)
                    and os.path.normpath(name) not in extents
                ):
                    raise VmauditError(
                        ErrorKind.UNSAFE_EXTENT,
                        f"{os.path.basename(path)}: extent outside its folder",
                    )
        if index == 0:
            leaf_size = int(info.get("virtual-size", 0))
    if leaf_size <= 0:
        raise VmauditError(ErrorKind.CORRUPT_IMAGE, f"{disk.path}: no virtual size")
    return leaf_size


def is_vhd_chain(disk: DiskRef) -> bool:
    """A VHD differencing disk with its parents: qemu cannot follow it (guest/vhd.py can)."""
    return len(disk.chain) > 1 and all(fmt == "vhd" for fmt in disk.chain_formats)


def overlay_backing(disk: DiskRef, locking: bool = False) -> str:
    """The backing our overlay names: the leaf, format pinned, opened without file locks.

    An image a running VM holds open for writing refuses qemu's shared lock ("Failed to get
    shared 'write' lock"); ``locking: off`` is the ``-U`` of spec/safety.md for the
    appliance (``remediate`` without ``--force`` keeps qemu's locks on). The leaf is still
    opened read-only (it is a backing file), and we write this ``json:`` ourselves with
    ``json.dumps``: no guest-written text reaches it.
    """
    file = {
        "driver": "file",
        "filename": os.path.abspath(disk.path),
        "locking": "on" if locking else "off",
    }
    if disk.block:  # qemu's host_device driver on the checked node (vmaudit/guest/blockdev.py)
        file = device_file_node(disk, locking)
    node = {"driver": qemu_driver(disk.format), "file": file}
    return "json:" + json.dumps(node, separators=(",", ":"))


def qemu_img(args: list[str]) -> None:
    """Run ``qemu-img ARGS`` (C locale, bounded time); its failure is ``appliance-failed``."""
    proc = subprocess.run(
        ["qemu-img", *args],
        capture_output=True,
        timeout=QEMU_IMG_TIMEOUT,
        check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
    )
    if proc.returncode != 0:
        raise VmauditError(
            ErrorKind.APPLIANCE_FAILED, proc.stderr.decode("utf-8", errors="replace").strip()[:500]
        )


def make_overlay(disk: DiskRef, size: int, directory: str, index: int) -> str:
    """Our qcow2 overlay of ``size`` bytes over the disk's leaf, the leaf's format pinned;
    never opens the chain.

    A VHD differencing chain is first merged into a private raw file (vmaudit/guest/vhd.py),
    which the overlay then stands on.
    """
    if is_vhd_chain(disk):
        merged = os.path.join(directory, f"disk{index}-merged.raw")
        size = merge_chain(disk.chain, merged)
        disk = DiskRef(path=merged, format="raw", chain=(merged,), chain_formats=("raw",))
    overlay = os.path.join(directory, f"disk{index}.qcow2")
    backing = overlay_backing(disk)
    qemu_img(["create", "-q", "-u", *qcow2_over(disk.format, backing), overlay, str(size)])
    return overlay


def new_handle(options: LaunchOptions) -> Any:
    import guestfs  # Debian's python3-guestfs; imported late so fast paths need no appliance

    handle = guestfs.GuestFS(python_return_dict=True, close_on_exit=False)
    handle.set_backend("direct")
    handle.set_network(False)
    if options.force_tcg:
        handle.set_backend_settings(["force_tcg"])
    if options.memsize_mb:
        handle.set_memsize(options.memsize_mb)
    if options.smp:
        handle.set_smp(options.smp)
    if options.trace:
        handle.set_trace(True)
    return handle


class Appliance:
    """One launched appliance holding the overlays of one or more images' disks."""

    def __init__(self, handle: Any, tcg_fallback: bool) -> None:
        self.handle = handle
        self.tcg_fallback = tcg_fallback  # KVM failed and we relaunched in software

    def close(self) -> None:
        with suppress(RuntimeError):
            self.handle.shutdown()
        self.handle.close()


def launch(overlays: Sequence[str], options: LaunchOptions) -> Appliance:
    """Launch with the overlays attached; retry once in software emulation if KVM fails."""
    attempts = [options.force_tcg] if options.force_tcg else [False, True]
    last_error = ""
    for force_tcg in attempts:
        handle = new_handle(
            LaunchOptions(force_tcg, options.memsize_mb, options.smp, options.trace)
        )
        for overlay in overlays:
            handle.add_drive_opts(overlay, format="qcow2", readonly=False)
        try:
            handle.launch()
        except RuntimeError as exc:
            last_error = str(exc).splitlines()[0] if str(exc) else "launch failed"
            handle.close()
            continue
        return Appliance(handle, tcg_fallback=force_tcg and not options.force_tcg)
    raise VmauditError(ErrorKind.APPLIANCE_FAILED, last_error)


@dataclass(frozen=True)
class Attached:
    """Which drives (by add order) of a launched appliance belong to which image."""

    drives: dict[int, int]  # drive index -> image index


def attach_all(
    images: Sequence[ImageRef],
    workdir: str,
) -> tuple[list[str], Attached, dict[int, VmauditError]]:
    """Validate and overlay every image's disks; an unsafe image is left out with its error."""
    overlays: list[str] = []
    drives: dict[int, int] = {}
    refused: dict[int, VmauditError] = {}
    for image_index, image in enumerate(images):
        try:
            sizes = [validate_disk(disk) for disk in image.disks]
            mine = [
                make_overlay(disk, size, workdir, len(overlays) + k)
                for k, (disk, size) in enumerate(zip(image.disks, sizes, strict=True))
            ]
        except VmauditError as exc:
            refused[image_index] = exc
            continue
        except OSError as exc:
            refused[image_index] = VmauditError(os_error_kind(exc), str(exc))
            continue
        for overlay in mine:
            drives[len(overlays)] = image_index
            overlays.append(overlay)
    return overlays, Attached(drives), refused


@dataclass(frozen=True)
class GuestRoots:
    """The roots found in a whole appliance, split by image."""

    roots: dict[int, list[Root]]  # image index -> its roots
    clashing: set[int]  # images whose volume groups clash with another image's
    encrypted: set[int]  # images holding an encrypted volume


@dataclass(frozen=True)
class Surveyed:
    """A whole appliance's devices, surveyed once, before any image's roots are probed."""

    layout: Layout
    drives_of_image: dict[int, list[int]]  # image index -> its drive indices
    clashing: set[int]  # images whose volume groups clash with another image's
    encrypted: set[int]  # images holding an encrypted volume

    def roots(self, handle: Any, image: int) -> tuple[list[Root], str | None]:
        """One image's roots, probed now, and the device left mounted at / (or None)."""
        return find_image_roots(handle, self.layout, self.drives_of_image.get(image, []))


def inspect_roots(handle: Any, attached: Attached) -> GuestRoots:
    """Survey the appliance once and give each image its roots (see guest/detect.py)."""
    surveyed = survey_images(handle, attached)
    roots = find_roots(handle, surveyed.layout, surveyed.drives_of_image)
    return GuestRoots(roots, surveyed.clashing, surveyed.encrypted)


def survey_images(handle: Any, attached: Attached) -> Surveyed:
    """The appliance's devices tied to images: which clash, which are encrypted."""
    layout = survey(handle)
    drives_of_image: dict[int, list[int]] = {}
    for drive, image in attached.drives.items():
        drives_of_image.setdefault(image, []).append(drive)
    clashing: set[int] = set()
    for device in layout.orphan_pvs:
        if device in layout.drive_of:
            clashing.add(attached.drives[layout.drive_of[device]])
    for drives in (*layout.vg_drives.values(), *layout.md_drives.values()):
        images = {attached.drives[drive] for drive in drives}
        if len(images) > 1:  # a volume group or md array across two images' disks
            clashing.update(images)
    encrypted = {
        attached.drives[layout.drive_of[device]]
        for device, fs_type in layout.fs_types.items()
        if fs_type in ENCRYPTED_FS and device in layout.drive_of
    }
    return Surveyed(layout, drives_of_image, clashing, encrypted)


@dataclass(frozen=True)
class MountedGuest:
    root: str
    os_type: str
    warnings: tuple[str, ...]


def mount_root(
    handle: Any, roots: Sequence[Root], encrypted: bool, mounted: str | None = None
) -> MountedGuest:
    """Unmount whatever was mounted, then mount one image's root read-only, shortest first.

    ``mounted``: the device that probing left mounted at / (guest/detect.py); when it is
    this root's, it is kept and only the root's other filesystems are mounted.
    """
    keep = mounted is not None and bool(roots) and roots[0].mountpoints[:1] == (("/", mounted),)
    if not keep:
        with suppress(RuntimeError):
            handle.umount_all()
    if not roots:
        if encrypted:
            raise VmauditError(
                ErrorKind.ENCRYPTED, "the disk holds an encrypted volume; no key is guessed"
            )
        raise VmauditError(ErrorKind.NO_OPERATING_SYSTEM, "no operating system found")
    root = roots[0]
    warnings = list(root.warnings)
    if len(roots) > 1:
        others = ", ".join(r.device for r in roots[1:])
        warnings.append(
            f"{len(roots)} operating systems found; audited the one on {root.device}, not {others}"
        )
    for mountpoint, device in root.mountpoints[1:] if keep else root.mountpoints:
        try:
            handle.mount_ro(device, mountpoint)
        except RuntimeError as exc:
            if mountpoint == "/":
                raise VmauditError(
                    ErrorKind.CORRUPT_IMAGE, f"root filesystem cannot be mounted: {exc}"
                ) from None
            warnings.append(f"could not mount {device} on {mountpoint}: {exc}")
    return MountedGuest(root.device, root.os_type, tuple(warnings))


def _guest_stat(st: dict[str, Any]) -> GuestStat:
    return GuestStat(
        kind=_kind(st["st_mode"]),
        size=int(st["st_size"]),
        mtime=float(st["st_mtime_sec"]),
        mode=st["st_mode"],
    )


def _kind(mode: int) -> FileKind:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "No such file" in text or "ENOENT" in text:
        return "not found"
    if "Too many levels of symbolic links" in text:
        return "too many levels of symbolic links"
    if isinstance(exc, UnicodeError):
        return "name is not UTF-8"
    return text.splitlines()[0][:200] if text else "unreadable"


class ApplianceFS:
    """``GuestFS`` over the guest mounted in a launched appliance (API calls only)."""

    def __init__(self, handle: Any, scratch_dir: str) -> None:
        self.handle = handle
        self.scratch_dir = scratch_dir
        self.stats = StatCache()  # the guest stays mounted read-only while we read it

    def _answer(self, path: str, follow: bool) -> GuestStat | str:
        """The path's metadata, or the reason it has none; asked of the appliance once."""
        answer = self.stats.get(path, follow)
        if answer is None:
            try:
                answer = _guest_stat((self.handle.statns if follow else self.handle.lstatns)(path))
            except (RuntimeError, UnicodeError) as exc:
                answer = _reason(exc)
            self.stats.put(path, follow, answer)
        return answer

    def _stat(self, path: str, follow: bool) -> GuestStat | None:
        answer = self._answer(path, follow)
        return answer if isinstance(answer, GuestStat) else None

    def _regular(self, path: str) -> GuestStat:
        answer = self._answer(path, follow=True)
        if isinstance(answer, str):
            raise GuestFileError(path, answer)
        if answer.kind != "file":
            raise GuestFileError(path, "not a regular file")
        return answer

    def stat(self, path: str) -> GuestStat | None:
        return self._stat(path, follow=True)

    def lstat(self, path: str) -> GuestStat | None:
        return self._stat(path, follow=False)

    def read(self, path: str, cap: int = DEFAULT_CAP) -> bytes:
        size = self._regular(path).size
        if size > cap:
            raise GuestFileError(path, f"{size} bytes, over the {cap}-byte cap")
        return self._pread(path, 0, size)

    def pread(self, path: str, offset: int, length: int) -> bytes:
        """libguestfs ``pread`` in chunks the protocol accepts: only the bytes asked for."""
        self._regular(path)
        return self._pread(path, offset, length)

    def _pread(self, path: str, offset: int, length: int) -> bytes:
        chunks: list[bytes] = []
        end = offset + length
        try:
            while offset < end:
                chunk = self.handle.pread(path, min(PREAD_CHUNK, end - offset), offset)
                if not chunk:
                    break
                chunks.append(chunk)
                offset += len(chunk)
        except (RuntimeError, UnicodeError) as exc:
            raise GuestFileError(path, _reason(exc)) from None
        return b"".join(chunks)

    def listdir(self, path: str) -> list[str]:
        # ls0 writes NUL-separated names to a host file: names that are not UTF-8 survive.
        fd, listing = tempfile.mkstemp(dir=self.scratch_dir)
        os.close(fd)
        try:
            self.handle.ls0(path, listing)
            with open(listing, "rb") as handle:
                raw = handle.read(64 * 1024 * 1024)
        except (RuntimeError, UnicodeError) as exc:
            raise GuestFileError(path, _reason(exc)) from None
        finally:
            os.unlink(listing)
        names = [os.fsdecode(name) for name in raw.split(b"\0") if name not in (b"", b".", b"..")]
        self._prefetch(path, names)
        return names

    def _prefetch(self, directory: str, names: list[str]) -> None:
        """The entries' own metadata in one ``lstatnslist`` (the library batches it): the
        collectors that list a directory stat its entries next."""
        base = directory.rstrip("/")
        wanted = [
            name
            for name in names[:STAT_PREFETCH]
            if batchable(name) and self.stats.missing(f"{base}/{name}")
        ]
        if not wanted or self.stats.full:
            return
        try:
            answers = self.handle.lstatnslist(directory, wanted)
        except (RuntimeError, UnicodeError):
            return  # each entry is asked on its own when wanted
        for name, st in zip(wanted, answers, strict=False):
            if st["st_ino"] >= 0:  # -1: libguestfs could not stat it (asked again on its own)
                self.stats.put(f"{base}/{name}", False, _guest_stat(st))

    def readlink(self, path: str) -> str:
        try:
            return str(self.handle.readlink(path))
        except (RuntimeError, UnicodeError) as exc:
            raise GuestFileError(path, _reason(exc)) from None

    def lstat_owner(self, path: str) -> OwnedStat | None:
        try:
            st = self.handle.lstatns(path)
        except (RuntimeError, UnicodeError):
            return None
        return OwnedStat(path, _kind(st["st_mode"]), st["st_mode"], st["st_uid"], st["st_gid"])

    def walk_modes(self, root: str, limit: int, only: Collection[str] | None = None) -> ModeWalk:
        """One ``find0`` for the names (one for the whole walk: each costs a process in the
        appliance), then one ``lstatnslist`` per directory (it takes plain file names of one
        directory): a call per folder, not one per file."""
        top = self.lstat_owner(root)
        if top is None or top.kind != "dir":
            return ModeWalk((), False)
        names, skipped, truncated = self._find_names(root, limit, only)
        if names is None:
            return ModeWalk((), False)
        base = root.rstrip("/")
        by_folder: dict[str, list[str]] = {}
        for name in names:  # relative to ``root``; "/" first except below "/" itself
            folder, _, leaf = ("/" + name.lstrip("/")).rpartition("/")
            by_folder.setdefault(folder, []).append(leaf)
        entries: list[OwnedStat] = []
        for folder, leaves in by_folder.items():
            try:
                stats = self.handle.lstatnslist(base + folder or "/", leaves)
            except (RuntimeError, UnicodeError):
                skipped += len(leaves)
                continue
            for leaf, st in zip(leaves, stats, strict=False):
                if st["st_ino"] < 0:  # libguestfs marks a name it could not stat with -1
                    skipped += 1
                    continue
                mode = st["st_mode"]
                path = f"{base}{folder}/{leaf}"
                entries.append(OwnedStat(path, _kind(mode), mode, st["st_uid"], st["st_gid"]))
        return ModeWalk(tuple(entries), truncated, skipped)

    def _find_names(
        self, root: str, limit: int, only: Collection[str] | None
    ) -> tuple[list[str] | None, int, bool]:
        """The first ``limit`` names ``find0`` lists below ``root`` (below ``only``'s names),
        the names it could not pass (not UTF-8), and whether it listed more; None when it
        cannot list ``root``."""
        fd, listing = tempfile.mkstemp(dir=self.scratch_dir)
        os.close(fd)
        names: list[str] = []
        skipped = 0
        try:
            self.handle.find0(root, listing)
            with open(listing, "rb") as handle:
                tail = b""
                while block := handle.read(1 << 20):
                    *complete, tail = (tail + block).split(b"\0")
                    for raw in complete:
                        if not raw:
                            continue
                        if not walked_below(os.fsdecode(raw), only):
                            continue
                        if len(names) >= limit:
                            return names, skipped, True
                        try:
                            names.append(raw.decode("utf-8"))
                        except UnicodeDecodeError:
                            skipped += 1  # the bindings pass names as UTF-8 strings
        except RuntimeError:
            return None, 0, False
        finally:
            os.unlink(listing)
        return names, skipped, False

"""Reading one guest's facts: image metadata, OS detection, the collectors, on any ``GuestFS``.

``collect_facts`` runs on a directory tree or on a mounted appliance alike; ``audit_image``
opens an image safely (guest/appliance.py) and calls it. Both raise ``VmauditError`` with a
kind for an image that cannot be audited.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from vmaudit.collect.linux import collect_linux
from vmaudit.collect.osinfo import detect_linux
from vmaudit.collect.windows import collect_windows, find_windows
from vmaudit.discover.identity import sha256_head, signature
from vmaudit.errors import ErrorKind, VmauditError, os_error_kind
from vmaudit.guest import accel
from vmaudit.guest.appliance import (
    ApplianceFS,
    Attached,
    LaunchOptions,
    attach_all,
    launch,
    mount_root,
    survey_images,
)
from vmaudit.guest.base import GuestFS
from vmaudit.models import Facts, ImageInfo, ImageRef
from vmaudit.run.timing import StageClock, StageTimes, TimedHandle
from vmaudit.timeutil import iso_from_timestamp


def image_info(ref: ImageRef) -> ImageInfo:
    """What the host knows of an image without opening it: sizes, newest mtime, head hash."""
    files = [path for disk in ref.disks for path in disk.chain]
    stats = [os.stat(path) for path in files]
    return ImageInfo(
        path=ref.path,
        format=ref.format,
        size_bytes=sum(_size(path, st) for path, st in zip(files, stats, strict=True)),
        mtime=iso_from_timestamp(max(st.st_mtime for st in stats)),
        sha256_head=sha256_head(ref.disks[0].path, block=ref.disks[0].block),
        vm=ref.vm,
        disks=tuple(disk.path for disk in ref.disks),
    )


def _size(path: str, info: os.stat_result) -> int:
    """A file's size; a block device's (whose ``st_size`` is 0) from the device itself."""
    if not stat.S_ISBLK(info.st_mode):
        return info.st_size
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def collect_facts(
    fs: GuestFS,
    image: ImageInfo,
    now: datetime,
    warnings: list[str] | None = None,
) -> Facts:
    """The full facts of the guest whose root ``fs`` is."""
    warnings = list(warnings or [])
    if find_windows(fs) is not None:  # the hives are read once, by collect_windows
        return collect_windows(fs, image, now, warnings)
    linux = detect_linux(fs, warnings)
    if linux is not None:
        return collect_linux(fs, image, linux, now, warnings)
    raise VmauditError(
        ErrorKind.NO_OPERATING_SYSTEM, "no Linux or Windows root found on the mounted filesystems"
    )


def _alive(handle: Any) -> bool:
    """Whether the appliance still answers: a dead qemu makes every later read fail, and
    collectors turn failed reads into warnings, so empty facts would pass for a clean guest."""
    try:
        handle.ping_daemon()
    except RuntimeError:
        return False
    return True


@dataclass(frozen=True)
class BatchOutcome:
    """Per image (in request order): facts, or the error that stopped it."""

    results: tuple[Facts | VmauditError, ...]
    tcg_fallback: bool
    clashing: tuple[int, ...] = ()  # images to re-run alone (shared VG or root with another)
    acceleration: accel.Acceleration | None = None  # this host's verdict, when it was asked
    timings: StageTimes | None = None  # where the batch's seconds went


def audit_batch(
    refs: Sequence[ImageRef], options: LaunchOptions, now: datetime, workdir: str
) -> BatchOutcome:
    """Open every image of ``refs`` in one appliance and read each one's facts separately.

    An image that is refused before the launch, or whose root cannot be told apart from
    another image's (clones sharing LVM names), does not stop the others.
    """
    clock = StageClock()
    before = {index: signature(ref) for index, ref in enumerate(refs)}
    infos, results = _image_infos(refs)
    position = sorted(infos)  # candidate index -> request index
    with clock.stage("prepare"):
        overlays, attached, refused = attach_all([refs[i] for i in position], workdir)
    for candidate, error in refused.items():
        results[position[candidate]] = error
    clashing: list[int] = []
    tcg_fallback = False
    verdict = None
    if overlays:
        # Asked only now that an appliance is due: a batch refused before the launch costs
        # no probe. The verdict is cached per host boot (see vmaudit.guest.accel).
        with clock.stage("launch"):
            if not options.force_tcg:
                verdict = accel.decide()
                options = replace(options, force_tcg=not verdict.kvm)
            appliance = launch(overlays, options)
        tcg_fallback = appliance.tcg_fallback
        try:
            handle = TimedHandle(appliance.handle, clock)
            read = _read_guests(
                handle, attached, workdir, infos, position, now, len(refs) == 1, clock
            )
        finally:
            with clock.stage("close"):
                appliance.close()
        results.update(read)
        clashing = [index for index, result in read.items() if result is None]
    for index in clashing:
        results[index] = VmauditError(
            ErrorKind.APPLIANCE_FAILED, "shares a volume group or root with another image"
        )
    for index, ref in enumerate(refs):
        # Facts of a file that changed or vanished while it was read are no point-in-time
        # picture of anything: the image is reported, not audited.
        if isinstance(results[index], Facts) and signature(ref) != before[index]:
            results[index] = VmauditError(
                ErrorKind.IMAGE_CHANGED, "the image changed or disappeared while it was read"
            )
    final = [results[i] for i in range(len(refs))]
    assert all(result is not None for result in final)  # every clash was given its error
    return BatchOutcome(
        tuple(r for r in final if r is not None),
        tcg_fallback,
        tuple(clashing),
        verdict,
        clock.result(len(refs)),
    )


def _image_infos(
    refs: Sequence[ImageRef],
) -> tuple[dict[int, ImageInfo], dict[int, Facts | VmauditError | None]]:
    """Each image's file facts, or the error that already stops it (by request index)."""
    infos: dict[int, ImageInfo] = {}
    results: dict[int, Facts | VmauditError | None] = {}
    for index, ref in enumerate(refs):
        try:
            infos[index] = image_info(ref)
        except OSError as exc:  # a file gone since discovery changed under us
            kind = os_error_kind(exc, missing=ErrorKind.IMAGE_CHANGED)
            gone = "disappeared: " if kind is ErrorKind.IMAGE_CHANGED else ""
            results[index] = VmauditError(kind, f"{gone}{exc}")
    return infos, results


def _read_guests(
    handle: Any,
    attached: Attached,
    workdir: str,
    infos: dict[int, ImageInfo],
    position: list[int],
    now: datetime,
    alone: bool,
    clock: StageClock,
) -> dict[int, Facts | VmauditError | None]:
    """Facts (or the error) of every attached image by request index; None: re-run alone."""
    try:
        with clock.stage("detect"):
            split = survey_images(handle, attached)
    except (VmauditError, RuntimeError):
        if not _alive(handle):
            raise VmauditError(
                ErrorKind.APPLIANCE_FAILED, "the appliance died during inspection"
            ) from None
        raise
    read: dict[int, Facts | VmauditError | None] = {}
    for candidate in sorted(set(attached.drives.values())):
        index = position[candidate]
        if candidate in split.clashing and not alone:
            read[index] = None
            continue
        try:
            with clock.stage("detect"):  # probing leaves the root mounted: mount_root keeps it
                roots, mounted = split.roots(handle, candidate)
            with clock.stage("mounts"):
                guest = mount_root(handle, roots, candidate in split.encrypted, mounted)
            fs = ApplianceFS(handle, workdir)
            with clock.collecting():
                read[index] = collect_facts(fs, infos[index], now, list(guest.warnings))
        except VmauditError as exc:
            read[index] = exc
        if not _alive(handle):
            raise VmauditError(
                ErrorKind.APPLIANCE_FAILED, "the appliance died while reading the guest"
            )
    return read

"""Reading one guest's facts: image metadata, OS detection, the collectors, on any ``GuestFS``.

``collect_facts`` runs on a directory tree or on a mounted appliance alike; ``audit_image``
opens an image safely (guest/appliance.py) and calls it. Both raise ``VmauditError`` with a
kind for an image that cannot be audited.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vmaudit.collect.linux import collect_linux
from vmaudit.collect.osinfo import detect_linux
from vmaudit.collect.windows import collect_windows, detect_windows
from vmaudit.errors import ErrorKind, VmauditError
from vmaudit.guest.appliance import (
    ApplianceFS,
    LaunchOptions,
    attach_all,
    inspect_roots,
    launch,
    mount_root,
)
from vmaudit.guest.base import GuestFS
from vmaudit.models import Facts, ImageInfo, ImageRef, OsInfo

HEAD_HASH_BYTES = 1024 * 1024


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_head(path: str) -> str:
    """SHA-256 of a file's first MiB."""
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read(HEAD_HASH_BYTES)).hexdigest()


def image_info(ref: ImageRef) -> ImageInfo:
    """What the host knows of an image without opening it: sizes, newest mtime, head hash."""
    files = [path for disk in ref.disks for path in disk.chain]
    stats = [os.stat(path) for path in files]
    return ImageInfo(
        path=ref.path,
        format=ref.format,
        size_bytes=sum(st.st_size for st in stats),
        mtime=iso(max(st.st_mtime for st in stats)),
        sha256_head=sha256_head(ref.disks[0].path),
        vm=ref.vm,
        disks=tuple(disk.path for disk in ref.disks),
    )


def _fill_from_inspection(os_info: OsInfo, inspected: dict[str, Any]) -> OsInfo:
    """Fields our own detection could not read, taken from libguestfs's inspection."""
    def pick(ours: str | None, key: str) -> str | None:
        theirs = inspected.get(key)
        return ours if ours else (str(theirs) if theirs not in (None, "", "unknown") else None)

    version = os_info.version
    if not version and inspected.get("major_version") is not None:
        version = f"{inspected['major_version']}.{inspected.get('minor_version') or 0}"
    return OsInfo(
        type=os_info.type,
        distro=pick(os_info.distro, "distro"),
        version=version,
        product=pick(os_info.product, "product_name"),
        hostname=pick(os_info.hostname, "hostname"),
        arch=pick(os_info.arch, "arch"),
        package_format=pick(os_info.package_format, "package_format"),
        build=os_info.build,
        edition=os_info.edition,
    )


def collect_facts(
    fs: GuestFS,
    image: ImageInfo,
    now: datetime,
    warnings: list[str] | None = None,
    inspected: dict[str, Any] | None = None,
) -> Facts:
    """The full facts of the guest whose root ``fs`` is."""
    warnings = list(warnings or [])
    windows = detect_windows(fs, warnings)
    if windows is not None:
        return collect_windows(fs, image, _fill_from_inspection(windows, inspected or {}), now,
                               warnings)
    linux = detect_linux(fs, warnings)
    if linux is not None:
        return collect_linux(fs, image, _fill_from_inspection(linux, inspected or {}), now,
                             warnings)
    raise VmauditError(ErrorKind.NO_OPERATING_SYSTEM,
                       "no Linux or Windows root found on the mounted filesystems")


@dataclass(frozen=True)
class BatchOutcome:
    """Per image (in request order): facts, or the error that stopped it."""

    results: tuple[Facts | VmauditError, ...]
    tcg_fallback: bool
    clashing: tuple[int, ...] = ()  # images to re-run alone (shared VG or root with another)


def audit_batch(refs: Sequence[ImageRef], options: LaunchOptions, now: datetime,
                workdir: str) -> BatchOutcome:
    """Open every image of ``refs`` in one appliance and read each one's facts separately.

    An image that is refused before the launch, or whose root cannot be told apart from
    another image's (clones sharing LVM names), does not stop the others.
    """
    results: dict[int, Facts | VmauditError] = {}
    infos: dict[int, ImageInfo] = {}
    for index, ref in enumerate(refs):
        try:
            infos[index] = image_info(ref)
        except PermissionError as exc:
            results[index] = VmauditError(ErrorKind.PERMISSION_DENIED, str(exc))
        except OSError as exc:
            results[index] = VmauditError(ErrorKind.CORRUPT_IMAGE, str(exc))
    candidates = [refs[i] for i in sorted(infos)]
    overlays, attached, refused = attach_all(candidates, workdir)
    position = sorted(infos)  # candidate index -> request index
    for candidate, error in refused.items():
        results[position[candidate]] = error
    clashing: list[int] = []
    tcg_fallback = False
    if overlays:
        appliance = launch(overlays, options)
        tcg_fallback = appliance.tcg_fallback
        try:
            split = inspect_roots(appliance.handle, attached)
            for candidate in sorted(set(attached.drives.values())):
                index = position[candidate]
                if candidate in split.clashing and len(refs) > 1:
                    clashing.append(index)
                    continue
                try:
                    guest = mount_root(appliance.handle, split.roots.get(candidate, []),
                                       candidate in split.encrypted)
                    fs = ApplianceFS(appliance.handle, workdir)
                    results[index] = collect_facts(fs, infos[index], now, list(guest.warnings),
                                                   guest.inspected)
                except VmauditError as exc:
                    results[index] = exc
        finally:
            appliance.close()
    for index in clashing:
        results[index] = VmauditError(ErrorKind.APPLIANCE_FAILED,
                                      "shares a volume group or root with another image")
    return BatchOutcome(tuple(results[i] for i in range(len(refs))), tcg_fallback,
                        tuple(clashing))

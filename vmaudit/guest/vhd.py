"""A VHD differencing chain read into one raw disk, because qemu cannot follow it.

qemu opens a differencing VHD as if it had no parent and reads the parent's blocks as zeros
(spec/safety.md). To audit such a chain with its parent present, its layers are merged here,
base first, into a private sparse raw file that the appliance then reads through our
overlay. Every header field is checked against the file's real size before it is used: a
hostile VHD can make this read nothing outside its own file and write nothing past the
disk's virtual size.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from vmaudit.discover.formats import VHD_DIFFERENCING, VHD_DYNAMIC, VHD_FIXED
from vmaudit.errors import ErrorKind, VmauditError

SECTOR = 512
UNALLOCATED = 0xFFFFFFFF
MAX_BLOCK_SIZE = 256 * 1024 * 1024
MAX_VIRTUAL_SIZE = 64 * 1024**4  # 64 TiB: what VHDX allows; VHD's own limit is 2 TiB
COPY_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class Layer:
    """One VHD file of a chain: its type, virtual size and (dynamic kinds) block table."""

    path: str
    disk_type: int
    virtual_size: int
    block_size: int = 0
    bat: tuple[int, ...] = ()  # sector offset of each block's bitmap, or UNALLOCATED

    @property
    def bitmap_bytes(self) -> int:
        """The sector bitmap in front of each block, padded to whole sectors."""
        bits = self.block_size // SECTOR
        return -(-((bits + 7) // 8) // SECTOR) * SECTOR


def _corrupt(path: str, what: str) -> VmauditError:
    return VmauditError(ErrorKind.CORRUPT_IMAGE, f"{os.path.basename(path)}: {what}")


def read_layer(path: str) -> Layer:
    """Footer, dynamic header and block table of one VHD, each bound-checked."""
    size = os.path.getsize(path)
    if size < SECTOR:
        raise _corrupt(path, "too small for a VHD footer")
    with open(path, "rb") as handle:
        handle.seek(size - SECTOR)
        footer = handle.read(SECTOR)
        if footer[:8] != b"conectix":
            raise _corrupt(path, "no VHD footer")
        (data_offset,) = struct.unpack(">Q", footer[16:24])
        (virtual_size,) = struct.unpack(">Q", footer[48:56])
        (disk_type,) = struct.unpack(">I", footer[60:64])
        if not 0 < virtual_size <= MAX_VIRTUAL_SIZE or virtual_size % SECTOR:
            raise _corrupt(path, f"implausible virtual size {virtual_size}")
        if disk_type == VHD_FIXED:
            if size - SECTOR < virtual_size:
                raise _corrupt(path, "fixed VHD shorter than its virtual size")
            return Layer(path, disk_type, virtual_size)
        if disk_type not in (VHD_DYNAMIC, VHD_DIFFERENCING):
            raise _corrupt(path, f"unknown VHD disk type {disk_type}")
        if not 0 < data_offset <= size - 2 * SECTOR - 1024:
            raise _corrupt(path, "dynamic header outside the file")
        handle.seek(data_offset)
        header = handle.read(1024)
        if header[:8] != b"cxsparse":
            raise _corrupt(path, "no dynamic header")
        (table_offset,) = struct.unpack(">Q", header[16:24])
        entries, block_size = struct.unpack(">II", header[28:36])
        if not SECTOR <= block_size <= MAX_BLOCK_SIZE or block_size % SECTOR:
            raise _corrupt(path, f"implausible block size {block_size}")
        if entries != -(-virtual_size // block_size):
            raise _corrupt(path, "block table does not cover the virtual size")
        if table_offset + 4 * entries > size:
            raise _corrupt(path, "block table outside the file")
        handle.seek(table_offset)
        bat = struct.unpack(f">{entries}I", handle.read(4 * entries))
    layer = Layer(path, disk_type, virtual_size, block_size, bat)
    limit = size - layer.bitmap_bytes - block_size
    for offset in bat:
        if offset != UNALLOCATED and offset * SECTOR > limit:
            raise _corrupt(path, "a block lies outside the file")
    return layer


def _runs(bitmap: bytes, sectors: int) -> list[tuple[int, int]]:
    """(first sector, count) of every run of set bits; bit 7 of byte 0 is sector 0."""
    runs: list[tuple[int, int]] = []
    start = None
    for sector in range(sectors):
        present = bitmap[sector // 8] & (0x80 >> (sector % 8))
        if present and start is None:
            start = sector
        elif not present and start is not None:
            runs.append((start, sector - start))
            start = None
    if start is not None:
        runs.append((start, sectors - start))
    return runs


def _copy(
    source: BinaryIO, target: BinaryIO, src_offset: int, dst_offset: int, length: int
) -> None:
    """Copy a range, leaving all-zero chunks unwritten so the raw file stays sparse."""
    done = 0
    while done < length:
        count = min(COPY_CHUNK, length - done)
        source.seek(src_offset + done)
        data = source.read(count)
        if len(data) != count:
            raise VmauditError(ErrorKind.CORRUPT_IMAGE, "VHD shorter than its headers say")
        if data.count(0) != count:
            target.seek(dst_offset + done)
            target.write(data)
        done += count


def _apply(layer: Layer, out: BinaryIO) -> None:
    with open(layer.path, "rb") as source:
        if layer.disk_type == VHD_FIXED:
            _copy(source, out, 0, 0, layer.virtual_size)
            return
        sectors = layer.block_size // SECTOR
        for index, offset in enumerate(layer.bat):
            if offset == UNALLOCATED:
                continue
            base = index * layer.block_size
            data_at = offset * SECTOR + layer.bitmap_bytes
            usable = min(layer.block_size, layer.virtual_size - base)
            if layer.disk_type == VHD_DYNAMIC:
                _copy(source, out, data_at, base, usable)
                continue
            source.seek(offset * SECTOR)
            bitmap = source.read(layer.bitmap_bytes)
            for first, count in _runs(bitmap, sectors):
                length = min(count * SECTOR, usable - first * SECTOR)
                if length > 0:
                    _copy(source, out, data_at + first * SECTOR, base + first * SECTOR, length)


def merge_chain(chain: Sequence[str], out: str) -> int:
    """Write the disk that ``chain`` (leaf first, base last) describes to ``out``; its size."""
    layers = [read_layer(path) for path in chain]
    size = layers[0].virtual_size
    if any(layer.virtual_size != size for layer in layers):
        raise VmauditError(ErrorKind.CORRUPT_IMAGE, "the VHD chain's layers differ in size")
    if layers[-1].disk_type == VHD_DIFFERENCING or any(
        layer.disk_type != VHD_DIFFERENCING for layer in layers[:-1]
    ):
        raise VmauditError(
            ErrorKind.CORRUPT_IMAGE,
            "a VHD chain is differencing disks over one fixed or dynamic base",
        )
    with open(out, "wb") as target:
        target.truncate(size)
        for layer in reversed(layers):
            _apply(layer, target)
    return size

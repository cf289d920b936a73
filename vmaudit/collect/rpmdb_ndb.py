"""Header blobs of an rpm ndb ``Packages.db`` (SUSE 15 SP3 and later), read in pure Python.

The layout is rpm's own (``lib/backend/ndb/rpmpkg.c``), all integers little-endian:

- a 32-byte header at offset 0: magic ``RpmP``, version 0, generation, the number of 4 KiB
  slot pages, the next package index;
- slot pages: 16-byte slots (magic ``Slot``, package index, offset and length of the blob
  in 16-byte blocks; offset 0 is a free slot), the first two slots of page 0 being the header;
- blobs in the blocks after the slot pages: a 16-byte head (magic ``BlbS``, package index,
  timestamp, blob length), the header blob, zero padding, and a 12-byte tail (adler32,
  blob length, magic ``BlbE``) ending the blob's last block.

Every slot is checked against the file and against the others (sorted by offset, a blob
must not overlap the one before it), so the bytes read are bounded by the file's size. As
rpm does when it reads a package, the adler32 is not verified; the head and the tail must
agree on the index and the length.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from .rpmdb_damage import Damage


def _magic(text: bytes) -> int:
    return int.from_bytes(text, "little")


PKGDB_MAGIC, SLOT_MAGIC = _magic(b"RpmP"), _magic(b"Slot")
BLOBHEAD_MAGIC, BLOBTAIL_MAGIC = _magic(b"BlbS"), _magic(b"BlbE")
PKGDB_VERSION = 0
HEADER_SIZE = 32
SLOT_SIZE = BLK_SIZE = 16
PAGE_SIZE = 4096
BLOBHEAD_SIZE, BLOBTAIL_SIZE = 16, 12
MAX_SLOT_PAGES = 4096  # a million slots; rpm adds a page per 256 packages


class NdbError(ValueError):
    """A file that is not an ndb package database this reader can walk."""


def blob_blocks(length: int) -> int:
    """Blocks a blob of ``length`` bytes occupies, head and tail included."""
    return (BLOBHEAD_SIZE + length + BLOBTAIL_SIZE + BLK_SIZE - 1) // BLK_SIZE


def _slots(data: bytes, slot_pages: int, damage: Damage) -> list[tuple[int, int, int]]:
    """``(blkoff, blkcnt, pkgidx)`` of every used slot that fits the file, by offset."""
    file_blocks = len(data) // BLK_SIZE
    first_blob_block = slot_pages * (PAGE_SIZE // BLK_SIZE)
    slots: list[tuple[int, int, int]] = []
    table = memoryview(data)[HEADER_SIZE : slot_pages * PAGE_SIZE]
    for number, (magic, pkgidx, blkoff, blkcnt) in enumerate(struct.iter_unpack("<4I", table)):
        offset = HEADER_SIZE + number * SLOT_SIZE
        if magic != SLOT_MAGIC:
            raise NdbError(f"no slot magic at offset {offset}")
        if blkoff == 0:
            continue
        if not pkgidx or not blkcnt or blkoff < first_blob_block:
            damage.note(f"slot at offset {offset}: bad entry")
        elif blkoff + blkcnt > file_blocks:
            damage.note(f"slot at offset {offset}: blob beyond the end of the file")
        else:
            slots.append((blkoff, blkcnt, pkgidx))
    return sorted(slots)


def package_blobs(data: bytes, damage: Damage, max_blob: int) -> Iterator[bytes]:
    """The header blobs of an ndb ``Packages.db``, in file order.

    ``NdbError`` when the file cannot be read at all; a damaged slot or blob is noted in
    ``damage`` and the others are still read.
    """
    if len(data) < PAGE_SIZE:
        raise NdbError(f"{len(data)} bytes, shorter than one slot page")
    magic, version, _generation, slot_pages, _next = struct.unpack_from("<5I", data, 0)
    if magic != PKGDB_MAGIC:
        raise NdbError("no ndb package database magic")
    if version != PKGDB_VERSION:
        raise NdbError(f"unsupported version {version}")
    if slot_pages == 0 or slot_pages > min(MAX_SLOT_PAGES, len(data) // PAGE_SIZE):
        raise NdbError(f"{slot_pages} slot pages in a file of {len(data)} bytes")
    seen: set[int] = set()
    end_of_previous = 0
    for blkoff, blkcnt, pkgidx in _slots(data, slot_pages, damage):
        where = f"package {pkgidx} at block {blkoff}"
        if blkoff < end_of_previous:
            damage.note(f"{where}: overlaps the blob before it")
            continue
        end_of_previous = blkoff + blkcnt
        if pkgidx in seen:
            damage.note(f"{where}: a second slot for this package")
            continue
        seen.add(pkgidx)
        start, end = blkoff * BLK_SIZE, (blkoff + blkcnt) * BLK_SIZE
        head_magic, head_pkgidx, _stamp, length = struct.unpack_from("<4I", data, start)
        if head_magic != BLOBHEAD_MAGIC or head_pkgidx != pkgidx:
            damage.note(f"{where}: no blob head for it")
            continue
        if length > max_blob or blob_blocks(length) != blkcnt:
            damage.note(f"{where}: blob length {length} does not fit {blkcnt} blocks")
            continue
        _adler, tail_length, tail_magic = struct.unpack_from("<3I", data, end - BLOBTAIL_SIZE)
        if tail_magic != BLOBTAIL_MAGIC or tail_length != length:
            damage.note(f"{where}: blob tail does not match its head")
            continue
        yield data[start + BLOBHEAD_SIZE : start + BLOBHEAD_SIZE + length]

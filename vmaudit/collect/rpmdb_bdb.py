"""Key/value pairs of a Berkeley DB hash file, read from its on-disk pages in pure Python.

rpm kept its ``Packages`` database in this format up to RHEL/CentOS 8 and SLES 15 SP2: one
hash database whose keys are 4-byte header numbers and whose values are header blobs. The
layout followed here is Berkeley DB's own (hash versions 8 to 10, as rpm's ``bdb_ro``
backend reads them): page 0 is the hash metadata page (page size, last page, bucket count,
the ``spares`` table mapping a bucket to its first page), each bucket is a chain of hash
pages linked by ``next_pgno``, and an item too big for a page lives on a chain of overflow
pages. Nothing here trusts the file: every offset is checked against its page, every page
number against the file, and each page is visited at most once, so a loop or a shared page
in a chain ends that chain with a problem noted, never a hang; the work and the memory are
bounded by the file's size.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from .rpmdb_damage import Damage

HASH_MAGIC = 0x061561
BTREE_MAGIC = 0x053162
HASH_VERSIONS = range(8, 11)
META_SIZE = 512
PAGE_HEADER = 26  # lsn, pgno, prev, next, entries, hf_offset, level, type
# Hash pages are P_HASH in version 9 and later, P_HASH_UNSORTED in version 8 (BDB < 4.6).
P_HASH_UNSORTED, P_OVERFLOW, P_HASHMETA, P_HASH = 2, 7, 8, 13
H_KEYDATA, H_OFFPAGE = 1, 3
HOFFPAGE_SIZE = 12  # type, 3 unused bytes, first overflow page, total length
DBMETA_CHKSUM = 0x01
MIN_PAGE, MAX_PAGE = 512, 65536


class BdbError(ValueError):
    """A file that is not a Berkeley DB hash database this reader can walk."""


class _Chain(ValueError):
    """A damaged page chain: the caller notes it and goes on with the next bucket."""


class HashFile:
    """The metadata of one hash database and bounded access to its pages."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        if len(data) < META_SIZE:
            raise BdbError(f"{len(data)} bytes, shorter than the {META_SIZE}-byte metadata page")
        for order in ("<", ">"):
            magic = struct.unpack_from(order + "I", data, 12)[0]
            if magic == HASH_MAGIC:
                self.order = order
                break
            if magic == BTREE_MAGIC:
                raise BdbError("a Berkeley DB btree, not a hash database")
        else:
            raise BdbError("no Berkeley DB hash magic")
        version, pagesize = struct.unpack_from(self.order + "II", data, 16)
        if version not in HASH_VERSIONS:
            raise BdbError(f"unsupported hash version {version}")
        if pagesize < MIN_PAGE or pagesize > MAX_PAGE or pagesize & (pagesize - 1):
            raise BdbError(f"implausible page size {pagesize}")
        encrypt_alg, page_type, metaflags = data[24], data[25], data[26]
        if page_type != P_HASHMETA:
            raise BdbError(f"page 0 has type {page_type}, not hash metadata")
        if encrypt_alg or metaflags & DBMETA_CHKSUM:
            raise BdbError("encrypted or checksummed pages (rpm writes neither)")
        self.pagesize = pagesize
        (last_pgno,) = struct.unpack_from(self.order + "I", data, 32)
        (self.max_bucket,) = struct.unpack_from(self.order + "I", data, 72)
        self.spares = struct.unpack_from(self.order + "32I", data, 96)
        pages_in_file = len(data) // pagesize
        if pages_in_file < 2:
            raise BdbError(f"{len(data)} bytes, not even two pages of {pagesize}")
        self.declared_pages = last_pgno + 1
        self.last_page = min(last_pgno, pages_in_file - 1)
        # Each bucket owns at least one page of its own.
        if self.max_bucket > self.last_page:
            raise BdbError(f"{self.max_bucket + 1} buckets in {self.last_page + 1} pages")
        self.visited = bytearray(self.last_page + 1)
        self.visited[0] = 1

    def bucket_page(self, bucket: int) -> int:
        """Berkeley DB's ``BS_TO_PAGE``: the bucket plus the spares of its split point."""
        return bucket + int(self.spares[bucket.bit_length()])

    def page(self, pgno: int, kinds: tuple[int, ...]) -> memoryview:
        """Page ``pgno``, once only, checked to be what its chain says it is."""
        if pgno < 1 or pgno > self.last_page:
            raise _Chain(f"page {pgno} outside the file's {self.last_page + 1} pages")
        if self.visited[pgno]:
            raise _Chain(f"page {pgno} reached twice (a loop or a shared page)")
        self.visited[pgno] = 1
        start = pgno * self.pagesize
        page = self.data[start : start + self.pagesize]
        (own,) = struct.unpack_from(self.order + "I", page, 8)
        if own != pgno:
            raise _Chain(f"page {pgno} says it is page {own}")
        if page[25] not in kinds:
            raise _Chain(f"page {pgno} has type {page[25]}, expected {kinds}")
        return page

    def next_page(self, page: memoryview) -> int:
        return int(struct.unpack_from(self.order + "I", page, 16)[0])

    def overflow(self, pgno: int, total: int, max_item: int) -> bytes:
        """The ``total`` bytes of a big item, gathered along its overflow chain."""
        if total == 0 or total > max_item:
            raise _Chain(f"overflow item of {total} bytes")
        pieces: list[bytes] = []
        remaining = total
        while remaining > 0:
            if pgno == 0:
                raise _Chain(f"overflow chain ends {remaining} bytes short")
            page = self.page(pgno, (P_OVERFLOW,))
            (length,) = struct.unpack_from(self.order + "H", page, 22)
            if length == 0 or length > remaining or PAGE_HEADER + length > self.pagesize:
                raise _Chain(f"overflow page {pgno} holds {length} bytes")
            pieces.append(bytes(page[PAGE_HEADER : PAGE_HEADER + length]))
            remaining -= length
            pgno = self.next_page(page)
        return b"".join(pieces)

    def item(self, page: memoryview, offset: int, length: int, max_item: int) -> bytes:
        """One key or value of a hash page: on the page, or on overflow pages."""
        if length < 1 or offset + length > self.pagesize:
            raise _Chain(f"item of {length} bytes at {offset} outside its page")
        kind = page[offset]
        if kind == H_KEYDATA:
            return bytes(page[offset + 1 : offset + length])
        if kind == H_OFFPAGE and length == HOFFPAGE_SIZE:
            pgno, total = struct.unpack_from(self.order + "II", page, offset + 4)
            return self.overflow(pgno, total, max_item)
        raise _Chain(f"item type {kind} (duplicates and blobs are not rpm's)")

    def bucket_items(
        self, bucket: int, damage: Damage, max_item: int
    ) -> Iterator[tuple[bytes, bytes]]:
        """The pairs of one bucket, along its chain of hash pages.

        A damaged page ends the chain (``_Chain``); a damaged item is noted and skipped.
        """
        pgno = self.bucket_page(bucket)
        while pgno:
            page = self.page(pgno, (P_HASH, P_HASH_UNSORTED))
            (entries,) = struct.unpack_from(self.order + "H", page, 20)
            index_end = PAGE_HEADER + 2 * entries
            if entries % 2 or index_end > self.pagesize:
                raise _Chain(f"page {pgno} has {entries} index entries")
            offsets = struct.unpack_from(f"{self.order}{entries}H", page, PAGE_HEADER)
            # Items are packed from the page's end down: an item ends where the one
            # before it in the index starts (Berkeley DB's LEN_HITEM).
            limit = self.pagesize
            for index in range(0, entries, 2):
                key_at, value_at = offsets[index], offsets[index + 1]
                if not index_end <= value_at < key_at < limit:
                    raise _Chain(f"page {pgno} entry {index} offsets out of order")
                key_length, value_length = limit - key_at, key_at - value_at
                limit = value_at
                try:
                    key = self.item(page, key_at, key_length, max_item)
                    value = self.item(page, value_at, value_length, max_item)
                except _Chain as exc:
                    damage.note(f"page {pgno} entry {index}: {exc}")
                    continue
                yield key, value
            pgno = self.next_page(page)


def hash_items(data: bytes, damage: Damage, max_item: int) -> Iterator[tuple[bytes, bytes]]:
    """Every key/value pair of a hash database file, bucket by bucket.

    ``BdbError`` when the file cannot be walked at all; a damaged chain is noted in
    ``damage`` and the walk goes on with the next bucket.
    """
    db = HashFile(data)
    if db.declared_pages > db.last_page + 1:
        damage.note(f"truncated: {db.last_page + 1} of {db.declared_pages} pages present")
    for bucket in range(db.max_bucket + 1):
        try:
            yield from db.bucket_items(bucket, damage, max_item)
        except _Chain as exc:
            damage.note(f"bucket {bucket}: {exc}")

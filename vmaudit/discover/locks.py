"""Whether a hypervisor holds an image right now: a VMware ``.lck`` folder or a qemu lock.

An image in use is not a point-in-time copy; it is still audited (qemu opens it with shared
locks), and reported with ``in_use: true``.
"""

from __future__ import annotations

import fcntl
import os
import struct

from vmaudit.discover.identity import image_files
from vmaudit.models import ImageRef

_QEMU_LOCK_START = 100
_QEMU_LOCK_LENGTH = 200
_FLOCK = "hhqqi4x"  # struct flock: l_type, l_whence, l_start, l_len, l_pid


def _lock_held(path: str) -> bool:
    """Whether another open file (qemu's) holds a lock in qemu's lock bytes of ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        query = struct.pack(
            _FLOCK, fcntl.F_WRLCK, os.SEEK_SET, _QEMU_LOCK_START, _QEMU_LOCK_LENGTH, 0
        )
        # F_OFD_GETLK only asks: it takes no lock, and it also sees classic POSIX locks.
        command = getattr(fcntl, "F_OFD_GETLK", fcntl.F_GETLK)
        try:
            answer = fcntl.fcntl(fd, command, query)
        except OSError:
            answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        return int(struct.unpack(_FLOCK, answer)[0]) != fcntl.F_UNLCK
    except OSError:
        return False
    finally:
        os.close(fd)


def in_use(image: ImageRef) -> bool:
    """True when a hypervisor holds the image: a ``<file>.lck`` folder or a qemu lock."""
    if image.in_use:
        return True
    for path in image_files(image):
        if os.path.isdir(path + ".lck"):
            return True
        if _lock_held(path):
            return True
    return False

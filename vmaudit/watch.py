"""The logic of ``vmaudit watch``: which images appeared, changed or vanished, once quiet.

A ``Watcher`` runs the discovery over its paths every ``interval`` seconds (sooner when
inotify, reached through ctypes, says a watched folder changed) and reports an image only
once its files have kept the same size and mtime for ``settle`` seconds: a copy in progress
or a VM being shut down is not audited half-written. ``in_use`` tells whether a hypervisor
holds the image (a VMware ``.lck`` folder, a qemu lock on the file).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import logging
import os
import select
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from vmaudit.discover.identity import Signature, image_files
from vmaudit.discover.identity import signature as image_signature
from vmaudit.discover.locks import in_use
from vmaudit.errors import VmauditError
from vmaudit.models import ImageRef, WatchEvent, WatchKind

log = logging.getLogger(__name__)

Discover = Callable[[list[str]], list[ImageRef]]

# qemu (block/file-posix.c) takes shared OFD locks on byte 100+n for each permission it
# holds and 200+n for each it refuses to share; any lock there conflicts with a write lock.


@dataclass
class _Tracked:
    image: ImageRef
    signature: Signature | None
    changed_at: float
    reported: Signature | None = None  # what the last appeared/modified event saw


class _Inotify:
    """Wake-ups from inotify on the watched folders (a hint: polling stays the truth)."""

    _MASK = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800
    _ONLYDIR = 0x01000000
    _NONBLOCK = os.O_NONBLOCK
    _CLOEXEC = os.O_CLOEXEC

    def __init__(self) -> None:
        name = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(name, use_errno=True)
        self._libc.inotify_init1.argtypes = [ctypes.c_int]
        self._libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        fd = int(self._libc.inotify_init1(self._NONBLOCK | self._CLOEXEC))
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.fd = fd
        self._watched: set[str] = set()

    def watch(self, folder: str) -> None:
        if folder in self._watched:
            return
        added = self._libc.inotify_add_watch(
            self.fd, os.fsencode(folder), self._MASK | self._ONLYDIR
        )
        if added >= 0:
            self._watched.add(folder)

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True when something changed."""
        ready, _, _ = select.select([self.fd], [], [], max(timeout, 0.0))
        if not ready:
            return False
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 65536):
                pass
        return True

    def close(self) -> None:
        os.close(self.fd)


class Watcher:
    """Polls ``paths`` through ``discover`` and raises settled ``WatchEvent``s."""

    def __init__(
        self,
        paths: Sequence[str],
        discover: Discover,
        *,
        interval: float = 5.0,
        settle: float = 30.0,
        report_existing: bool = True,
        use_inotify: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.paths = [os.path.abspath(p) for p in paths]
        self.interval = interval
        self.settle = settle
        self._discover = discover
        self._report_existing = report_existing
        self._clock = clock
        self._tracked: dict[str, _Tracked] = {}
        self._first_poll = True
        self._stopped = False
        self._inotify: _Inotify | None = None
        if use_inotify:
            try:
                self._inotify = _Inotify()
            except (OSError, AttributeError) as exc:
                log.info("inotify unavailable, polling only: %s", exc)

    def stop(self) -> None:
        """Ends ``events()`` after the current round."""
        self._stopped = True

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    def poll(self) -> list[WatchEvent]:
        """One round: discover, compare with what was seen, return the settled changes."""
        now = self._clock()
        try:
            found = self._discover(list(self.paths))
        except (OSError, VmauditError) as exc:
            # A datastore that is briefly unreadable (unmounted, a file vanishing under
            # the walk) costs one round, not the watcher.
            log.warning("discovery failed, will retry: %s", exc)
            return []
        events: list[WatchEvent] = []
        seen: set[str] = set()
        for image in found:
            key = os.path.abspath(image.path)
            seen.add(key)
            signature = image_signature(image)
            tracked = self._tracked.get(key)
            if tracked is None:
                tracked = _Tracked(image, signature, now)
                if self._first_poll and not self._report_existing:
                    tracked.reported = signature
                self._tracked[key] = tracked
            elif signature is None or signature != tracked.signature:
                tracked.image, tracked.signature, tracked.changed_at = image, signature, now
            else:
                tracked.image = image
            self._watch_folders(image)
            settled = now - tracked.changed_at >= self.settle
            if tracked.signature is None or not settled or tracked.signature == tracked.reported:
                continue
            kind: WatchKind = "appeared" if tracked.reported is None else "modified"
            tracked.reported = tracked.signature
            events.append(self._event(kind, image))
        for key in [k for k in self._tracked if k not in seen]:
            gone = self._tracked.pop(key)
            if gone.reported is not None:
                events.append(WatchEvent("disappeared", gone.image, time.time()))
        self._first_poll = False
        return events

    def _event(self, kind: WatchKind, image: ImageRef) -> WatchEvent:
        held = in_use(image)
        if held and not image.in_use:
            image = dataclasses.replace(image, in_use=True)
        return WatchEvent(kind, image, time.time())

    def _watch_folders(self, image: ImageRef) -> None:
        if self._inotify is None:
            return
        for path in image_files(image):
            self._inotify.watch(os.path.dirname(path))

    def _next_wait(self) -> float:
        """Until the next interval, or sooner when an image is due to settle."""
        now = self._clock()
        wait = self.interval
        for tracked in self._tracked.values():
            if tracked.signature is not None and tracked.signature != tracked.reported:
                wait = min(wait, max(tracked.changed_at + self.settle - now, 0.0))
        return wait

    def events(self, *, rounds: int | None = None) -> Iterator[WatchEvent]:
        """Poll until ``stop()`` (or ``rounds`` rounds), yielding events as they settle."""
        if self._inotify is not None:
            for path in self.paths:
                self._inotify.watch(path if os.path.isdir(path) else os.path.dirname(path))
        done = 0
        while not self._stopped and (rounds is None or done < rounds):
            yield from self.poll()
            done += 1
            if self._stopped or (rounds is not None and done >= rounds):
                break
            wait = self._next_wait()
            if self._inotify is not None:
                started = self._clock()
                if self._inotify.wait(wait):
                    # Something moved: look soon, but not in a busy loop while a running
                    # VM writes its disk all the time.
                    elapsed = self._clock() - started
                    time.sleep(max(min(self.interval, 0.5) - elapsed, 0.0))
            else:
                time.sleep(wait)

"""Metadata of a guest mounted read-only, asked of the appliance once per path.

Every ``stat`` is a round trip to the appliance (milliseconds in software emulation), and
collectors ask the same paths again (``read`` stats before reading, ``read_range`` before
``pread``) or stat every entry of a directory they listed. The guest does not change while
it is mounted read-only, so an answer, or the reason a path could not be stat'ed, holds
for the mount's life. Bounded: past ``limit`` entries, answers are no longer kept.
"""

from __future__ import annotations

from vmaudit.guest.base import GuestStat

STAT_CACHE_ENTRIES = 65536  # paths remembered per mounted guest (a few MiB at most)
STAT_PREFETCH = 4096  # entries of one listed directory whose lstat is asked in one call

Answer = GuestStat | str  # a reason (str) stands for a failed stat


class StatCache:
    """``lstat`` and ``stat`` answers by guest path, at most ``limit`` of them."""

    def __init__(self, limit: int = STAT_CACHE_ENTRIES) -> None:
        self.limit = limit
        self._own: dict[str, Answer] = {}  # lstat: the path itself
        self._followed: dict[str, Answer] = {}  # stat: symlinks followed

    def __len__(self) -> int:
        return len(self._own) + len(self._followed)

    @property
    def full(self) -> bool:
        return len(self) >= self.limit

    def get(self, path: str, follow: bool) -> Answer | None:
        """The answer kept for ``path``, or None when the appliance must be asked."""
        if follow:
            followed = self._followed.get(path)
            if followed is not None:
                return followed
            own = self._own.get(path)
            # Not a symlink: following it changes nothing. (A missing path's lstat reason
            # is not reused: the answer with symlinks followed may differ.)
            if isinstance(own, GuestStat) and own.kind != "link":
                return own
            return None
        return self._own.get(path)

    def put(self, path: str, follow: bool, answer: Answer) -> None:
        if self.full:
            return
        (self._followed if follow else self._own)[path] = answer

    def missing(self, path: str) -> bool:
        """Whether ``path``'s own metadata is still unknown (worth a batched lstat)."""
        return path not in self._own


def batchable(name: str) -> bool:
    """Whether the libguestfs bindings can pass ``name`` (UTF-8; no surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return name not in ("", ".", "..") and "/" not in name

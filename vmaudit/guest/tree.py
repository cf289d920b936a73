"""A guest root that is a plain directory tree on the host (fast tests, mounted roots).

Every path is resolved component by component inside the tree, symlinks included, the way
the guest's kernel would resolve it with the tree as ``/``: nothing escapes the tree.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from collections.abc import Collection
from pathlib import Path

from vmaudit.errors import GuestFileError
from vmaudit.guest.base import DEFAULT_CAP, GuestStat, ModeWalk, OwnedStat

MAX_SYMLINKS = 40  # as Linux's MAXSYMLINKS


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def _guest_stat(st: os.stat_result) -> GuestStat:
    if stat_mod.S_ISREG(st.st_mode):
        kind = "file"
    elif stat_mod.S_ISDIR(st.st_mode):
        kind = "dir"
    elif stat_mod.S_ISLNK(st.st_mode):
        kind = "link"
    else:
        kind = "other"
    return GuestStat(kind=kind, size=st.st_size, mtime=st.st_mtime, mode=st.st_mode)  # type: ignore[arg-type]


class TreeFS:
    """``GuestFS`` over a host directory acting as the guest's root."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def _host(self, parts: list[str]) -> str:
        return os.path.join(self.root, *parts) if parts else str(self.root)

    def _resolve(self, path: str, follow_last: bool = True) -> list[str]:
        """Guest path -> components of the real (symlink-free) guest path."""
        pending = _split(path)
        resolved: list[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = [*resolved, part]
            host = self._host(candidate)
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                raise GuestFileError(path, "not found") from None
            except OSError as exc:
                raise GuestFileError(path, exc.strerror or "unreadable") from None
            if stat_mod.S_ISLNK(st.st_mode) and (pending or follow_last):
                hops += 1
                if hops > MAX_SYMLINKS:
                    raise GuestFileError(path, "too many levels of symbolic links")
                target = os.readlink(host)
                if target.startswith("/"):
                    resolved = []
                pending = _split(target) + pending
                continue
            resolved = candidate
        return resolved

    def _host_path(self, path: str, follow_last: bool = True) -> str:
        return self._host(self._resolve(path, follow_last))

    def _open_file(self, path: str) -> tuple[int, os.stat_result]:
        """A descriptor of the regular file at guest ``path`` (never a FIFO or device)."""
        host = self._host_path(path)
        try:
            fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            reason = "not found" if exc.errno == errno.ENOENT else (exc.strerror or "unreadable")
            raise GuestFileError(path, reason) from None
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            os.close(fd)
            raise GuestFileError(path, "not a regular file")
        return fd, st

    def read(self, path: str, cap: int = DEFAULT_CAP) -> bytes:
        fd, st = self._open_file(path)
        try:
            if st.st_size > cap:
                raise GuestFileError(path, f"{st.st_size} bytes, over the {cap}-byte cap")
            chunks: list[bytes] = []
            total = 0
            while total <= cap:
                chunk = os.read(fd, min(1 << 20, cap + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            if total > cap:
                raise GuestFileError(path, f"over the {cap}-byte cap")
            return b"".join(chunks)
        except OSError as exc:
            raise GuestFileError(path, exc.strerror or "unreadable") from None
        finally:
            os.close(fd)

    def listdir(self, path: str) -> list[str]:
        host = self._host_path(path)
        try:
            names = os.listdir(os.fsencode(host))
        except FileNotFoundError:
            raise GuestFileError(path, "not found") from None
        except OSError as exc:
            raise GuestFileError(path, exc.strerror or "unreadable") from None
        return [os.fsdecode(name) for name in names]

    def stat(self, path: str) -> GuestStat | None:
        try:
            host = self._host_path(path)
            return _guest_stat(os.lstat(host))
        except (GuestFileError, OSError):
            return None

    def lstat(self, path: str) -> GuestStat | None:
        try:
            host = self._host_path(path, follow_last=False)
            return _guest_stat(os.lstat(host))
        except (GuestFileError, OSError):
            return None

    def pread(self, path: str, offset: int, length: int) -> bytes:
        fd, _ = self._open_file(path)
        try:
            chunks: list[bytes] = []
            while length > 0:
                chunk = os.pread(fd, min(1 << 20, length), offset)
                if not chunk:
                    break
                chunks.append(chunk)
                offset += len(chunk)
                length -= len(chunk)
            return b"".join(chunks)
        except OSError as exc:
            raise GuestFileError(path, exc.strerror or "unreadable") from None
        finally:
            os.close(fd)

    def readlink(self, path: str) -> str:
        host = self._host_path(path, follow_last=False)
        try:
            return os.readlink(host)
        except OSError as exc:
            raise GuestFileError(path, exc.strerror or "not a symlink") from None

    def lstat_owner(self, path: str) -> OwnedStat | None:
        try:
            st = os.lstat(self._host_path(path, follow_last=False))
        except (GuestFileError, OSError):
            return None
        return OwnedStat(path, _guest_stat(st).kind, st.st_mode, st.st_uid, st.st_gid)

    def walk_modes(self, root: str, limit: int, only: Collection[str] | None = None) -> ModeWalk:
        """Depth first, names in directory order; ``os.scandir`` never follows a symlink
        here (``follow_symlinks=False``), so the walk stays inside the tree."""
        try:
            start = self._host_path(root, follow_last=False)
            if not stat_mod.S_ISDIR(os.lstat(start).st_mode):
                return ModeWalk((), False)
        except (GuestFileError, OSError):
            return ModeWalk((), False)
        guest_root = "/" + "/".join(self._resolve(root, follow_last=False))
        found: list[OwnedStat] = []
        pending = [(os.fsencode(start), guest_root.rstrip("/"))]
        top = pending[0][1]
        while pending:
            host_dir, guest_dir = pending.pop()
            try:
                with os.scandir(host_dir) as listing:
                    children = list(listing)
            except OSError:
                continue
            listed = only is None or guest_dir != top  # with ``only``, not root's own entries
            if not listed:
                children = [child for child in children if os.fsdecode(child.name) in (only or ())]
            for child in children:
                if listed and len(found) >= limit:
                    return ModeWalk(tuple(found), True)
                try:
                    st = child.stat(follow_symlinks=False)
                except OSError:
                    continue
                guest_path = f"{guest_dir}/{os.fsdecode(child.name)}"
                if listed:
                    found.append(
                        OwnedStat(
                            guest_path, _guest_stat(st).kind, st.st_mode, st.st_uid, st.st_gid
                        )
                    )
                if stat_mod.S_ISDIR(st.st_mode):
                    pending.append((child.path, guest_path))
        return ModeWalk(tuple(found), False)

"""The appliance's stat answers kept per mounted guest: reused only where they hold, bounded."""

from __future__ import annotations

from vmaudit.guest.base import GuestStat
from vmaudit.guest.statcache import StatCache, batchable

FILE = GuestStat("file", 10, 0.0, 0o100644)
LINK = GuestStat("link", 7, 0.0, 0o120777)


def test_a_path_that_is_not_a_link_stats_as_its_lstat() -> None:
    cache = StatCache()
    cache.put("/etc/passwd", False, FILE)
    assert cache.get("/etc/passwd", follow=True) == FILE
    assert cache.get("/etc/passwd", follow=False) == FILE


def test_a_symlink_is_followed_by_the_appliance_not_by_the_cache() -> None:
    cache = StatCache()
    cache.put("/etc/os-release", False, LINK)
    assert cache.get("/etc/os-release", follow=True) is None
    cache.put("/etc/os-release", True, FILE)
    assert cache.get("/etc/os-release", follow=True) == FILE
    assert cache.get("/etc/os-release", follow=False) == LINK


def test_a_failure_is_kept_with_its_reason_but_not_shared_across_follow() -> None:
    cache = StatCache()
    cache.put("/loop", True, "too many levels of symbolic links")
    assert cache.get("/loop", follow=True) == "too many levels of symbolic links"
    cache.put("/gone", False, "not found")
    assert cache.get("/gone", follow=True) is None


def test_past_the_limit_nothing_more_is_kept() -> None:
    cache = StatCache(limit=3)
    for index in range(10):
        cache.put(f"/f{index}", False, FILE)
    assert len(cache) == 3 and cache.full
    assert cache.get("/f2", follow=False) == FILE
    assert cache.get("/f3", follow=False) is None
    assert cache.missing("/f3") and not cache.missing("/f0")


def test_only_names_the_bindings_can_pass_are_batched() -> None:
    assert batchable("passwd")
    assert not batchable(b"caf\xe9".decode("utf-8", errors="surrogateescape"))
    assert not batchable("..") and not batchable("") and not batchable("a/b")

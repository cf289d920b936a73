"""Vulnerability feeds: importers (OSV, Debian tracker JSON, MSRC CVRF), the feeds
database, and matching a guest's facts against it."""

from vmaudit.feeds.db import default_feeds_path
from vmaudit.feeds.importer import ImportResult, import_feeds
from vmaudit.feeds.match import FeedsMatcher, VulnMatch, open_feeds
from vmaudit.feeds.records import FeedError, feed_severity

__all__ = [
    "FeedError",
    "FeedsMatcher",
    "ImportResult",
    "VulnMatch",
    "default_feeds_path",
    "feed_severity",
    "import_feeds",
    "open_feeds",
]

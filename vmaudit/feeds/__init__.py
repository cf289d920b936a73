"""Vulnerability feeds: importers (OSV, Debian tracker JSON, MSRC CVRF), the feeds
database, matching a guest's facts against it, and end-of-life dates."""

from vmaudit.feeds.db import default_feeds_path
from vmaudit.feeds.eol import EndOfLife, end_of_life
from vmaudit.feeds.importer import ImportResult, import_feeds
from vmaudit.feeds.match import FeedsMatcher, VulnMatch
from vmaudit.feeds.records import FeedError, feed_severity

__all__ = [
    "EndOfLife",
    "FeedError",
    "FeedsMatcher",
    "ImportResult",
    "VulnMatch",
    "default_feeds_path",
    "end_of_life",
    "feed_severity",
    "import_feeds",
]

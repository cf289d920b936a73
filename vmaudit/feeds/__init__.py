"""Vulnerability feeds: importers (OSV, Debian tracker JSON, MSRC CVRF), the feeds
database, and matching a guest's facts against it.

The names below load their submodule on first use: a reader of the database (the power-on
gate's cached decision) imports no importer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmaudit.feeds.db import default_feeds_path
    from vmaudit.feeds.importer import ImportResult, import_feeds
    from vmaudit.feeds.match import FeedsMatcher, VulnMatch, open_feeds
    from vmaudit.feeds.records import FeedError, feed_severity

_SUBMODULE = {
    "FeedError": "records",
    "FeedsMatcher": "match",
    "ImportResult": "importer",
    "VulnMatch": "match",
    "default_feeds_path": "db",
    "feed_severity": "records",
    "import_feeds": "importer",
    "open_feeds": "match",
}

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


def __getattr__(name: str) -> Any:
    submodule = _SUBMODULE.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{submodule}"), name)
    globals()[name] = value
    return value

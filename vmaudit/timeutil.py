"""Time as vmaudit writes it: UTC, ISO 8601 with a ``Z``, to the second."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(moment: datetime) -> str:
    """``moment`` in UTC as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_now() -> str:
    """The current time as ``iso_utc`` writes it."""
    return iso_utc(datetime.now(UTC))

"""Time as vmaudit writes it: UTC, ISO 8601 with a ``Z``, to the second."""

from __future__ import annotations

from datetime import UTC, date, datetime


def iso_utc(moment: datetime) -> str:
    """``moment`` in UTC as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_now() -> str:
    """The current time as ``iso_utc`` writes it."""
    return iso_utc(datetime.now(UTC))


def iso_from_timestamp(seconds: float) -> str:
    """A Unix time as ``iso_utc`` writes it."""
    return iso_utc(datetime.fromtimestamp(seconds, UTC))


def utc_now() -> datetime:
    """Now, in UTC, to the second."""
    return datetime.now(UTC).replace(microsecond=0)


def parse_iso(text: str | None) -> datetime | None:
    """An ISO 8601 date or date-time (``Z`` allowed) as an aware datetime; None if it is not.

    A date alone is its midnight; a time without an offset is taken as UTC.
    """
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = datetime.combine(date.fromisoformat(text.strip()), datetime.min.time())
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

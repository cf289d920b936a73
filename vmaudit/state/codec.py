"""JSON text for what the state database stores, and back, exactly.

Every guest- or host-controlled string goes through ``json.dumps`` with ASCII escaping, so
control characters, quotes and lone surrogates (non-UTF-8 names kept as
``surrogateescape``) survive the round trip unchanged. Facts are decoded by
``facts_from_dict``, the inverse of ``Facts.to_dict``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from vmaudit.baseline.factsio import facts_from_dict
from vmaudit.models import (
    Business,
    Facts,
    Finding,
    ImageError,
    Risk,
    from_jsonable,
    to_jsonable,
)


def dumps(value: Any) -> str:
    """Canonical ASCII JSON: the same value always gives the same text."""
    return json.dumps(to_jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def loads(text: str) -> Any:
    return json.loads(text)


def path_key(path: str) -> bytes:
    """A lossless byte key for a path (any Python str, lone surrogates included)."""
    return path.encode("utf-8", "surrogatepass")


def key_path(key: bytes) -> str:
    return key.decode("utf-8", "surrogatepass")


def facts_text(facts: Facts) -> tuple[str, str]:
    """The facts as canonical JSON and the SHA-256 of that text."""
    text = dumps(facts.to_dict())
    return text, hashlib.sha256(text.encode("ascii")).hexdigest()


def facts_from_text(text: str) -> Facts:
    """Facts this database stored (``facts_text``): decoded by type, not re-validated by schema."""
    return facts_from_dict(loads(text), validated=False)


def findings_from_text(text: str) -> tuple[Finding, ...]:
    return from_jsonable(tuple[Finding, ...], loads(text), "findings")


def business_from_dict(data: dict[str, Any]) -> Business:
    return from_jsonable(Business, data)


def risk_from_columns(score: float, level: str, exposure: float | None) -> Risk:
    """A stored risk; no exposure only for a score of the capped formula (schema v3)."""
    return Risk(
        score=float(score), level=str(level), exposure=None if exposure is None else float(exposure)
    )


def error_from_text(text: str | None) -> ImageError | None:
    if text is None:
        return None
    return from_jsonable(ImageError, loads(text))

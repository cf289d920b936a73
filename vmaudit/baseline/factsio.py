"""Facts back from JSON: ``vmaudit.facts/v1`` dicts into ``Facts``, checked by the schema.

The inverse of ``Facts.to_dict()``: rule fixtures, the state database and saved
``vmaudit inspect`` output come back through here. Keys the spec marks as
Windows- or Linux-only (``rid``, ``build``, ``publisher``...) may be absent.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from vmaudit.models import CodecError, Facts, from_jsonable


class FactsFormatError(ValueError):
    """A document that is not valid ``vmaudit.facts/v1``; the message says where."""


@cache
def load_schema(name: str) -> dict[str, Any]:
    """One of vmaudit's JSON Schemas (``facts`` or ``report``) as a dict."""
    text = (resources.files("vmaudit") / "schemas" / f"{name}.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_facts_dict(data: Any) -> None:
    """Raise ``FactsFormatError`` naming the first wrong key when ``data`` is not facts."""
    import jsonschema  # slow to import: only documents from outside vmaudit are validated

    validator = jsonschema.Draft202012Validator(load_schema("facts"))
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(top)"
        raise FactsFormatError(f"facts: {where}: {error.message}")


def facts_from_dict(data: dict[str, Any], validated: bool = True) -> Facts:
    """``Facts`` from a ``vmaudit.facts/v1`` dict; round-trips ``Facts.to_dict()``.

    ``validated``: checked against the JSON Schema first (documents from outside vmaudit);
    the typed decoding refuses a wrong shape either way.
    """
    if validated:
        validate_facts_dict(data)
    try:
        return from_jsonable(Facts, {k: v for k, v in data.items() if k != "schema"}, "facts")
    except CodecError as exc:
        raise FactsFormatError(str(exc)) from None

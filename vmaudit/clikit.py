"""Click pieces the command groups share (the main CLI, the gate, the feeds, remediation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def table_or_json(func: F) -> F:
    """``-f/--format table|json`` (default table), passed as ``fmt``."""
    option = click.option(
        "-f",
        "--format",
        "fmt",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
    )
    return option(func)

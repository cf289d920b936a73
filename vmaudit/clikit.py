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


def baselines_option(help_text: str | None = None) -> Callable[[F], F]:
    """``-b/--baseline NAME|FILE``, repeatable, passed as ``baselines``."""
    return click.option(
        "-b", "--baseline", "baselines", multiple=True, metavar="NAME|FILE", help=help_text
    )


def timeout_option(help_text: str | None = None) -> Callable[[F], F]:
    """``--timeout SECONDS`` (at least 1, default 600)."""
    return click.option(
        "--timeout", type=click.FloatRange(min=1), default=600, show_default=True, help=help_text
    )

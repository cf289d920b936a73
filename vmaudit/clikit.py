"""Click pieces the command groups share (the main CLI, the gate, the feeds, remediation)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from vmaudit.errors import ExitCode, VmauditError

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


def file_option(flag: str, dest: str, help_text: str) -> Callable[[F], F]:
    """``FLAG FILE`` (a file's path, not a folder's), passed as ``dest``."""
    return click.option(flag, dest, type=click.Path(dir_okay=False), help=help_text)


@contextmanager
def exit_on(*kinds: type[VmauditError]) -> Iterator[None]:
    """These errors are their message on stderr and exit code 2, nothing else."""
    try:
        yield
    except kinds as exc:
        click.echo(f"vmaudit: {exc.message}", err=True)
        raise SystemExit(ExitCode.CONFIG) from None

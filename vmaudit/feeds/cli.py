"""``vmaudit feeds import|list|show``: the feeds database's commands (spec/vulnerabilities.md).

Exit codes: 0 done, 2 a feed file or database that cannot be used (nothing was imported:
the import is one transaction), 3 ``show`` of an id that no stored advisory has.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, closing
from pathlib import Path
from typing import Any

import click

from vmaudit.clikit import exit_on, file_option, table_or_json
from vmaudit.errors import ExitCode, VmauditError
from vmaudit.feeds.db import default_feeds_path, list_sources, open_read, show
from vmaudit.feeds.importer import import_feeds
from vmaudit.text import terminal_safe

SCOPE_SHOWN = 4  # ecosystems or products listed by `feeds list` before "+N more"


_db_option = file_option(
    "--db", "db_path", "Feeds database  [default: $XDG_DATA_HOME/vmaudit/feeds.db]"
)


def _path(db_path: str | None) -> Path:
    return Path(db_path) if db_path else default_feeds_path()


def _notice(message: str) -> None:
    click.echo(f"vmaudit: {terminal_safe(message)}", err=True)


def _errors() -> AbstractContextManager[None]:
    return exit_on(VmauditError)


@click.group("feeds", context_settings={"help_option_names": ["-h", "--help"]})
def feeds() -> None:
    """Import vulnerability feeds (OSV, Debian tracker JSON, MSRC CVRF) and look at them."""


@feeds.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@_db_option
def feeds_import(paths: tuple[str, ...], db_path: str | None) -> None:
    """Import feed files or folders; each format is decided from its content."""
    with _errors():
        results = import_feeds(list(paths), _path(db_path), _notice)
    for result in results:
        counts = result.counts
        formats = "+".join(sorted(result.formats)) or "no feed"
        click.echo(
            f"{result.path}: {formats}: {counts.added} added, {counts.updated} updated, "
            f"{counts.withdrawn} withdrawn, {counts.unchanged} unchanged, "
            f"{counts.skipped} for no judged ecosystem"
        )


def _scope(scope: tuple[str, ...]) -> str:
    shown = ", ".join(scope[:SCOPE_SHOWN])
    more = len(scope) - SCOPE_SHOWN
    return f"{shown} +{more} more" if more > 0 else shown or "-"


@feeds.command("list")
@table_or_json
@_db_option
def feeds_list(fmt: str, db_path: str | None) -> None:
    """Each imported source: format, ecosystems or products, records, newest, imported."""
    path = _path(db_path)
    with _errors():
        connection = open_read(path)
        sources = [] if connection is None else list_sources(connection)
        if connection is not None:
            connection.close()
    if fmt == "json":
        rows = [
            {
                "path": s.path,
                "format": s.format,
                "records": s.records,
                "newest": s.newest,
                "imported_at": s.imported_at,
                "scope": list(s.scope),
                "last_import": vars(s.counts),
            }
            for s in sources
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    if not sources:
        _notice(f"{path}: no feed imported (vmaudit feeds import PATH...)")
        return
    from tabulate import tabulate

    table = [
        [s.path, s.format, s.records, (s.newest or "-")[:10], s.imported_at, _scope(s.scope)]
        for s in sources
    ]
    click.echo(tabulate(table, ["source", "format", "records", "newest", "imported", "scope"]))


def _range_text(ranges: list[list[list[str]]]) -> str:
    return "; ".join(
        ", ".join(f"{kind} {version}" for kind, version in events) for events in ranges
    )


@feeds.command("show")
@click.argument("ident", metavar="ID")
@click.option(
    "-f", "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@_db_option
def feeds_show(ident: str, fmt: str, db_path: str | None) -> None:
    """One advisory as stored (CVE id, OSV id or KB): what it affects and its fixes."""
    path = _path(db_path)
    with _errors():
        connection = open_read(path)
        if connection is None:
            found: list[dict[str, Any]] = []
        else:
            with closing(connection):
                found = show(connection, ident)
    if not found:
        _notice(f"{ident}: no stored advisory has this id, CVE or KB ({path})")
        raise SystemExit(ExitCode.NOT_AUDITED)
    if fmt == "json":
        click.echo(json.dumps(found, indent=2))
        return
    for number, advisory in enumerate(found):
        if number:
            click.echo("")
        cves = ", ".join(advisory["cves"]) or "-"
        click.echo(f"{advisory['id']}  ({advisory['format']}: {advisory['source']})")
        click.echo(f"  CVEs: {cves}")
        click.echo(
            f"  published: {advisory['published'] or '-'}  modified: {advisory['modified'] or '-'}"
        )
        rating = advisory["rating"] or "-"
        cvss = advisory["cvss"] if advisory["cvss"] is not None else "-"
        click.echo(f"  severity: {rating}  cvss: {cvss}")
        if advisory["summary"]:
            click.echo(f"  {terminal_safe(advisory['summary'][:200])}")
        for item in advisory["affected"]:
            click.echo(
                f"  {item['ecosystem']} {item['package']}: "
                f"{_range_text(item['ranges']) or 'versions ' + ', '.join(item['versions'])}"
                + (f" (urgency {item['rating']})" if item["rating"] else "")
            )
        for fix in advisory["windows"]:
            click.echo(
                f"  {fix['product']}: {fix['kb'] or 'no KB'} fixed build "
                f"{fix['fixed_build'] or '-'}"
                + (f", supersedes {fix['supersedes']}" if fix["supersedes"] else "")
                + (f", {fix['rating']}" if fix["rating"] else "")
            )

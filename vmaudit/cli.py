"""Click commands only: parse options, call the pipeline, render, pick the exit code.

Exit codes are data (spec/cli.md): 0 clean, 1 findings at or above ``--fail-on``, 2 usage or
configuration error (nothing scanned), 3 some image could not be audited.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import click

from vmaudit import __version__
from vmaudit.clikit import (
    F,
    baselines_option,
    exit_on,
    file_option,
    table_or_json,
    timeout_option,
)
from vmaudit.errors import ConfigError, ExitCode, VmauditError
from vmaudit.judge.verdict import FailOn
from vmaudit.models import ImageResult, ScanReport
from vmaudit.report import Format
from vmaudit.timeutil import parse_iso, utc_now

if TYPE_CHECKING:  # the scan's commands import them; `gate check` needs neither
    from vmaudit.run.runner import Auditors

FAIL_ON = [level.value for level in FailOn]
FORMATS = [fmt.value for fmt in Format]


def _stderr(message: str, quiet: bool = False) -> None:
    if not quiet:
        click.echo(f"vmaudit: {message}", err=True)


def use_color(stream: Any) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and a rename."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def emit(text: str, output: str | None) -> None:
    if output:
        write_atomically(output, text)
    else:
        click.echo(text, nl=not text.endswith("\n"))


def config_errors() -> AbstractContextManager[None]:
    """A configuration error is a message on stderr and exit code 2."""
    return exit_on(ConfigError)


class Progress:
    """Scan observer: a rich progress bar on stderr when it is a terminal, else quiet lines."""

    def __init__(self, quiet: bool, verbose: bool) -> None:
        self.quiet = quiet
        self.verbose = verbose
        self.bar: Any = None
        self.task: Any = None
        if not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            console = Console(stderr=True, no_color="NO_COLOR" in os.environ)
            self.bar = Progress(
                TextColumn("auditing"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                console=console,
                transient=True,
            )

    def discovered(self, total: int) -> None:
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task("", total=total)
        elif self.verbose:
            _stderr(f"{total} image(s) found")

    def finished(self, result: ImageResult) -> None:
        from vmaudit.report.common import terminal_safe

        name = terminal_safe(os.path.basename(result.image.path))
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=name)
        elif self.verbose:
            status = result.error.kind if result.error else f"risk {result.risk.score}"
            _stderr(f"{name}: {status}")

    def notice(self, message: str) -> None:
        if self.bar is not None:
            self.bar.console.print(f"vmaudit: {message}")
        else:
            _stderr(message, self.quiet)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class LazyGroup(click.Group):
    """A group whose heavier command groups are imported only when one of them is run.

    ``vmaudit gate libvirt`` runs inside libvirt's start of a VM: it must not pay for the
    remediation engine or the feeds importers it does not use.
    """

    LAZY: ClassVar[dict[str, str]] = {
        "remediate": "vmaudit.act.remediate:remediate_command",
        "gate": "vmaudit.act.cli:gate",
        "feeds": "vmaudit.feeds.cli:feeds",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY:
            module, _, attribute = self.LAZY[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vmaudit")
def main() -> None:
    """Audit dormant virtual-machine disk images read-only through libguestfs."""


_state_options = file_option(
    "--state",
    "state_path",
    "State database: a file, or postgresql://USER@HOST/DB  "
    "[default: $XDG_STATE_HOME/vmaudit/state.db]",
)
_feeds_option = file_option(
    "--feeds-db",
    "feeds_db",
    "Vulnerability feeds database (vmaudit feeds import)  "
    "[default: $XDG_DATA_HOME/vmaudit/feeds.db]",
)


def _seconds_option(flag: str, minimum: float, default: float, help_text: str) -> Callable[[F], F]:
    """``FLAG SECONDS``: a number of seconds, at least ``minimum``."""
    return click.option(
        flag,
        type=click.FloatRange(min=minimum),
        default=default,
        show_default=True,
        help=help_text,
    )


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--libvirt",
    "libvirt_sources",
    multiple=True,
    metavar="URI|DIR",
    help="Also the domains of this libvirt (read-only), or a folder of domain XMLs",
)
@click.option(
    "--proxmox",
    "proxmox_dirs",
    multiple=True,
    metavar="DIR",
    help="Also the VMs of this Proxmox VE configuration folder (/etc/pve)",
)
@baselines_option("Baseline to apply; repeatable, applied together  [default: default]")
@click.option(
    "-i",
    "--inventory",
    type=click.Path(dir_okay=False),
    help="YAML mapping of images to business applications",
)
@click.option(
    "-f", "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write the report there (atomically) instead of stdout",
)
@click.option("--fail-on", type=click.Choice(FAIL_ON), default="high", show_default=True)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Images audited in parallel  [default: number of CPUs]",
)
@timeout_option("Wall-clock seconds for one image")
@_state_options
@click.option("--no-cache", is_flag=True, help="Open every image even when unchanged")
@click.option("--exclude", "excludes", multiple=True, metavar="GLOB", help="Paths to skip")
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=None,
    help="Images whose disks share one appliance (1 = one appliance per image)",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="Run the audits on a Dask cluster (tcp://HOST:8786) instead of local processes",
)
@click.option(
    "--path-map",
    "path_maps",
    multiple=True,
    metavar="LOCAL=REMOTE",
    help="Datastore mounted at another path on the workers; repeatable",
)
@click.option(
    "--discover-on-workers",
    is_flag=True,
    help="With --scheduler: a worker walks the datastores, not this host",
)
@_feeds_option
@click.option("-q", "--quiet", is_flag=True)
@click.option("-v", "--verbose", is_flag=True)
def scan(
    paths: tuple[str, ...],
    libvirt_sources: tuple[str, ...],
    proxmox_dirs: tuple[str, ...],
    baselines: tuple[str, ...],
    inventory: str | None,
    fmt: str,
    output: str | None,
    fail_on: str,
    jobs: int | None,
    timeout: float,
    state_path: str | None,
    no_cache: bool,
    excludes: tuple[str, ...],
    batch: int | None,
    scheduler: str | None,
    path_maps: tuple[str, ...],
    discover_on_workers: bool,
    feeds_db: str | None,
    quiet: bool,
    verbose: bool,
) -> None:
    """Discover images under each PATH (a folder, an image, a block device) and the guests of
    each --libvirt and --proxmox inventory, audit each, print the report."""
    if not (paths or libvirt_sources or proxmox_dirs):
        raise click.UsageError("give a PATH, --libvirt URI|DIR or --proxmox DIR")
    from vmaudit.report import render
    from vmaudit.run.fleet import check_fleet_options
    from vmaudit.scan import ScanOptions, load_judge, run_scan
    from vmaudit.state.cache import open_cache

    options = ScanOptions(
        paths=paths,
        baselines=baselines or ("default",),
        inventory=inventory,
        fail_on=fail_on,
        jobs=jobs or (os.cpu_count() or 1),
        timeout=timeout,
        excludes=excludes,
        no_cache=no_cache,
        batch=batch,
        feeds_db=feeds_db,
        libvirt=libvirt_sources,
        proxmox=proxmox_dirs,
        stage_timing=verbose,
    )
    with config_errors():
        check_fleet_options(scheduler, path_maps, discover_on_workers)
        judge = load_judge(options, utc_now())
        cache = open_cache(state_path)
    if judge.feeds_notice is not None:
        _stderr(judge.feeds_notice, quiet)
    progress = Progress(quiet, verbose)
    try:
        with (
            config_errors(),
            _auditors(
                options.jobs, scheduler, path_maps, discover_on_workers, progress.notice
            ) as auditors,
        ):
            report = run_scan(options, progress, cache=cache, judge=judge, auditors=auditors)
    finally:
        progress.close()
        cache.close()
    color = fmt == "table" and output is None and use_color(sys.stdout)
    emit(render(report, Format(fmt), color=color), output)
    raise SystemExit(report.exit_code)


@contextmanager
def _auditors(
    jobs: int,
    scheduler: str | None,
    path_maps: tuple[str, ...],
    discover_on_workers: bool,
    notice: Callable[[str], None],
) -> Iterator[Auditors]:
    """Local worker processes, or the Dask fleet at ``scheduler`` for as long as the scan runs."""
    from vmaudit.run.runner import Auditors

    if scheduler is None:
        yield Auditors.local(jobs)
        return
    from vmaudit.run.fleet import connect, parse_path_map

    maps = [parse_path_map(text) for text in path_maps]
    with connect(scheduler, maps, notice) as fleet:
        yield fleet.auditors(discover_on_workers)


def _read_images(image: str, timeout: float) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """Facts of every guest found at ``image`` (one appliance each); None when unreadable."""
    from vmaudit.discover.walk import discover
    from vmaudit.run.runner import Runner

    found = discover([image])
    for skipped in found.skipped:
        _stderr(f"{skipped.path}: {skipped.kind}: {skipped.message}")
    if not found.images and not found.skipped:
        _stderr(f"{image}: no disk image found")
    runner = Runner(jobs=1, timeout=timeout, on_notice=_stderr)
    for ref in found.images:
        outcome = runner.run_one(ref, datetime.now(UTC))
        if outcome.error is not None:
            _stderr(f"{ref.path}: {outcome.error.kind}: {outcome.error.message}")
        yield ref.path, None if outcome.facts is None else outcome.facts.to_dict()
    if found.skipped:
        yield image, None


@main.command()
@click.argument("image", type=click.Path())
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["json", "table", "cyclonedx"]),
    default="json",
    show_default=True,
)
@timeout_option()
def inspect(image: str, fmt: str, timeout: float) -> None:
    """Print the facts read from one image (vmaudit.facts/v1), no baseline."""
    from vmaudit.report.facts_view import render_facts

    exit_status = 0
    seen = False
    for _path, facts in _read_images(image, timeout):
        if facts is None:
            exit_status = 3
            continue
        seen = True
        if fmt == "json":
            click.echo(json.dumps(facts, indent=2, ensure_ascii=False))
        elif fmt == "cyclonedx":  # one CycloneDX BOM per guest, a line each
            from vmaudit.baseline.factsio import facts_from_dict
            from vmaudit.report.cyclonedx import bom, render_bom

            click.echo(render_bom(bom(facts_from_dict(facts))))
        else:
            click.echo(render_facts(facts, color=use_color(sys.stdout)))
    raise SystemExit(exit_status if seen else 3)


@main.group()
def baselines() -> None:
    """List, show, validate and capture baselines."""


@baselines.command("list")
def baselines_list() -> None:
    """The built-in baselines, one line each."""
    from vmaudit.baseline.loader import builtin_baselines

    for name, description in builtin_baselines():
        click.echo(f"{name:<16} {description}")


@baselines.command("show")
@click.argument("ref", metavar="NAME|FILE")
def baselines_show(ref: str) -> None:
    """The fully resolved baseline (after extends) as YAML."""
    from vmaudit.baseline.loader import dump_resolved, load_baseline

    with config_errors():
        click.echo(dump_resolved(load_baseline(ref)), nl=False)


@baselines.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path())
def baselines_validate(files: tuple[str, ...]) -> None:
    """Check baseline files; every problem with file, line and key; exit 2 on any."""
    from vmaudit.baseline.loader import validate_files

    problems = validate_files(files)
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        raise SystemExit(ExitCode.CONFIG)
    click.echo(f"{len(files)} baseline file(s) valid")


def _parse_since(text: str | None) -> datetime | None:
    if text is None:
        return None
    moment = parse_iso(text)
    if moment is None:
        raise click.BadParameter(
            f"{text!r} is not an ISO date (2026-11-01 or 2026-11-01T12:00:00Z)",
            param_hint="--since",
        )
    return moment


@contextmanager
def _state_db(state_path: str | None) -> Iterator[Any]:
    """The state database, closed after use; its errors are exit code 2."""
    with config_errors():
        db = _open_state(state_path)
        try:
            yield db
        finally:
            db.close()


def _open_state(state_path: str | None) -> Any:
    from vmaudit.state import StateDB, default_state_path, open_state
    from vmaudit.state.postgres import is_url

    if state_path and is_url(state_path):
        return open_state(state_path)
    path = Path(state_path) if state_path else default_state_path()
    if not path.exists():
        raise ConfigError(f"{path}: no state database (run vmaudit scan first)")
    return StateDB(path)


@main.command()
@click.option(
    "-f", "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True
)
@click.option("-o", "--output", type=click.Path(dir_okay=False))
@click.option("--since", metavar="DATE", help="Only images scanned or changed since DATE")
@click.option(
    "--power-on",
    "power_on",
    is_flag=True,
    help="The power-on gate's decisions (since --since) instead of the last scan",
)
@baselines_option("Re-judge with these baselines  [default: the last scan's]")
@_feeds_option
@_state_options
def report(
    fmt: str,
    output: str | None,
    since: str | None,
    power_on: bool,
    baselines: tuple[str, ...],
    feeds_db: str | None,
    state_path: str | None,
) -> None:
    """Print the last scan's report again from the state database, without opening an image."""
    from vmaudit.report import render

    moment = _parse_since(since)
    if power_on:
        from vmaudit.report.power_on import render_power_ons

        if fmt not in ("table", "json"):
            raise click.BadParameter("with --power-on: table or json", param_hint="--format")
        with _state_db(state_path) as db:
            decisions = db.power_ons(since=moment)
        emit(render_power_ons(decisions, fmt), output)
        return
    with _state_db(state_path) as db:
        last = db.last_report(since=moment)
    with config_errors():
        if last is None:
            raise ConfigError("no finished scan in the state database")
        last = _rejudged(last, baselines, feeds_db)
    color = fmt == "table" and output is None and use_color(sys.stdout)
    emit(render(last, Format(fmt), color=color), output)


def _rejudged(last: ScanReport, baselines: tuple[str, ...], feeds_db: str | None) -> ScanReport:
    """The last scan judged again against the current feeds, when there are feeds."""
    from vmaudit.feeds import default_feeds_path, open_feeds
    from vmaudit.scan import ScanOptions, load_judge, rejudge

    path = Path(feeds_db) if feeds_db else default_feeds_path()
    matcher, notice = open_feeds(path)
    if matcher is None:
        if feeds_db is not None and notice is not None:
            _stderr(notice)
        return last  # no feeds: the report as it was recorded
    options = ScanOptions(paths=(), baselines=baselines or last.baselines, feeds_db=str(path))
    return rejudge(last, load_judge(options, parse_iso(last.started_at) or utc_now()))


@main.command()
@click.argument("image", type=click.Path())
@table_or_json
@_state_options
def history(image: str, fmt: str, state_path: str | None) -> None:
    """The image's recorded scans: when, what changed, risk over time."""
    from vmaudit.report.history import render_history

    with _state_db(state_path) as db:
        entries = db.history(os.path.abspath(image))
    if not entries:
        _stderr(f"{image}: no recorded scan")
        raise SystemExit(3)
    click.echo(render_history(entries, fmt), nl=False)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@baselines_option()
@click.option("-i", "--inventory", type=click.Path(dir_okay=False))
@table_or_json
@_seconds_option("--interval", 0.1, 5, "Seconds between polls")
@_seconds_option("--settle", 0, 30, "Seconds an image must stay unchanged before it is audited")
@timeout_option()
@click.option("--exclude", "excludes", multiple=True, metavar="GLOB")
@_state_options
def watch(
    paths: tuple[str, ...],
    baselines: tuple[str, ...],
    inventory: str | None,
    fmt: str,
    interval: float,
    settle: float,
    timeout: float,
    excludes: tuple[str, ...],
    state_path: str | None,
) -> None:
    """Watch datastores; audit an image as soon as it appears or changes and is quiet."""
    from vmaudit.discover.walk import discover
    from vmaudit.report.events import render_event
    from vmaudit.run.runner import Runner
    from vmaudit.scan import ScanOptions, audit_one, load_judge
    from vmaudit.state.cache import open_cache
    from vmaudit.watch import Watcher

    options = ScanOptions(
        paths=paths,
        baselines=baselines or ("default",),
        inventory=inventory,
        excludes=excludes,
        timeout=timeout,
    )
    with config_errors():
        judge = load_judge(options, utc_now())
        cache = open_cache(state_path)
    runner = Runner(jobs=1, timeout=timeout, on_notice=_stderr)
    watcher = Watcher(
        list(paths),
        lambda roots: discover(roots, excludes).images,
        interval=interval,
        settle=settle,
    )
    try:
        for event in watcher.events():
            result = None
            if event.kind in ("appeared", "modified"):
                result = audit_one(event.image, runner, judge, cache).results[0]
            click.echo(render_event(event, result, fmt))
    except KeyboardInterrupt:
        pass
    finally:
        watcher.close()
        cache.close()


@baselines.command("capture")
@click.argument("image", type=click.Path())
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write the baseline there (atomically) instead of stdout",
)
@click.option("--name", help="metadata.name of the baseline  [default: golden-<image>]")
@timeout_option()
def baselines_capture(image: str, output: str | None, name: str | None, timeout: float) -> None:
    """Write a baseline that the given golden image passes."""
    from vmaudit.baseline.capture import capture_baseline
    from vmaudit.baseline.factsio import facts_from_dict

    read = [(path, facts) for path, facts in _read_images(image, timeout) if facts is not None]
    if len(read) != 1:
        _stderr(f"{image}: capture needs exactly one readable guest, found {len(read)}")
        raise SystemExit(3)
    path, facts = read[0]
    with config_errors():
        text = capture_baseline(facts_from_dict(facts), path, datetime.now(UTC), name)
    emit(text, output)


def run() -> None:
    """Entry point that turns unexpected ``VmauditError`` into a message, not a traceback."""
    try:
        main(standalone_mode=True)
    except VmauditError as exc:
        _stderr(str(exc))
        raise SystemExit(ExitCode.CONFIG) from None


if __name__ == "__main__":
    run()

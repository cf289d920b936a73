"""``vmaudit remediate``: repair a dormant image offline, into a qcow2 overlay of its own.

The image is never opened writable. Each of its disks gets a qcow2 overlay made with
``qemu-img create -f qcow2 -F FORMAT -b IMAGE`` (format pinned, ``-u``: the chain is not
opened), after every link of the chain has passed ``validate_disk`` (spec/safety.md); the
appliance is given only those overlays, so the base is their read-only backing. The guest
is read as an audit reads it (facts, then the baselines' findings), and the fixes are
planned as bytes over that view (``PendingFS``): the collectors re-read the planned guest
and each fix must make its finding go. Only then, for a real run, the filesystems that
hold a planned file are mounted read-write (the others read-only), the bytes are written,
the guest is read again and must give exactly the planned facts, and the overlays of the
disks that were written are renamed into place; the others are deleted. Anything that
fails on the way deletes every overlay: a remediation that cannot complete leaves none.

The fixes themselves are planned in vmaudit/act/fixes.py (the default: those the findings
call for; a selected fix acts on all its targets).

The change list goes to stdout and into the guest as
``/var/lib/vmaudit/vmaudit-remediation.json`` (Windows: ``/ProgramData/vmaudit/``). An
edited file keeps its inode, so its mode, owner and SELinux label; a created file or folder
takes its parent folder's label, as the kernel gives one by default.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import click

from vmaudit import __version__
from vmaudit.act.fixes import (
    RECORD_SCHEMA,
    Change,
    Left,
    PendingFS,
    Plan,
    Refused,
    called_for,
    missing_folders,
    plan_fixes,
    record_path,
    resolve_top_nocase,
    verify_plan,
)
from vmaudit.act.fixnames import FIXES, Fix
from vmaudit.baseline.loader import load_baseline
from vmaudit.baseline.model import Baseline
from vmaudit.clikit import baselines_option, table_or_json, timeout_option
from vmaudit.discover.formats import qcow2_over, qemu_driver
from vmaudit.discover.identity import signature
from vmaudit.discover.locks import in_use
from vmaudit.errors import ConfigError, ErrorKind, VmauditError
from vmaudit.guest import accel
from vmaudit.guest.appliance import (
    ApplianceFS,
    LaunchOptions,
    is_vhd_chain,
    launch,
    mount_root,
    overlay_backing,
    qemu_img,
    qemu_img_info,
    validate_disk,
)
from vmaudit.guest.base import safe_path
from vmaudit.guest.detect import ENCRYPTED_FS, Layout, Root, find_roots, survey
from vmaudit.judge.rules import evaluate
from vmaudit.models import DiskRef, Facts, Finding, ImageInfo, ImageRef
from vmaudit.run.audit import collect_facts, image_info
from vmaudit.text import terminal_safe

EXIT_REFUSED = 3
SELINUX = "security.selinux"


# ---------------------------------------------------------------- the result


@dataclass(frozen=True)
class Outcome:
    image: str
    overlays: tuple[str, ...]
    dry_run: bool
    fixes: tuple[str, ...]
    changes: tuple[Change, ...]
    left: tuple[Left, ...]
    fixed: tuple[tuple[str, str], ...]  # (rule id, subject) of the findings gone
    remaining: tuple[tuple[str, str], ...]  # findings still there after the fixes
    record: str | None
    created_at: str
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RECORD_SCHEMA,
            "tool": f"vmaudit {__version__}",
            "created_at": self.created_at,
            "image": self.image,
            "overlays": list(self.overlays),
            "dry_run": self.dry_run,
            "fixes": list(self.fixes),
            # Guest paths may hold bytes that are not UTF-8: escaped, as in every message.
            "changes": [{k: safe_path(v) for k, v in vars(c).items()} for c in self.changes],
            "left": [{k: safe_path(v) for k, v in vars(item).items()} for item in self.left],
            "findings_fixed": [{"rule": r, "subject": s} for r, s in self.fixed],
            "findings_remaining": [{"rule": r, "subject": s} for r, s in self.remaining],
            "record": self.record,
            "warnings": list(self.warnings),
        }


def render(outcome: Outcome, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(outcome.to_dict(), indent=2, ensure_ascii=False) + "\n"
    from tabulate import tabulate

    rows = [
        [c.fix, terminal_safe(c.subject), terminal_safe(c.path), c.action, terminal_safe(c.detail)]
        for c in outcome.changes
    ]
    rows += [
        [item.fix, terminal_safe(item.subject), "", "left", terminal_safe(item.reason)]
        for item in outcome.left
    ]
    lines = [
        tabulate(rows, headers=["fix", "subject", "guest file", "change", "detail"])
        if rows
        else "no change needed"
    ]
    for rule_id, subject in outcome.fixed:
        lines.append(f"fixed: {rule_id} {terminal_safe(subject)}")
    for rule_id, subject in outcome.remaining:
        lines.append(f"remaining: {rule_id} {terminal_safe(subject)}")
    if outcome.dry_run:
        lines.append("dry run: nothing was written")
    elif outcome.overlays:
        lines += [f"overlay: {terminal_safe(path)}" for path in outcome.overlays]
        lines.append(f"recorded in the guest as {outcome.record}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- overlays


def overlay_names(output: str, disks: int) -> list[str]:
    """``output`` for the first disk, ``<stem>-disk<N><suffix>`` for disk N after it."""
    stem, suffix = os.path.splitext(os.path.abspath(output))
    return [os.path.abspath(output)] + [f"{stem}-disk{n}{suffix}" for n in range(1, disks)]


def create_overlay(disk: DiskRef, size: int, path: str, locking: bool) -> None:
    """``qemu-img create -f qcow2 -F FORMAT -b IMAGE``, the chain not opened (``-u``).

    While the appliance works, the backing is written as a ``json:`` node (ours, from
    ``json.dumps``) so that ``--force`` can open an image a VM holds without qemu's locks;
    ``finish_overlay`` then names the plain absolute path.
    """
    backing = overlay_backing(disk, locking)
    qemu_img(["create", "-q", "-u", *qcow2_over(disk.format, backing), path, str(size)])


def finish_overlay(disk: DiskRef, path: str) -> None:
    """Point the overlay at the image by its plain path, format pinned; check the header."""
    base = os.path.abspath(disk.path)
    qemu_img(["rebase", "-q", "-U", "-u", *qcow2_over(disk.format, base), path])
    check_overlay(disk, path)


def check_overlay(disk: DiskRef, path: str) -> None:
    """The overlay names exactly the image, in its format, and no data file."""
    info = qemu_img_info(path, "qcow2")
    specific = info.get("format-specific", {}).get("data", {})
    if (
        info.get("backing-filename") != os.path.abspath(disk.path)
        or info.get("backing-filename-format") != qemu_driver(disk.format)
        or (isinstance(specific, dict) and specific.get("data-file"))
    ):
        raise VmauditError(
            ErrorKind.UNSAFE_BACKING_FILE,
            f"{path}: the overlay's header does not name {disk.path} as {disk.format}",
        )


# ---------------------------------------------------------------- the appliance


@contextmanager
def _watchdog(handle: Any, seconds: float) -> Iterator[list[bool]]:
    """Kill the appliance's qemu after ``seconds``: every later call then fails."""
    fired = [False]

    def kill() -> None:
        fired[0] = True
        with suppress(RuntimeError, ProcessLookupError, OSError):
            os.kill(int(handle.get_pid()), 9)

    timer = threading.Timer(seconds, kill)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


def _drives_of(layout: Layout, device: str) -> set[int]:
    if device.startswith("btrfsvol:"):
        rest = device[len("btrfsvol:") :]
        known = sorted((d for d in layout.drive_of if rest.startswith(d + "/")), key=len)
        device = known[-1] if known else rest
    if device in layout.lvs:
        return set(layout.vg_drives.get(layout.lvs[device], set()))
    md: dict[str, set[int]] = getattr(layout, "md_drives", {})
    if device in md:
        return set(md[device])
    return {layout.drive_of[device]} if device in layout.drive_of else set()


def _mountpoint_of(root: Root, path: str) -> tuple[str, str]:
    best = ("/", root.device)
    for mountpoint, device in root.mountpoints:
        prefix = mountpoint.rstrip("/") + "/"
        if (path == mountpoint or path.startswith(prefix)) and len(mountpoint) >= len(best[0]):
            best = (mountpoint, device)
    return best


def _remount(handle: Any, root: Root, writable: set[str]) -> None:
    with suppress(RuntimeError):
        handle.umount_all()
    for mountpoint, device in root.mountpoints:
        try:
            if device in writable:
                handle.mount_options("", device, mountpoint)
            else:
                handle.mount_ro(device, mountpoint)
        except RuntimeError as exc:
            if device in writable or mountpoint == "/":
                raise VmauditError(
                    ErrorKind.APPLIANCE_FAILED,
                    f"cannot mount {device} on {mountpoint} "
                    f"{'read-write' if device in writable else ''}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}",
                ) from None


def _label(handle: Any, path: str) -> bytes | None:
    try:
        value = handle.lgetxattr(path, SELINUX)
    except RuntimeError:
        return None
    return bytes(value) if value else None


def _check_target(handle: Any, path: str) -> bool:
    """True when ``path`` exists as a regular file with one link; raise when it is unsafe."""
    try:
        st = handle.lstatns(path)
    except RuntimeError:
        return False
    if stat.S_ISLNK(st["st_mode"]):
        raise Refused(f"{safe_path(path)} became a symbolic link")
    if not stat.S_ISREG(st["st_mode"]):
        raise Refused(f"{safe_path(path)} is not a regular file")
    if st["st_nlink"] != 1:
        raise Refused(
            f"{safe_path(path)} has {st['st_nlink']} hard links; writing it would "
            "change the others too"
        )
    return True


def apply_plan(handle: Any, plan: Plan, scratch: str, labels: bool) -> None:
    """Write the plan's files into the mounted guest: in place (same inode) when they exist."""
    for folder in plan.folders:
        handle.mkdir_mode(folder, 0o755)
        parent = _label(handle, posixpath.dirname(folder)) if labels else None
        if parent is not None:
            handle.lsetxattr(SELINUX, parent, len(parent), folder)
    for index, (path, data) in enumerate(plan.writes.items()):
        existed = _check_target(handle, path)
        local = os.path.join(scratch, f"upload{index}")
        with open(local, "wb") as out:
            out.write(data)
        handle.upload(local, path)  # O_TRUNC on the existing inode: mode, owner, label kept
        os.unlink(local)
        if not existed and labels:
            handle.chmod(0o644, path)
            handle.chown(0, 0, path)
            parent = _label(handle, posixpath.dirname(path))
            if parent is not None:
                handle.lsetxattr(SELINUX, parent, len(parent), path)


def _finding_keys(findings: Sequence[Finding]) -> set[tuple[str, str]]:
    return {(f.rule, f.subject) for f in findings}


def _comparable(facts: Facts) -> dict[str, Any]:
    data = facts.to_dict()
    data.pop("image", None)
    return data


@dataclass(frozen=True)
class Request:
    image: str
    output: str
    baselines: tuple[str, ...] = ("default",)
    fixes: tuple[Fix, ...] = ()  # empty: what the findings call for
    dry_run: bool = False
    force: bool = False
    timeout: float = 600.0


def _resolve(image: str) -> ImageRef:
    from vmaudit.discover import discover

    found = discover([image])
    if found.skipped:
        skipped = found.skipped[0]
        raise Refused(f"{skipped.path}: {skipped.kind}: {skipped.message}")
    if len(found.images) != 1:
        raise ConfigError(f"{image}: remediate needs exactly one guest, found {len(found.images)}")
    return found.images[0]


def remediate(
    request: Request, notice: Callable[[str], None] | None = None, now: datetime | None = None
) -> Outcome:
    """Plan the fixes on ``request.image`` and, unless a dry run, write them into overlays."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    baselines = tuple(load_baseline(ref) for ref in request.baselines)
    ref = _resolve(request.image)
    for disk in ref.disks:
        if is_vhd_chain(disk):
            raise VmauditError(
                ErrorKind.UNSUPPORTED_FORMAT,
                f"{disk.path}: a VHD differencing disk, which qemu cannot open "
                "with its parent; merge the chain first",
            )
    warnings: list[str] = []
    live = in_use(ref)
    if live:
        if not request.force:
            raise Refused(
                f"{ref.path} is in use by a running VM: a repair of a live disk is "
                "no point-in-time repair (--force to write an overlay anyway)"
            )
        warnings.append(
            f"warning: {ref.path} is in use by a running VM: the overlay stands on a disk "
            "that is still changing (--force)"
        )
        if notice is not None:
            notice(warnings[-1])
    names = overlay_names(request.output, len(ref.disks))
    images = {os.path.realpath(p) for disk in ref.disks for p in disk.chain}
    if not request.dry_run:
        for name in names:
            if os.path.lexists(name) or os.path.realpath(name) in images:
                raise ConfigError(f"{name} exists; remediate never overwrites a file")
        if not os.path.isdir(os.path.dirname(names[0])):
            raise ConfigError(f"{os.path.dirname(names[0])}: no such folder")
    try:
        sizes = [validate_disk(disk) for disk in ref.disks]
        before = signature(ref)
        info = image_info(ref)
    except OSError as exc:
        raise Refused(f"{ref.path}: {exc.strerror or exc}") from None
    work_parent = None if request.dry_run else os.path.dirname(names[0])
    work = tempfile.mkdtemp(prefix=".vmaudit-remediate-", dir=work_parent)
    scratch = tempfile.mkdtemp(prefix="vmaudit-remediate-")
    try:
        overlays = [os.path.join(work, f"disk{i}.qcow2") for i in range(len(ref.disks))]
        for disk, size, path in zip(ref.disks, sizes, overlays, strict=True):
            create_overlay(disk, size, path, locking=not request.force)
        options = LaunchOptions()
        verdict = accel.decide()
        options = replace(options, force_tcg=not verdict.kvm)
        if notice is not None and verdict.notice() is not None:
            notice(str(verdict.notice()))
        appliance = launch(overlays, options)
        try:
            with _watchdog(appliance.handle, request.timeout) as fired:
                try:
                    result = _work(
                        appliance.handle,
                        request,
                        ref,
                        info,
                        baselines,
                        now,
                        scratch,
                        warnings,
                        names,
                    )
                except RuntimeError as exc:
                    if fired[0]:
                        raise VmauditError(
                            ErrorKind.TIMEOUT, f"remediation took over {request.timeout:.0f} s"
                        ) from None
                    raise VmauditError(
                        ErrorKind.APPLIANCE_FAILED,
                        str(exc).splitlines()[0][:300] if str(exc) else "the appliance failed",
                    ) from None
        finally:
            appliance.close()
        changed_drives, outcome = result
        # A live image (--force) changes under the overlay, as its warning says; any other
        # image that changed was not the one planned over.
        if signature(ref) != before and not live:
            raise VmauditError(ErrorKind.IMAGE_CHANGED, "the image changed while it was remediated")
        if request.dry_run or not outcome.changes:
            return replace(outcome, overlays=())
        for index, (disk, path) in enumerate(zip(ref.disks, overlays, strict=True)):
            if index in changed_drives:
                finish_overlay(disk, path)
        return replace(outcome, overlays=tuple(_publish(overlays, names, changed_drives)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _work(
    handle: Any,
    request: Request,
    ref: ImageRef,
    info: ImageInfo,
    baselines: Sequence[Baseline],
    now: datetime,
    scratch: str,
    warnings: list[str],
    names: Sequence[str],
) -> tuple[set[int], Outcome]:
    """In the launched appliance: read, plan, verify the plan and, unless a dry run, write.

    Returns the drives written and the outcome."""
    layout = survey(handle)
    if any(t in ENCRYPTED_FS for d, t in layout.fs_types.items() if d in layout.drive_of):
        raise VmauditError(
            ErrorKind.ENCRYPTED,
            "the disk holds an encrypted volume: it cannot "
            "be read, so it cannot be repaired; no key is guessed",
        )
    roots = find_roots(handle, layout, {0: list(range(len(ref.disks)))}).get(0, [])
    if len(roots) > 1:
        raise Refused(
            f"{len(roots)} operating systems found; remediate repairs an image holding exactly one"
        )
    guest = mount_root(handle, roots, False)
    root = roots[0]
    fs = ApplianceFS(handle, scratch)
    facts = collect_facts(fs, info, now, list(guest.warnings))
    findings = evaluate(facts, baselines, now).findings
    fixes = list(request.fixes) or called_for(facts, findings)
    plan = plan_fixes(fs, facts, findings, fixes, now, scratch)
    record = record_path(fs, facts.os.type)
    created_at = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    outcome = Outcome(
        ref.path,
        (),
        request.dry_run,
        tuple(fixes),
        tuple(plan.changes),
        tuple(plan.left),
        (),
        (),
        record if plan.changes else None,
        created_at,
        tuple(warnings),
    )
    if plan.changes:
        if facts.os.type == "windows":
            resolved = resolve_top_nocase(fs, record)
            record = resolved
        plan.folders = missing_folders(fs, record)
        outcome = replace(outcome, record=record)
        plan.writes[record] = b""  # the record's size does not matter to the facts
    planned_view = PendingFS(fs, plan.writes, plan.folders)
    planned = collect_facts(planned_view, info, now, list(guest.warnings))
    after = evaluate(planned, baselines, now).findings
    outcome = replace(
        outcome,
        fixed=tuple(sorted(_finding_keys(findings) - _finding_keys(after))),
        remaining=tuple(sorted(_finding_keys(after))),
    )
    verify_plan(plan, planned)
    if not plan.changes:
        return set(), outcome
    devices = {_mountpoint_of(root, path)[1] for path in [*plan.writes, *plan.folders]}
    drives: set[int] = set()
    for device in devices:
        drives |= _drives_of(layout, device)
    if not request.dry_run:
        outcome = replace(outcome, overlays=tuple(names[d] for d in sorted(drives)))
    plan.writes[record] = (
        json.dumps(outcome.to_dict(), indent=2, ensure_ascii=False) + "\n"
    ).encode()
    if request.dry_run:
        return set(), replace(outcome, overlays=())
    _remount(handle, root, devices)
    apply_plan(handle, plan, scratch, labels=facts.os.type == "linux")
    handle.sync()
    written = collect_facts(ApplianceFS(handle, scratch), info, now, list(guest.warnings))
    read_back, foreseen = _comparable(written), _comparable(planned)
    if read_back != foreseen:
        differ = sorted(
            k for k in read_back.keys() | foreseen.keys() if read_back.get(k) != foreseen.get(k)
        )
        raise VmauditError(
            ErrorKind.INTERNAL,
            f"the guest read back after the writes differs from the plan ({', '.join(differ)}); "
            "nothing is kept",
        )
    with suppress(RuntimeError):
        handle.umount_all()
    return drives, outcome


def _publish(overlays: Sequence[str], names: Sequence[str], drives: set[int]) -> list[str]:
    """Give the written overlays their names, never over an existing file; all or none."""
    done: list[str] = []
    try:
        for index in sorted(drives):
            try:
                os.link(overlays[index], names[index])  # fails if the name exists
            except FileExistsError:
                raise ConfigError(f"{names[index]} appeared meanwhile; not overwritten") from None
            except OSError:  # no hard links on this filesystem
                if os.path.lexists(names[index]):
                    raise ConfigError(f"{names[index]} exists; not overwritten") from None
                os.rename(overlays[index], names[index])
            done.append(names[index])
    except BaseException:
        for name in done:
            with suppress(OSError):
                os.unlink(name)
        raise
    return done


# ---------------------------------------------------------------- the command


@click.command("remediate")
@click.argument("image", type=click.Path())
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="OVERLAY.qcow2",
    help="The overlay to write (disk N of a VM: OVERLAY-diskN.qcow2)",
)
@baselines_option("Baseline whose findings the fixes answer; repeatable  [default: default]")
@click.option(
    "--fix",
    "fixes",
    multiple=True,
    type=click.Choice(FIXES),
    help="Fix to apply; repeatable  [default: those the findings call for]",
)
@click.option("--dry-run", is_flag=True, help="Print the changes; create nothing")
@table_or_json
@click.option("--force", is_flag=True, help="Remediate an image a running VM holds (warned)")
@timeout_option("Wall-clock seconds for the appliance")
def remediate_command(
    image: str,
    output: str,
    baselines: tuple[str, ...],
    fixes: tuple[Fix, ...],
    dry_run: bool,
    fmt: str,
    force: bool,
    timeout: float,
) -> None:
    """Write the fixes into a new qcow2 overlay backed by the untouched IMAGE."""
    request = Request(
        image, output, baselines or ("default",), tuple(fixes), dry_run, force, timeout
    )

    def notice(message: str) -> None:
        click.echo(f"vmaudit: {terminal_safe(message)}", err=True)

    try:
        outcome = remediate(request, notice)
    except ConfigError as exc:
        click.echo(f"vmaudit: {terminal_safe(exc.message)}", err=True)
        raise SystemExit(2) from None
    except Refused as exc:
        click.echo(
            f"vmaudit: remediate refused: {terminal_safe(exc.message)}; no overlay written",
            err=True,
        )
        raise SystemExit(EXIT_REFUSED) from None
    except VmauditError as exc:
        click.echo(
            f"vmaudit: remediate refused: {exc.kind}: {terminal_safe(exc.message)}; "
            "no overlay written",
            err=True,
        )
        raise SystemExit(EXIT_REFUSED) from None
    click.echo(render(outcome, fmt), nl=False)

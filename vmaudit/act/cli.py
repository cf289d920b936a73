"""``vmaudit gate``: the power-on gate's commands (spec/power-on.md, "The libvirt gate").

Exit codes: 0 allow, 1 refuse, 2 a policy or option that cannot be used (the hypervisor
then refuses the start too: its hook failed). The hook passes every call that does not
decide a start at once, before reading anything.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from vmaudit.act import DEFAULT_POLICY
from vmaudit.clikit import table_or_json
from vmaudit.errors import ExitCode, VmauditError

if TYPE_CHECKING:
    from vmaudit.act.domain import GuestDisks

_POLICY_HELP = f"GatePolicy YAML  [default: {DEFAULT_POLICY}, built-in defaults if absent]"
_STATE_HELP = "State database (overrides the policy's state:)"


@contextmanager
def _config_errors(one_line: bool = False) -> Iterator[None]:
    """A policy or state that cannot be used: the problems on stderr, exit 2."""
    try:
        yield
    except VmauditError as exc:
        message = exc.message
        if one_line:  # libvirt shows the hook's stderr as one error line
            message = "; ".join(line.strip() for line in message.splitlines() if line.strip())
        click.echo(f"vmaudit gate: {message}", err=True)
        raise SystemExit(ExitCode.CONFIG) from None


def _decide_and_exit(
    guest: GuestDisks, policy_path: str | None, state: str | None, source: str, one_line: bool
) -> None:
    from vmaudit.act.gate import Gate
    from vmaudit.act.policy import load_policy

    with _config_errors(one_line):
        gate_ = Gate(load_policy(policy_path), state)
    try:
        decision = gate_.decide(guest, source)
    except Exception as exc:  # a bug of ours: on_error's case, said on one line, no traceback
        allowed = gate_.policy.on_error == "allow"
        verdict = "allowed" if allowed else "refused"
        click.echo(
            f"vmaudit gate: {verdict} (on_error: {gate_.policy.on_error}): internal "
            f"error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
            err=True,
        )
        raise SystemExit(0 if allowed else 1) from None
    verdict = "allowed" if decision.allowed else "refused"
    click.echo(f"vmaudit gate: {verdict} {decision.reason}", err=True)
    raise SystemExit(decision.exit_code)


@click.group("gate", context_settings={"help_option_names": ["-h", "--help"]})
def gate() -> None:
    """Decide at power-on whether a dormant VM may start (hypervisor hooks)."""


@gate.command("libvirt", context_settings={"ignore_unknown_options": True})
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False), help=_POLICY_HELP)
@click.option("--state", help=_STATE_HELP)
@click.argument("domain")
@click.argument("operation")
@click.argument("subop", required=False, default="-")
@click.argument("extra", nargs=-1)
def gate_libvirt(
    policy_path: str | None,
    state: str | None,
    domain: str,
    operation: str,
    subop: str,
    extra: tuple[str, ...],
) -> None:
    """libvirt's qemu hook: DOMAIN OPERATION SUBOP EXTRA, the domain XML on stdin.

    Decides on ``prepare begin``; every other call passes at once.
    """
    from vmaudit.act.libvirt import DECIDING

    if (operation, subop) != DECIDING:
        raise SystemExit(0)
    from dataclasses import replace

    from vmaudit.act.domain import MAX_XML_BYTES, domain_disks

    data = sys.stdin.buffer.read(MAX_XML_BYTES + 1)
    guest = domain_disks(data)
    # libvirt names the domain in argv; the XML's own name may be absent or unreadable
    guest = replace(guest, name=domain)
    _decide_and_exit(guest, policy_path, state, "libvirt", one_line=True)


@gate.command("proxmox")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False), help=_POLICY_HELP)
@click.option("--state", help=_STATE_HELP)
@click.option(
    "--pve-dir",
    default="/etc/pve",
    show_default=True,
    help="Proxmox's configuration folder (qemu-server/, storage.cfg)",
)
@click.argument("vmid")
@click.argument("phase")
def gate_proxmox(
    policy_path: str | None, state: str | None, pve_dir: str, vmid: str, phase: str
) -> None:
    """Proxmox VE hookscript: VMID PHASE; decides on pre-start, other phases pass."""
    if phase != "pre-start":
        raise SystemExit(0)
    from vmaudit.act.proxmox import vm_disks

    _decide_and_exit(vm_disks(vmid, pve_dir), policy_path, state, "proxmox", one_line=True)


@gate.command("check")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False), help=_POLICY_HELP)
@click.option("--state", help=_STATE_HELP)
@click.argument("images", nargs=-1, required=True, type=click.Path())
def gate_check(policy_path: str | None, state: str | None, images: tuple[str, ...]) -> None:
    """The gate's decision for images given by hand: exit 0 allow, 1 refuse (any image)."""
    import os

    from vmaudit.act.domain import DiskSpec, GuestDisks
    from vmaudit.act.gate import Gate
    from vmaudit.act.policy import load_policy

    with _config_errors():
        gate_ = Gate(load_policy(policy_path), state)
    refused = False
    for image in images:
        path = os.path.abspath(image)
        kind = "block" if path.startswith("/dev/") else "file"  # an LV, a zvol, a disk
        guest = GuestDisks(os.path.basename(path), (DiskSpec("disk0", kind, path),))
        decision = gate_.decide(guest, "check")
        click.echo(f"{'allow' if decision.allowed else 'refuse'}  {decision.reason}")
        refused = refused or not decision.allowed
    raise SystemExit(1 if refused else 0)


@gate.command("install")
@click.argument("hypervisor", type=click.Choice(["libvirt"]))
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False), help=_POLICY_HELP)
@click.option("--hooks-dir", default="/etc/libvirt/hooks", show_default=True)
def gate_install(hypervisor: str, policy_path: str | None, hooks_dir: str) -> None:
    """Install the hook as qemu.d/vmaudit (idempotent; other hooks are kept)."""
    from vmaudit.act.gate import Gate
    from vmaudit.act.libvirt import install
    from vmaudit.act.policy import load_policy

    with _config_errors():
        Gate(load_policy(policy_path))  # a policy that cannot be used is refused now
        done = install(hooks_dir, policy_path)
    if done.changed:
        click.echo(f"installed {done.path}; restart libvirtd (or virtqemud) so that it runs")
    else:
        click.echo(f"{done.path} is already installed")


@gate.command("uninstall")
@click.argument("hypervisor", type=click.Choice(["libvirt"]))
@click.option("--hooks-dir", default="/etc/libvirt/hooks", show_default=True)
def gate_uninstall(hypervisor: str, hooks_dir: str) -> None:
    """Remove qemu.d/vmaudit; no other hook is touched."""
    from vmaudit.act.libvirt import uninstall

    with _config_errors():
        done = uninstall(hooks_dir)
    click.echo(f"removed {done.path}" if done.changed else f"{done.path}: not installed")


@gate.command("decisions")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False), help=_POLICY_HELP)
@click.option("--state", help=_STATE_HELP)
@click.option("--since", metavar="DATE", help="Only decisions at or after DATE (ISO)")
@table_or_json
def gate_decisions(policy_path: str | None, state: str | None, since: str | None, fmt: str) -> None:
    """The recorded power-on decisions, oldest first."""
    from vmaudit.act.policy import load_policy
    from vmaudit.report.power_on import render_power_ons
    from vmaudit.state import open_state

    moment = None
    if since is not None:
        try:
            moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(
                f"{since!r} is not an ISO date", param_hint="--since"
            ) from None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    with _config_errors():
        ref = state if state is not None else load_policy(policy_path).state
        db = open_state(ref)
        try:
            decisions = db.power_ons(since=moment)
        finally:
            db.close()
    click.echo(render_power_ons(decisions, fmt), nl=False)


if __name__ == "__main__":  # the installed hook runs this module: no other command loads
    gate(prog_name="vmaudit gate")

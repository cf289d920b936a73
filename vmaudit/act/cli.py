"""``vmaudit gate``: the power-on gate's commands (spec/power-on.md, "The libvirt gate").

Exit codes: 0 allow, 1 refuse, 2 a policy or option that cannot be used (the hypervisor
then refuses the start too: its hook failed). The hook passes every call that does not
decide a start at once, before reading anything.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click

from vmaudit.act import DEFAULT_POLICY
from vmaudit.act.hook import config_errors, decide_and_exit, libvirt_hook
from vmaudit.clikit import table_or_json

_POLICY_HELP = f"GatePolicy YAML  [default: {DEFAULT_POLICY}, built-in defaults if absent]"
_STATE_HELP = "State database (overrides the policy's state:)"


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
    libvirt_hook(domain, operation, subop, policy_path, state)


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

    decide_and_exit(vm_disks(vmid, pve_dir), policy_path, state, "proxmox", one_line=True)


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

    with config_errors():
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

    with config_errors():
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

    with config_errors():
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
    with config_errors():
        ref = state if state is not None else load_policy(policy_path).state
        db = open_state(ref)
        try:
            decisions = db.power_ons(since=moment)
        finally:
            db.close()
    click.echo(render_power_ons(decisions, fmt), nl=False)


if __name__ == "__main__":  # the installed hook runs this module: no other command loads
    gate(prog_name="vmaudit gate")

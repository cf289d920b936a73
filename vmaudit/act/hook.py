"""The power-on decision as a hook process runs it, without click: what libvirt waits for.

The installed libvirt hook runs ``python -I -m vmaudit.act.hook [--policy FILE] [--state
REF] DOMAIN OPERATION SUBOP EXTRA`` for every operation on every domain; an operation that
decides nothing exits 0 before anything else is imported. ``vmaudit gate libvirt`` and
``vmaudit gate proxmox`` (vmaudit.act.cli) decide through the same functions.

Exit codes: 0 allow, 1 refuse, 2 a policy, state or argument that cannot be used (the
hypervisor then refuses the start too: its hook failed).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from vmaudit.act.domain import GuestDisks

DECIDING = ("prepare", "begin")  # libvirt's qemu hook: the call that may abort a start
USAGE = "usage: vmaudit gate libvirt [--policy FILE] [--state REF] DOMAIN OPERATION SUBOP EXTRA"
CONFIG_EXIT = 2  # vmaudit.errors.ExitCode.CONFIG, not imported for the calls that pass


def say(message: str) -> None:
    """One line on stderr: libvirt shows the hook's stderr as the start's error."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


@contextmanager
def config_errors(one_line: bool = False) -> Iterator[None]:
    """A policy or state that cannot be used: the problems on stderr, exit 2."""
    from vmaudit.errors import VmauditError

    try:
        yield
    except VmauditError as exc:
        message = exc.message
        if one_line:  # libvirt shows the hook's stderr as one error line
            message = "; ".join(line.strip() for line in message.splitlines() if line.strip())
        say(f"vmaudit gate: {message}")
        raise SystemExit(CONFIG_EXIT) from None


def decide_and_exit(
    guest: GuestDisks, policy_path: str | None, state: str | None, source: str, one_line: bool
) -> NoReturn:
    """Decide on ``guest``, say why on stderr, exit with the decision's code."""
    from vmaudit.act.gate import Gate
    from vmaudit.act.policy import load_policy

    with config_errors(one_line):
        gate_ = Gate(load_policy(policy_path), state)
    try:
        decision = gate_.decide(guest, source)
    except Exception as exc:  # a bug of ours: on_error's case, said on one line, no traceback
        allowed = gate_.policy.on_error == "allow"
        verdict = "allowed" if allowed else "refused"
        say(
            f"vmaudit gate: {verdict} (on_error: {gate_.policy.on_error}): internal "
            f"error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        )
        raise SystemExit(0 if allowed else 1) from None
    verdict = "allowed" if decision.allowed else "refused"
    say(f"vmaudit gate: {verdict} {decision.reason}")
    raise SystemExit(decision.exit_code)


def libvirt_hook(
    domain: str, operation: str, subop: str, policy_path: str | None, state: str | None
) -> NoReturn:
    """libvirt's qemu hook: decides on ``prepare begin`` with the domain XML on stdin;
    every other call passes at once."""
    if (operation, subop) != DECIDING:
        raise SystemExit(0)
    from dataclasses import replace

    from vmaudit.act.domain import MAX_XML_BYTES, domain_disks

    data = sys.stdin.buffer.read(MAX_XML_BYTES + 1)
    # libvirt names the domain in argv; the XML's own name may be absent or unreadable
    guest = replace(domain_disks(data), name=domain)
    decide_and_exit(guest, policy_path, state, "libvirt", one_line=True)


def main(argv: Sequence[str]) -> NoReturn:
    """The installed hook's arguments: the options our script passes, then libvirt's."""
    args = list(argv)
    options: dict[str, str] = {}
    while args and args[0] in ("--policy", "--state"):
        if len(args) < 2 or args[0] in options:
            break
        options[args[0]] = args[1]
        del args[:2]
    if len(args) < 2 or args[0].startswith("--"):
        say(f"vmaudit gate: {USAGE}")
        raise SystemExit(CONFIG_EXIT)
    subop = args[2] if len(args) > 2 else "-"
    libvirt_hook(args[0], args[1], subop, options.get("--policy"), options.get("--state"))


if __name__ == "__main__":
    main(sys.argv[1:])

"""libvirt's ``qemu`` hook: the protocol, and installing vmaudit's script in ``qemu.d/``.

libvirt runs every executable in ``<hooks dir>/qemu.d/`` (and a ``qemu`` script beside it)
with ``DOMAIN OPERATION SUBOP EXTRA`` as arguments and the domain XML on stdin; a non-zero
exit of ``prepare begin`` aborts the start and its stderr becomes the error that ``virsh
start`` prints. libvirt holds the domain's lock meanwhile, so the hook never calls libvirt.
libvirt looks for hook scripts when the daemon starts: restart it after installing.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from vmaudit.errors import ConfigError

DEFAULT_HOOKS_DIR = "/etc/libvirt/hooks"
HOOK_NAME = "vmaudit"
MARKER = "# vmaudit power-on gate: installed by `vmaudit gate install libvirt`"


def hook_script(policy: str | None) -> str:
    """The script libvirt runs: this Python, isolated (-I: no current folder, no PYTHON*
    variables, no user site), running ``vmaudit gate libvirt``'s decision without its CLI
    (vmaudit.act.hook) with the policy given."""
    command = [sys.executable, "-I", "-m", "vmaudit.act.hook"]
    if policy is not None:
        command += ["--policy", os.path.abspath(policy)]
    return (
        "#!/bin/sh\n"
        f"{MARKER}; `vmaudit gate uninstall libvirt` removes it.\n"
        f'exec {shlex.join(command)} "$@"\n'
    )


@dataclass(frozen=True)
class InstallResult:
    path: Path
    changed: bool


def _hook_path(hooks_dir: str) -> Path:
    return Path(hooks_dir) / "qemu.d" / HOOK_NAME


def _ours(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return MARKER.encode() in head


def install(hooks_dir: str, policy: str | None) -> InstallResult:
    """Write ``qemu.d/vmaudit`` (mode 0755) unless it is already this very script; any other
    hook is left alone, and a foreign file under our name is refused (``ConfigError``)."""
    path = _hook_path(hooks_dir)
    text = hook_script(policy)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ConfigError(f"{path}: exists and is not a regular file; left untouched")
    if path.exists():
        if not _ours(path):
            raise ConfigError(f"{path}: exists and is not vmaudit's hook; left untouched")
        if path.read_text(encoding="utf-8", errors="replace") == text:
            return InstallResult(path, changed=False)
    import tempfile  # the hook itself (every libvirt call) never needs it

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{HOOK_NAME}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return InstallResult(path, changed=True)


def uninstall(hooks_dir: str) -> InstallResult:
    """Remove ``qemu.d/vmaudit`` when it is ours; nothing else is touched."""
    path = _hook_path(hooks_dir)
    if not path.exists() and not path.is_symlink():
        return InstallResult(path, changed=False)
    if path.is_symlink() or not _ours(path):
        raise ConfigError(f"{path}: is not vmaudit's hook; left untouched")
    path.unlink()
    return InstallResult(path, changed=True)

"""Whether this host's KVM works: decided once per host boot, for every command.

``/dev/kvm`` existing proves nothing: on some hosts qemu aborts at once ("failed to set MSR
0x10a"), on others (nested virtualisation without ``vmx``) the KVM guest never boots and a
launch hangs until it is killed. So a scratch appliance is launched without ``force_tcg`` in
a killable child; the clock for the launch starts when libguestfs starts qemu (building the
appliance the first time may take longer and is not KVM's fault), and a launch that has not
finished within ``LAUNCH_LIMIT`` seconds counts as hung. The verdict is cached under
``$XDG_CACHE_HOME/vmaudit/`` keyed by the host's boot id and the hypervisor binary and its
version, so the probe costs one launch per boot, not one per command.

``LIBGUESTFS_BACKEND_SETTINGS=force_tcg`` or ``VMAUDIT_FORCE_TCG=1`` skip the probe.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vmaudit.timeutil import iso_now
from vmaudit.xdg import xdg_folder

QEMU_STARTED = "VMAUDIT-QEMU-STARTED"
LAUNCH_LIMIT = 15.0  # seconds from qemu's start; a KVM launch takes 2-5 s, TCG about 15
BUILD_LIMIT = 600.0  # seconds to build the appliance on first use, before qemu starts
CACHE_ENTRIES = 8
FORCE_HINT = "set LIBGUESTFS_BACKEND_SETTINGS=force_tcg to skip this check"


@dataclass(frozen=True)
class Acceleration:
    """The decision: KVM or software emulation, why, and whether it came from the cache."""

    kvm: bool
    reason: str
    decided_at: str
    cached: bool = False

    def notice(self) -> str | None:
        """What to tell the user on stderr (nothing when KVM works)."""
        if self.kvm:
            return None
        origin = f"decided {self.decided_at}, cached for this boot" if self.cached else "probed now"
        return (
            f"KVM is not usable here ({self.reason}); launching in software emulation "
            f"(force_tcg), {origin}; {FORCE_HINT}"
        )


def forced_tcg() -> bool:
    """Software emulation asked for in the environment."""
    settings = os.environ.get("LIBGUESTFS_BACKEND_SETTINGS", "").split(":")
    return "force_tcg" in settings or os.environ.get("VMAUDIT_FORCE_TCG", "") not in ("", "0")


def decide(cache_dir: Path | None = None) -> Acceleration:
    """This host's verdict: forced, cached for this boot, or probed now and cached."""
    if forced_tcg():
        return Acceleration(False, "software emulation asked for in the environment", iso_now())
    if not _kvm_device_usable():
        return Acceleration(False, "/dev/kvm cannot be opened", iso_now())
    folder = cache_dir or default_cache_dir()
    key = host_key()
    with _locked(folder):
        cached = _read_cache(folder).get(key)
        if cached is not None:
            return Acceleration(
                bool(cached["kvm"]), str(cached["reason"]), str(cached["decided_at"]), cached=True
            )
        verdict = probe()
        _write_cache(folder, key, verdict)
    return verdict


def default_cache_dir() -> Path:
    return xdg_folder("XDG_CACHE_HOME", ".cache")


def hypervisor() -> str:
    """The qemu libguestfs will start (``LIBGUESTFS_HV`` or the host's own)."""
    named = os.environ.get("LIBGUESTFS_HV")
    if named:
        return named
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine(), platform.machine())
    return shutil.which(f"qemu-system-{machine}") or f"qemu-system-{machine}"


def host_key() -> str:
    """Boot id, hypervisor path and its version: what a verdict holds for."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = "unknown-boot"
    binary = hypervisor()
    try:
        version = (
            subprocess.run([binary, "--version"], capture_output=True, timeout=30, check=False)
            .stdout.decode("utf-8", "replace")
            .split("\n")[0]
        )
    except (OSError, subprocess.TimeoutExpired):
        version = "unknown-version"
    return hashlib.sha256("\0".join((boot_id, binary, version)).encode()).hexdigest()


def probe() -> Acceleration:
    """Launch a scratch appliance with KVM allowed, in a child that can be killed whole."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmaudit.run.worker", "--probe-kvm"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    started = threading.Event()
    tail: list[str] = []
    reader = threading.Thread(target=_watch, args=(proc, started, tail), daemon=True)
    reader.start()
    try:
        if not started.wait(BUILD_LIMIT) and proc.poll() is None:
            return Acceleration(False, f"no qemu started within {BUILD_LIMIT:g} s", iso_now())
        try:
            code = proc.wait(timeout=LAUNCH_LIMIT)
        except subprocess.TimeoutExpired:
            return Acceleration(False, f"a KVM launch hung for {LAUNCH_LIMIT:g} s", iso_now())
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(timeout=5)
    if code == 0:
        return Acceleration(True, "a KVM launch succeeded", iso_now())
    stderr = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    why = _first_error(stderr) or (tail[-1] if tail else f"exit code {code}")
    return Acceleration(False, f"a KVM launch failed: {why}", iso_now())


def _watch(proc: subprocess.Popen[bytes], started: threading.Event, tail: list[str]) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode("utf-8", "replace").strip()
        if line == QEMU_STARTED:
            started.set()
        elif line:
            tail[:] = [line[:300]]
    started.set()  # the child ended before qemu started: nothing more to wait for


def _first_error(stderr: str) -> str:
    for line in stderr.split("\n"):
        if "MSR" in line or "error" in line.lower():
            return line.strip()[:300]
    return ""


def _kvm_device_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One probe at a time on this host; no lock (and no cache) where the folder is read-only."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / "accel.lock", "a")  # noqa: SIM115 - held for the whole block
    except OSError:
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _read_cache(folder: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads((folder / "accel.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        key: entry
        for key, entry in data.items()
        if isinstance(entry, dict) and {"kvm", "reason", "decided_at"} <= entry.keys()
    }


def _write_cache(folder: Path, key: str, verdict: Acceleration) -> None:
    entries = _read_cache(folder)
    entries[key] = {"kvm": verdict.kvm, "reason": verdict.reason, "decided_at": verdict.decided_at}
    kept = dict(list(entries.items())[-CACHE_ENTRIES:])
    with contextlib.suppress(OSError):
        scratch = folder / f"accel.json.{os.getpid()}"
        scratch.write_text(json.dumps(kept, indent=1))
        scratch.replace(folder / "accel.json")

"""KVM decided once per host boot, on every command: real qemu behind wrappers that hang or
abort the way broken KVM hosts do (``LIBGUESTFS_HV``), and no command waits for its timeout.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.imaging import raw_disk_from_tree, write_tree
from tests.safety.test_opening import scan_env, vmaudit
from vmaudit.guest import accel

QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
IMAGE_TIMEOUT = "600"
# A generous bound: the probe's launch limit plus two software-emulation launches, far
# below the image timeout that the old behaviour waited for.
WITHIN = 300.0

# The real launch is the only qemu call with both a kernel and KVM allowed (libguestfs's
# feature tests run qemu with accel=kvm:tcg but no kernel). Each call is logged.
HANG = """#!/bin/sh
echo "$*" >> {log}
case "$*" in *-kernel*accel=kvm*|*accel=kvm*-kernel*) exec sleep 100000;; esac
exec {qemu} "$@"
"""
ABORT = """#!/bin/sh
echo "$*" >> {log}
case "$*" in *-kernel*accel=kvm*|*accel=kvm*-kernel*)
  echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69" >&2
  kill -ABRT $$;;
esac
exec {qemu} "$@"
"""


def wrapper(tmp: Path, script: str) -> tuple[Path, Path]:
    log = tmp / "qemu-calls.log"
    path = tmp / "qemu-wrapper"
    path.write_text(script.format(log=log, qemu=QEMU))
    path.chmod(0o755)
    return path, log


def kvm_launches(log: Path) -> int:
    if not log.exists():
        return 0
    lines = log.read_text().split("\n")
    return sum("-kernel" in line and "accel=kvm" in line for line in lines)


def env_with(tmp: Path, hv: Path) -> dict[str, str]:
    env = scan_env(tmp)
    for forcing in ("LIBGUESTFS_BACKEND_SETTINGS", "VMAUDIT_FORCE_TCG"):
        env.pop(forcing, None)
    return {**env, "LIBGUESTFS_HV": str(hv), "XDG_CACHE_HOME": str(tmp / "cache")}


def small_image(tmp: Path) -> Path:
    tree = write_tree(tmp / "tree")
    (tmp / "store").mkdir()
    return raw_disk_from_tree(tree, tmp / "store" / "mini.img")


@pytest.mark.appliance
def test_a_hanging_kvm_is_decided_once_and_inspect_finishes_in_emulation(
    tmp_path: Path,
) -> None:
    image = small_image(tmp_path)
    hv, log = wrapper(tmp_path, HANG)
    env = env_with(tmp_path, hv)
    started = time.monotonic()
    first = vmaudit("inspect", str(image), "--timeout", IMAGE_TIMEOUT, env=env)
    assert time.monotonic() - started < WITHIN
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["os"]["hostname"] == "mini-01"
    assert f"hung for {accel.LAUNCH_LIMIT:g} s" in first.stderr
    assert "software emulation" in first.stderr and "force_tcg" in first.stderr
    assert kvm_launches(log) == 1

    # The next command (another one: scan) takes the verdict from the cache.
    second = vmaudit(
        "scan",
        str(image.parent),
        "-f",
        "json",
        "--timeout",
        IMAGE_TIMEOUT,
        "--state",
        str(tmp_path / "state.db"),
        env=env,
    )
    assert second.returncode in (0, 1), second.stderr
    assert "cached for this boot" in second.stderr
    assert kvm_launches(log) == 1


@pytest.mark.appliance
def test_an_aborting_kvm_is_decided_at_once(tmp_path: Path) -> None:
    image = small_image(tmp_path)
    hv, log = wrapper(tmp_path, ABORT)
    env = env_with(tmp_path, hv)
    started = time.monotonic()
    proc = vmaudit("inspect", str(image), "--timeout", IMAGE_TIMEOUT, env=env)
    assert time.monotonic() - started < WITHIN
    assert proc.returncode == 0, proc.stderr
    assert "failed to set MSR 0x10a" in proc.stderr
    assert kvm_launches(log) == 1
    cache = json.loads((tmp_path / "cache" / "vmaudit" / "accel.json").read_text())
    assert [entry["kvm"] for entry in cache.values()] == [False]


def test_the_verdict_is_keyed_by_boot_and_hypervisor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hv, _ = wrapper(tmp_path, ABORT)
    monkeypatch.delenv("LIBGUESTFS_HV", raising=False)
    own = accel.host_key()
    monkeypatch.setenv("LIBGUESTFS_HV", str(hv))
    wrapped = accel.host_key()
    assert own != wrapped  # same boot, another qemu: probed again
    assert accel.host_key() == wrapped


def test_forcing_software_emulation_skips_the_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hv, log = wrapper(tmp_path, HANG)
    monkeypatch.setenv("LIBGUESTFS_HV", str(hv))
    monkeypatch.setenv("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    verdict = accel.decide(tmp_path / "cache")
    assert not verdict.kvm and "asked for" in verdict.reason
    assert not log.exists() and not (tmp_path / "cache" / "accel.json").exists()

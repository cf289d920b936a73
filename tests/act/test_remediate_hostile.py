"""Hostile guests and images: each remediation refused with its reason, no overlay left.

A symlinked shadow, a huge sudoers.d, a hard-linked shadow (refused only when the writes
begin, after the overlay exists), an encrypted volume: one launch each. An image a VM holds
(a qemu-nbd server here): refused before any launch, then remediated with ``--force``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.act.remedyguests import FILES, baseline_file, remedy_tree, run_env, vmaudit
from tests.hostile.images import ext4_from_tree, luks_file, partitioned_disk
from tests.imaging import convert, raw_disk_from_tree

pytestmark = pytest.mark.appliance


def _remediate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return vmaudit("remediate", *args, env=env)


def _digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def _refused(tmp_path: Path, image: Path, reason: str) -> None:
    before = _digest(image)
    out = tmp_path / "out"
    out.mkdir()
    proc = _remediate(
        str(image),
        "-o",
        str(out / "fixed.qcow2"),
        "-b",
        str(baseline_file(tmp_path)),
        env=run_env(tmp_path),
    )
    assert proc.returncode == 3, proc.stderr
    assert "remediate refused" in proc.stderr and reason in proc.stderr, proc.stderr
    assert "no overlay written" in proc.stderr
    assert proc.stdout == ""
    assert os.listdir(out) == []  # neither the overlay nor the work folder
    assert os.listdir(tmp_path / "tmpdir") == []
    assert _digest(image) == before


def _image(tmp_path: Path, tree: Path, fmt: str = "qcow2") -> Path:
    store = tmp_path / "store"
    store.mkdir()
    raw = raw_disk_from_tree(tree, tmp_path / "guest.raw")
    return convert(raw, fmt, store / f"guest.{fmt}")


def test_a_shadow_file_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    files = {k: v for k, v in FILES.items() if k != "etc/shadow"}
    files["etc/shadow.real"] = FILES["etc/shadow"]
    tree = remedy_tree(tmp_path / "tree", files)
    os.symlink("shadow.real", tree / "etc/shadow")
    _refused(tmp_path, _image(tmp_path, tree), "/etc/shadow is a symbolic link")


def test_a_huge_sudoers_d_is_refused(tmp_path: Path) -> None:
    tree = remedy_tree(tmp_path / "tree")
    for index in range(2000):
        (tree / f"etc/sudoers.d/extra{index:04d}").write_text(f"u{index} ALL=(ALL) ALL\n")
    _refused(tmp_path, _image(tmp_path, tree), "/etc/sudoers.d holds 2001 entries")


def test_a_hard_linked_shadow_is_refused_when_writing_and_no_overlay_is_left(
    tmp_path: Path,
) -> None:
    tree = remedy_tree(tmp_path / "tree")
    os.link(tree / "etc/shadow", tree / "etc/shadow.keep")
    _refused(tmp_path, _image(tmp_path, tree), "/etc/shadow has 2 hard links")


def test_an_encrypted_volume_is_refused(tmp_path: Path) -> None:
    tree = remedy_tree(tmp_path / "tree")
    (tree / "etc/fstab").write_text("LABEL=root / ext4 defaults 0 1\n")
    root = ext4_from_tree(tree, tmp_path / "root.ext4", 40, "root")
    volume = luks_file(tmp_path / "home.luks")
    raw = partitioned_disk(tmp_path / "disk.raw", [root, volume])
    store = tmp_path / "store"
    store.mkdir()
    image = convert(raw, "qcow2", store / "guest.qcow2")
    _refused(tmp_path, image, "encrypted volume")


def test_an_image_in_use_is_refused_unless_forced_with_a_warning(tmp_path: Path) -> None:
    image = _image(tmp_path, remedy_tree(tmp_path / "tree"), "vhd")
    pid_file = tmp_path / "nbd.pid"
    subprocess.run(
        [
            "qemu-nbd",
            "--fork",
            "--persistent",
            "-f",
            "vpc",
            "--pid-file",
            str(pid_file),
            "--socket",
            str(tmp_path / "nbd.sock"),
            str(image),
        ],
        check=True,
        capture_output=True,
    )
    pid = int(pid_file.read_text())
    try:
        before = _digest(image)
        out = tmp_path / "out"
        out.mkdir()
        args = [str(image), "-o", str(out / "fixed.qcow2"), "-b", str(baseline_file(tmp_path))]
        refused = _remediate(*args, env=run_env(tmp_path))
        assert refused.returncode == 3
        assert "in use by a running VM" in refused.stderr and "--force" in refused.stderr
        assert os.listdir(out) == []

        forced = _remediate(*args, "--force", "--format", "json", env=run_env(tmp_path))
        assert forced.returncode == 0, forced.stderr
        assert "warning" in forced.stderr and "in use by a running VM" in forced.stderr
        document = json.loads(forced.stdout)
        assert document["overlays"] == [str(out / "fixed.qcow2")]
        assert any("in use" in w for w in document["warnings"])
        info = json.loads(
            subprocess.run(
                [
                    "qemu-img",
                    "info",
                    "-U",
                    "-f",
                    "qcow2",
                    "--output=json",
                    str(out / "fixed.qcow2"),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        assert (info["backing-filename"], info["backing-filename-format"]) == (str(image), "vpc")
        assert _digest(image) == before
    finally:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)

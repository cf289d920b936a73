"""The same facts from a debootstrap tree changed with the real tools, read as a directory
and read from a disk image of it through the appliance."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fixtures.rootfs import ensure_rootfs
from tests.imaging import convert, raw_disk_from_tree
from vmaudit.discover.walk import discover
from vmaudit.guest.tree import TreeFS
from vmaudit.run.audit import collect_facts, image_info
from vmaudit.run.runner import Runner


def run(*args: str, stdin: bytes | None = None) -> None:
    subprocess.run(args, check=True, capture_output=True, input=stdin)


def changed_tree(dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(ensure_rootfs()), str(dest)], check=True)
    root = str(dest)
    run("useradd", "-R", root, "-m", "-s", "/bin/bash", "alice")
    run("chpasswd", "-R", root, stdin=b"alice:correct horse\n")
    run("usermod", "-R", root, "-aG", "sudo", "alice")
    run("useradd", "-R", root, "-m", "-s", "/bin/bash", "bob")
    run("passwd", "-R", root, "-d", "bob")
    run("chage", "-R", root, "-M", "30", "-E", "2030-01-01", "alice")
    run(
        "useradd",
        "-R",
        root,
        "-o",
        "-u",
        "0",
        "-g",
        "0",
        "-M",
        "-d",
        "/root",
        "-s",
        "/bin/bash",
        "toor",
    )
    (dest / "etc" / "hostname").write_text("tree-vs-image\n")
    (dest / "etc" / "fstab").write_text("LABEL=root / ext4 errors=remount-ro 0 1\n")
    (dest / "etc" / "ufw" / "ufw.conf").write_text("ENABLED=yes\nLOGLEVEL=low\n")
    keys = dest / "home" / "alice" / ".ssh"
    keys.mkdir(parents=True)
    (keys / "authorized_keys").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA alice@x\n")
    return dest


@pytest.mark.appliance
def test_facts_of_the_tree_and_of_its_image_are_the_same(tmp_path: Path) -> None:
    tree = changed_tree(tmp_path / "root")
    store = tmp_path / "store"
    store.mkdir()
    raw = raw_disk_from_tree(tree, tmp_path / "tree.raw", size_mb=640)
    convert(raw, "qcow2", store / "tree.qcow2")
    ref = discover([str(store)]).images[0]
    now = datetime.now(UTC).replace(microsecond=0)

    from_tree = collect_facts(TreeFS(tree), image_info(ref), now).to_dict()
    outcome = Runner(jobs=1, timeout=900).run_one(ref, now)
    assert outcome.error is None, outcome.error
    assert outcome.facts is not None
    from_image = json.loads(json.dumps(outcome.facts.to_dict()))

    assert from_tree["os"]["hostname"] == "tree-vs-image"
    assert {u["name"] for u in from_tree["users"]} >= {"alice", "bob", "toor"}
    assert len(from_tree["packages"]) > 80
    for section in ("os", "packages", "users", "ssh", "firewall", "dormancy", "hotfixes"):
        assert from_image[section] == from_tree[section], section
    assert from_image["warnings"] == from_tree["warnings"]
    shutil.rmtree(tree)

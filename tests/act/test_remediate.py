"""``vmaudit remediate`` on real images: the base untouched, the overlay audited fixed.

One dry run and one remediation of a qcow2 guest, then ``vmaudit inspect`` of the base and
of the overlay; a VM of three VMDK disks remediated once; then one appliance reading the
files of every overlay written, the guest's and the VM's (six launches in all).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.act.remedyguests import (
    FILES,
    MALLORY_HASH,
    SHADOW,
    SHADOW_GID,
    SHADOW_LABEL,
    SUDOERS_DROP_IN,
    baseline_file,
    guestfs_handle,
    remedy_tree,
    run_env,
    vmaudit,
)
from tests.hostile.images import ext4_from_tree, partitioned_disk
from tests.imaging import convert, raw_disk_from_tree
from vmaudit.act.fixes import LINUX_RECORD, SSHD_DROP_IN
from vmaudit.baseline.factsio import facts_from_dict
from vmaudit.baseline.loader import load_baseline
from vmaudit.collect.accounts import parse_shadow_line
from vmaudit.judge.rules import evaluate

pytestmark = pytest.mark.appliance


def remediate(*args: str, env: dict[str, str]) -> Any:
    return vmaudit("remediate", *args, env=env)


def digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".vmaudit"))


@dataclass(frozen=True)
class Remedied:
    work: Path
    store: Path
    image: Path
    overlay: Path
    baseline: Path
    image_before: tuple[str, int]
    dry_run: Any
    dry_store: list[str]
    proc: Any


@pytest.fixture(scope="module")
def remedied(tmp_path_factory: pytest.TempPathFactory) -> Remedied:
    work = tmp_path_factory.mktemp("remediate")
    store = work / "store"
    store.mkdir()
    raw = raw_disk_from_tree(remedy_tree(work / "tree"), work / "guest.raw")
    image = convert(raw, "qcow2", store / "guest.qcow2")
    raw.unlink()
    baseline = baseline_file(work)
    before = digest(image)
    overlay = store / "fixed.qcow2"
    env = run_env(work)
    dry = remediate(
        str(image),
        "-o",
        str(overlay),
        "-b",
        str(baseline),
        "--dry-run",
        "--format",
        "json",
        env=env,
    )
    dry_store = sorted(p.name for p in store.iterdir())
    proc = remediate(
        str(image), "-o", str(overlay), "-b", str(baseline), "--format", "json", env=env
    )
    return Remedied(work, store, image, overlay, baseline, before, dry, dry_store, proc)


EXPECTED_CHANGES = {
    ("lock-revoked", "mallory", "/etc/shadow", "edited"),
    ("remove-keys", "mallory", "/home/mallory/.ssh/authorized_keys", "edited"),
    ("remove-keys", "eve", "/home/eve/.ssh/authorized_keys", "edited"),
    ("revoke-sudo", "mallory", "/etc/sudoers.d/90-contractors", "edited"),
    ("ssh-root-login", "sshd", SSHD_DROP_IN, "created"),
}


def _changes(document: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    return {(c["fix"], c["subject"], c["path"], c["action"]) for c in document["changes"]}


def test_dry_run_prints_the_changes_and_creates_nothing(remedied: Remedied) -> None:
    assert remedied.dry_run.returncode == 0, remedied.dry_run.stderr
    document = json.loads(remedied.dry_run.stdout)
    assert document["dry_run"] is True and document["overlays"] == []
    assert _changes(document) == EXPECTED_CHANGES
    assert remedied.dry_store == ["guest.qcow2"]
    assert os.listdir(remedied.work / "tmpdir") == []


def test_the_change_list_is_printed_and_the_overlay_written(remedied: Remedied) -> None:
    assert remedied.proc.returncode == 0, remedied.proc.stderr
    document = json.loads(remedied.proc.stdout)
    assert _changes(document) == EXPECTED_CHANGES
    assert document["overlays"] == [str(remedied.overlay)]
    assert {(f["rule"], f["subject"]) for f in document["findings_fixed"]} == {
        ("account.revoked-active", "mallory"),
        ("account.unapproved-admin", "mallory"),
        ("ssh.authorized-key", "eve"),
        ("ssh.root-login", "sshd"),
    }
    assert sorted(p.name for p in remedied.store.iterdir()) == ["fixed.qcow2", "guest.qcow2"]
    assert leftovers(remedied.store) == []


def test_the_base_image_is_untouched(remedied: Remedied) -> None:
    assert digest(remedied.image) == remedied.image_before


def test_the_overlay_is_backed_by_the_base_with_its_format_pinned(remedied: Remedied) -> None:
    import subprocess

    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-U", "-f", "qcow2", "--output=json", str(remedied.overlay)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert info["backing-filename"] == str(remedied.image)
    assert info["backing-filename-format"] == "qcow2"


def _inspect(path: Path, env: dict[str, str]) -> dict[str, Any]:
    proc = vmaudit("inspect", str(path), env=env)
    assert proc.returncode == 0, proc.stderr
    facts: dict[str, Any] = json.loads(proc.stdout)
    return facts


def test_auditing_the_overlay_shows_the_fixed_findings_gone_and_nothing_else_changed(
    remedied: Remedied,
) -> None:
    env = run_env(remedied.work)
    base = _inspect(remedied.image, env)
    fixed = _inspect(remedied.overlay, env)
    now = datetime.now(UTC)
    baselines = [load_baseline(str(remedied.baseline))]

    def keys(facts: dict[str, Any]) -> set[tuple[str, str]]:
        found = evaluate(facts_from_dict(facts), baselines, now).findings
        return {(f.rule, f.subject) for f in found}

    assert keys(base) - keys(fixed) == {
        ("account.revoked-active", "mallory"),
        ("account.unapproved-admin", "mallory"),
        ("ssh.authorized-key", "eve"),
        ("ssh.root-login", "sshd"),
    }
    assert keys(fixed) - keys(base) == {("account.revoked-present", "mallory")}

    expected = copy.deepcopy(base)
    users = {user["name"]: user for user in expected["users"]}
    users["mallory"].update(
        password="locked",
        expires="1970-01-02",
        can_login=False,
        admin=False,
        admin_via=[],
        authorized_keys=0,
    )
    users["eve"].update(authorized_keys=0)
    expected["ssh"]["permit_root_login"] = "no"
    # The config section also sees what the fixes created: the sshd drop-in, root's 0644, is
    # one more critical file, and the walk meets it; every other mode, owner and count stays.
    walked = ("config", "linux", "modes", "visited")
    grown = _at(fixed, walked) - _at(base, walked)
    assert grown > 0
    expected["config"]["linux"]["modes"]["visited"] += grown
    critical = fixed["config"]["linux"]["critical_files"]
    assert [entry for entry in critical if entry["path"] == SSHD_DROP_IN] == [
        {"path": SSHD_DROP_IN, "kind": "file", "mode": 0o644, "uid": 0, "gid": 0}
        | {"owner": "root", "group": "root", "link": None}
    ]
    assert [entry for entry in critical if entry["path"] != SSHD_DROP_IN] == (
        expected["config"]["linux"]["critical_files"]
    )
    expected["config"]["linux"]["critical_files"] = critical
    del expected["image"], fixed["image"]
    assert fixed == expected


def _at(document: dict[str, Any], keys: tuple[str, ...]) -> int:
    value: Any = document
    for key in keys:
        value = value[key]
    assert isinstance(value, int)
    return value


@dataclass(frozen=True)
class ReadBack:
    """The remediated guests' own files, read in one appliance over every overlay written."""

    shadow: str
    st: dict[str, int]
    label: bytes
    drop_in: str
    sshd: str
    record: dict[str, Any]
    keys: str
    vm_shadow: str
    vm_keys: str
    vm_record: dict[str, Any]


@pytest.fixture(scope="module")
def read_back(
    remedied: Remedied, remedied_vm: RemediedVM, tmp_path_factory: pytest.TempPathFactory
) -> ReadBack:
    assert remedied.proc.returncode == 0, remedied.proc.stderr
    assert remedied_vm.proc.returncode == 0, remedied_vm.proc.stderr
    vm_overlays = [remedied_vm.out / "fixed.qcow2", remedied_vm.out / "fixed-disk1.qcow2"]
    handle = guestfs_handle([remedied.overlay, *vm_overlays], tmp_path_factory.mktemp("read"))
    try:
        handle.mount_ro("/dev/sda1", "/")
        shadow = handle.read_file("/etc/shadow").decode()
        st = handle.lstatns("/etc/shadow")
        label = bytes(handle.lgetxattr("/etc/shadow", "security.selinux"))
        drop_in = handle.read_file("/etc/sudoers.d/90-contractors").decode()
        sshd = handle.read_file(SSHD_DROP_IN).decode()
        record = json.loads(handle.read_file(LINUX_RECORD))
        keys = handle.read_file("/home/eve/.ssh/authorized_keys").decode()
        handle.umount_all()
        handle.mount_ro("/dev/sdb1", "/")  # the VM: its root disk, then its /home disk
        handle.mount_ro("/dev/sdc1", "/home")
        vm_shadow = handle.read_file("/etc/shadow").decode()
        vm_keys = handle.read_file("/home/mallory/.ssh/authorized_keys").decode()
        vm_record = json.loads(handle.read_file(LINUX_RECORD))
    finally:
        handle.close()
    return ReadBack(shadow, st, label, drop_in, sshd, record, keys, vm_shadow, vm_keys, vm_record)


def test_the_guest_reads_the_revoked_account_locked_and_expired(
    remedied: Remedied, read_back: ReadBack
) -> None:
    shadow, st, label = read_back.shadow, read_back.st, read_back.label
    drop_in, sshd, record, keys = (
        read_back.drop_in,
        read_back.sshd,
        read_back.record,
        read_back.keys,
    )

    mallory = next(
        parse_shadow_line(line) for line in shadow.splitlines() if line.startswith("mallory:")
    )
    assert mallory is not None
    assert mallory.password == "!" + MALLORY_HASH and mallory.expire == 1
    others = [line for line in SHADOW.splitlines() if not line.startswith("mallory:")]
    assert [line for line in shadow.splitlines() if not line.startswith("mallory:")] == others
    assert (st["st_mode"] & 0o7777, st["st_uid"], st["st_gid"]) == (0o640, 0, SHADOW_GID)
    assert label == SHADOW_LABEL
    assert "# mallory ALL=(ALL) NOPASSWD: ALL" in drop_in.splitlines()
    assert drop_in.splitlines()[-1] == SUDOERS_DROP_IN.splitlines()[-1]  # alice's stays
    assert sshd.endswith("PermitRootLogin no\n")
    assert all(line.startswith("#") for line in keys.splitlines())
    assert _changes(record) == EXPECTED_CHANGES
    assert record["dry_run"] is False
    assert record["overlays"] == [str(remedied.overlay)]


def _vm(folder: Path, work: Path) -> Path:
    """A VM of three VMDK disks: / (with /var), /home, and /srv that no fix touches."""
    files = {
        **FILES,
        "etc/fstab": "LABEL=root / ext4 defaults 0 1\n"
        "LABEL=home /home ext4 defaults 0 2\nLABEL=srv /srv ext4 defaults 0 2\n",
    }
    home_files = {k: v for k, v in files.items() if k.startswith("home/")}
    tree = remedy_tree(work / "root", {k: v for k, v in files.items() if not k.startswith("home/")})
    (tree / "home").mkdir(exist_ok=True)
    (tree / "srv").mkdir(exist_ok=True)
    home = work / "home"
    for rel, text in home_files.items():
        (home / rel[5:]).parent.mkdir(parents=True, exist_ok=True)
        (home / rel[5:]).write_text(text)
    srv = work / "srv"
    srv.mkdir()
    (srv / "data.txt").write_text("nothing to fix here\n")
    folder.mkdir()
    names = []
    for name, source, size in (("root", tree, 40), ("home", home, 16), ("srv", srv, 16)):
        part = ext4_from_tree(source, work / f"{name}.ext4", size, name)
        raw = partitioned_disk(work / f"{name}.raw", [part])
        convert(raw, "vmdk", folder / f"{name}.vmdk")
        names.append(f"{name}.vmdk")
    vmx = folder / "contractors.vmx"
    vmx.write_text(
        'displayName = "contractors"\n'
        + "".join(
            f'scsi0:{i}.present = "TRUE"\nscsi0:{i}.fileName = "{n}"\n' for i, n in enumerate(names)
        )
    )
    return vmx


@dataclass(frozen=True)
class RemediedVM:
    disks: list[Path]
    before: dict[str, tuple[str, int]]
    out: Path
    proc: Any


@pytest.fixture(scope="module")
def remedied_vm(tmp_path_factory: pytest.TempPathFactory) -> RemediedVM:
    work = tmp_path_factory.mktemp("remediate-vm")
    vmx = _vm(work / "vm", work / "build")
    disks = sorted((work / "vm").glob("*.vmdk"))
    before = {d.name: digest(d) for d in disks}
    baseline = baseline_file(work)
    out = work / "out"
    out.mkdir()
    proc = remediate(
        str(vmx),
        "-o",
        str(out / "fixed.qcow2"),
        "-b",
        str(baseline),
        "--format",
        "json",
        env=run_env(work),
    )
    return RemediedVM(disks, before, out, proc)


def test_a_vm_gets_one_overlay_per_disk_written(
    remedied_vm: RemediedVM, read_back: ReadBack
) -> None:
    out = remedied_vm.out
    assert remedied_vm.proc.returncode == 0, remedied_vm.proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["fixed-disk1.qcow2", "fixed.qcow2"]
    assert {d.name: digest(d) for d in remedied_vm.disks} == remedied_vm.before
    shadow, keys, record = read_back.vm_shadow, read_back.vm_keys, read_back.vm_record
    assert "mallory:!" + MALLORY_HASH + ":19000:0:99999:7::1:" in shadow.splitlines()
    assert keys.splitlines()[1].startswith("# ssh-ed25519")
    assert _changes(record) == EXPECTED_CHANGES
    assert record["overlays"] == [str(out / "fixed.qcow2"), str(out / "fixed-disk1.qcow2")]

"""``capture_baseline``: a golden template passes its own baseline; its drifted clone does not.

The template is the real debootstrap tree (fixtures/rootfs.py) with the web-01 fixture
overlay over it (hardened sshd, ufw on, one approved admin); the clone is a copy of it with
exactly three drifts. Facts come from ``collect_facts`` on ``TreeFS``, as in a scan.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from vmaudit.baseline.capture import capture_baseline
from vmaudit.baseline.loader import load_baseline, validate_files
from vmaudit.baseline.model import Baseline
from vmaudit.errors import ConfigError
from vmaudit.guest.tree import TreeFS
from vmaudit.judge.rules import evaluate
from vmaudit.models import Facts, ImageInfo, Package
from vmaudit.run.audit import collect_facts
from vmaudit.versions import dpkg_compare

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LABEL = "/datastore/templates/web-01-golden.qcow2"
DRIFT_PACKAGE = "libssl3"
OLDER_LIBSSL3 = "3.0.11-1~deb12u2"  # bookworm's libssl3 before later security updates
EXTRA_ADMIN = "deploy"  # exists in the web-01 overlay, not an admin there


def _image(path: str) -> ImageInfo:
    return ImageInfo(
        path,
        "qcow2",
        1,
        (NOW - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "0" * 64,
        None,
        (path,),
    )


def _facts(root: Path, label: str = LABEL) -> Facts:
    return collect_facts(TreeFS(root), _image(label), NOW)


def _rootfs() -> Path:
    if shutil.which("debootstrap") is None and not os.path.exists("/usr/sbin/debootstrap"):
        pytest.skip("debootstrap is not installed (make setup installs it)")
    spec = importlib.util.spec_from_file_location(
        "vmaudit_fixture_rootfs", REPO / "fixtures" / "rootfs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root: Path = module.ensure_rootfs()
    return root


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The golden template: debootstrap tree plus the compliant web-01 overlay."""
    root = tmp_path_factory.mktemp("golden") / "root"
    subprocess.run(["cp", "-a", str(_rootfs()), str(root)], check=True)
    overlay = REPO / "fixtures" / "guests" / "web-01" / "overlay"
    subprocess.run(["cp", "-a", f"{overlay}/.", str(root)], check=True)
    return root


@pytest.fixture(scope="module")
def golden(template: Path) -> Facts:
    return _facts(template)


@pytest.fixture(scope="module")
def captured(golden: Facts, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("captured") / "web-01-golden.yaml"
    path.write_text(capture_baseline(golden, LABEL, NOW))
    return path


def _document(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def _set_version(status: str, package: str, version: str) -> str:
    """``status`` with ``package``'s Version field replaced (one stanza, as dpkg writes it)."""
    stanzas = status.split("\n\n")
    hits = [i for i, s in enumerate(stanzas) if re.search(rf"^Package: {package}$", s, re.M)]
    assert len(hits) == 1, f"{package} once in the dpkg status"
    stanzas[hits[0]] = re.sub(
        r"^Version: .*$", f"Version: {version}", stanzas[hits[0]], count=1, flags=re.M
    )
    return "\n\n".join(stanzas)


def _add_to_group(group: str, name: str, user: str) -> str:
    lines = []
    for line in group.splitlines():
        fields = line.split(":")
        if fields[0] == name:
            members = [m for m in fields[3].split(",") if m]
            fields[3] = ",".join([*members, user])
            line = ":".join(fields)
        lines.append(line)
    return "\n".join(lines) + "\n"


def _replace_file(path: Path, text: str) -> None:
    path.unlink()  # never write through a hard link into the shared tree
    path.write_text(text)


# ---------------------------------------------------------------- the captured file


def test_captured_baseline_validates_and_loads(captured: Path) -> None:
    assert validate_files([captured]) == []
    baseline = load_baseline(str(captured))
    assert baseline.name == "golden-web-01-golden"
    assert "web-01-golden.qcow2" in baseline.description


def test_header_comment_names_the_image_and_the_date(captured: Path) -> None:
    lines = captured.read_text().splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    assert header, "a comment header comes first"
    text = "\n".join(header)
    assert LABEL in text
    assert "2026-11-27" in text
    assert lines[len(header)] == "apiVersion: vmaudit/v1"


def test_golden_image_passes_its_own_baseline(golden: Facts, captured: Path) -> None:
    evaluation = evaluate(golden, [load_baseline(str(captured))], NOW)
    assert evaluation.findings == ()
    # Not vacuous: the baseline matched and its checks ran.
    assert evaluation.baselines_applied == ("golden-web-01-golden",)
    assert set(evaluation.rules_evaluated) >= {
        "patch.missing",
        "account.unapproved-admin",
        "account.empty-password",
        "account.extra-uid0",
        "ssh.root-login",
        "ssh.password-auth",
        "firewall.disabled",
        "firewall.default-accept",
        "package.required-missing",
    }


def test_capture_records_the_template_as_it_is(golden: Facts, captured: Path) -> None:
    document = _document(captured)
    assert document["match"] == {"os": "linux", "distro": ["debian"], "version": "12"}
    assert document["patches"]["minimum_versions"] == {p.name: p.version for p in golden.packages}
    assert len(document["patches"]["minimum_versions"]) > 100  # the real debootstrap set
    assert document["accounts"] == {
        "allowed_admins": ["ops", "root"],
        "forbid_empty_password": True,
        "forbid_extra_uid0": True,
    }
    assert document["ssh"] == {"permit_root_login": "no", "password_authentication": False}
    assert document["firewall"] == {"required": True, "default_inbound": "deny"}
    assert {"openssh-server", "ufw"} <= set(document["packages"]["required"])


def test_match_covers_point_releases_of_the_same_major_only(golden: Facts, captured: Path) -> None:
    baseline = load_baseline(str(captured))
    assert baseline.match.fits(replace(golden, os=replace(golden.os, version="12.20")))
    assert not baseline.match.fits(replace(golden, os=replace(golden.os, version="13.1")))
    assert not baseline.match.fits(replace(golden, os=replace(golden.os, distro="ubuntu")))


# ---------------------------------------------------------------- a drifted clone


def test_clone_with_three_drifts_gives_exactly_those_three_findings(
    template: Path, golden: Facts, captured: Path, tmp_path: Path
) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["cp", "-a", str(template), str(clone)], check=True)
    installed = {p.name: p.version for p in golden.packages}[DRIFT_PACKAGE]
    assert dpkg_compare(OLDER_LIBSSL3, installed) < 0
    status = clone / "var/lib/dpkg/status"
    _replace_file(status, _set_version(status.read_text(), DRIFT_PACKAGE, OLDER_LIBSSL3))
    group = clone / "etc/group"
    _replace_file(group, _add_to_group(group.read_text(), "sudo", EXTRA_ADMIN))
    ufw = clone / "etc/ufw/ufw.conf"
    _replace_file(ufw, ufw.read_text().replace("ENABLED=yes", "ENABLED=no"))

    drifted = _facts(clone, "/datastore/web-01-clone.qcow2")
    findings = evaluate(drifted, [load_baseline(str(captured))], NOW).findings

    assert sorted((f.rule, f.subject) for f in findings) == [
        ("account.unapproved-admin", EXTRA_ADMIN),
        ("firewall.disabled", "firewall"),
        ("patch.missing", DRIFT_PACKAGE),
    ]
    missing = next(f for f in findings if f.rule == "patch.missing")
    assert missing.evidence["installed"] == OLDER_LIBSSL3
    assert missing.evidence["minimum"] == installed


def test_a_clone_that_took_updates_still_passes(
    template: Path, golden: Facts, captured: Path, tmp_path: Path
) -> None:
    clone = tmp_path / "updated"
    subprocess.run(["cp", "-a", str(template), str(clone)], check=True)
    installed = {p.name: p.version for p in golden.packages}[DRIFT_PACKAGE]
    newer = installed + "+b1"  # a binNMU: dpkg orders it after the template's version
    assert dpkg_compare(newer, installed) > 0
    status = clone / "var/lib/dpkg/status"
    _replace_file(status, _set_version(status.read_text(), DRIFT_PACKAGE, newer))
    _replace_file(clone / "etc/debian_version", "12.99\n")
    updated = _facts(clone, "/datastore/web-01-updated.qcow2")
    assert updated.os.version == "12.99"
    evaluation = evaluate(updated, [load_baseline(str(captured))], NOW)
    assert evaluation.baselines_applied == ("golden-web-01-golden",)
    assert evaluation.findings == ()


# ---------------------------------------------------------------- edge cases on literal trees


def test_multiarch_duplicates_keep_the_lowest_version(golden: Facts, tmp_path: Path) -> None:
    libc = next(p for p in golden.packages if p.name == "libc6")
    older_i386 = Package("libc6", "2.36-9+deb12u1", "i386", "glibc")
    facts = replace(golden, packages=(*golden.packages, older_i386))
    path = tmp_path / "multiarch.yaml"
    path.write_text(capture_baseline(facts, LABEL, NOW))
    assert _document(path)["patches"]["minimum_versions"]["libc6"] == older_i386.version
    assert dpkg_compare(older_i386.version, libc.version) < 0
    assert evaluate(facts, [load_baseline(str(path))], NOW).findings == ()


def test_hostile_label_and_hostname_cannot_write_yaml(golden: Facts, tmp_path: Path) -> None:
    hostile = "evil\nfirewall:\n  required: false\n# "
    facts = replace(golden, os=replace(golden.os, hostname=f"web\n{hostile}\x1b[2J"))
    path = tmp_path / "hostile.yaml"
    path.write_text(capture_baseline(facts, f"/ds/{hostile}.qcow2", NOW, name="hostile-test"))
    assert validate_files([path]) == []
    baseline: Baseline = load_baseline(str(path))
    assert baseline.firewall_required is True
    assert "\x1b" not in path.read_text()
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert any("\\x0a" in line for line in header)  # the newline shown, not obeyed


def test_a_name_that_is_not_a_baseline_name_is_refused(golden: Facts) -> None:
    with pytest.raises(ConfigError, match="not a baseline name"):
        capture_baseline(golden, LABEL, NOW, name="has spaces")


def test_a_template_failing_a_check_gets_no_such_check(tmp_path: Path) -> None:
    """A golden image with root SSH logins and password logins on is captured as it is."""
    from tests.imaging import MINI_FILES, write_tree

    root = write_tree(tmp_path / "mini", MINI_FILES)
    shutil.copy2("/bin/bash", root / "bin" / "bash")  # the users' shell: they can log in
    facts = _facts(root)
    assert [u.name for u in facts.users if u.can_login] == ["root", "toor", "alice"]
    path = tmp_path / "mini.yaml"
    path.write_text(capture_baseline(facts, "/ds/mini.img", NOW))
    document = _document(path)
    assert document["ssh"] == {"permit_root_login": "yes"}  # password logins: no rule
    assert "forbid_empty_password" not in document["accounts"]  # toor has an empty one
    assert "forbid_extra_uid0" not in document["accounts"]  # toor has uid 0
    assert document["accounts"]["allowed_admins"] == ["alice", "root", "toor"]
    assert "firewall" not in document  # no firewall on: none required
    assert evaluate(facts, [load_baseline(str(path))], NOW).findings == ()


def test_a_windows_golden_image_keeps_its_hotfixes_and_build(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    from fixtures.windows.build import build_tree, guest

    root = build_tree(guest("win2019-patched"), tmp_path / "win" / "root", NOW - timedelta(hours=1))
    facts = _facts(root, "/ds/win2019.vhdx")
    assert facts.os.type == "windows"
    path = tmp_path / "win.yaml"
    path.write_text(capture_baseline(facts, "/ds/win2019.vhdx", NOW))
    assert validate_files([path]) == []
    windows = _document(path)["patches"]["windows"]
    assert windows["hotfixes_required"] == sorted(h.id.upper() for h in facts.hotfixes)
    assert windows["minimum_build"] == facts.os.build
    baseline = load_baseline(str(path))
    assert evaluate(facts, [baseline], NOW).findings == ()
    missing_kb = replace(facts, hotfixes=facts.hotfixes[1:])
    assert [(f.rule, f.subject) for f in evaluate(missing_kb, [baseline], NOW).findings] == [
        ("patch.hotfix-missing", facts.hotfixes[0].id.upper())
    ]

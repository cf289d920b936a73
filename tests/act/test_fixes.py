"""Planning the fixes on a guest tree (no appliance): what each fix writes, what it refuses."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.act.remedyguests import FILES, MALLORY_HASH, SUDOERS_DROP_IN, remedy_tree
from vmaudit.act.fixes import (
    SSHD_DROP_IN,
    Fix,
    PendingFS,
    Plan,
    Refused,
    called_for,
    plan_fixes,
    sudoers_entries,
    verify_plan,
)
from vmaudit.baseline.loader import load_baseline
from vmaudit.collect.accounts import parse_shadow_line
from vmaudit.guest.tree import TreeFS
from vmaudit.judge.rules import evaluate
from vmaudit.models import Facts, ImageInfo
from vmaudit.run.audit import collect_facts

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
INFO = ImageInfo(
    "/x/guest.qcow2", "qcow2", 1, "2026-01-01T00:00:00Z", "0" * 64, None, ("/x/guest.qcow2",)
)


def _plan(tree: Path, tmp_path: Path, fixes: tuple[Fix, ...] = ()) -> tuple[Facts, Plan]:
    baseline = tmp_path / "b.yaml"
    from tests.act.remedyguests import BASELINE

    baseline.write_text(BASELINE)
    fs = TreeFS(tree)
    facts = collect_facts(fs, INFO, NOW)
    findings = evaluate(facts, [load_baseline(str(baseline))], NOW).findings
    chosen = list(fixes) or called_for(facts, findings)
    return facts, plan_fixes(fs, facts, findings, chosen, NOW, str(tmp_path))


def test_every_fix_the_findings_call_for_is_planned(tmp_path: Path) -> None:
    tree = remedy_tree(tmp_path / "tree")
    _facts, plan = _plan(tree, tmp_path)

    done = {(c.fix, c.subject, c.path) for c in plan.changes}
    assert done == {
        ("lock-revoked", "mallory", "/etc/shadow"),
        ("remove-keys", "mallory", "/home/mallory/.ssh/authorized_keys"),
        ("remove-keys", "eve", "/home/eve/.ssh/authorized_keys"),
        ("revoke-sudo", "mallory", "/etc/sudoers.d/90-contractors"),
        ("ssh-root-login", "sshd", SSHD_DROP_IN),
    }
    mallory = next(
        parse_shadow_line(line)
        for line in plan.writes["/etc/shadow"].decode().splitlines()
        if line.startswith("mallory:")
    )
    assert mallory is not None
    assert (mallory.password, mallory.expire) == ("!" + MALLORY_HASH, 1)
    assert "/etc/passwd" not in plan.writes  # "x" in passwd: usermod leaves its line as is
    assert plan.writes[SSHD_DROP_IN].endswith(b"\nPermitRootLogin no\n")


def test_revoke_sudo_comments_out_only_the_unapproved_entry(tmp_path: Path) -> None:
    tree = remedy_tree(tmp_path / "tree")
    _facts, plan = _plan(tree, tmp_path, ("revoke-sudo",))

    lines = plan.writes["/etc/sudoers.d/90-contractors"].decode().split("\n")
    original = SUDOERS_DROP_IN.split("\n")
    assert lines[:2] == original[:2]
    assert lines[2] == (
        "# vmaudit remediate 2026-12-01: sudo grant to mallory revoked (not an approved admin)"
    )
    assert lines[3] == "# " + original[2]
    assert lines[4:] == original[3:]


def test_an_entry_granting_an_approved_admin_too_is_left_and_said(tmp_path: Path) -> None:
    files = {**FILES, "etc/sudoers.d/90-contractors": "mallory, alice ALL=(ALL) ALL\n"}
    tree = remedy_tree(tmp_path / "tree", files)
    _facts, plan = _plan(tree, tmp_path, ("revoke-sudo",))

    assert plan.changes == []
    assert [
        (item.subject, "also grants approved admin(s) alice" in item.reason) for item in plan.left
    ] == [("mallory", True)]


def test_ssh_root_login_goes_first_in_sshd_config_without_a_drop_in_folder(
    tmp_path: Path,
) -> None:
    files = {k: v for k, v in FILES.items() if "sshd_config.d" not in k}
    files["etc/ssh/sshd_config"] = "PermitRootLogin yes\n"
    tree = remedy_tree(tmp_path / "tree", files)
    _facts, plan = _plan(tree, tmp_path, ("ssh-root-login",))

    assert plan.writes == {
        "/etc/ssh/sshd_config": b"# vmaudit remediate 2026-12-01: root "
        b"login restricted by the baseline\nPermitRootLogin no\n"
        b"PermitRootLogin yes\n"
    }


def test_a_shadow_file_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    files = {k: v for k, v in FILES.items() if k != "etc/shadow"}
    files["etc/shadow.real"] = FILES["etc/shadow"]
    tree = remedy_tree(tmp_path / "tree", files)
    os.symlink("shadow.real", tree / "etc/shadow")

    with pytest.raises(Refused, match="/etc/shadow is a symbolic link"):
        _plan(tree, tmp_path, ("lock-revoked",))


def test_a_huge_sudoers_d_is_refused(tmp_path: Path) -> None:
    tree = remedy_tree(tmp_path / "tree")
    for index in range(300):
        (tree / f"etc/sudoers.d/extra{index:03d}").write_text(f"u{index} ALL=(ALL) ALL\n")

    with pytest.raises(Refused, match=r"sudoers\.d holds 301 entries"):
        _plan(tree, tmp_path)


def test_sudoers_entries_follow_continuations_and_skip_comments_and_defaults() -> None:
    data = (
        b"# a comment \\\nDefaults env_reset\nmallory ALL = \\\n  (ALL) ALL\n"
        b"User_Alias X = bob\n\n#include /etc/x\n%wheel ALL=(ALL) ALL # note\n"
    )
    entries = [(e.first, e.last, e.grants) for e in sudoers_entries(data)]
    assert entries == [(1, 1, False), (2, 3, True), (4, 4, False), (6, 6, False), (7, 7, True)]


def test_the_pending_view_shows_planned_files_over_the_guest(tmp_path: Path) -> None:
    tree = remedy_tree(tmp_path / "tree")
    view = PendingFS(TreeFS(tree), {"/var/lib/vmaudit/r.json": b"{}"}, ["/var/lib/vmaudit"])
    assert "vmaudit" in view.listdir("/var/lib")
    assert view.listdir("/var/lib/vmaudit") == ["r.json"]
    assert view.read("/var/lib/vmaudit/r.json") == b"{}"
    assert view.read("/etc/hostname") == b"mini-01\n"


def test_only_the_fixes_asked_for_are_planned(tmp_path: Path) -> None:
    tree = remedy_tree(tmp_path / "tree")
    _facts, plan = _plan(tree, tmp_path, ("ssh-root-login",))
    assert [(c.fix, c.path) for c in plan.changes] == [("ssh-root-login", SSHD_DROP_IN)]
    assert list(plan.writes) == [SSHD_DROP_IN]


def test_a_guest_with_nothing_to_fix_calls_for_no_fix(tmp_path: Path) -> None:
    files = {**FILES, "etc/ssh/sshd_config": "PermitRootLogin no\n"}
    files.pop("etc/sudoers.d/90-contractors")
    files.pop("home/eve/.ssh/authorized_keys")
    files["etc/passwd"] = "".join(
        line + "\n" for line in FILES["etc/passwd"].splitlines() if not line.startswith("mallory")
    )
    tree = remedy_tree(tmp_path / "tree", files)
    baseline = tmp_path / "b.yaml"
    from tests.act.remedyguests import BASELINE

    baseline.write_text(BASELINE)
    facts = collect_facts(TreeFS(tree), INFO, NOW)
    findings = evaluate(facts, [load_baseline(str(baseline))], NOW).findings
    assert called_for(facts, findings) == []


def test_a_lock_the_guest_would_not_honour_is_refused(tmp_path: Path) -> None:
    # glibc skips the leading blanks of a shadow line, usermod's commonio does not: usermod
    # would append a second, locked entry that getspnam never reaches.
    files = {**FILES, "etc/shadow": FILES["etc/shadow"].replace("mallory:", "  mallory:")}
    tree = remedy_tree(tmp_path / "tree", files)
    _facts, plan = _plan(tree, tmp_path, ("lock-revoked",))
    planned = collect_facts(PendingFS(TreeFS(tree), plan.writes), INFO, NOW)

    with pytest.raises(Refused, match="locking mallory would not stop its logins"):
        verify_plan(plan, planned)


def test_a_drop_in_with_too_many_entries_to_judge_one_by_one_is_refused(tmp_path: Path) -> None:
    entries = "".join(f"mallory host{index}=(ALL) ALL\n" for index in range(201))
    tree = remedy_tree(tmp_path / "tree", {**FILES, "etc/sudoers.d/90-contractors": entries})
    with pytest.raises(Refused, match="holds 201 user specifications"):
        _plan(tree, tmp_path, ("revoke-sudo",))


def test_a_change_list_with_undecodable_guest_paths_still_encodes() -> None:
    from vmaudit.act.fixes import Change
    from vmaudit.act.remediate import Outcome, render

    path = "/home/caf\udce9/.ssh/authorized_keys"
    outcome = Outcome(
        "/x/guest.qcow2",
        (),
        True,
        ("remove-keys",),
        (Change("remove-keys", "caf\ufffd", path, "edited", "1 key(s)"),),
        (),
        (),
        (),
        None,
        "2026-12-01T10:00:00Z",
    )
    record = render(outcome, "json").encode()
    assert json.loads(record)["changes"][0]["path"] == "/home/caf\\xe9/.ssh/authorized_keys"
    assert "caf\\udce9" in render(outcome, "table")


def test_keys_under_a_home_that_is_not_utf8_are_left_and_said(tmp_path: Path) -> None:
    tree = remedy_tree(tmp_path / "tree")
    passwd = (tree / "etc/passwd").read_bytes().replace(b"/home/mallory", b"/home/m\xe9")
    (tree / "etc/passwd").write_bytes(passwd)
    home = os.path.join(os.fsencode(tree), b"home", b"m\xe9", b".ssh")
    os.makedirs(home)
    with open(os.path.join(home, b"authorized_keys"), "wb") as handle:
        handle.write(b"ssh-ed25519 AAAA m@x\n")
    _facts, plan = _plan(tree, tmp_path, ("remove-keys",))

    assert [c.subject for c in plan.changes] == ["eve"]
    assert {(item.subject, "cannot name" in item.reason) for item in plan.left} == {
        ("mallory", True)
    }  # each AuthorizedKeysFile path under that home

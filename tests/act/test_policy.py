"""The GatePolicy file: validated like a baseline (file, line, key; exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.act.gatehelpers import vmaudit_gate
from vmaudit.act.policy import DEFAULT_DATASTORES, load_policy, validate_policy
from vmaudit.errors import ConfigError

HEADER = "apiVersion: vmaudit/v1\nkind: GatePolicy\n"


def test_a_full_policy_is_read_with_paths_relative_to_its_file(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(
        "apiVersion: vmaudit/v1\nkind: Baseline\nmetadata: {name: mine}\n"
    )
    (tmp_path / "inv.yaml").write_text(
        "apiVersion: vmaudit/v1\nkind: Inventory\napplications:\n  - {name: web, images: ['*']}\n"
    )
    policy_file = tmp_path / "gate.yaml"
    policy_file.write_text(
        HEADER + "baselines: [default, mine.yaml]\ninventory: inv.yaml\nfail_on: high\n"
        "timeout: 30\non_error: allow\nstate: sub/state.db\nfeeds_db: feeds/vulns.db\n"
        "datastores: [/srv/images/, /var/lib/libvirt/images]\nexempt: [build-*]\n"
    )
    policy = load_policy(str(policy_file))
    assert policy.baselines == ("default", "mine.yaml")
    assert [b.name for b in policy.load_baselines()] == ["default", "mine"]
    assert policy.inventory == str(tmp_path / "inv.yaml")
    assert (policy.fail_on, policy.timeout, policy.on_error) == ("high", 30, "allow")
    assert policy.state == str(tmp_path / "sub" / "state.db")
    assert policy.feeds_db == str(tmp_path / "feeds" / "vulns.db")
    assert policy.datastores == ("/srv/images", "/var/lib/libvirt/images")
    assert policy.exempt == ("build-*",)


def test_defaults_are_those_of_the_spec(tmp_path: Path) -> None:
    (tmp_path / "gate.yaml").write_text(HEADER)
    policy = load_policy(str(tmp_path / "gate.yaml"))
    assert policy.baselines == ("default",)
    assert (policy.fail_on, policy.timeout, policy.on_error) == ("critical", 120, "refuse")
    assert policy.datastores == DEFAULT_DATASTORES
    assert policy.exempt == () and policy.state is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("fail_on: severe\n", "gate.yaml:3: fail_on: must be one of critical, high, medium,"),
        ("timeout: soon\n", "gate.yaml:3: timeout: expected an integer, got a string"),
        ("timeout: 0\n", "gate.yaml:3: timeout: must be at least 1, got 0"),
        ("on_error: ignore\n", "gate.yaml:3: on_error: must be one of refuse, allow; got 'ignore'"),
        ("exempt: {a: 1}\n", "gate.yaml:3: exempt: expected a list, got a mapping"),
        ("datastores: [images]\n", "gate.yaml:3: datastores[0]: 'images' is not an absolute path"),
        ("on_eror: allow\n", "gate.yaml:3: on_eror: unknown key at the top level (known:"),
        ("inventory: nowhere.yaml\n", "gate.yaml:3: inventory: file not found:"),
        ("baselines: [default, nosuch]\n", "gate.yaml:3: baselines: unknown baseline 'nosuch'"),
    ],
)
def test_a_bad_value_is_a_problem_with_file_line_and_key(
    tmp_path: Path, body: str, expected: str
) -> None:
    (tmp_path / "gate.yaml").write_text(HEADER + body)
    _, problems = validate_policy(tmp_path / "gate.yaml")
    assert any(str(p).startswith(str(tmp_path / expected)) for p in problems), problems


def test_the_wrong_kind_and_yaml_bombs_are_refused(tmp_path: Path) -> None:
    (tmp_path / "gate.yaml").write_text("apiVersion: vmaudit/v1\nkind: Baseline\n")
    with pytest.raises(ConfigError, match=r"gate\.yaml:2: kind: must be 'GatePolicy'"):
        load_policy(str(tmp_path / "gate.yaml"))
    (tmp_path / "deep.yaml").write_text(HEADER + "exempt: " + "[" * 200 + "]" * 200 + "\n")
    with pytest.raises(ConfigError, match="nested deeper than 64 levels"):
        load_policy(str(tmp_path / "deep.yaml"))


def test_the_cli_exits_2_with_every_problem_before_deciding(tmp_path: Path) -> None:
    (tmp_path / "gate.yaml").write_text(HEADER + "fail_on: severe\ntimeout: x\n")
    done = vmaudit_gate("check", "--policy", str(tmp_path / "gate.yaml"), str(tmp_path / "x"))
    assert done.returncode == 2
    err = done.stderr.decode()
    assert "gate.yaml:3: fail_on:" in err and "gate.yaml:4: timeout:" in err
    # As a hook, the same problems on one line (libvirt shows one line); the start fails.
    hook = vmaudit_gate(
        "libvirt",
        "--policy",
        str(tmp_path / "gate.yaml"),
        "vm1",
        "prepare",
        "begin",
        "-",
        stdin=b"<domain/>",
    )
    assert hook.returncode == 2
    assert len(hook.stderr.decode().strip().splitlines()) == 1

"""Loading baselines: validation with file, line and key; extends; match; the resolved YAML."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.safety.test_opening import vmaudit
from vmaudit.baseline import (
    Problem,
    builtin_baselines,
    dump_resolved,
    load_baseline,
    validate_files,
)
from vmaudit.baseline.loader import BUILTIN_DIR
from vmaudit.errors import ConfigError
from vmaudit.models import Facts, ImageInfo, OsInfo

HEAD = "apiVersion: vmaudit/v1\nkind: Baseline\nmetadata:\n  name: t\n"


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), "utf-8")
    return path


def _only_problem(path: Path) -> Problem:
    problems = validate_files([path])
    assert len(problems) == 1, problems
    return problems[0]


# One case per kind of mistake: (body after the header, line, key, words of the message).
MISTAKES = [
    (
        "unknown-top-level",
        "dormancy:\n  max_days_idle: 3\nfirewal:\n  required: true\n",
        7,
        "firewal",
        "unknown key at the top level",
    ),
    (
        "unknown-section-key",
        "accounts:\n  forbid_emtpy_password: true\n",
        6,
        "accounts.forbid_emtpy_password",
        "unknown key in accounts",
    ),
    (
        "wrong-type-int",
        "dormancy:\n  max_days_idle: ninety\n",
        6,
        "dormancy.max_days_idle",
        "expected an integer, got a string",
    ),
    (
        "wrong-type-bool",
        "accounts:\n  forbid_extra_uid0: 'yes'\n",
        6,
        "accounts.forbid_extra_uid0",
        "expected true or false",
    ),
    (
        "negative-int",
        "patches:\n  max_days_since_update: -5\n",
        6,
        "patches.max_days_since_update",
        "at least 0",
    ),
    (
        "bad-enum",
        "firewall:\n  default_inbound: allow\n",
        6,
        "firewall.default_inbound",
        "must be one of deny, any",
    ),
    (
        "bad-permit-root-login",
        "ssh:\n  permit_root_login: maybe\n",
        6,
        "ssh.permit_root_login",
        "must be one of no, forced-commands-only",
    ),
    (
        "unknown-rule-in-severity",
        "severity:\n  ssh.pasword-auth: high\n",
        6,
        "severity.ssh.pasword-auth",
        "unknown rule id",
    ),
    (
        "bad-severity",
        "severity:\n  ssh.password-auth: urgent\n",
        6,
        "severity.ssh.password-auth",
        "must be one of critical, high",
    ),
    (
        "float-version",
        "patches:\n  minimum_versions:\n    openssl: 1.10\n",
        7,
        "patches.minimum_versions.openssl",
        "write the version in quotes",
    ),
    (
        "bad-match-version",
        "match:\n  version: about 12\n",
        6,
        "match.version",
        "is not a version test",
    ),
    ("bad-match-os", "match:\n  os: bsd\n", 6, "match.os", "must be one of linux, windows"),
    (
        "list-expected",
        "packages:\n  forbidden: telnetd\n",
        6,
        "packages.forbidden",
        "expected a list, got a string",
    ),
    (
        "bad-list-item",
        "packages:\n  required: [sudo, 3]\n",
        6,
        "packages.required[1]",
        "expected a string, got an integer",
    ),
    (
        "bad-kb",
        "patches:\n  windows:\n    hotfixes_required: [5034441]\n",
        7,
        "patches.windows.hotfixes_required[0]",
        "expected a string",
    ),
    (
        "bad-build",
        "patches:\n  windows:\n    minimum_build: 'latest'\n",
        7,
        "patches.windows.minimum_build",
        "is not a build",
    ),
    (
        "duplicate-key",
        "dormancy:\n  max_days_idle: 3\n  max_days_idle: 4\n",
        7,
        "dormancy.max_days_idle",
        "duplicate key",
    ),
    (
        "missing-revoked-file",
        "accounts:\n  revoked_file: hr/gone.txt\n",
        6,
        "accounts.revoked_file",
        "file not found",
    ),
    (
        "missing-repository-index",
        "patches:\n  repository_index: [idx/Packages.xz]\n",
        6,
        "patches.repository_index[0]",
        "file not found",
    ),
    (
        "missing-extends-file",
        "extends: [default, ./parent.yaml]\n",
        5,
        "extends[1]",
        "file not found",
    ),
    ("unknown-builtin", "extends: defualt\n", 5, "extends", "unknown built-in baseline 'defualt'"),
    ("section-not-mapping", "ssh: [no]\n", 5, "ssh", "expected a mapping, got a list"),
]


@pytest.mark.parametrize(
    ("body", "line", "key", "words"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_validation_reports_file_line_and_key(
    tmp_path: Path, body: str, line: int, key: str, words: str
) -> None:
    path = _write(tmp_path, "b.yaml", HEAD + body)
    problem = _only_problem(path)
    assert (problem.file, problem.line, problem.key) == (str(path), line, key)
    assert words in problem.message
    assert str(problem).startswith(f"{path}:{line}: {key}: ")


def test_wrong_api_version_and_kind_are_both_reported(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "b.yaml", "apiVersion: vmaudit/v2\nkind: Baselin\nmetadata:\n  name: t\n"
    )
    problems = validate_files([path])
    assert [(p.line, p.key) for p in problems] == [(1, "apiVersion"), (2, "kind")]
    assert "must be 'vmaudit/v1', got 'vmaudit/v2'" in problems[0].message
    assert "must be 'Baseline'" in problems[1].message


def test_missing_required_keys_point_at_their_mapping(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "b.yaml",
        "apiVersion: vmaudit/v1\nkind: Baseline\nmetadata:\n  description: no name\n",
    )
    problem = _only_problem(path)
    assert (problem.line, problem.key) == (4, "metadata.name")
    assert "required key is missing" in problem.message


def test_yaml_syntax_error_has_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "b.yaml", HEAD + "packages:\n  forbidden: [telnetd\n")
    problem = _only_problem(path)
    assert problem.file == str(path)
    assert problem.line == 7
    assert "YAML syntax" in problem.message


def test_every_problem_of_a_file_is_collected(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "b.yaml",
        HEAD + "dormancy:\n  max_days_idle: x\nfirewall:\n  required: 1\nbogus: 1\n",
    )
    keys = [p.key for p in validate_files([path])]
    assert keys == ["dormancy.max_days_idle", "firewall.required", "bogus"]


def test_load_baseline_raises_config_error_listing_every_problem(tmp_path: Path) -> None:
    path = _write(tmp_path, "b.yaml", HEAD + "dormancy:\n  max_days_idle: x\nbogus: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_baseline(str(path))
    lines = caught.value.message.splitlines()
    assert lines == [
        f"{path}:6: dormancy.max_days_idle: expected an integer, got a string",
        f"{path}:7: bogus: unknown key at the top level (known: apiVersion, kind, metadata, "
        "extends, match, dormancy, patches, packages, accounts, ssh, permissions, executables, "
        "services, startup, lockdown, firewall, windows, vulnerabilities, severity)",
    ]


def test_problems_in_a_parent_name_the_parent_file(tmp_path: Path) -> None:
    _write(tmp_path, "parent.yaml", HEAD + "ssh:\n  password_authentication: nope\n")
    child = _write(tmp_path, "child.yaml", HEAD + "extends: [parent.yaml]\n")
    problem = _only_problem(child)
    assert (problem.file, problem.line, problem.key) == (
        str(tmp_path / "parent.yaml"),
        6,
        "ssh.password_authentication",
    )


def test_extends_cycle_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", HEAD + "extends: [b.yaml]\n")
    b = _write(tmp_path, "b.yaml", HEAD + "extends: [a.yaml]\n")
    problem = _only_problem(b)
    assert problem.file == str(tmp_path / "a.yaml")
    assert (problem.line, problem.key) == (5, "extends[0]")
    assert "cycle" in problem.message


def test_self_extension_is_a_cycle(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.yaml", HEAD + "extends: a.yaml\n")
    assert "cycle" in _only_problem(path).message


def test_extends_merges_parents_first_and_later_wins(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "one.yaml",
        HEAD + "dormancy:\n  max_days_idle: 10\npatches:\n"
        "  minimum_versions:\n    openssl: '3.0.1'\n"
        "    bash: '5.2'\npackages:\n  forbidden: [a, b]\n",
    )
    _write(tmp_path, "two.yaml", HEAD + "dormancy:\n  max_days_idle: 20\n")
    child = _write(
        tmp_path,
        "child.yaml",
        HEAD + "extends: [default, one.yaml, two.yaml]\n"
        "patches:\n  minimum_versions:\n"
        "    openssl: '3.0.9'\n"
        "packages:\n  forbidden: [c]\n",
    )
    baseline = load_baseline(str(child))
    assert baseline.max_days_idle == 20  # two.yaml comes after one.yaml and default
    assert dict(baseline.minimum_versions) == {"openssl": "3.0.9", "bash": "5.2"}
    assert baseline.forbidden_packages == ("c",)  # lists are replaced, not appended
    assert baseline.forbid_extra_uid0 is True  # from the built-in default
    assert baseline.permit_root_login == "prohibit-password"
    assert baseline.extends == (
        str(BUILTIN_DIR / "default.yaml"),
        str(tmp_path / "one.yaml"),
        str(tmp_path / "two.yaml"),
    )


def test_paths_are_relative_to_the_file_that_names_them(tmp_path: Path) -> None:
    (tmp_path / "sub" / "hr").mkdir(parents=True)
    _write(tmp_path / "sub" / "hr", "gone.txt", "# ended\nmallory\n\n  eve # contractor\n")
    _write(
        tmp_path / "sub",
        "parent.yaml",
        HEAD + "accounts:\n  revoked: [trent]\n  revoked_file: hr/gone.txt\n",
    )
    _write(tmp_path, "child.yaml", HEAD + "extends: sub/parent.yaml\n")
    baseline = load_baseline("child.yaml", base_dir=tmp_path)
    assert baseline.revoked == ("trent", "mallory", "eve")


def test_unquoted_yes_no_for_permit_root_login_mean_the_words(tmp_path: Path) -> None:
    path = _write(tmp_path, "b.yaml", HEAD + "ssh:\n  permit_root_login: no\n")
    assert load_baseline(str(path)).permit_root_login == "no"


def test_unknown_baseline_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown baseline 'nonesuch'.*default"):
        load_baseline("nonesuch")


def test_missing_baseline_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_baseline(str(tmp_path / "absent.yaml"))


def test_validate_files_reports_an_unreadable_file(tmp_path: Path) -> None:
    problem = _only_problem(tmp_path / "absent.yaml")
    assert problem.file == str(tmp_path / "absent.yaml")
    assert "cannot read" in problem.message


def test_builtin_baselines_are_listed_valid_and_described() -> None:
    listed = dict(builtin_baselines())
    assert {"default", "cis-linux-l1", "windows-default"} <= set(listed)
    assert all(listed.values())
    assert validate_files(sorted(BUILTIN_DIR.glob("*.yaml"))) == []


def test_default_baseline_says_what_the_spec_says() -> None:
    baseline = load_baseline("default")
    assert baseline.forbid_extra_uid0 and baseline.forbid_empty_password
    assert baseline.firewall_required
    assert baseline.permit_root_login == "prohibit-password"
    assert baseline.max_days_idle == 90
    assert baseline.match.os is None


def test_windows_default_matches_windows_only() -> None:
    baseline = load_baseline("windows-default")
    assert baseline.match.os == "windows"
    assert baseline.allowed_admins == ("Administrator",)
    assert baseline.minimum_build == "17763.5458"


def test_cis_items_are_each_mapped_to_a_cis_number() -> None:
    text = (BUILTIN_DIR / "cis-linux-l1.yaml").read_text("utf-8")
    document = yaml.safe_load(text)
    checked_lines = [
        line
        for line in text.splitlines()
        if line.strip().startswith("- ")
        or (":" in line and line.startswith("  ") and not line.strip().endswith(":"))
    ]
    # every list item and every scalar setting under a section carries "# <CIS number>"
    for line in checked_lines:
        if line.strip().startswith(("description", "name", "os")):
            continue
        assert "#" in line and any(ch.isdigit() for ch in line.split("#", 1)[1]), line
    assert document["match"] == {"os": "linux"}


def test_dump_resolved_loads_back_to_the_same_baseline(tmp_path: Path) -> None:
    _write(tmp_path, "gone.txt", "mallory\n")
    child = _write(
        tmp_path,
        "child.yaml",
        HEAD + "extends: [cis-linux-l1]\n"
        "accounts:\n  revoked_file: gone.txt\n"
        "severity:\n  dormancy.stale: low\n",
    )
    baseline = load_baseline(str(child))
    dumped = dump_resolved(baseline)
    again = load_baseline(str(_write(tmp_path, "dumped.yaml", dumped)))
    assert again.settings == baseline.settings
    assert again.revoked == ("mallory",)
    assert again.severity == {"dormancy.stale": "low"}
    assert "extends" not in yaml.safe_load(dumped)


def _facts(os_type: str, distro: str | None, version: str | None) -> Facts:
    return Facts(
        ImageInfo("/i.qcow2", "qcow2", 0, "", "", None, ()), OsInfo(os_type, distro, version)
    )


@pytest.mark.parametrize(
    ("match", "facts", "fits"),
    [
        ("os: linux", _facts("linux", "debian", "12.4"), True),
        ("os: windows", _facts("linux", "debian", "12.4"), False),
        ("distro: debian", _facts("linux", "Debian", "12.4"), True),
        ("distro: [ubuntu, rhel]", _facts("linux", "debian", "12.4"), False),
        ("version: '>=12'", _facts("linux", "debian", "12.4"), True),
        ("version: '<11'", _facts("linux", "debian", "12.4"), False),
        ("version: '==12.4'", _facts("linux", "debian", "12.4"), True),
        ("version: '==12.4'", _facts("linux", "debian", "12.10"), False),
        ("version: '12'", _facts("linux", "debian", "12.10"), True),
        ("version: '12'", _facts("linux", "debian", "11.9"), False),
        ("version: 12", _facts("linux", "debian", "12"), True),
        ("version: '>=11,<13'", _facts("linux", "rhel", "12.1"), True),
        ("version: '>=9'", _facts("linux", "rhel", None), False),
    ],
)
def test_match_decides_which_guests_a_baseline_applies_to(
    tmp_path: Path, match: str, facts: Facts, fits: bool
) -> None:
    key, value = match.split(": ", 1)
    path = _write(tmp_path, "b.yaml", HEAD + f"match:\n  {key}: {value}\n")
    assert load_baseline(str(path)).match.fits(facts) is fits


# Hostile YAML: each is a problem with file, line and key, never a traceback (issue 15).
HOSTILE = [
    (
        "3000-nested-brackets",
        "packages:\n  forbidden: " + "[" * 3000 + "]" * 3000 + "\n",
        6,
        "packages.forbidden" + "[0]" * 62,
        "nested deeper than 64 levels",
    ),
    (
        "3000-nested-mappings",
        "accounts: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
        5,
        "accounts" + ".a" * 62,
        "nested deeper than 64 levels",
    ),
    (
        "5000-digit-integer",
        "dormancy:\n  max_days_idle: " + "9" * 5000 + "\n",
        6,
        "dormancy.max_days_idle",
        "expected an integer, got an integer of 5000 characters, too large",
    ),
    (
        "4000-digit-version",
        "patches:\n  minimum_versions:\n    openssl: " + "1" * 4000 + "\n",
        7,
        "patches.minimum_versions.openssl",
        "expected a version string, got an integer of 4000 characters, too large",
    ),
    (
        "long-sexagesimal",
        "dormancy:\n  max_days_idle: " + "59:" * 30 + "1\n",
        6,
        "dormancy.max_days_idle",
        "an integer beyond 9223372036854775807",
    ),
    (
        "integer-beyond-a-long",
        "patches:\n  max_days_since_update: 9223372036854775808\n",
        6,
        "patches.max_days_since_update",
        "an integer beyond 9223372036854775807",
    ),
    (
        "merge-key",
        "firewall:\n  <<: {required: true}\n  default_inbound: deny\n",
        6,
        "firewall.<<",
        "merge keys ('<<') are not supported",
    ),
    (
        "top-level-merge-key",
        "<<: {dormancy: {max_days_idle: 3}}\n",
        5,
        "<<",
        "merge keys ('<<') are not supported",
    ),
    (
        "impossible-date",
        "match:\n  version: 2024-02-31\n",
        6,
        "match.version",
        "expected a version string, got a date or time that cannot be read",
    ),
    (
        "unknown-tag",
        "packages:\n  forbidden: [!python/object:os.system x]\n",
        6,
        "packages.forbidden[0]",
        "expected a string, got a value tagged '!python/object:os.system'",
    ),
]


@pytest.mark.parametrize(
    ("body", "line", "key", "words"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_yaml_is_a_problem_with_file_line_and_key(
    tmp_path: Path, body: str, line: int, key: str, words: str
) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(HEAD + body, "utf-8")
    problem = _only_problem(path)
    assert (problem.file, problem.line, problem.key) == (str(path), line, key)
    assert words in problem.message
    with pytest.raises(ConfigError) as caught:
        load_baseline(str(path))
    assert caught.value.message == str(problem)


def test_hostile_yaml_through_the_cli_exits_2_naming_file_line_and_key(tmp_path: Path) -> None:
    bodies = {name: body for name, body, *_ in HOSTILE}
    files = []
    for name in ("3000-nested-brackets", "5000-digit-integer", "merge-key"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(HEAD + bodies[name], "utf-8")
        files.append(path)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    checked = vmaudit("baselines", "validate", *map(str, files), env=env, timeout=120)
    assert checked.returncode == 2, checked.stderr
    assert "Traceback" not in checked.stderr
    lines = checked.stderr.splitlines()
    assert any(line.startswith(f"{files[0]}:6: packages.forbidden[0][0]") for line in lines)
    assert f"{files[1]}:6: dormancy.max_days_idle: expected an integer" in checked.stderr
    assert f"{files[2]}:6: firewall.<<: merge keys" in checked.stderr

    (tmp_path / "empty").mkdir()
    scanned = vmaudit("scan", str(tmp_path / "empty"), "-b", str(files[1]), env=env, timeout=120)
    assert scanned.returncode == 2, scanned.stderr
    assert "Traceback" not in scanned.stderr
    assert f"{files[1]}:6: dormancy.max_days_idle" in scanned.stderr


def test_extends_chain_of_a_thousand_files_is_a_problem_not_a_recursion(tmp_path: Path) -> None:
    for index in range(1000):
        parent = f"extends: [b{index + 1}.yaml]\n" if index < 999 else ""
        (tmp_path / f"b{index}.yaml").write_text(HEAD + parent, "utf-8")
    problem = _only_problem(tmp_path / "b0.yaml")
    assert (problem.file, problem.line, problem.key) == (
        str(tmp_path / "b31.yaml"),
        5,
        "extends[0]",
    )
    assert problem.message == "extends chain deeper than 32 files"

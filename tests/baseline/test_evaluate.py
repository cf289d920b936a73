"""Evaluation across baselines: match, severity overrides, de-duplication, rule activity."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from vmaudit.baseline import Baseline, load_baseline
from vmaudit.baseline.schema import BASELINE, walk_keys
from vmaudit.judge.rules import RULES, evaluate
from vmaudit.models import (
    Facts,
    FirewallBackend,
    FirewallFacts,
    ImageInfo,
    OsInfo,
    SshFacts,
    User,
)

NOW = datetime(2026, 11, 27, tzinfo=UTC)
HEAD = "apiVersion: vmaudit/v1\nkind: Baseline\nmetadata:\n  name: {name}\n"


def _baseline(tmp_path: Path, name: str, body: str) -> Baseline:
    path = tmp_path / f"{name}.yaml"
    path.write_text(HEAD.format(name=name) + body, "utf-8")
    return load_baseline(str(path))


def _user(name: str, uid: int, **changes: object) -> User:
    fields: dict[str, object] = dict(
        name=name,
        uid=uid,
        gid=uid,
        shell="/bin/bash",
        home=f"/home/{name}",
        password="set",
        last_change=None,
        max_days=None,
        expires=None,
        can_login=True,
        groups=(),
        admin=False,
        admin_via=(),
        authorized_keys=0,
    )
    fields.update(changes)
    return User(**fields)  # type: ignore[arg-type]


NO_FIREWALL = FirewallFacts(False, ())


def _linux(*users: User, firewall: FirewallFacts = NO_FIREWALL) -> Facts:
    return Facts(
        ImageInfo("/ds/a.qcow2", "qcow2", 0, "", "", None, ()),
        OsInfo("linux", "debian", "12.4", package_format="deb"),
        users=users,
        ssh=SshFacts(True, "yes", True),
        firewall=firewall,
    )


def test_same_rule_and_subject_from_two_baselines_keeps_the_most_severe(tmp_path: Path) -> None:
    mild = _baseline(
        tmp_path,
        "mild",
        "accounts:\n  forbid_extra_uid0: true\nseverity:\n  account.extra-uid0: low\n",
    )
    strict = _baseline(tmp_path, "strict", "accounts:\n  forbid_extra_uid0: true\n")
    facts = _linux(_user("root", 0), _user("toor", 0))
    findings = evaluate(facts, [mild, strict], NOW).findings
    assert [(f.rule, f.subject, f.severity, f.baseline) for f in findings] == [
        ("account.extra-uid0", "toor", "critical", "strict")
    ]


def test_severity_override_applies_to_its_own_baseline(tmp_path: Path) -> None:
    baseline = _baseline(
        tmp_path,
        "b",
        "ssh:\n  password_authentication: false\nseverity:\n  ssh.password-auth: high\n",
    )
    (finding,) = evaluate(_linux(), [baseline], NOW).findings
    assert (finding.rule, finding.severity) == ("ssh.password-auth", "high")


def test_baseline_whose_match_does_not_fit_is_not_applied(tmp_path: Path) -> None:
    windows = load_baseline("windows-default")
    evaluation = evaluate(_linux(_user("kiosk", 1000, password="empty")), [windows], NOW)
    assert evaluation.findings == ()
    assert evaluation.rules_evaluated == ()
    assert evaluation.baselines_applied == ()


def test_rules_evaluated_lists_active_rules_for_the_os(tmp_path: Path) -> None:
    evaluation = evaluate(_linux(_user("root", 0)), [load_baseline("default")], NOW)
    assert evaluation.rules_evaluated == (
        "account.empty-password",
        "account.extra-uid0",
        "dormancy.stale",
        "firewall.disabled",
        "ssh.root-login",
    )


def test_switched_off_keys_do_not_make_a_rule_run(tmp_path: Path) -> None:
    baseline = _baseline(
        tmp_path,
        "switched-off",
        "accounts:\n  forbid_empty_password: false\n"
        "ssh:\n  password_authentication: true\n"
        "firewall:\n  default_inbound: any\n",
    )
    facts = _linux(_user("kiosk", 1000, password="empty"))
    evaluation = evaluate(facts, [baseline], NOW)
    assert evaluation.rules_evaluated == ()
    assert evaluation.findings == ()


def test_linux_firewall_disabled_is_one_finding_when_no_backend_is_enabled(tmp_path: Path) -> None:
    baseline = _baseline(tmp_path, "fw", "firewall:\n  required: true\n")
    firewall = FirewallFacts(
        False,
        (
            FirewallBackend("ufw", True, False, "deny"),
            FirewallBackend("nftables", True, False, None),
        ),
    )
    (finding,) = evaluate(_linux(firewall=firewall), [baseline], NOW).findings
    assert finding.subject == "firewall"
    assert finding.evidence == {"installed": ["ufw", "nftables"]}
    enabled = FirewallFacts(True, (FirewallBackend("nftables", True, True, "deny"),))
    assert evaluate(_linux(firewall=enabled), [baseline], NOW).findings == ()


def test_default_baseline_on_a_neglected_linux_guest() -> None:
    facts = _linux(_user("root", 0), _user("toor", 0), _user("kiosk", 1001, password="empty"))
    found = {(f.rule, f.subject) for f in evaluate(facts, [load_baseline("default")], NOW).findings}
    assert found == {
        ("account.extra-uid0", "toor"),
        ("account.empty-password", "kiosk"),
        ("firewall.disabled", "firewall"),
        ("ssh.root-login", "sshd"),
    }


def test_every_key_a_rule_reads_exists_in_the_schema() -> None:
    known = {dotted for dotted, _ in walk_keys(BASELINE)}
    for rule in RULES.values():
        assert set(rule.keys) <= known, rule.id
        assert rule.doc, rule.id

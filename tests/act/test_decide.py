"""The power-on decision on real images and a real state database, without an appliance:
facts cached by a scan decide an unchanged image; what cannot be audited gets on_error;
every decision is recorded."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.act.gatehelpers import (
    COMPLIANT,
    OUT_OF_BASELINE,
    build_image,
    cache_facts,
    vmaudit_gate,
    write_policy,
)
from tests.feeds.conftest import DSA_5724_1, write_json
from tests.imaging import fingerprint
from tests.pgserver import Server
from vmaudit.act.domain import DiskSpec, GuestDisks
from vmaudit.act.gate import Gate
from vmaudit.act.policy import load_policy
from vmaudit.cli import main
from vmaudit.feeds import import_feeds
from vmaudit.state import StateDB


def domain_xml(name: str, *disks: str, kind: str = "file", fmt: str = "raw") -> bytes:
    devices = "".join(
        f"<disk type='{kind}' device='disk'><driver name='qemu' type='{fmt}'/>"
        f"<source {'file' if kind == 'file' else 'dev'}='{disk}'/>"
        f"<target dev='vd{chr(97 + i)}'/></disk>"
        for i, disk in enumerate(disks)
    )
    return f"<domain type='qemu'><name>{name}</name><devices>{devices}</devices></domain>".encode()


def hook(policy: Path, name: str, xml: bytes) -> tuple[int, str]:
    done = vmaudit_gate(
        "libvirt", "--policy", str(policy), name, "prepare", "begin", "-", stdin=xml
    )
    return done.returncode, done.stderr.decode()


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    """A datastore with two images whose facts a scan cached, and a policy over it."""
    store = tmp_path / "images"
    bad, bad_tree = build_image(store, "legacy.img", OUT_OF_BASELINE)
    good, good_tree = build_image(store, "clean.img", COMPLIANT)
    state = tmp_path / "state.db"
    cache_facts(state, bad, bad_tree)
    cache_facts(state, good, good_tree)
    policy = write_policy(tmp_path / "gate.yaml", [store], state)
    return {"store": store, "bad": bad, "good": good, "state": state, "policy": policy}


def test_an_unchanged_out_of_baseline_image_is_refused_from_cached_facts(
    site: dict[str, Path],
) -> None:
    before = fingerprint(site["store"])
    code, err = hook(site["policy"], "legacy", domain_xml("legacy", str(site["bad"])))
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("vmaudit gate: refused legacy:")
    assert "account.extra-uid0 (toor)" in err and "(cached facts)" in err
    assert fingerprint(site["store"]) == before  # bytes and mtime of every image

    with StateDB(site["state"]) as db:
        (decision,) = db.power_ons()
        history = db.history(str(site["bad"]))
    assert (decision.source, decision.domain, decision.decision) == ("libvirt", "legacy", "refuse")
    assert decision.image == str(site["bad"]) and decision.details["from_cache"] is True
    assert {"rule": "account.extra-uid0", "severity": "critical", "subject": "toor"} in (
        decision.details["findings"]
    )
    power_on = [e for entry in history for e in entry.events if e.kind == "power-on"]
    assert [e.changes["decision"] for e in power_on] == ["refuse"]


def test_an_unchanged_compliant_image_is_allowed_and_the_last_report_stays_the_scans(
    site: dict[str, Path],
) -> None:
    runner = CliRunner()
    before = runner.invoke(main, ["report", "-f", "json", "--state", str(site["state"])])
    code, err = hook(site["policy"], "clean", domain_xml("clean", str(site["good"])))
    assert code == 0, err
    assert "no finding at or above critical (2 below; cached facts)" in err
    after = runner.invoke(main, ["report", "-f", "json", "--state", str(site["state"])])
    assert json.loads(after.output) == json.loads(before.output)
    history = runner.invoke(main, ["history", str(site["good"]), "--state", str(site["state"])])
    assert "power-on: allow (libvirt)" in history.output


def test_an_exempt_domain_passes_unaudited_and_is_recorded(
    tmp_path: Path, site: dict[str, Path]
) -> None:
    policy = write_policy(
        tmp_path / "exempt.yaml", [site["store"]], site["state"], exempt="[legacy-*]"
    )
    code, err = hook(policy, "legacy-2019", domain_xml("legacy-2019", str(site["bad"])))
    assert code == 0 and "exempt by policy (legacy-*)" in err
    with StateDB(site["state"]) as db:
        (decision,) = db.power_ons()
    assert decision.decision == "allow" and decision.details["exempt"] == "legacy-*"


@pytest.mark.parametrize(
    ("xml", "reason"),
    [
        (b"<domain><name>x</name", "domain XML: not well-formed XML"),
        (
            b"<!DOCTYPE d [<!ENTITY e SYSTEM 'file:///etc/shadow'>]><domain>&e;</domain>",
            "a DOCTYPE refused",
        ),
        (b"<domain type='qemu'><name>vm</name><devices/></domain>", "names no disk"),
        (
            b"<domain><name>vm</name><devices><disk type='network' device='disk'>"
            b"<source protocol='rbd' name='pool/vm'/><target dev='vda'/></disk></devices></domain>",
            "vda: network disk (rbd pool/vm) cannot be audited",
        ),
        (
            b"<domain><name>vm</name><devices><disk type='network' device='disk'>"
            b"<source protocol='nbd'/><target dev='vda'/></disk></devices></domain>",
            "network disk (nbd)",
        ),
        (
            b"<domain><name>vm</name><devices><disk type='block' device='disk'>"
            b"<source dev='/dev/sda'/><target dev='vda'/></disk></devices></domain>",
            "vda: /dev/sda is outside the allowed datastores",  # audited when inside them
        ),
        (
            b"<domain><name>vm</name><devices><disk type='file' device='disk'>"
            b"<source file='/etc/shadow'/><target dev='vda'/></disk></devices></domain>",
            "/etc/shadow is outside the allowed datastores",
        ),
        (
            b"<domain><name>vm</name><devices><disk type='file' device='disk'>"
            b"<target dev='vda'/></disk></devices></domain>",
            "file disk without a source file",
        ),
    ],
)
def test_what_cannot_be_audited_is_refused_by_default_and_recorded(
    site: dict[str, Path], xml: bytes, reason: str
) -> None:
    code, err = hook(site["policy"], "vm", xml)
    assert code == 1, err
    assert "cannot be audited (refused by on_error: refuse)" in err and reason in err
    assert err.count("\n") == 1
    with StateDB(site["state"]) as db:
        (decision,) = db.power_ons()
    assert decision.decision == "refuse" and reason in str(decision.details["error"])
    assert decision.image is None


def test_on_error_allow_lets_an_unauditable_guest_start_and_says_so(
    tmp_path: Path, site: dict[str, Path]
) -> None:
    policy = write_policy(
        tmp_path / "lenient.yaml", [site["store"]], site["state"], on_error="allow"
    )
    code, err = hook(policy, "vm", b"not xml at all")
    assert code == 0 and "allowed by on_error: allow" in err
    with StateDB(site["state"]) as db:
        assert [d.decision for d in db.power_ons()] == ["allow"]


def test_a_symlink_out_of_the_datastore_and_a_format_lie_are_errors(
    tmp_path: Path, site: dict[str, Path]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.img").write_bytes(b"\0" * 4096)
    os.symlink(outside, site["store"] / "linked")
    code, err = hook(
        site["policy"], "vm", domain_xml("vm", str(site["store"] / "linked" / "secret.img"))
    )
    assert code == 1 and "is outside the allowed datastores" in err
    os.symlink(site["bad"], site["store"] / "alias.img")
    code, err = hook(site["policy"], "vm", domain_xml("vm", str(site["store"] / "alias.img")))
    assert code == 1 and "alias.img is not a regular file" in err
    # libvirt would open the raw image as qcow2: what the guest sees is not what we'd read
    code, err = hook(site["policy"], "vm", domain_xml("vm", str(site["good"]), fmt="qcow2"))
    assert code == 1 and "opens it as qcow2 but its content is raw" in err


def test_every_other_hook_call_passes_at_once_without_reading_anything(tmp_path: Path) -> None:
    missing_policy = tmp_path / "no-such-policy.yaml"
    for operation, subop in [
        ("prepare", "end"),
        ("start", "begin"),
        ("started", "begin"),
        ("stopped", "end"),
        ("release", "end"),
        ("migrate", "begin"),
        ("restore", "begin"),
        ("reconnect", "begin"),
        ("attach", "begin"),
    ]:
        done = vmaudit_gate(
            "libvirt", "--policy", str(missing_policy), "vm", operation, subop, "-", stdin=b""
        )
        assert (done.returncode, done.stderr) == (0, b""), (operation, subop)
    assert not missing_policy.exists()


def test_gate_check_decides_each_image_given_by_hand(site: dict[str, Path]) -> None:
    done = vmaudit_gate("check", "--policy", str(site["policy"]), str(site["good"]))
    assert done.returncode == 0 and done.stdout.decode().startswith("allow  clean.img:")
    done = vmaudit_gate(
        "check", "--policy", str(site["policy"]), str(site["good"]), str(site["bad"])
    )
    assert done.returncode == 1
    lines = done.stdout.decode().splitlines()
    assert lines[0].startswith("allow  clean.img:") and lines[1].startswith("refuse  legacy.img:")
    listed = vmaudit_gate("decisions", "--state", str(site["state"]), "-f", "json")
    assert [d["decision"] for d in json.loads(listed.stdout)] == ["allow", "allow", "refuse"]
    later = vmaudit_gate("decisions", "--state", str(site["state"]), "--since", "2999-01-01")
    assert later.returncode == 0 and "legacy" not in later.stdout.decode()
    # the same list from vmaudit report
    runner = CliRunner()
    since = runner.invoke(
        main,
        [
            "report",
            "--power-on",
            "--since",
            "2000-01-01",
            "-f",
            "json",
            "--state",
            str(site["state"]),
        ],
    )
    assert since.exit_code == 0, since.output
    assert [d["decision"] for d in json.loads(since.output)] == ["allow", "allow", "refuse"]
    none = runner.invoke(
        main, ["report", "--power-on", "--since", "2999-01-01", "--state", str(site["state"])]
    )
    assert none.exit_code == 0 and "legacy" not in none.output


@pytest.mark.appliance
def test_a_changed_image_is_not_decided_from_its_old_facts(site: dict[str, Path]) -> None:
    # The compliant facts were cached; the image is then rewritten with the bad guest.
    build_image(site["store"], "clean.img", OUT_OF_BASELINE)
    policy = replace(load_policy(str(site["policy"])), timeout=1)
    guest = GuestDisks("clean", (DiskSpec("vda", "file", str(site["good"])),))
    # An audit must run now; a timeout too short for any appliance is on_error's case.
    decision = Gate(policy).decide(guest, "check")
    assert not decision.allowed and decision.result is not None
    assert not decision.result.from_cache
    assert decision.error is not None and decision.error.startswith("timeout:")


@pytest.mark.appliance
def test_an_image_never_scanned_is_audited_now_refused_and_then_decided_from_cache(
    tmp_path: Path,
) -> None:
    store = tmp_path / "images"
    image, _tree = build_image(store, "forgotten.img", OUT_OF_BASELINE)
    state = tmp_path / "state.db"
    policy = write_policy(tmp_path / "gate.yaml", [store], state, timeout="300")
    before = fingerprint(store)
    first = vmaudit_gate("check", "--policy", str(policy), str(image))
    assert first.returncode == 1, first.stderr
    assert "account.extra-uid0 (toor) (audited now)" in first.stdout.decode()
    second = vmaudit_gate("check", "--policy", str(policy), str(image))
    assert second.returncode == 1
    assert "account.extra-uid0 (toor) (cached facts)" in second.stdout.decode()
    assert fingerprint(store) == before
    with StateDB(state) as db:
        cached = [d.details["from_cache"] for d in db.power_ons()]
    assert cached == [False, True]


def test_gates_and_scans_share_one_postgresql_state(tmp_path: Path, pg_server: Server) -> None:
    url = pg_server.new_database()
    store = tmp_path / "images"
    bad, bad_tree = build_image(store, "legacy.img", OUT_OF_BASELINE)
    cache_facts(url, bad, bad_tree)  # a central scan, on another host
    policy = write_policy(tmp_path / "gate.yaml", [store], url)
    code, err = hook(policy, "legacy", domain_xml("legacy", str(bad)))
    assert code == 1 and "account.extra-uid0 (toor) (cached facts)" in err
    listed = vmaudit_gate("decisions", "--state", url, "-f", "json")
    assert [(d["domain"], d["decision"]) for d in json.loads(listed.stdout)] == [
        ("legacy", "refuse")
    ]
    # the central scan's report and the image's history, from the shared database
    runner = CliRunner()
    report = runner.invoke(main, ["report", "-f", "json", "--state", url])
    assert report.exit_code == 0, report.output
    assert [image["path"] for image in json.loads(report.output)["images"]] == [str(bad)]
    history = runner.invoke(main, ["history", str(bad), "--state", url])
    assert "power-on: refuse (libvirt)" in history.output


def test_cached_facts_are_judged_against_todays_feeds(tmp_path: Path) -> None:
    store = tmp_path / "images"
    old_ssh = {
        **COMPLIANT,
        "var/lib/dpkg/status": COMPLIANT["var/lib/dpkg/status"].replace(
            "1:9.2p1-2+deb12u3", "1:9.2p1-2+deb12u2"
        ),
    }
    image, tree = build_image(store, "bastion.img", old_ssh)
    state = tmp_path / "state.db"
    cache_facts(state, image, tree)  # scanned before the advisory was known
    (tmp_path / "vulns.yaml").write_text(
        "apiVersion: vmaudit/v1\nkind: Baseline\nmetadata: {name: vulns}\nvulnerabilities: {}\n"
    )
    policy_text = (
        "apiVersion: vmaudit/v1\nkind: GatePolicy\nbaselines: [vulns.yaml]\nfail_on: medium\n"
        f"state: {state}\ndatastores: [{store}]\nfeeds_db: feeds.db\n"
    )
    (tmp_path / "gate.yaml").write_text(policy_text)
    xml = domain_xml("bastion", str(image))
    code, err = hook(tmp_path / "gate.yaml", "bastion", xml)
    assert code == 0, err  # no feeds imported yet: nothing to judge vuln.cve against
    import_feeds(
        [str(write_json(tmp_path / "dsa.json", DSA_5724_1))], tmp_path / "feeds.db", lambda _: None
    )
    code, err = hook(tmp_path / "gate.yaml", "bastion", xml)
    assert code == 1
    assert "vuln.cve (CVE-2024-6387)" in err and "(cached facts)" in err


def test_a_state_database_that_cannot_be_used_is_on_errors_case(
    tmp_path: Path, site: dict[str, Path]
) -> None:
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"\x00garbage" * 512)
    policy = write_policy(tmp_path / "broken.yaml", [site["store"]], broken)
    code, err = hook(policy, "clean", domain_xml("clean", str(site["good"])))
    assert code == 1 and err.count("\n") == 1
    assert "cannot be audited (refused by on_error: refuse)" in err
    assert "is not an SQLite database" in err
    assert broken.read_bytes() == b"\x00garbage" * 512


def test_a_refusal_names_the_remediate_command_the_policy_allows(
    site: dict[str, Path], tmp_path: Path
) -> None:
    policy = write_policy(
        tmp_path / "repair.yaml",
        [site["store"]],
        site["state"],
        fail_on="high",
        remediate="[ssh-root-login, lock-revoked]",
    )
    code, err = hook(policy, "legacy", domain_xml("legacy", str(site["bad"])))
    assert code == 1 and err.count("\n") == 1
    bad = str(site["bad"])
    # PermitRootLogin yes is what the named fix answers; uid 0 toor is not: not a full pass.
    assert f"vmaudit remediate {bad} -o {bad}.remediated.qcow2 --fix ssh-root-login" in err
    assert "--fix lock-revoked" not in err  # no revoked account among the findings
    assert "offline repair answers 1 of them" in err


def test_a_refusal_without_fixes_in_the_policy_names_no_command(site: dict[str, Path]) -> None:
    code, err = hook(site["policy"], "legacy", domain_xml("legacy", str(site["bad"])))
    assert code == 1 and "vmaudit remediate" not in err


def test_the_policy_refuses_a_fix_it_does_not_know(site: dict[str, Path], tmp_path: Path) -> None:
    policy = write_policy(
        tmp_path / "bad.yaml", [site["store"]], site["state"], remediate="[reformat-disk]"
    )
    done = vmaudit_gate("check", "--policy", str(policy), str(site["bad"]))
    assert done.returncode == 2
    assert "remediate" in done.stderr.decode() and "bad.yaml" in done.stderr.decode()


def test_the_hint_says_pass_only_when_every_refusing_finding_is_answered() -> None:
    from vmaudit.act.gate import remediation_hint
    from vmaudit.models import Finding

    root = Finding("ssh.root-login", "high", "sshd", "PermitRootLogin yes")
    jdoe = Finding("account.revoked-active", "critical", "jdoe", "revoked account can log in")
    uid0 = Finding("account.extra-uid0", "critical", "toor", "toor has uid 0")
    both = ("ssh-root-login", "lock-revoked")
    assert remediation_hint("/i.img", [root, jdoe], both) == (
        "offline repair would make it pass: vmaudit remediate /i.img -o "
        "/i.img.remediated.qcow2 --fix lock-revoked --fix ssh-root-login"
    )
    assert remediation_hint("/i.img", [root, uid0], both).startswith(
        "offline repair answers 1 of them"
    )
    assert remediation_hint("/i.img", [uid0], both) == ""
    assert remediation_hint("/i.img", [root], ()) == ""

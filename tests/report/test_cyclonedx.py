"""CycloneDX BOMs: valid against the CycloneDX 1.6 JSON schema, packages with purls, the
OS, and vuln.cve findings as vulnerabilities affecting their source package's binaries."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from tests.feeds.conftest import bookworm, linux_facts, windows_facts
from vmaudit.models import (
    AuditedImage,
    FailedImage,
    Finding,
    ImageError,
    ImageRef,
    Package,
    ScanReport,
)
from vmaudit.report.cyclonedx import bom, package_url, render, render_bom

WHEN = datetime(2026, 11, 27, tzinfo=UTC)
CVE = Finding(
    "vuln.cve",
    "medium",
    "CVE-2024-6387",
    "openssh 1:9.2p1-2+deb12u2 is older than 1:9.2p1-2+deb12u3 (DSA-5724-1)",
    {
        "package": "openssh",
        "installed": "1:9.2p1-2+deb12u2",
        "fixed": "1:9.2p1-2+deb12u3",
        "advisory": "DSA-5724-1",
        "published": "2024-07-01T00:00:00Z",
        "source": "osv: /feeds/dsa.json",
        "exposed_days": 879,
    },
)


def _valid(text: str) -> None:
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    assert errors is None, errors


def test_debian_bom_is_valid_with_purls_os_and_the_cve() -> None:
    text = render_bom(bom(bookworm("1:9.2p1-2+deb12u2"), [CVE], WHEN))
    _valid(text)
    document = json.loads(text)
    assert document["specVersion"] == "1.6"
    purls = {c["name"]: c.get("purl") for c in document["components"]}
    assert purls["openssh-server"] == (
        "pkg:deb/debian/openssh-server@1:9.2p1-2%2Bdeb12u2?arch=amd64&distro=debian-12"
        "&upstream=openssh"
    )
    (os_component,) = [c for c in document["components"] if c["type"] == "operating-system"]
    assert (os_component["name"], os_component["version"]) == ("debian", "12.5")
    (vulnerability,) = document["vulnerabilities"]
    assert vulnerability["id"] == "CVE-2024-6387"
    assert vulnerability["ratings"] == [{"severity": "medium"}]
    assert vulnerability["recommendation"] == "upgrade to 1:9.2p1-2+deb12u3"
    refs = {c["bom-ref"]: c["name"] for c in document["components"]}
    assert sorted(refs[a["ref"]] for a in vulnerability["affects"]) == [
        "openssh-client",
        "openssh-server",
    ]


def test_rpm_purl_puts_the_epoch_in_a_qualifier() -> None:
    facts = linux_facts("rhel", "9.4", [("openssh", "0:8.7p1-38.el9_4.1", "openssh")], "rpm")
    purl = package_url(facts, facts.packages[0])
    assert purl is not None
    assert (
        purl.to_string()
        == "pkg:rpm/redhat/openssh@8.7p1-38.el9_4.1?arch=amd64&distro=redhat-9&epoch=0"
    )
    _valid(render_bom(bom(facts)))


def test_apk_purl() -> None:
    facts = linux_facts("alpinelinux", "3.20", [("openssh", "9.7_p1-r4", "openssh")], "apk")
    purl = package_url(facts, facts.packages[0])
    assert purl is not None and purl.to_string() == (
        "pkg:apk/alpine/openssh@9.7_p1-r4?arch=amd64&distro=alpine-3.20"
    )


def test_windows_bom_has_applications_without_purl_and_cves_on_the_os() -> None:
    facts = replace(
        windows_facts("17763.5936"),
        packages=(Package("7-Zip 23.01 (x64)", "23.01", None, None, "Igor Pavlov"),),
    )
    cve = Finding(
        "vuln.cve",
        "critical",
        "CVE-2024-38077",
        "build below 10.0.17763.6054",
        {
            "product": "Windows Server 2019",
            "cvss": 9.8,
            "source": "msrc-cvrf: x",
            "advisory": "CVE-2024-38077",
            "fixed": "10.0.17763.6054",
        },
    )
    text = render_bom(bom(facts, [cve], WHEN))
    _valid(text)
    document = json.loads(text)
    app = next(c for c in document["components"] if c["name"].startswith("7-Zip"))
    assert app["type"] == "application" and "purl" not in app
    (vulnerability,) = document["vulnerabilities"]
    assert vulnerability["affects"] == [{"ref": "os"}]
    assert vulnerability["ratings"][0] == {
        "method": "CVSSv31",
        "score": 9.8,
        "severity": "critical",
    }


def test_a_scan_renders_one_bom_a_line_and_none_for_an_error() -> None:
    facts = bookworm("1:9.2p1-2+deb12u3")
    audited = AuditedImage(ImageRef(facts.image.path, "qcow2", ()), facts)
    failed = FailedImage(ImageRef("/images/broken.qcow2", "qcow2", ()), ImageError("timeout", "x"))
    report = ScanReport(
        "2026-11-27T00:00:00Z", "2026-11-27T00:01:00Z", ("default",), "high", (audited, failed), 0
    )
    lines = render(report).splitlines()
    assert len(lines) == 1
    _valid(lines[0])

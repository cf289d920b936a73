"""CycloneDX 1.6 JSON: one BOM per audited image, written by cyclonedx-python-lib.

A BOM holds the image as its subject (``metadata.component``), the guest OS as an
``operating-system`` component, every installed package as a ``library`` with its
package URL (``pkg:deb/debian/openssl@3.0.20-1~deb12u2?arch=amd64&distro=debian-12``,
``pkg:rpm/...``, ``pkg:apk/...``; Windows applications have no purl type and carry none)
and the image's ``vuln.cve`` findings as the BOM's vulnerabilities, each affecting the
packages of its source package (or the OS, for Windows). A scan writes one BOM a line
(JSON Lines); an image in error has none.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from cyclonedx.model import Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.vulnerability import (
    BomTarget,
    Vulnerability,
    VulnerabilityAdvisory,
    VulnerabilityRating,
    VulnerabilityScoreSource,
    VulnerabilitySeverity,
    VulnerabilitySource,
)
from cyclonedx.output import make_outputter
from cyclonedx.schema import OutputFormat, SchemaVersion
from packageurl import PackageURL

from vmaudit.models import Facts, Finding, Package, ScanReport

SCHEMA_VERSION = SchemaVersion.V1_6
OS_REF = "os"
# libguestfs distro name -> the purl namespace its packages are published under
PURL_NAMESPACE = {
    "debian": "debian", "ubuntu": "ubuntu", "linuxmint": "linuxmint", "kalilinux": "kali",
    "rhel": "redhat", "centos": "centos", "rocky": "rocky", "almalinux": "almalinux",
    "fedora": "fedora", "oraclelinux": "oracle", "amazonlinux": "amazon",
    "sles": "suse", "opensuse": "opensuse", "alpinelinux": "alpine",
}  # fmt: skip
PURL_TYPE = {"deb": "deb", "rpm": "rpm", "apk": "apk"}
SEVERITY = {
    "critical": VulnerabilitySeverity.CRITICAL,
    "high": VulnerabilitySeverity.HIGH,
    "medium": VulnerabilitySeverity.MEDIUM,
    "low": VulnerabilitySeverity.LOW,
    "info": VulnerabilitySeverity.INFO,
}


def _distro_qualifier(facts: Facts) -> str | None:
    distro, version = facts.os.distro, facts.os.version
    if not distro or not version:
        return None
    if distro in ("debian", "rhel", "centos", "rocky", "almalinux"):
        version = version.split(".", 1)[0]  # debian-12: the release, not the point release
    return f"{PURL_NAMESPACE.get(distro, distro)}-{version}"


def package_url(facts: Facts, package: Package) -> PackageURL | None:
    """The package URL of an installed package; None for formats without a purl type."""
    purl_type = PURL_TYPE.get(facts.os.package_format or "")
    namespace = PURL_NAMESPACE.get(facts.os.distro or "")
    if purl_type is None or namespace is None:
        return None
    qualifiers: dict[str, str] = {}
    if package.arch:
        qualifiers["arch"] = package.arch
    distro = _distro_qualifier(facts)
    if distro:
        qualifiers["distro"] = distro
    version = package.version
    if purl_type == "rpm" and ":" in version:
        epoch, version = version.split(":", 1)  # the rpm purl puts the epoch in a qualifier
        qualifiers["epoch"] = epoch
    if package.source and package.source != package.name and purl_type == "deb":
        qualifiers["upstream"] = package.source  # the source package, as Debian's purls do
    return PackageURL(
        type=purl_type,
        namespace=namespace,
        name=package.name,
        version=version,
        qualifiers=qualifiers,
    )


def _ref(index: int, package: Package) -> str:
    return f"pkg-{index}-{package.name}"


def _cvss(evidence: dict[str, Any]) -> Decimal | None:
    try:
        value = evidence.get("cvss")
        return Decimal(str(value)) if isinstance(value, int | float) else None
    except InvalidOperation:
        return None


def _published(evidence: dict[str, Any]) -> datetime | None:
    text = evidence.get("published")
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _vulnerabilities(
    facts: Facts, findings: Iterable[Finding], refs_by_source: dict[str, list[str]]
) -> list[Vulnerability]:
    found = []
    for finding in findings:
        if finding.rule != "vuln.cve":
            continue
        evidence = finding.evidence
        package = evidence.get("package")
        targets = refs_by_source.get(package, []) if isinstance(package, str) else []
        if facts.os.type == "windows" or not targets:
            targets = [OS_REF]
        fixed = evidence.get("fixed")
        source = str(evidence.get("source", "")).split(":", 1)[0] or None
        advisory = evidence.get("advisory")
        found.append(
            Vulnerability(
                bom_ref=f"vuln-{finding.subject}",
                id=finding.subject,
                source=VulnerabilitySource(name=source) if source else None,
                ratings=[
                    VulnerabilityRating(
                        severity=SEVERITY.get(finding.severity, VulnerabilitySeverity.UNKNOWN),
                        score=_cvss(evidence),
                        method=VulnerabilityScoreSource.CVSS_V3_1 if _cvss(evidence) else None,
                    )
                ],
                description=finding.message,
                recommendation=f"upgrade to {fixed}" if isinstance(fixed, str) else None,
                advisories=[
                    VulnerabilityAdvisory(title=str(advisory), url=_advisory_url(str(advisory)))
                ]
                if isinstance(advisory, str) and _advisory_url(advisory)
                else None,
                published=_published(evidence),
                affects=[BomTarget(ref=ref) for ref in targets],
            )
        )
    return found


def _advisory_url(advisory: str) -> Any:
    from cyclonedx.model import XsUri

    if advisory.startswith(("DSA-", "DLA-")):
        return XsUri(f"https://security-tracker.debian.org/tracker/{advisory}")
    if advisory.startswith("CVE-"):
        return XsUri(f"https://www.cve.org/CVERecord?id={advisory}")
    return None


def bom(facts: Facts, findings: Iterable[Finding] = (), timestamp: datetime | None = None) -> Bom:
    """The BOM of one guest: image, OS, packages, and its ``vuln.cve`` findings."""
    subject = Component(
        type=ComponentType.FILE,
        name=facts.image.path,
        bom_ref="image",
        properties=[
            Property(name="vmaudit:format", value=facts.image.format),
            Property(name="vmaudit:sha256_head", value=facts.image.sha256_head),
        ]
        + ([Property(name="vmaudit:vm", value=facts.image.vm)] if facts.image.vm else []),
    )
    operating_system = Component(
        type=ComponentType.OPERATING_SYSTEM,
        name=facts.os.distro or facts.os.type,
        version=facts.os.build if facts.os.type == "windows" else facts.os.version,
        description=facts.os.product,
        bom_ref=OS_REF,
    )
    components = [operating_system]
    refs_by_source: dict[str, list[str]] = {}
    for index, package in enumerate(facts.packages):
        ref = _ref(index, package)
        refs_by_source.setdefault(package.source or package.name, []).append(ref)
        components.append(
            Component(
                type=ComponentType.LIBRARY
                if facts.os.type != "windows"
                else ComponentType.APPLICATION,
                name=package.name,
                version=package.version,
                publisher=package.publisher,
                purl=package_url(facts, package),
                bom_ref=ref,
            )
        )
    document = Bom(
        components=components,
        metadata=BomMetaData(component=subject, timestamp=timestamp),
        vulnerabilities=_vulnerabilities(facts, findings, refs_by_source),
        # the same image and scan time give the same serial number
        serial_number=uuid5(
            NAMESPACE_URL,
            f"vmaudit:{facts.image.path}:{facts.image.mtime}:"
            f"{timestamp.isoformat() if timestamp else ''}",
        ),
    )
    document.register_dependency(subject, components)  # the image holds the OS and packages
    return document


def render_bom(document: Bom) -> str:
    """One BOM as compact CycloneDX JSON (one line)."""
    text = make_outputter(document, OutputFormat.JSON, SCHEMA_VERSION).output_as_string()
    return json.dumps(json.loads(text), separators=(",", ":"))  # ASCII: no raw bidi controls


def render(report: ScanReport) -> str:
    """One BOM a line for every audited image of the report."""
    when = datetime.fromisoformat(report.started_at.replace("Z", "+00:00"))
    lines = [
        render_bom(bom(result.facts, result.findings, when))
        for result in report.results
        if result.facts is not None
    ]
    return "".join(line + "\n" for line in lines)

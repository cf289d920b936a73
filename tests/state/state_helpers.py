"""Builders of facts, results and images for the state and watch tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from vmaudit.models import (
    AuditedImage,
    Business,
    DiskRef,
    Dormancy,
    Facts,
    FailedImage,
    Finding,
    FirewallBackend,
    FirewallFacts,
    ImageError,
    ImageInfo,
    ImageRef,
    ImageResult,
    OsInfo,
    Package,
    Risk,
    SshFacts,
    User,
)


def make_user(name: str, uid: int = 1000, admin: bool = False, **changes: Any) -> User:
    user = User(
        name=name,
        uid=uid,
        gid=uid,
        shell="/bin/bash",
        home=f"/home/{name}",
        password="set",
        last_change="2024-01-01",
        max_days=99999,
        expires=None,
        can_login=True,
        groups=("sudo",) if admin else (),
        admin=admin,
        admin_via=("group:sudo",) if admin else (),
        authorized_keys=0,
    )
    return replace(user, **changes)


def make_facts(path: str = "/ds/vm.qcow2", hostname: str = "db-01", **changes: Any) -> Facts:
    facts = Facts(
        image=ImageInfo(path, "qcow2", 1024, "2024-01-15T10:00:00Z", "ab" * 32, None, (path,)),
        os=OsInfo(
            "linux", "debian", "12.4", "Debian GNU/Linux 12 (bookworm)", hostname, "x86_64", "deb"
        ),
        packages=(
            Package("openssl", "3.0.11-1~deb12u2", "amd64", "openssl"),
            Package("bash", "5.2.15-2+b2", "amd64", "bash"),
        ),
        users=(make_user("root", 0, admin=True), make_user("alice")),
        ssh=SshFacts(True, "prohibit-password", False),
        firewall=FirewallFacts(True, (FirewallBackend("nftables", True, True, "deny"),)),
        dormancy=Dormancy("2024-01-10T08:00:00Z", None, "2024-01-09T12:00:00Z", 400),
        warnings=("cannot read /var/log/wtmp: over the cap",),
    )
    return replace(facts, **changes)


def make_image(path: Path | str, vm: str | None = None) -> ImageRef:
    text = str(path)
    return ImageRef(text, "qcow2", (DiskRef(text, "qcow2", (text,), ("qcow2",)),), vm=vm)


def make_finding(subject: str = "root", rule: str = "ssh.permit-root-login") -> Finding:
    return Finding(
        rule,
        "high",
        subject,
        f"{subject} may log in over SSH",
        {"permit_root_login": "yes", "lines": [3, 4]},
        "default",
    )


def audited(
    image: ImageRef, facts: Facts, *findings: Finding, from_cache: bool = False
) -> ImageResult:
    return AuditedImage(
        image=image,
        facts=facts,
        findings=findings,
        risk=Risk(60 if findings else 0, "high" if findings else "none"),
        business=Business("payroll", "finance-it", "high"),
        from_cache=from_cache,
        rules_evaluated=("ssh.permit-root-login", "account.extra-uid0"),
    )


def failed(image: ImageRef, kind: str = "timeout", message: str = "took too long") -> ImageResult:
    return FailedImage(image=image, error=ImageError(kind, message))

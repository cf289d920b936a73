"""Every rule of spec/baseline.md: one function each, declared next to its code.

A rule declares its id, default severity, the baseline keys it reads and the OS types it
applies to; its docstring is the user documentation (``python -m vmaudit.baseline.docs``).
The registry is a fixed table of names to functions: nothing in a baseline is executed.
A rule runs on a guest when one of its keys is set in a baseline that matches the guest.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, Unpack

from vmaudit.judge.eol import end_of_life
from vmaudit.models import (
    CONFIG_NOT_READ,
    SECTIONS,
    SEVERITIES,
    Facts,
    Finding,
    NotJudged,
    Severity,
    User,
)
from vmaudit.versions import comparator_for, dotted_compare

if TYPE_CHECKING:  # rules read a baseline's values; they never load one
    from vmaudit.baseline.model import Baseline

ALL_OS = ("linux", "windows", "unknown")
WINDOWS = ("windows",)


@dataclass(frozen=True)
class Hit:
    """What a rule found, before the evaluator adds rule id, severity and baseline."""

    subject: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    severity: Severity | None = None  # this hit's own severity (vuln.cve: the feed's)


RuleCheck = Callable[[Facts, "Baseline", datetime], Iterator[Hit]]


class Vulnerability(Protocol):
    """One advisory that applies to a guest, as a vulnerability source reports it."""

    @property
    def subject(self) -> str: ...  # the CVE id, else the advisory id
    @property
    def advisory(self) -> str: ...
    @property
    def package(self) -> str: ...  # source package, or Windows product
    @property
    def installed(self) -> str: ...
    @property
    def fixed(self) -> str | None: ...
    @property
    def severity(self) -> Severity: ...
    @property
    def warning(self) -> str | None: ...
    def exposed_days(self, now: datetime) -> int | None: ...
    def evidence(self, now: datetime, days: int | None = None) -> dict[str, Any]: ...


class VulnerabilitySource(Protocol):
    """What ``vuln.cve`` judges against: the feeds database (vmaudit.feeds.FeedsMatcher)."""

    def matches(self, facts: Facts) -> Sequence[Vulnerability]: ...


# A rule judged against a vulnerability source: the guest's matches come as a 4th argument.
FeedsCheck = Callable[[Facts, "Baseline", datetime, Sequence[Vulnerability]], Iterator[Hit]]


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    keys: tuple[str, ...]
    os_types: tuple[str, ...]
    check: RuleCheck
    active: Callable[[Baseline], bool]
    sections: tuple[str, ...] = ()  # the facts sections it reads (models.SECTIONS)
    feeds_check: FeedsCheck | None = None  # judged only when a vulnerability source is given

    @property
    def doc(self) -> str:
        """The rule's user documentation: its function's docstring, dedented."""
        return inspect.cleandoc((self.feeds_check or self.check).__doc__ or "")

    def applies(self, facts: Facts, baseline: Baseline) -> bool:
        return facts.os.type in self.os_types and self.active(baseline)


RULES: dict[str, Rule] = {}


def _keys_given(keys: tuple[str, ...]) -> Callable[[Baseline], bool]:
    """A rule is active when one of its keys is set to something that asks for a check.

    ``false`` and ``any`` switch a check off; an empty list is still a check (nobody may
    be an admin, say).
    """

    def active(baseline: Baseline) -> bool:
        return any(
            baseline.is_set(key) and baseline.get(key) not in (False, None, "any") for key in keys
        )

    return active


class RuleOptions(TypedDict, total=False):
    """What a rule may declare beside its id, severity and keys."""

    os_types: tuple[str, ...]  # default: every OS type
    active: Callable[[Baseline], bool]  # default: one of its keys is set
    sections: tuple[str, ...]  # the facts sections it reads: required


def rule(
    rule_id: str, severity: Severity, keys: tuple[str, ...], **options: Unpack[RuleOptions]
) -> Callable[[RuleCheck], RuleCheck]:
    """Register a rule function under its id, with the facts sections it reads."""
    sections = options.get("sections", ())

    def register(check: RuleCheck) -> RuleCheck:
        if rule_id in RULES:
            raise ValueError(f"rule {rule_id} registered twice")
        if severity not in SEVERITIES:
            raise ValueError(f"rule {rule_id}: bad severity {severity}")
        unknown = set(sections) - set(SECTIONS)
        if not sections or unknown:
            raise ValueError(f"rule {rule_id}: sections {sorted(unknown) or 'missing'}")
        active = options.get("active") or _keys_given(keys)
        os_types = options.get("os_types", ALL_OS)
        RULES[rule_id] = Rule(rule_id, severity, keys, os_types, check, active, sections)
        return check

    return register


def windows_rule(
    rule_id: str, severity: Severity, keys: tuple[str, ...], *, sections: tuple[str, ...]
) -> Callable[[RuleCheck], RuleCheck]:
    """Register a rule that applies to Windows guests only."""
    return rule(rule_id, severity, keys, os_types=WINDOWS, sections=sections)


# ---------------------------------------------------------------- helpers


def os_label(facts: Facts) -> str:
    """A short name of the guest's OS: ``debian 12.4``, ``windows 10.0`` or ``linux``."""
    if facts.os.distro:
        return f"{facts.os.distro} {facts.os.version}" if facts.os.version else facts.os.distro
    if facts.os.product:
        return facts.os.product
    return facts.os.type


def parse_when(text: str | None) -> datetime | None:
    """An ISO date or date-time from the facts as an aware UTC datetime; None if unparsable."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError:
            return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _aware(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now


def _days_between(earlier: datetime, now: datetime) -> int:
    return (_aware(now) - earlier).days


def _name_key(facts: Facts, name: str) -> str:
    # Windows account and application names are case-insensitive; Linux ones are not.
    return name.lower() if facts.os.type == "windows" else name


def can_log_in(user: User, now: datetime) -> bool:
    """Whether the account could log in at power-on: as collected, and not expired since."""
    if not user.can_login or user.disabled:
        return False
    expires = parse_when(user.expires)
    return expires is None or expires > _aware(now)


def _login_state(user: User, now: datetime) -> dict[str, Any]:
    return {
        "uid": user.uid,
        "password": user.password,
        "shell": user.shell,
        "expires": user.expires,
        "can_login": can_log_in(user, now),
    }


# ---------------------------------------------------------------- patches


@rule(
    "patch.missing",
    "high",
    ("patches.minimum_versions", "patches.repository_index"),
    sections=("packages",),
)
def patch_missing(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """An installed package is older than the lowest version the baseline accepts.

    The minimum comes from `patches.minimum_versions` (package name to version) and from
    every Debian `Packages` index of `patches.repository_index` (plain, `.gz` or `.xz`):
    a package older than the index's newest version of it, for its architecture (`all`
    matches any), is missing a patch. Versions are compared with the guest's own ordering:
    dpkg's for `deb`, rpm's for `rpm`, dotted numbers for Windows applications. Indexes
    apply to `deb` guests only. One finding per package, naming the highest minimum.
    """
    from vmaudit.judge.repoindex import load_index  # gzip, lzma: only for an index

    compare = comparator_for(facts)
    indexes = (
        [load_index(path) for path in baseline.repository_index]
        if facts.os.package_format == "deb"
        else []
    )
    minimums = {_name_key(facts, k): v for k, v in baseline.minimum_versions.items()}
    for package in facts.packages:
        wanted: list[tuple[str, str]] = []
        minimum = minimums.get(_name_key(facts, package.name))
        if minimum is not None:
            wanted.append((minimum, "patches.minimum_versions"))
        for index in indexes:
            newest = index.newest_for(package.name, package.arch)
            if newest is not None:
                wanted.append((newest, index.path))
        below = [
            (version, origin) for version, origin in wanted if compare(package.version, version) < 0
        ]
        if not below:
            continue
        required, origin = below[0]
        for version, source in below[1:]:
            if compare(version, required) > 0:
                required, origin = version, source
        yield Hit(
            package.name,
            f"{package.name} {package.version} is older than {required}",
            {
                "installed": package.version,
                "minimum": required,
                "arch": package.arch,
                "from": origin,
            },
        )


@windows_rule(
    "patch.hotfix-missing", "high", ("patches.windows.hotfixes_required",), sections=("hotfixes",)
)
def patch_hotfix_missing(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """A Windows hotfix of `patches.windows.hotfixes_required` is not installed.

    KB ids are compared case-insensitively with the installed hotfixes read from the
    guest's registry. One finding per missing KB.
    """
    installed = {hotfix.id.upper() for hotfix in facts.hotfixes}
    for kb in baseline.hotfixes_required:
        if kb.upper() not in installed:
            yield Hit(kb, f"hotfix {kb} is not installed", {"installed": len(installed)})


@windows_rule("patch.build-below", "high", ("patches.windows.minimum_build",), sections=("os",))
def patch_build_below(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """The Windows build (`CurrentBuild.UBR`, e.g. `17763.5458`) is below `minimum_build`.

    Builds compare numerically part by part. A guest whose build could not be read is
    not judged (the facts carry a warning).
    """
    build, minimum = facts.os.build, baseline.minimum_build
    if build is None or minimum is None:
        return
    if dotted_compare(build, minimum) < 0:
        yield Hit(
            build, f"build {build} is below {minimum}", {"build": build, "minimum_build": minimum}
        )


@rule("patch.stale", "medium", ("patches.max_days_since_update",), sections=("dormancy",))
def patch_stale(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """No package was installed or upgraded for longer than `max_days_since_update` days.

    Measured from the newest package install/upgrade recorded in the guest
    (`dormancy.last_update`) to the scan. A guest with no such record is not judged.
    """
    limit = baseline.max_days_since_update
    last_update = parse_when(facts.dormancy.last_update)
    if limit is None or last_update is None:
        return
    days = _days_between(last_update, now)
    if days > limit:
        yield Hit(
            os_label(facts),
            f"no package update for {days} days (limit {limit})",
            {"last_update": facts.dormancy.last_update, "days": days, "limit": limit},
        )


# ---------------------------------------------------------------- packages


@rule("package.forbidden", "high", ("packages.forbidden",), sections=("packages",))
def package_forbidden(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """A package of `packages.forbidden` is installed (binary package or application name)."""
    forbidden = {_name_key(facts, name) for name in baseline.forbidden_packages}
    seen: set[str] = set()
    for package in facts.packages:
        key = _name_key(facts, package.name)
        if key in forbidden and key not in seen:
            seen.add(key)
            yield Hit(
                package.name,
                f"forbidden package {package.name} is installed",
                {"version": package.version, "arch": package.arch},
            )


@rule("package.required-missing", "medium", ("packages.required",), sections=("packages",))
def package_required_missing(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """A package of `packages.required` is not installed."""
    installed = {_name_key(facts, package.name) for package in facts.packages}
    for name in baseline.required_packages:
        if _name_key(facts, name) not in installed:
            yield Hit(
                name,
                f"required package {name} is not installed",
                {"packages_installed": len(facts.packages)},
            )


# ---------------------------------------------------------------- accounts


REVOKED_KEYS = ("accounts.revoked", "accounts.revoked_file")  # both make baseline.revoked


def _revoked_users(facts: Facts, baseline: Baseline) -> Iterator[User]:
    revoked = {_name_key(facts, name) for name in baseline.revoked}
    for user in facts.users:
        if _name_key(facts, user.name) in revoked:
            yield user


@rule("account.revoked-present", "high", REVOKED_KEYS, sections=("accounts",))
def account_revoked_present(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """A revoked account still exists but cannot log in (locked, expired, disabled, no shell).

    Revoked names are those of `accounts.revoked` and of `accounts.revoked_file` (one name
    a line, `#` comments). The account should have been removed: its files, group
    memberships and keys remain, one unlock away from use.
    """
    for user in _revoked_users(facts, baseline):
        if not can_log_in(user, now):
            yield Hit(
                user.name,
                f"revoked account {user.name} still exists (cannot log in)",
                _login_state(user, now),
            )


@rule("account.revoked-active", "critical", REVOKED_KEYS, sections=("accounts",))
def account_revoked_active(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """A revoked account still exists and can log in.

    Same names as `account.revoked-present`; "can log in" means a usable shell, not
    locked, not expired at the scan date, not disabled (Windows).
    """
    for user in _revoked_users(facts, baseline):
        if can_log_in(user, now):
            yield Hit(user.name, f"revoked account {user.name} can log in", _login_state(user, now))


@rule(
    "account.empty-password",
    "critical",
    ("accounts.forbid_empty_password",),
    sections=("accounts",),
)
def account_empty_password(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """An account that can log in has an empty password (`forbid_empty_password: true`)."""
    for user in facts.users:
        if user.password == "empty" and can_log_in(user, now):
            yield Hit(
                user.name, f"{user.name} can log in with an empty password", _login_state(user, now)
            )


@rule(
    "account.extra-uid0",
    "critical",
    ("accounts.forbid_extra_uid0",),
    os_types=("linux",),
    sections=("accounts",),
)
def account_extra_uid0(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """An account other than `root` has uid 0 (`forbid_extra_uid0: true`, Linux only)."""
    for user in facts.users:
        if user.uid == 0 and user.name != "root":
            yield Hit(
                user.name, f"{user.name} has uid 0", {"uid": 0, "can_login": can_log_in(user, now)}
            )


@rule(
    "account.unapproved-admin", "high", ("accounts.allowed_admins",), sections=("accounts", "sudo")
)
def account_unapproved_admin(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """An account outside `allowed_admins` holds admin rights.

    Admin rights, as collected in `admin_via`: uid 0, membership of `sudo`, `wheel` or
    `admin`, a sudoers grant (directly or through a group), or membership of the Windows
    `Administrators` group. Locked and disabled accounts count too: the right is there.
    An empty list allows nobody.
    """
    allowed = {_name_key(facts, name) for name in baseline.allowed_admins}
    for user in facts.users:
        if user.admin and _name_key(facts, user.name) not in allowed:
            via = ", ".join(user.admin_via) or "admin"
            yield Hit(
                user.name,
                f"{user.name} holds admin rights ({via}) but is not approved",
                {"admin_via": list(user.admin_via), "can_login": can_log_in(user, now)},
            )


@rule("account.password-age", "medium", ("accounts.max_password_age_days",), sections=("accounts",))
def account_password_age(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """A password was last changed longer ago than `max_password_age_days`.

    Only accounts with a password set are judged; the age runs from the shadow (or SAM)
    last-change date to the scan.
    """
    limit = baseline.max_password_age_days
    if limit is None:
        return
    for user in facts.users:
        changed = parse_when(user.last_change)
        if user.password != "set" or changed is None:
            continue
        days = _days_between(changed, now)
        if days > limit:
            yield Hit(
                user.name,
                f"{user.name}'s password is {days} days old (limit {limit})",
                {"last_change": user.last_change, "days": days, "limit": limit},
            )


@rule(
    "ssh.authorized-key",
    "medium",
    ("accounts.forbid_authorized_keys",),
    sections=("accounts", "ssh"),
)
def ssh_authorized_key(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """An account of `accounts.forbid_authorized_keys` has authorized SSH keys."""
    forbidden = {_name_key(facts, name) for name in baseline.forbid_authorized_keys}
    for user in facts.users:
        if _name_key(facts, user.name) in forbidden and user.authorized_keys > 0:
            yield Hit(
                user.name,
                f"{user.name} has {user.authorized_keys} authorized SSH key(s)",
                {"authorized_keys": user.authorized_keys},
            )


# ---------------------------------------------------------------- ssh

# Most restrictive first; "without-password" is sshd's old spelling of prohibit-password.
ROOT_LOGIN_ORDER = ("no", "forced-commands-only", "prohibit-password", "yes")
_ROOT_LOGIN_ALIASES = {"without-password": "prohibit-password"}


@rule("ssh.root-login", "high", ("ssh.permit_root_login",), sections=("ssh",))
def ssh_root_login(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """sshd's effective `PermitRootLogin` is more permissive than `ssh.permit_root_login`.

    From least to most permissive: `no`, `forced-commands-only`, `prohibit-password`
    (also spelt `without-password`), `yes`. Only judged when sshd is installed and its
    effective value is known.
    """
    allowed, actual = baseline.permit_root_login, facts.ssh.permit_root_login
    if not facts.ssh.installed or allowed is None or actual is None:
        return
    actual_norm = _ROOT_LOGIN_ALIASES.get(actual.lower(), actual.lower())
    # An unrecognised value is judged the most permissive: sshd refuses to start on it,
    # but we cannot show it is safe.
    rank = (
        ROOT_LOGIN_ORDER.index(actual_norm)
        if actual_norm in ROOT_LOGIN_ORDER
        else len(ROOT_LOGIN_ORDER)
    )
    if rank > ROOT_LOGIN_ORDER.index(allowed):
        yield Hit(
            "sshd",
            f"PermitRootLogin is {actual}, at most {allowed} is allowed",
            {"permit_root_login": actual, "allowed": allowed},
        )


@rule(
    "ssh.password-auth",
    "medium",
    ("ssh.password_authentication",),
    active=lambda baseline: baseline.password_authentication is False,
    sections=("ssh",),
)
def ssh_password_auth(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """sshd's effective `PasswordAuthentication` is yes while the baseline says `false`.

    Only judged when sshd is installed and its effective value is known.
    """
    if facts.ssh.installed and facts.ssh.password_authentication is True:
        yield Hit("sshd", "PasswordAuthentication is yes", {"password_authentication": True})


# ---------------------------------------------------------------- firewall

WINDOWS_PROFILES = ("Domain", "Private", "Public")


@rule("firewall.disabled", "high", ("firewall.required",), sections=("firewall",))
def firewall_disabled(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """No host firewall is enabled at boot (`firewall.required: true`).

    Linux: one finding when none of ufw (with `ENABLED=yes`), nftables,
    netfilter-persistent or firewalld would load rules at the next boot; subject
    `firewall`. Windows: one finding per profile (Domain, Private, Public) whose
    `EnableFirewall` is off; subject the profile.
    """
    backends = facts.firewall.backends
    if facts.os.type == "windows":
        profiles = [b for b in backends if b.name in WINDOWS_PROFILES]
        if profiles:
            for profile in profiles:
                if not profile.enabled:
                    yield Hit(
                        profile.name,
                        f"Windows firewall profile {profile.name} is off",
                        {"profile": profile.name},
                    )
            return
    if not any(backend.enabled for backend in backends):
        yield Hit(
            "firewall",
            "no host firewall is enabled at boot",
            {"installed": [b.name for b in backends if b.installed]},
        )


@rule("firewall.default-accept", "medium", ("firewall.default_inbound",), sections=("firewall",))
def firewall_default_accept(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """An enabled firewall's default inbound policy accepts (`default_inbound: deny`).

    One finding per enabled firewall (Windows: per profile). `default_inbound: any`
    switches the check off; a firewall that is off is `firewall.disabled`'s business.
    """
    if baseline.default_inbound != "deny":
        return
    for backend in facts.firewall.backends:
        if backend.enabled and backend.default_inbound == "accept":
            yield Hit(
                backend.name,
                f"{backend.name} accepts inbound traffic by default",
                {"default_inbound": "accept"},
            )


# ---------------------------------------------------------------- dormancy


@rule("dormancy.stale", "medium", ("dormancy.max_days_idle",), sections=("dormancy",))
def dormancy_stale(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """The guest has been idle for longer than `dormancy.max_days_idle` days.

    Days idle run from the guest's last sign of running (last boot or login record,
    journal, else the image file's modification time) to the scan.
    """
    limit, idle = baseline.max_days_idle, facts.dormancy.days_idle
    if limit is not None and idle is not None and idle > limit:
        yield Hit(
            os_label(facts),
            f"idle for {idle} days (limit {limit})",
            {
                "days_idle": idle,
                "limit": limit,
                "last_boot": facts.dormancy.last_boot,
                "last_login": facts.dormancy.last_login,
            },
        )


# ---------------------------------------------------------------- vulnerabilities


def _vulnerabilities_set(baseline: Baseline) -> bool:
    return baseline.vulnerabilities is not None


def feeds_rule(
    rule_id: str, severity: Severity, keys: tuple[str, ...], **options: Unpack[RuleOptions]
) -> Callable[[FeedsCheck], FeedsCheck]:
    """Register a rule judged against a vulnerability source (``evaluate(feeds=...)``)."""

    def register(check: FeedsCheck) -> FeedsCheck:
        def without_feeds(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
            return check(facts, baseline, now, ())

        rule(rule_id, severity, keys, **options)(without_feeds)
        RULES[rule_id] = replace(RULES[rule_id], feeds_check=check)
        return check

    return register


_SEVERITY_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}


@feeds_rule(
    "vuln.cve",
    "medium",
    ("vulnerabilities",),
    active=_vulnerabilities_set,
    sections=("os", "packages", "hotfixes"),
)
def vuln_cve(
    facts: Facts, baseline: Baseline, now: datetime, matches: Sequence[Vulnerability]
) -> Iterator[Hit]:
    """An installed package or the Windows build is older than an advisory's fix.

    Judged against the feeds database (`vmaudit feeds import`, `--feeds-db`); a baseline
    with a `vulnerabilities` section turns it on. Linux: each installed package by its
    source package (dpkg `Source:`, rpm `SOURCERPM`, apk origin; else its own name), in
    the guest's own release only, with the release's own version ordering (dpkg, rpm,
    apk). Windows: the product (build and installation type) and `CurrentBuild.UBR`
    below the Vendor Fix's `FixedBuild`; an installed KB whose build is above the
    registry's UBR is a warning in the evidence. Severity is the feed's (CVSS v3 base,
    else the vendor's rating, else medium) unless the baseline's `severity` overrides
    it. One finding per CVE (the advisory id when it has none), with `package` (or
    `product`), `installed`, `fixed`, `advisory`, `published`, `source`, `cvss` and
    `exposed_days`. `min_severity` drops less severe ones; `max_days_exposed` keeps only
    advisories whose fix has been out longer; an `ignore` entry hides its id through
    its `until` date, and once that date has passed the finding is back, marked expired.
    """
    policy = baseline.vulnerabilities
    if policy is None:
        return
    floor = _SEVERITY_RANK[policy.min_severity]
    today = _aware(now).date()
    for match in matches:
        if _SEVERITY_RANK[match.severity] > floor:
            continue
        days = match.exposed_days(now)
        if (
            policy.max_days_exposed is not None
            and days is not None
            and (days <= policy.max_days_exposed)
        ):
            continue
        accepted, expired = policy.accepted((match.subject, match.advisory), today)
        if accepted is not None:
            continue
        evidence = match.evidence(now, days)
        if expired:
            evidence["ignore_expired"] = True
        fixed = f"older than {match.fixed}" if match.fixed else "with no fix released"
        message = f"{match.package} {match.installed} is {fixed} ({match.advisory})"
        if match.warning:
            message += f"; {match.warning}"
        yield Hit(match.subject, message, evidence, match.severity)


@rule("os.end-of-life", "high", ("vulnerabilities",), active=_vulnerabilities_set, sections=("os",))
def os_end_of_life(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """The guest's OS release is past its vendor's end of support on the day of the scan.

    A baseline with a `vulnerabilities` section turns it on. Debian and Ubuntu dates
    come from `distro-info-data` (Debian's package, on the host): Debian's LTS end,
    Ubuntu's standard support (ESM is shown, not counted); RHEL, CentOS, Rocky,
    AlmaLinux, SLES, openSUSE Leap and Windows Server 2008 to 2025 from a table shipped
    with vmaudit (`vmaudit/judge/eol.py`, each date with its vendor source). A release
    vmaudit has no date for is not judged.
    """
    found = end_of_life(facts.os)
    if found is None:
        return
    today = _aware(now).date()
    if today > found.ends:
        evidence: dict[str, Any] = {
            "release": found.release,
            "end_of_support": found.ends.isoformat(),
            "days_past": (today - found.ends).days,
            "source": found.source,
        }
        if found.extended is not None:
            evidence["extended_support"] = found.extended.isoformat()
        yield Hit(
            os_label(facts),
            f"{found.release} reached its end of support on {found.ends.isoformat()}",
            evidence,
        )


# ---------------------------------------------------------------- evaluation

_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Evaluation:
    """The findings on one guest and the rule ids that were checked on it."""

    findings: tuple[Finding, ...]
    rules_evaluated: tuple[str, ...]
    baselines_applied: tuple[str, ...]
    not_judged: tuple[NotJudged, ...] = ()  # rules that read a section that failed


def evaluate(
    facts: Facts,
    baselines: Sequence[Baseline],
    now: datetime,
    feeds: VulnerabilitySource | None = None,
) -> Evaluation:
    """Run every active rule of every baseline whose ``match`` fits the guest.

    When two baselines report the same rule on the same subject, the most severe finding
    is kept (the first baseline on a tie). Rules judged against vulnerability feeds
    (``vuln.cve``) run only when ``feeds`` is given; the guest is matched once.
    """
    matches: Sequence[Vulnerability] | None = None
    kept: dict[tuple[str, str], Finding] = {}
    evaluated: set[str] = set()
    applied: list[str] = []
    failed = facts.failed_sections()
    if facts.config_not_read():  # also facts from before coverage: their config was never read
        failed.setdefault("config", CONFIG_NOT_READ)
    unjudged: dict[str, str] = {}
    for baseline in baselines:
        if not baseline.match.fits(facts):
            continue
        applied.append(baseline.name)
        for rule_def in RULES.values():
            if not rule_def.applies(facts, baseline):
                continue
            blind = [f"{name}: {failed[name]}" for name in rule_def.sections if name in failed]
            if blind:  # not judged, never passed
                unjudged.setdefault(rule_def.id, "; ".join(blind))
                continue
            if rule_def.feeds_check is not None:
                if feeds is None:
                    continue
                if matches is None:
                    matches = feeds.matches(facts)
                hits = rule_def.feeds_check(facts, baseline, now, matches)
            else:
                hits = rule_def.check(facts, baseline, now)
            evaluated.add(rule_def.id)
            overridden = baseline.severity.get(rule_def.id)
            for hit in hits:
                severity = overridden or hit.severity or rule_def.severity
                finding = Finding(
                    rule_def.id, severity, hit.subject, hit.message, hit.evidence, baseline.name
                )
                key = (rule_def.id, hit.subject)
                known = kept.get(key)
                if known is None or _RANK[finding.severity] < _RANK[known.severity]:
                    kept[key] = finding
    findings = sorted(kept.values(), key=lambda f: (_RANK[f.severity], f.rule, f.subject))
    not_judged = tuple(NotJudged(rule_id, reason) for rule_id, reason in sorted(unjudged.items()))
    return Evaluation(tuple(findings), tuple(sorted(evaluated)), tuple(applied), not_judged)


__all__ = [
    "RULES",
    "Evaluation",
    "Hit",
    "Rule",
    "Vulnerability",
    "VulnerabilitySource",
    "evaluate",
    "os_label",
]

"""The ``win.*`` rules: a Windows guest's security configuration (issue 19), from its hives.

Each rule reads ``facts.config.windows`` (vmaudit/collect/windows_config.py says where
every value comes from) and the ``windows`` keys of a baseline. A setting the hives could
not say (null in the facts) is not judged; a guest whose ``config`` section could not be
read leaves these rules not judged. Imported by ``vmaudit.judge`` so the registry holds them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from vmaudit.judge.rules import Hit, RuleCheck, parse_when, windows_rule
from vmaudit.models import Autorun, AutoService, Facts, Severity, WindowsConfig

if TYPE_CHECKING:
    from vmaudit.baseline.model import Baseline

CONFIG = ("config",)
MICROSOFT_UPDATE = "microsoft-update"
Entry = TypeVar("Entry", Autorun, AutoService)


def _config_rule(
    rule_id: str, severity: Severity, keys: tuple[str, ...]
) -> Callable[[RuleCheck], RuleCheck]:
    """A rule on the ``config`` section of Windows guests."""
    return windows_rule(rule_id, severity, keys, sections=CONFIG)


def _config(facts: Facts) -> WindowsConfig | None:
    return facts.config.windows


def _unlisted(entries: tuple[Entry, ...], baseline: Baseline, key: str) -> Iterator[Entry]:
    """The entries whose name matches none of the names or globs of the allowlist at
    ``key``, ignoring case."""
    allowed = baseline.get(key)
    patterns = [pattern.casefold() for pattern in allowed] if isinstance(allowed, Mapping) else []
    for entry in entries:
        folded = entry.name.casefold()
        if not any(fnmatch.fnmatchcase(folded, pattern) for pattern in patterns):
            yield entry


@_config_rule("win.uac-disabled", "high", ("windows.require_uac",))
def uac_disabled(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """User Account Control is off (`EnableLUA` 0) while `windows.require_uac` is true.

    Without UAC every administrator runs every program with full rights (no filtered
    token, no elevation prompt) and Internet Explorer loses its Protected Mode. A
    missing `EnableLUA` is the Windows default, on.
    """
    config = _config(facts)
    if config is not None and config.uac_enabled is False:
        yield Hit("UAC", "User Account Control is disabled (EnableLUA 0)", {"EnableLUA": 0})


@_config_rule("win.smb1-enabled", "high", ("windows.forbid_smb1",))
def smb1_enabled(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """The SMB 1 server would accept connections at boot (`windows.forbid_smb1: true`).

    SMB 1 is what WannaCry and NotPetya spread through (MS17-010). On when the Server
    service runs, the SMB 1 server driver (`srv`) is installed and not disabled, and
    `LanmanServer\\Parameters` `SMB1` is not 0 (missing means on). A guest whose hives
    hold neither the Server service nor the SMB drivers is not judged.
    """
    config = _config(facts)
    if config is not None and config.smb1_server is True:
        yield Hit("SMB1", "the SMB 1 server is enabled", {"smb1_server": True})


@_config_rule("win.rdp-without-nla", "high", ("windows.require_rdp_nla",))
def rdp_without_nla(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """Remote Desktop accepts connections without Network Level Authentication.

    Judged when `windows.require_rdp_nla` is true: RDP is on (`fDenyTSConnections` 0,
    TermService not disabled) and `UserAuthentication` is 0, so anyone who reaches the
    port gets a logon screen (and its pre-authentication attack surface, as BlueKeep's)
    before proving who they are. Group Policy values win over the local ones.
    """
    config = _config(facts)
    if config is not None and config.rdp_enabled and config.rdp_nla is False:
        yield Hit(
            "RDP",
            "Remote Desktop is enabled without Network Level Authentication",
            {"rdp_enabled": True, "UserAuthentication": 0},
        )


@_config_rule("win.autologon-password", "critical", ("windows.forbid_autologon_password",))
def autologon_password(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """A plaintext password is stored in Winlogon's `DefaultPassword`.

    Judged when `windows.forbid_autologon_password` is true. Anyone who can read the
    SOFTWARE hive (any user on the guest, anyone with a copy of the disk) reads the
    password; with `AutoAdminLogon` 1 the account also logs on by itself at every boot.
    The subject is the autologon account; the password never appears in facts or reports.
    """
    config = _config(facts)
    if config is None or not config.autologon_password_stored:
        return
    account = config.autologon_user or "Winlogon"
    state = "logs on by itself at boot" if config.autologon else "autologon is off"
    yield Hit(
        account,
        f"a plaintext password of {account} is stored in Winlogon DefaultPassword ({state})",
        {"autologon": config.autologon, "account": config.autologon_user},
    )


@windows_rule(
    "win.guest-enabled", "high", ("windows.forbid_guest",), sections=(*CONFIG, "accounts")
)
def guest_enabled(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """The built-in Guest account (RID 501) is enabled (`windows.forbid_guest: true`).

    Guest usually has no password: an enabled Guest lets anyone on the network use the
    shares and services it may reach. Read from the SAM; not judged when the SAM was not.
    """
    config = _config(facts)
    if config is not None and config.guest_enabled:
        guest = next((u for u in facts.users if u.rid == 501), None)
        name = guest.name if guest is not None else "Guest"
        password = guest.password if guest is not None else None
        yield Hit(name, f"the built-in Guest account {name} is enabled", {"password": password})


@_config_rule("win.lsa-unprotected", "medium", ("windows.require_lsa_protection",))
def lsa_unprotected(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """LSA protection is off (`Control\\Lsa` `RunAsPPL` not 1 or 2).

    Judged when `windows.require_lsa_protection` is true. Without it, any administrator
    process can read LSASS's memory, the credentials of everyone logged on (Mimikatz).
    A guest with no `Control\\Lsa` key in its hive is not judged.
    """
    config = _config(facts)
    if config is not None and config.lsa_protected is False:
        yield Hit("LSA", "LSA protection (RunAsPPL) is off", {"RunAsPPL": None})


def _source_key(source: str) -> str:
    return source.strip().rstrip("/").casefold()


@_config_rule("win.update-source", "medium", ("windows.update_servers",))
def update_source(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """The guest takes its updates from a source not in `windows.update_servers`.

    The source is the WSUS server of the `WUServer` policy when `UseWUServer` is 1, else
    Microsoft Update, written `microsoft-update` in the list. Servers compare ignoring
    case and a trailing `/`. A dormant guest pointed at a WSUS server that has since
    been retired (or never approved) gets no update when it wakes.
    """
    config = _config(facts)
    if config is None:
        return
    allowed = baseline.get("windows.update_servers") or []
    source = config.update_server or MICROSOFT_UPDATE
    if _source_key(source) not in {_source_key(str(item)) for item in allowed}:
        yield Hit(
            source,
            f"updates come from {source}, not an approved source",
            {"update_server": config.update_server, "allowed": list(allowed)},
        )


@_config_rule("win.defender-disabled", "high", ("windows.require_defender",))
def defender_disabled(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """Microsoft Defender Antivirus is not installed or is turned off.

    Judged when `windows.require_defender` is true. Off means the WinDefend service is
    disabled (Start 4), or the policy `DisableAntiSpyware` or `Real-Time Protection`
    `DisableRealtimeMonitoring` is 1, or the local `DisableAntiSpyware` is 1. The evidence
    lists each of them that applies.
    """
    config = _config(facts)
    if config is None or config.defender_installed is None:
        return
    if not config.defender_installed:
        yield Hit("Windows Defender", "Microsoft Defender Antivirus is not installed", {})
    elif config.defender_disabled_by:
        yield Hit(
            "Windows Defender",
            "Microsoft Defender Antivirus is turned off: " + ", ".join(config.defender_disabled_by),
            {"disabled_by": list(config.defender_disabled_by)},
        )


@_config_rule("win.defender-signatures-stale", "medium", ("windows.max_signature_age_days",))
def defender_signatures_stale(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """Defender's antivirus signatures are older than `windows.max_signature_age_days`.

    The age runs from the registry's last signature update (`Signature Updates`
    `AVSignatureApplied`, else `SignaturesLastUpdated`) to the scan: a guest that slept
    a year wakes up with year-old signatures, and is exposed until its first update.
    Windows itself calls signatures out of date after 7 days. Not judged when Defender
    is not installed or the registry records no signature update.
    """
    config = _config(facts)
    limit = baseline.get("windows.max_signature_age_days")
    if config is None or not config.defender_installed or not isinstance(limit, int):
        return
    updated = parse_when(config.defender_signatures_updated)
    if updated is None:
        return
    age = (now if now.tzinfo is not None else now.replace(tzinfo=UTC)) - updated
    if age.days > limit:
        yield Hit(
            "Defender signatures",
            f"antivirus signatures are {age.days} days old (limit {limit})",
            {
                "updated": config.defender_signatures_updated,
                "version": config.defender_signature_version,
                "days": age.days,
                "limit": limit,
            },
        )


@_config_rule("win.unexpected-autorun", "medium", ("windows.autoruns_allowed",))
def unexpected_autorun(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """An HKLM `Run` or `RunOnce` entry is not in `windows.autoruns_allowed`.

    `Run` and `RunOnce` (64- and 32-bit views) and the `Policies\\Explorer\\Run` list start
    their commands at every logon (`RunOnce` at the next one): what a dormant guest will
    run as soon as someone signs in. The allowlist maps value names (or globs, ignoring
    case) to why they are allowed; an extending baseline adds names to it. One finding
    per entry, subject `key\\name`.
    """
    config = _config(facts)
    if config is None:
        return
    for entry in _unlisted(config.autoruns, baseline, "windows.autoruns_allowed"):
        subject = f"{entry.key}\\{entry.name}"
        yield Hit(
            subject,
            f"{subject} runs {entry.command!r} at logon",
            {"key": entry.key, "name": entry.name, "command": entry.command},
        )


@_config_rule("win.unexpected-service", "medium", ("windows.services_allowed",))
def unexpected_service(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """A service that starts at boot (Start 2) is not in `windows.services_allowed`.

    Drivers are left out; delayed auto-start services count. The allowlist maps service
    key names (or globs, ignoring case) to why they are allowed; an extending baseline adds
    names to it (`windows-default` lists the stock services of Windows Server 2016 and
    2019). One finding per service, with its display name and image path.
    """
    config = _config(facts)
    if config is None:
        return
    for service in _unlisted(config.auto_services, baseline, "windows.services_allowed"):
        yield Hit(
            service.name,
            f"service {service.name} starts at boot ({service.image_path or 'no image path'})",
            {
                "display_name": service.display_name,
                "image_path": service.image_path,
                "delayed": service.delayed,
            },
        )

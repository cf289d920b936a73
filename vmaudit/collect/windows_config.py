"""The ``config`` section of a Windows guest: its security settings, read from the hives.

Where each setting comes from (HKLM; ``CCS`` is the current control set; a Group Policy
value under ``SOFTWARE\\Policies`` wins over the local one; a missing value takes the
Windows default named here):

- UAC: ``SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System`` EnableLUA, 0 off,
  default on.
- SMB 1 server: ``CCS\\Services\\LanmanServer\\Parameters`` SMB1, 0 off, default on. It is
  also off when the Server service (LanmanServer) is disabled, when the SMB 1 server driver
  (``Services\\srv``) is disabled, or when that driver is absent beside the SMB 2 one
  (``srv2``): the SMB1Protocol feature is removed, the default since Windows 10 1709 and
  Server 2019. Unknown when neither LanmanServer nor either driver is in the hive.
- RDP: ``Policies\\Microsoft\\Windows NT\\Terminal Services``, else
  ``CCS\\Control\\Terminal Server``, fDenyTSConnections (default 1, no connections); a
  disabled TermService turns it off. NLA: UserAuthentication of the policy, else of
  ``Terminal Server\\WinStations\\RDP-Tcp`` (default 1, required).
- Autologon: ``SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Winlogon`` AutoAdminLogon
  (``1``), DefaultDomainName and DefaultUserName; DefaultPassword only as "a non-empty one is
  stored": its text never enters the facts. A password kept as an LSA secret (what
  Sysinternals Autologon does) is in the SECURITY hive, which vmaudit does not read.
- Guest: the SAM account of RID 501 (``windows_sam``), enabled when it can log in.
- LSA protection: ``CCS\\Control\\Lsa`` RunAsPPL 1 or 2.
- Windows Update: ``Policies\\Microsoft\\Windows\\WindowsUpdate`` WUServer, used when its
  ``AU`` subkey has UseWUServer 1; otherwise the guest updates from Microsoft.
- Defender: installed when ``CCS\\Services\\WinDefend`` exists; turned off by its Start 4, by
  the policies DisableAntiSpyware (``Policies\\Microsoft\\Windows Defender``) and
  DisableRealtimeMonitoring (its ``Real-Time Protection`` subkey), or by the local
  DisableAntiSpyware (``Microsoft\\Windows Defender``). Signatures: ``Microsoft\\Windows
  Defender\\Signature Updates`` AVSignatureApplied (FILETIME), else SignaturesLastUpdated,
  and AVSignatureVersion.
- Autoruns: the values of ``Microsoft\\Windows\\CurrentVersion\\Run`` and ``RunOnce`` (64- and
  32-bit views) and of ``...\\Policies\\Explorer\\Run``.
- Auto-start services: ``CCS\\Services`` keys with Start 2 whose Type is a Win32 service
  (0x10 or 0x20 bits); drivers are left out.

A value of the wrong type counts as missing (Windows ignores it too); lists are bounded.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from vmaudit.models import Autorun, AutoService, User, WindowsConfig
from vmaudit.timeutil import iso_utc

from .windows_registry import (
    REG_EXPAND_SZ,
    REG_SZ,
    Hive,
    decode_utf16,
    filetime_to_datetime,
)

GUEST_RID = 501
SERVICE_AUTO_START = 2
SERVICE_DISABLED = 4
SERVICE_WIN32 = 0x30  # SERVICE_WIN32_OWN_PROCESS | SERVICE_WIN32_SHARE_PROCESS
MAX_AUTORUNS_PER_KEY = 1000
MAX_SERVICES = 20_000
POLICIES = ["Policies", "Microsoft"]
CURRENT_VERSION = ["Microsoft", "Windows", "CurrentVersion"]
RUN_KEYS = (  # label, path in SOFTWARE
    ("Run", [*CURRENT_VERSION, "Run"]),
    ("RunOnce", [*CURRENT_VERSION, "RunOnce"]),
    ("WOW6432Node\\Run", ["WOW6432Node", *CURRENT_VERSION, "Run"]),
    ("WOW6432Node\\RunOnce", ["WOW6432Node", *CURRENT_VERSION, "RunOnce"]),
    ("Policies\\Explorer\\Run", [*CURRENT_VERSION, "Policies", "Explorer", "Run"]),
)

Source = tuple[Hive, int | None]


def _first_dword(sources: Sequence[Source], name: str) -> int | None:
    """The first DWORD ``name`` found in ``sources`` (Group Policy first), else None."""
    for hive, node in sources:
        if node is not None:
            value = hive.dword(node, name)
            if value is not None:
                return value
    return None


def _start(system: Hive, services: int | None, name: str) -> int | None:
    """A service's Start value; None when the service is not in the hive."""
    node = system.key([name], start=services) if services is not None else None
    if node is None:
        return None
    start = system.dword(node, "Start")
    return SERVICE_AUTO_START + 1 if start is None else start  # no Start: demand (3)


def uac_enabled(software: Hive) -> bool:
    node = software.key([*CURRENT_VERSION, "Policies", "System"])
    return _first_dword([(software, node)], "EnableLUA") != 0


def smb1_server(system: Hive, services: int | None) -> bool | None:
    lanman = _start(system, services, "LanmanServer")
    srv, srv2 = _start(system, services, "srv"), _start(system, services, "srv2")
    if lanman is None and srv is None and srv2 is None:
        return None
    if SERVICE_DISABLED in (lanman, srv):
        return False
    if srv is None and srv2 is not None:
        return False  # the SMB1Protocol feature is not installed
    params = system.key(["LanmanServer", "Parameters"], start=services) if services else None
    return _first_dword([(system, params)], "SMB1") != 0


def rdp_settings(
    software: Hive, system: Hive, ccs: str, services: int | None
) -> tuple[bool | None, bool | None]:
    """(RDP accepts connections, NLA required); None when the hives do not say."""
    policy = software.key([*POLICIES, "Windows NT", "Terminal Services"])
    server = system.key([ccs, "Control", "Terminal Server"])
    if policy is None and server is None:
        return None, None
    deny = _first_dword([(software, policy), (system, server)], "fDenyTSConnections")
    enabled = deny == 0 and _start(system, services, "TermService") != SERVICE_DISABLED
    rdp_tcp = system.key(["WinStations", "RDP-Tcp"], start=server) if server else None
    nla = _first_dword([(software, policy), (system, rdp_tcp)], "UserAuthentication")
    return enabled, nla != 0


def _text(hive: Hive, node: int, name: str) -> str | None:
    value = hive.string(node, name)
    return value.strip() if value is not None else None


def autologon(software: Hive) -> tuple[bool | None, str | None, bool | None]:
    """(AutoAdminLogon on, its account, a non-empty DefaultPassword is stored)."""
    node = software.key(["Microsoft", "Windows NT", "CurrentVersion", "Winlogon"])
    if node is None:
        return None, None, None
    enabled = _text(software, node, "AutoAdminLogon") == "1" or (
        software.dword(node, "AutoAdminLogon") == 1
    )
    user = _text(software, node, "DefaultUserName") or None
    domain = _text(software, node, "DefaultDomainName")
    if user and domain and "\\" not in user and "@" not in user:
        user = f"{domain}\\{user}"
    stored = False
    found = software.raw(node, "DefaultPassword")
    if found is not None:
        kind, data = found
        # Only the presence of text is kept; the value is dropped here.
        text = decode_utf16(data) if kind in (REG_SZ, REG_EXPAND_SZ) else data.strip(b"\0")
        stored = len(text) > 0
        del data, text
    return enabled, user, stored


def lsa_protected(system: Hive, ccs: str) -> bool | None:
    node = system.key([ccs, "Control", "Lsa"])
    if node is None:
        return None
    return system.dword(node, "RunAsPPL") in (1, 2)


def update_server(software: Hive) -> str | None:
    policy = software.key([*POLICIES, "Windows", "WindowsUpdate"])
    if policy is None:
        return None
    au = software.key(["AU"], start=policy)
    if au is None or software.dword(au, "UseWUServer") != 1:
        return None
    return _text(software, policy, "WUServer") or None


def defender_state(
    software: Hive, system: Hive, services: int | None
) -> tuple[bool, tuple[str, ...]]:
    """(WinDefend installed, what turns Defender off)."""
    start = _start(system, services, "WinDefend")
    reasons = []
    if start == SERVICE_DISABLED:
        reasons.append("service WinDefend disabled (Start 4)")
    policy = software.key([*POLICIES, "Windows Defender"])
    if policy is not None:
        if software.dword(policy, "DisableAntiSpyware") == 1:
            reasons.append("policy DisableAntiSpyware")
        realtime = software.key(["Real-Time Protection"], start=policy)
        if realtime is not None and software.dword(realtime, "DisableRealtimeMonitoring") == 1:
            reasons.append("policy DisableRealtimeMonitoring")
    local = software.key(["Microsoft", "Windows Defender"])
    if local is not None and software.dword(local, "DisableAntiSpyware") == 1:
        reasons.append("DisableAntiSpyware")
    return start is not None, tuple(reasons)


def defender_signatures(software: Hive) -> tuple[str | None, str | None]:
    """(when the antivirus signatures were last applied, ISO UTC; their version)."""
    node = software.key(["Microsoft", "Windows Defender", "Signature Updates"])
    if node is None:
        return None, None
    updated = None
    for name in ("AVSignatureApplied", "SignaturesLastUpdated"):
        data = software.binary(node, name)
        if data is not None and len(data) == 8:
            moment = filetime_to_datetime(struct.unpack("<Q", data)[0])
            if moment is not None:
                updated = iso_utc(moment)
                break
    return updated, _text(software, node, "AVSignatureVersion") or None


def autoruns(software: Hive, warnings: list[str]) -> tuple[Autorun, ...]:
    found = []
    for label, path in RUN_KEYS:
        node = software.key(path)
        if node is None:
            continue
        values = software.values(node, MAX_AUTORUNS_PER_KEY + 1)
        if len(values) > MAX_AUTORUNS_PER_KEY:
            warnings.append(
                f"SOFTWARE: over {MAX_AUTORUNS_PER_KEY} values in {label}, rest ignored"
            )
        for name, kind, data in values[:MAX_AUTORUNS_PER_KEY]:
            if kind not in (REG_SZ, REG_EXPAND_SZ):
                continue  # Windows runs only string values
            command = decode_utf16(data).strip()
            if command:
                found.append(Autorun(label, decode_name(name), command))
    return tuple(found)


def decode_name(name: str) -> str:
    """A value or key name as shown: control characters escaped (they end up in reports)."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in name)[:256]


def auto_services(
    system: Hive, services: int | None, warnings: list[str]
) -> tuple[AutoService, ...]:
    if services is None:
        return ()
    children = system.subkeys(services)
    if len(children) > MAX_SERVICES:
        warnings.append(f"SYSTEM: over {MAX_SERVICES} service keys, the rest ignored")
    found = []
    for name, node in children[:MAX_SERVICES]:
        kind = system.dword(node, "Type")
        if system.dword(node, "Start") != SERVICE_AUTO_START or kind is None:
            continue
        if not kind & SERVICE_WIN32:
            continue  # a kernel or file-system driver
        found.append(
            AutoService(
                decode_name(name),
                _text(system, node, "DisplayName") or None,
                _text(system, node, "ImagePath") or None,
                system.dword(node, "DelayedAutostart") == 1,
            )
        )
    return tuple(sorted(found, key=lambda s: s.name.casefold()))


def collect_windows_config(
    software: Hive, system: Hive, ccs: str, warnings: list[str]
) -> WindowsConfig:
    """Every setting of the module docstring but the Guest account (``guest_enabled``)."""
    services = system.key([ccs, "Services"])
    rdp, nla = rdp_settings(software, system, ccs, services)
    logon, logon_user, password_stored = autologon(software)
    installed, disabled_by = defender_state(software, system, services)
    signatures, signature_version = defender_signatures(software)
    return WindowsConfig(
        uac_enabled=uac_enabled(software),
        smb1_server=smb1_server(system, services),
        rdp_enabled=rdp,
        rdp_nla=nla if rdp is not None else None,
        autologon=logon,
        autologon_user=logon_user,
        autologon_password_stored=password_stored,
        lsa_protected=lsa_protected(system, ccs),
        update_server=update_server(software),
        defender_installed=installed,
        defender_disabled_by=disabled_by,
        defender_signatures_updated=signatures,
        defender_signature_version=signature_version,
        autoruns=autoruns(software, warnings),
        auto_services=auto_services(system, services, warnings),
    )


def guest_enabled(users: Sequence[User]) -> bool | None:
    """Whether the built-in Guest (RID 501) can log in; None when the SAM has no such user."""
    guest = next((user for user in users if user.rid == GUEST_RID), None)
    return None if guest is None else guest.can_login and not guest.disabled

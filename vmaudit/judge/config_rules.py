"""The rules on a Linux guest's security configuration (the ``config`` section, issue 19):
file permissions, setuid and forbidden programs, services at boot, lockdowns, and what
runs at power-on. They register in ``vmaudit.judge.rules.RULES`` like every other rule.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from vmaudit.judge.rules import Hit, RuleCheck, rule
from vmaudit.models import Facts, FileMode, LinuxConfig, Severity

if TYPE_CHECKING:
    from vmaudit.baseline.model import Baseline

LINUX = ("linux",)
CONFIG = ("config",)


def _config_rule(
    rule_id: str, severity: Severity, keys: tuple[str, ...]
) -> Callable[[RuleCheck], RuleCheck]:
    """A rule on the ``config`` section of Linux guests."""
    return rule(rule_id, severity, keys, os_types=LINUX, sections=CONFIG)


SELINUX_ORDER = ("disabled", "permissive", "enforcing")
# What the kernel uses when no sysctl file sets a key (Linux 6.1, as Debian 12 ships it):
# a dormant image boots with these. A key not listed here and set nowhere is reported.
KERNEL_DEFAULTS = {
    "kernel.randomize_va_space": "2",
    "net.ipv4.ip_forward": "0",
    "net.ipv6.conf.all.forwarding": "0",
    "net.ipv4.conf.all.send_redirects": "1",
    "net.ipv4.conf.default.send_redirects": "1",
    "net.ipv4.conf.all.accept_redirects": "1",
    "net.ipv4.conf.default.accept_redirects": "1",
    "net.ipv4.conf.all.secure_redirects": "1",
    "net.ipv4.conf.all.accept_source_route": "0",
    "net.ipv4.conf.all.log_martians": "0",
    "net.ipv4.icmp_echo_ignore_broadcasts": "1",
    "net.ipv4.icmp_ignore_bogus_error_responses": "1",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.tcp_syncookies": "1",
    "net.ipv6.conf.all.accept_ra": "1",
    "fs.suid_dumpable": "0",
    "kernel.yama.ptrace_scope": "0",
}


def _config(facts: Facts) -> LinuxConfig | None:
    return facts.config.linux


def _matches(value: str, patterns: Any) -> bool:
    return any(fnmatch.fnmatchcase(value, str(p)) for p in patterns or ())


def _octal(mode: int) -> str:
    return f"{mode:04o}"


def _shown(entry: FileMode) -> dict[str, Any]:
    return {
        "mode": _octal(entry.mode),
        "owner": entry.owner if entry.owner is not None else entry.uid,
        "group": entry.group if entry.group is not None else entry.gid,
        **({"link": entry.link} if entry.link else {}),
    }


# ---------------------------------------------------------------- permissions


@_config_rule("perm.critical-file", "high", ("permissions.critical_files",))
def perm_critical_file(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """A critical file (passwd, shadow, sudoers, sshd_config, host keys, cron, grub) has a
    mode, owner or group beyond the baseline's limits.

    `permissions.critical_files` maps a guest path (a glob: `/etc/ssh/ssh_host_*_key`) to
    its limits: `mode`, the most permissive mode allowed, in quotes (`"0640"`: any other
    bit fails); `owner` and `group`, the names allowed (the guest's own passwd and group
    give the names); `if_package`, check it only when that package is installed (CIS's
    "if cron is installed"). A symlink is judged by the file it leads to. The first
    pattern that names a file applies; files that do not exist are not judged.
    """
    config = _config(facts)
    limits: Mapping[str, Mapping[str, Any]] = baseline.get("permissions.critical_files") or {}
    if config is None:
        return
    installed = {p.name for p in facts.packages}
    for entry in config.critical_files:
        limit = next((v for k, v in limits.items() if fnmatch.fnmatchcase(entry.path, k)), None)
        if limit is None:
            continue
        needs = limit.get("if_package")
        if needs is not None and needs not in installed:
            continue
        problems = []
        allowed_mode = int(str(limit["mode"]), 8) if "mode" in limit else None
        if allowed_mode is not None and entry.mode & ~allowed_mode:
            problems.append(f"mode {_octal(entry.mode)} exceeds {_octal(allowed_mode)}")
        owners = limit.get("owner")
        if owners is not None and (entry.owner or str(entry.uid)) not in owners:
            problems.append(f"owner {entry.owner or entry.uid} not in {', '.join(owners)}")
        groups = limit.get("group")
        if groups is not None and (entry.group or str(entry.gid)) not in groups:
            problems.append(f"group {entry.group or entry.gid} not in {', '.join(groups)}")
        if problems:
            wanted = {k: limit[k] for k in ("mode", "owner", "group") if k in limit}
            yield Hit(
                entry.path,
                f"{entry.path}: {'; '.join(problems)}",
                {**_shown(entry), "allowed": wanted},
            )


@_config_rule("perm.world-writable", "medium", ("permissions.forbid_world_writable",))
def perm_world_writable(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """A file writable by everyone, or a directory writable by everyone without the sticky
    bit (`/tmp` with its sticky bit is fine), anywhere on the guest's file systems but
    /proc, /sys, /dev and /run.

    On with `permissions.forbid_world_writable: true`. The walk is bounded: one finding for
    each of the first 50 paths, each with the guest's total count (a lower bound when the
    walk stopped at its cap, which the evidence says).
    """
    config = _config(facts)
    if config is None:
        return
    for entry in config.modes.world_writable_paths:
        yield Hit(
            entry.path,
            f"{entry.path} ({entry.kind}, {_octal(entry.mode)}) is writable by every user",
            {
                **_shown(entry),
                "total": config.modes.world_writable,
                "walk_truncated": config.modes.truncated,
            },
        )


# ---------------------------------------------------------------- executables


@_config_rule("exec.setuid-unexpected", "high", ("executables.setuid_allowed",))
def exec_setuid_unexpected(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """A setuid or setgid program that is not in `executables.setuid_allowed` (paths,
    globs allowed), or that no package installed.

    The owning package comes from dpkg's file lists (`/var/lib/dpkg/info/*.list`), with
    merged-/usr paths compared as the guest resolves them. On guests whose package format
    gives no file lists vmaudit reads (rpm, apk, pacman) only the allowlist is judged.
    """
    config = _config(facts)
    allowed = baseline.get("executables.setuid_allowed") or []
    if config is None:
        return
    for entry in config.setuid_files:
        unpackaged = config.owners is not None and entry.package is None
        listed = _matches(entry.path, allowed)
        if listed and not unpackaged:
            continue
        why = []
        if not listed:
            why.append("not in executables.setuid_allowed")
        if unpackaged:
            why.append("installed by no package")
        bits = "setuid" if entry.mode & 0o4000 else "setgid"
        yield Hit(
            entry.path,
            f"{entry.path} is {bits} {entry.owner or entry.uid}: {' and '.join(why)}",
            {
                "mode": _octal(entry.mode),
                "owner": entry.owner if entry.owner is not None else entry.uid,
                "group": entry.group if entry.group is not None else entry.gid,
                "package": entry.package,
                "package_lists": config.owners,
            },
        )


@_config_rule("exec.forbidden", "high", ("executables.forbidden",))
def exec_forbidden(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """A forbidden program is on the guest: `executables.forbidden` lists names
    (`nc.traditional`, `tcpdump`) looked up in the default PATH directories
    (/usr/local/sbin, /usr/local/bin, /usr/sbin, /usr/bin, /sbin, /bin, the games
    directories), or absolute paths (globs allowed) matched against those programs and
    every setuid or setgid file.
    """
    config = _config(facts)
    forbidden = [str(p) for p in baseline.get("executables.forbidden") or []]
    if config is None:
        return
    candidates = sorted({*config.executables, *(f.path for f in config.setuid_files)})
    for path in candidates:
        name = path.rsplit("/", 1)[-1]
        hit = next(
            (
                p
                for p in forbidden
                if fnmatch.fnmatchcase(path if "/" in p else name, p)
                and ("/" in p or path in config.executables)
            ),
            None,
        )
        if hit is not None:
            yield Hit(path, f"{path} is a forbidden program ({hit})", {"matched": hit})


# ---------------------------------------------------------------- services


@_config_rule("service.forbidden-enabled", "high", ("services.forbidden",))
def service_forbidden_enabled(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """A forbidden service starts at boot: `services.forbidden` lists names (globs) matched
    against the systemd units of the boot transaction (with or without their suffix:
    `vsftpd` matches `vsftpd.service`), inetd and xinetd services, and SysV rc links of
    runlevels 2 to 5 that no systemd unit replaces. Services of an inetd.conf or
    xinetd.d on a guest with no inetd (or xinetd) package installed do not start, and are
    not reported (`inspect` lists them as not active).
    """
    config = _config(facts)
    forbidden = baseline.get("services.forbidden") or []
    if config is None:
        return
    candidates = [(u, "systemd") for u in config.boot_units]
    candidates += [(s, "inetd") for s in config.inetd_services]
    candidates += [(s, "sysv") for s in config.sysv_services]
    for name, via in candidates:
        stem = name.rsplit(".", 1)[0] if via == "systemd" else name
        pattern = next((p for p in forbidden if _matches(name, [p]) or _matches(stem, [p])), None)
        if pattern is not None:
            yield Hit(
                name,
                f"{name} starts at boot ({via}) and is forbidden",
                {"via": via, "matched": pattern},
            )


# ---------------------------------------------------------------- lockdowns


@_config_rule("lockdown.selinux-disabled", "high", ("lockdown.selinux",))
def lockdown_selinux_disabled(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """SELinux is configured (`/etc/selinux/config`) in a weaker mode than
    `lockdown.selinux` (`enforcing` or `permissive`), or the kernel command line in the
    bootloader configuration turns it off (`selinux=0`, `enforcing=0`). A guest without
    an SELinux configuration is not judged (see `lockdown.apparmor-disabled`).
    """
    config = _config(facts)
    wanted = str(baseline.get("lockdown.selinux"))
    if config is None or config.selinux is None:
        return
    if SELINUX_ORDER.index(config.selinux) < SELINUX_ORDER.index(wanted):
        yield Hit(
            "selinux",
            f"SELinux is {config.selinux} at boot, the baseline wants {wanted}",
            {
                "mode": config.selinux,
                "wanted": wanted,
                "kernel_cmdline": list(config.kernel_cmdline),
            },
        )


@_config_rule("lockdown.apparmor-disabled", "medium", ("lockdown.apparmor",))
def lockdown_apparmor_disabled(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """No mandatory access control at boot: AppArmor is not installed or the kernel command
    line in the bootloader configuration disables it (`apparmor=0`, `security=` or `lsm=`
    without it), and SELinux is not enforcing or permissive either.

    On with `lockdown.apparmor: true`.
    """
    config = _config(facts)
    if config is None or config.selinux in ("enforcing", "permissive"):
        return
    if config.apparmor != "enabled":
        yield Hit(
            "apparmor",
            f"AppArmor is {config.apparmor} and SELinux is not in use",
            {"apparmor": config.apparmor, "kernel_cmdline": list(config.kernel_cmdline)},
        )


@_config_rule("lockdown.auditd-disabled", "medium", ("lockdown.auditd",))
def lockdown_auditd_disabled(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """auditd does not start at boot (not in systemd's boot transaction, nor a SysV rc
    link): nothing records what happens when the guest wakes. On with `lockdown.auditd:
    true`.
    """
    config = _config(facts)
    if config is not None and not config.auditd:
        installed = any(p.name == "auditd" for p in facts.packages)
        yield Hit(
            "auditd",
            "auditd is installed but not started at boot"
            if installed
            else "auditd is not installed",
            {"installed": installed},
        )


@_config_rule("lockdown.sysctl", "medium", ("lockdown.sysctl",))
def lockdown_sysctl(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """A kernel parameter differs from `lockdown.sysctl` (key to value) after the guest's
    sysctl files are applied at boot (sysctl.d directories in file-name order, then
    /etc/sysctl.conf; the last setting wins). A key no file sets has the kernel's default
    where vmaudit knows it (a table in `vmaudit/judge/config_rules.py`); otherwise it is
    reported as not set.
    """
    config = _config(facts)
    wanted: Mapping[str, Any] = baseline.get("lockdown.sysctl") or {}
    if config is None:
        return
    values = {s.key: s for s in config.sysctl}
    for key, expected in sorted(wanted.items()):
        want = " ".join(str(expected).split())
        setting = values.get(key)
        actual = setting.value if setting is not None else KERNEL_DEFAULTS.get(key)
        if actual == want:
            continue
        source = setting.source if setting is not None else "kernel default"
        shown = actual if actual is not None else "not set"
        yield Hit(
            key,
            f"{key} = {shown} at boot ({source}), the baseline wants {want}",
            {"value": actual, "wanted": want, "source": source if actual is not None else None},
        )


# ---------------------------------------------------------------- power-on


@_config_rule("boot.unexpected-startup", "medium", ("startup.allowed",))
def boot_unexpected_startup(facts: Facts, baseline: Baseline, now: datetime) -> Iterator[Hit]:
    """Something runs at power-on that `startup.allowed` does not name: an `@reboot`
    crontab entry of any user (matched by its command), a systemd timer with
    `Persistent=true` (it fires at once after a long sleep), an executable `/etc/rc.local`,
    or a unit of the boot transaction whose file no package installed (matched by unit
    name). Names are globs. An `@reboot` line on a guest whose package list shows no cron
    installed does not run: `inspect` shows it as not active, and it is not reported.
    """
    config = _config(facts)
    allowed = baseline.get("startup.allowed") or []
    if config is None:
        return
    for entry in config.startup:
        if entry.not_active is not None or _matches(entry.name, allowed):
            continue
        who = f" as {entry.user}" if entry.user else ""
        subject = f"{entry.kind}:{entry.user}:{entry.name}" if entry.user else entry.name
        yield Hit(
            subject,
            f"{entry.name} runs at power-on{who} ({entry.kind}, {entry.source})",
            {"kind": entry.kind, "source": entry.source, "user": entry.user},
        )

"""The ``config`` section of a Linux guest: critical files' modes and owners, a bounded walk
for world-writable and setuid files, programs on the PATH, services and what else starts at
power-on (vmaudit.collect.startup), and the lockdowns (SELinux, AppArmor, auditd, sysctl).

Modes and owners need a backend that gives them (``guest.base.ModeFS``: TreeFS and
ApplianceFS); any other view of a guest makes the section fail, never look clean.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable

from vmaudit.errors import GuestFileError
from vmaudit.guest.base import (
    GuestFS,
    ModeFS,
    OwnedStat,
    join,
    list_dir,
    read_lines,
    safe_path,
)
from vmaudit.models import (
    FileMode,
    LinuxConfig,
    ModeScan,
    Package,
    SetuidFile,
    StartupEntry,
    SysctlValue,
)

from .common import SectionFailed, shell_assignments
from .startup import collect_startup
from .units import chase

WALK_LIMIT = 300_000  # entries visited; a Debian server has ~30,000 to ~150,000
FIRST_PATHS = 50  # world-writable paths kept in the facts
MAX_SETUID = 500
MAX_EXECUTABLES = 20_000
NOT_WALKED = ("proc", "sys", "dev", "run")  # fresh at boot: not on the disk image's side
LIST_CAP = 16 * 1024 * 1024
CONFIG_CAP = 1024 * 1024
DPKG_INFO = "/var/lib/dpkg/info"
MERGED_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
PATH_DIRS = (
    "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin",
    "/usr/games", "/usr/local/games",
)  # fmt: skip
SYSCTL_DIRS = (
    "/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d",
    "/lib/sysctl.d",
)  # fmt: skip
GRUB_CONFIGS = ("/boot/grub/grub.cfg", "/boot/grub2/grub.cfg")
SSH_KEY = re.compile(r"^ssh_host_[A-Za-z0-9_]+_key(\.pub)?$")
CRON_DIRS = ("/etc/cron.hourly", "/etc/cron.daily", "/etc/cron.weekly", "/etc/cron.monthly",
             "/etc/cron.d")  # fmt: skip
FIXED_FILES = (
    "/etc/passwd", "/etc/passwd-", "/etc/group", "/etc/group-", "/etc/shadow", "/etc/shadow-",
    "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers", "/etc/sudoers.d", "/etc/ssh/sshd_config",
    "/etc/ssh/sshd_config.d", "/etc/crontab", *CRON_DIRS, "/etc/cron.allow", "/etc/cron.deny",
    "/etc/at.allow", "/etc/at.deny", *GRUB_CONFIGS, "/boot/grub2/user.cfg",
)  # fmt: skip


def collect_linux_config(fs: GuestFS, packages: list[Package], warnings: list[str]) -> LinuxConfig:
    """Everything of the ``config`` section; ``SectionFailed`` when modes cannot be read."""
    if not isinstance(fs, ModeFS):
        raise SectionFailed(
            f"this view of the guest ({type(fs).__name__}) gives no file modes or owners"
        )
    modes: ModeFS = fs
    users = _names(fs, "/etc/passwd", warnings)
    groups = _names(fs, "/etc/group", warnings)
    critical = [
        m for p in critical_paths(fs, warnings) if (m := file_mode(fs, modes, p, users, groups))
    ]
    scan, setuid_modes, executables = _walk(fs, modes, users, groups, warnings)
    installed = {p.name for p in packages}
    startup = collect_startup(fs, warnings, installed if packages else None)
    owners, owned = None, {}
    if packages and fs.lstat(f"{DPKG_INFO}") is not None:
        owners = "dpkg"
        wanted = {f.path for f in setuid_modes} | set(startup.fragments.values())
        owned = dpkg_owners(fs, wanted, warnings)
    setuid = [
        SetuidFile(f.path, f.mode, f.uid, f.gid, f.owner, f.group, owned.get(f.path))
        for f in setuid_modes
    ]
    entries = list(startup.entries)
    if owners is not None:
        entries += [
            StartupEntry("unit-unpackaged", unit_id, path)
            for unit_id, path in sorted(startup.fragments.items())
            if path not in owned and not path.startswith("/run/")
        ]
    cmdline = kernel_cmdline(fs, warnings)
    return LinuxConfig(
        critical_files=tuple(critical),
        modes=scan,
        setuid_files=tuple(setuid),
        owners=owners,
        executables=tuple(executables),
        systemd=startup.boot.systemd,
        boot_units=startup.boot_units,
        inetd_services=startup.inetd,
        inetd_not_active=startup.inetd_not_active,
        sysv_services=startup.sysv,
        startup=tuple(entries),
        selinux=selinux_mode(fs, cmdline, warnings),
        apparmor=apparmor_state(fs, cmdline, installed),
        kernel_cmdline=cmdline,
        auditd="auditd.service" in startup.boot_units or "auditd" in startup.sysv,
        sysctl=tuple(sysctl_values(fs, warnings)),
    )


def _names(fs: GuestFS, path: str, warnings: list[str]) -> dict[int, str]:
    """Numeric id -> first name of passwd(5) or group(5) lines."""
    names: dict[int, str] = {}
    for line in read_lines(fs, path, warnings) or []:
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            names.setdefault(int(fields[2]), fields[0])
    return names


def critical_paths(fs: GuestFS, warnings: list[str]) -> list[str]:
    """The files CIS sets limits on that exist in the guest, directory entries included."""
    paths = [p for p in FIXED_FILES if fs.lstat(p) is not None]
    for directory in ("/etc/sudoers.d", "/etc/ssh/sshd_config.d"):
        paths += [join(directory, name) for name in list_dir(fs, directory, warnings)[:1000]]
    paths += [
        join("/etc/ssh", name) for name in list_dir(fs, "/etc/ssh", warnings) if SSH_KEY.match(name)
    ]
    return paths


def file_mode(
    fs: GuestFS, modes: ModeFS, path: str, users: dict[int, str], groups: dict[int, str]
) -> FileMode | None:
    """The stat of ``path`` with symlinks followed inside the guest (what a program opening
    it gets); None when it does not resolve."""
    own = modes.lstat_owner(path)
    if own is None:
        return None
    link = None
    if own.kind == "link":
        resolved = chase(fs, path)
        if resolved is None or resolved[1] is None:
            return None
        link = resolved[0]
        own = modes.lstat_owner(link)
        if own is None:
            return None
    return _file_mode(own, users, groups, safe_path(path), link and safe_path(link))


def _file_mode(
    own: OwnedStat,
    users: dict[int, str],
    groups: dict[int, str],
    path: str | None = None,
    link: str | None = None,
) -> FileMode:
    kind = own.kind if own.kind in ("file", "dir") else "other"
    return FileMode(
        path or safe_path(own.path),
        kind,
        stat.S_IMODE(own.mode),
        own.uid,
        own.gid,
        users.get(own.uid),
        groups.get(own.gid),
        link,
    )


def world_writable(entry: OwnedStat) -> bool:
    """A file writable by all, or a directory writable by all without the sticky bit."""
    if not entry.mode & stat.S_IWOTH:
        return False
    if entry.kind == "file":
        return True
    return entry.kind == "dir" and not entry.mode & stat.S_ISVTX


def _walk(
    fs: GuestFS, modes: ModeFS, users: dict[int, str], groups: dict[int, str], warnings: list[str]
) -> tuple[ModeScan, list[FileMode], list[str]]:
    roots: list[str] = []
    writable: list[FileMode] = []
    writable_count = 0
    setuid: list[FileMode] = []
    setuid_count = 0
    executables: list[str] = []
    path_dirs = set(PATH_DIRS)
    for name in list_dir(fs, "/", warnings):
        if name in NOT_WALKED:
            continue
        top = fs.lstat(join("/", name))  # listing "/" has fetched it already
        if top is not None and top.kind == "dir":  # /bin -> usr/bin: walked as /usr/bin
            roots.append(join("/", name))
    walked = modes.walk_modes("/", WALK_LIMIT, only={root[1:] for root in roots})
    if walked.skipped:
        warnings.append(f"config: {walked.skipped} name(s) in the walk could not be read")
    for entry in walked.entries:
        if world_writable(entry):
            writable_count += 1
            if len(writable) < FIRST_PATHS:
                writable.append(_file_mode(entry, users, groups))
        if entry.kind == "file" and entry.mode & (stat.S_ISUID | stat.S_ISGID):
            setuid_count += 1
            if len(setuid) < MAX_SETUID:
                setuid.append(_file_mode(entry, users, groups))
        directory = entry.path.rpartition("/")[0]
        program = entry.kind == "link" or (entry.kind == "file" and entry.mode & 0o111)
        if program and directory in path_dirs and len(executables) < MAX_EXECUTABLES:
            executables.append(safe_path(entry.path))
    if walked.truncated:
        last = walked.entries[-1].path.split("/")[1] if walked.entries else ""
        warnings.append(f"config: over {WALK_LIMIT} files, the walk stopped in /{last}")
    scan = ModeScan(
        tuple(roots),
        len(walked.entries),
        walked.truncated,
        writable_count,
        tuple(writable),
        setuid_count,
    )
    return scan, setuid, sorted(executables)


def merged_dirs(fs: GuestFS) -> set[str]:
    """Top directories that are symlinks to their ``/usr`` twin (merged /usr)."""
    merged = set()
    for name in MERGED_DIRS:
        st = fs.lstat(f"/{name}")
        if st is not None and st.kind == "link":
            try:
                target = fs.readlink(f"/{name}")
            except GuestFileError:
                continue
            if target.strip("/") in (f"usr/{name}",):
                merged.add(name)
    return merged


def dpkg_owners(fs: GuestFS, wanted: Iterable[str], warnings: list[str]) -> dict[str, str]:
    """Package of each wanted path by dpkg's ``info/*.list`` file lists.

    Lists name paths as packaged (``/bin/su``), the guest may hold them merged into /usr
    (``/usr/bin/su``): both sides are compared as the guest resolves them.
    """
    targets = set(wanted)
    if not targets:
        return {}
    merged = merged_dirs(fs)

    def canonical(path: str) -> str:
        first = path.split("/", 2)[1] if path.count("/") >= 2 else ""
        return f"/usr{path}" if first in merged else path

    found: dict[str, str] = {}
    for name in list_dir(fs, DPKG_INFO, warnings):
        if not name.endswith(".list"):
            continue
        package = name[: -len(".list")].split(":", 1)[0]
        for line in read_lines(fs, join(DPKG_INFO, name), warnings, cap=LIST_CAP) or []:
            path = canonical(line.strip())
            if path in targets and path not in found:
                found[path] = package
        if len(found) == len(targets):
            break
    return found


def kernel_cmdline(fs: GuestFS, warnings: list[str]) -> tuple[str, ...]:
    """Words of every kernel command line the bootloader's configuration gives."""
    words: list[str] = []
    defaults = shell_assignments(
        read_lines(fs, "/etc/default/grub", warnings, cap=CONFIG_CAP) or []
    )
    for key in ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"):
        words += defaults.get(key, "").split()
    for path in GRUB_CONFIGS:
        for line in read_lines(fs, path, warnings, cap=CONFIG_CAP * 8) or []:
            parts = line.split()
            if len(parts) >= 2 and parts[0] in ("linux", "linux16", "linuxefi"):
                words += parts[2:]
    for line in read_lines(fs, "/etc/kernel/cmdline", warnings, cap=CONFIG_CAP) or []:
        words += line.split()
    return tuple(dict.fromkeys(safe_path(w) for w in words))[:1000]


def _arg(cmdline: tuple[str, ...], name: str) -> str | None:
    """The last value of ``name=`` on the command line (the kernel takes the last one)."""
    value = None
    for word in cmdline:
        if word.startswith(f"{name}="):
            value = word.partition("=")[2]
    return value


def selinux_mode(fs: GuestFS, cmdline: tuple[str, ...], warnings: list[str]) -> str | None:
    """``SELINUX=`` of /etc/selinux/config, ``disabled`` when the kernel line says
    ``selinux=0``, ``permissive`` when it says ``enforcing=0``; None without a config."""
    lines = read_lines(fs, "/etc/selinux/config", warnings, cap=CONFIG_CAP)
    if lines is None:
        return None
    mode = shell_assignments(lines).get("SELINUX", "disabled").lower()
    if mode not in ("enforcing", "permissive", "disabled"):
        mode = "disabled"  # libselinux refuses to load with another word
    if _arg(cmdline, "selinux") == "0":
        return "disabled"
    if mode == "enforcing" and _arg(cmdline, "enforcing") == "0":
        return "permissive"
    return mode


def apparmor_state(fs: GuestFS, cmdline: tuple[str, ...], installed: set[str]) -> str:
    """``enabled`` when AppArmor is installed and the kernel line does not turn it off
    (``apparmor=0``, or ``security=``/``lsm=`` naming other modules only)."""
    if "apparmor" not in installed and fs.lstat("/etc/apparmor.d") is None:
        return "absent"
    if _arg(cmdline, "apparmor") == "0":
        return "disabled"
    security = _arg(cmdline, "security")
    if security is not None and security != "apparmor":
        return "disabled"
    lsm = _arg(cmdline, "lsm")
    if lsm is not None and "apparmor" not in lsm.split(","):
        return "disabled"
    return "enabled"


def sysctl_values(fs: GuestFS, warnings: list[str]) -> list[SysctlValue]:
    """Settings as ``sysctl --system`` applies them: ``*.conf`` of the sysctl.d directories
    in file-name order (a name in an earlier directory hides the same name in later ones),
    then /etc/sysctl.conf; the last setting of a key wins."""
    chosen: dict[str, str] = {}
    for directory in SYSCTL_DIRS:
        for name in list_dir(fs, directory, warnings)[:1000]:
            if name.endswith(".conf") and name not in chosen:
                chosen[name] = join(directory, name)
    files = [chosen[name] for name in sorted(chosen)]
    resolved = {r[0] for p in files if (r := chase(fs, p)) is not None}
    if "/etc/sysctl.conf" not in resolved:
        files.append("/etc/sysctl.conf")
    values: dict[str, SysctlValue] = {}
    for path in files:
        for raw in read_lines(fs, path, warnings, cap=CONFIG_CAP) or []:
            line = raw.strip()
            if not line or line[0] in "#;" or "=" not in line:
                continue
            key, _, value = line.partition("=")
            key = key.strip().lstrip("-").replace("/", ".")
            if key and len(values) < 10_000:
                values[key] = SysctlValue(key, " ".join(value.split()), path)
    return [values[key] for key in sorted(values)]

"""Linux OS detection from marker files, with libguestfs inspection's names and rules.

Reads os-release (``/etc/os-release``, else ``/usr/lib/os-release``), the distribution's own
release files, the hostname files and the ELF header of a core binary. Cheaper than
``inspect_os()`` (spec/performance.md) and the same answers on the distributions we know.
"""

from __future__ import annotations

import re

from vmaudit.guest.base import GuestFS, is_dir, is_file, read_lines, safe_path
from vmaudit.models import OsInfo

from .common import read_range, shell_assignments

OS_RELEASE_CAP = 64 * 1024
ELF_CAP = 32 * 1024 * 1024  # busybox or bash are a few MiB; anything bigger is not a shell
HOSTNAME_MAX = 255

# os-release ID -> libguestfs distro name (guestfs_inspect_get_distro).
DISTRO_BY_ID = {
    "alpine": "alpinelinux",
    "almalinux": "almalinux",
    "altlinux": "altlinux",
    "amzn": "amazonlinux",
    "arch": "archlinux",
    "centos": "centos",
    "circle": "circle",
    "clear-linux-os": "clearlinux",
    "debian": "debian",
    "fedora": "fedora",
    "frugalware": "frugalware",
    "gentoo": "gentoo",
    "kali": "kalilinux",
    "linuxmint": "linuxmint",
    "mageia": "mageia",
    "manjaro": "manjaro",
    "ol": "oraclelinux",
    "opensuse": "opensuse",
    "opensuse-leap": "opensuse",
    "opensuse-tumbleweed": "opensuse",
    "opensuse-microos": "opensuse",
    "rhel": "rhel",
    "rocky": "rocky",
    "sled": "sles",
    "sles": "sles",
    "slackware": "slackware",
    "ubuntu": "ubuntu",
    "void": "voidlinux",
}

PACKAGE_FORMAT_BY_DISTRO = {
    "debian": "deb", "ubuntu": "deb", "linuxmint": "deb", "kalilinux": "deb",
    "fedora": "rpm", "rhel": "rpm", "centos": "rpm", "rocky": "rpm", "almalinux": "rpm",
    "oraclelinux": "rpm", "amazonlinux": "rpm", "opensuse": "rpm", "sles": "rpm",
    "mageia": "rpm", "altlinux": "rpm", "circle": "rpm",
    "alpinelinux": "apk", "archlinux": "pacman", "manjaro": "pacman",
}  # fmt: skip

# Release files of distributions that predate os-release, as libguestfs checks them.
LEGACY_RELEASE_FILES = (
    ("/etc/redhat-release", None),
    ("/etc/alpine-release", "alpinelinux"),
    ("/etc/arch-release", "archlinux"),
    ("/etc/SuSE-release", "opensuse"),
    ("/etc/debian_version", "debian"),
)

# ELF e_machine -> (libguestfs arch for 32-bit class, for 64-bit class)
ELF_MACHINES: dict[int, tuple[str, str]] = {
    2: ("sparc", "sparc64"),
    3: ("i386", "i386"),
    8: ("mips", "mips64"),
    20: ("ppc", "ppc64"),
    21: ("ppc64", "ppc64"),
    22: ("s390", "s390x"),
    40: ("arm", "arm"),
    43: ("sparc64", "sparc64"),
    50: ("ia64", "ia64"),
    62: ("x86_64", "x86_64"),
    183: ("aarch64", "aarch64"),
    243: ("riscv32", "riscv64"),
    258: ("loongarch64", "loongarch64"),
}
ARCH_PROBES = ("/bin/sh", "/usr/bin/ls", "/bin/ls", "/bin/busybox", "/usr/bin/bash", "/bin/bash")


def parse_os_release(lines: list[str]) -> dict[str, str]:
    """os-release ``KEY=value`` lines, shell-unquoted; malformed lines are skipped."""
    return shell_assignments(lines)


def major_minor(text: str) -> str | None:
    """``"12.8"`` from ``"12.8"``, ``"9.3"`` from ``"9.3.1"``, ``"39.0"`` from ``"39"``.

    The minor keeps its digits (``"22.04"``, as Ubuntu writes it); libguestfs would say
    minor 4, and both compare equal as numbers.
    """
    match = re.match(r"\s*(\d{1,9})(?:\.(\d{1,9}))?", text)
    if match is None:
        return None
    return f"{int(match.group(1))}.{match.group(2) or 0}"


def elf_arch(header: bytes) -> str | None:
    """The libguestfs architecture name of an ELF file's header, None when not ELF."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    elf_class = header[4]  # 1 = 32-bit, 2 = 64-bit
    little = header[5] == 1
    machine = int.from_bytes(header[18:20], "little" if little else "big")
    names = ELF_MACHINES.get(machine)
    if names is None:
        return None
    arch = names[1] if elf_class == 2 else names[0]
    if arch == "ppc64" and little:
        return "ppc64le"
    return arch


def _detect_arch(fs: GuestFS, warnings: list[str]) -> str | None:
    for path in ARCH_PROBES:
        if not is_file(fs, path):
            continue
        data = read_range(fs, path, 0, 64, warnings, cap=ELF_CAP)
        if data is None:
            continue
        arch = elf_arch(data)
        if arch is not None:
            return arch
    warnings.append("architecture: no readable ELF binary among " + ", ".join(ARCH_PROBES))
    return None


def _first_line(fs: GuestFS, path: str, warnings: list[str]) -> str | None:
    lines = read_lines(fs, path, warnings, cap=64 * 1024)
    for line in lines or ():
        value = line.split("#", 1)[0].strip()
        if value:
            return value
    return None


def _detect_hostname(fs: GuestFS, warnings: list[str]) -> str | None:
    hostname = _first_line(fs, "/etc/hostname", warnings) or _first_line(
        fs, "/etc/HOSTNAME", warnings
    )
    if hostname is None:
        for path in ("/etc/sysconfig/network", "/etc/conf.d/hostname"):
            values = parse_os_release(read_lines(fs, path, warnings, cap=64 * 1024) or [])
            hostname = values.get("HOSTNAME") or values.get("hostname")
            if hostname:
                break
    if hostname and len(hostname) > HOSTNAME_MAX:
        warnings.append(f"hostname: longer than {HOSTNAME_MAX} characters, cut")
        hostname = hostname[:HOSTNAME_MAX]
    return hostname or None


def _legacy_distro(fs: GuestFS, warnings: list[str]) -> tuple[str | None, str | None]:
    """(distro, version) from pre-os-release files."""
    for path, distro in LEGACY_RELEASE_FILES:
        line = _first_line(fs, path, warnings) if is_file(fs, path) else None
        if line is None:
            continue
        if distro is None:  # /etc/redhat-release names the distribution in its text
            lowered = line.lower()
            if "fedora" in lowered:
                distro = "fedora"
            elif "centos" in lowered:
                distro = "centos"
            elif "rocky" in lowered:
                distro = "rocky"
            elif "alma" in lowered:
                distro = "almalinux"
            else:
                distro = "rhel"
        version_match = re.search(r"\d+(?:\.\d+)?", line)
        return distro, major_minor(version_match.group(0)) if version_match else None
    return None, None


def detect_linux(fs: GuestFS, warnings: list[str]) -> OsInfo | None:
    """The Linux OS of a guest root, or None when the tree is not a Linux root."""
    if not is_dir(fs, "/etc"):
        return None
    release_path = "/etc/os-release" if is_file(fs, "/etc/os-release") else "/usr/lib/os-release"
    release = parse_os_release(read_lines(fs, release_path, warnings, cap=OS_RELEASE_CAP) or [])
    has_marker = bool(release) or any(is_file(fs, path) for path, _ in LEGACY_RELEASE_FILES)
    looks_unix = is_file(fs, "/etc/passwd") and (is_dir(fs, "/bin") or is_dir(fs, "/usr/bin"))
    if not has_marker and not looks_unix:
        return None

    os_id = release.get("ID", "").lower()
    distro = DISTRO_BY_ID.get(os_id)
    version = major_minor(release["VERSION_ID"]) if "VERSION_ID" in release else None
    if distro is None and os_id:
        # A distribution libguestfs does not name: keep its own ID (sanitised) rather than
        # "unknown", so a baseline can still match it.
        distro = re.sub(r"[^a-z0-9._-]", "", os_id)[:64] or None
    if distro is None:
        distro, version = _legacy_distro(fs, warnings)
    elif distro == "debian":
        # libguestfs takes Debian's point release from /etc/debian_version ("12.8");
        # os-release only says "12".
        line = _first_line(fs, "/etc/debian_version", warnings)
        point = major_minor(line) if line else None
        if point is not None:
            version = point

    product = release.get("PRETTY_NAME") or release.get("NAME")
    if product is not None and len(product) > 256:
        warnings.append(f"{safe_path(release_path)}: PRETTY_NAME longer than 256 characters, cut")
        product = product[:256]

    package_format = PACKAGE_FORMAT_BY_DISTRO.get(distro or "")
    if package_format is None:
        if is_file(fs, "/var/lib/dpkg/status"):
            package_format = "deb"
        elif is_dir(fs, "/var/lib/rpm") or is_dir(fs, "/usr/lib/sysimage/rpm"):
            package_format = "rpm"
        elif is_file(fs, "/lib/apk/db/installed"):
            package_format = "apk"
        elif is_dir(fs, "/var/lib/pacman/local"):
            package_format = "pacman"

    return OsInfo(
        type="linux",
        distro=distro,  # None when unknown: libguestfs inspection may fill it in (audit.py)
        version=version,
        product=product,
        hostname=_detect_hostname(fs, warnings),
        arch=_detect_arch(fs, warnings),
        package_format=package_format,
    )

"""Linux OS detection from marker files, with libguestfs inspection's names and rules.

Reads os-release (``/etc/os-release``, else ``/usr/lib/os-release``), the distribution's own
release files, the hostname files and the ELF header of a core binary. Cheaper than
``inspect_os()`` (spec/performance.md) and the same answers on the distributions we know.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from vmaudit.guest.base import GuestFS, is_dir, is_file, read_lines, read_range, safe_path
from vmaudit.models import OsInfo

from .common import shell_assignments

OS_RELEASE_CAP = 64 * 1024
HOSTNAME_MAX = 255
PRODUCT_MAX = 256
RELEASE_FILE_CAP = 64 * 1024

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
    "coreos": "coreos",
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
    "mageia": "rpm", "altlinux": "rpm", "circle": "rpm", "redhat-based": "rpm",
    "scientificlinux": "rpm", "suse-based": "rpm",
    "alpinelinux": "apk", "archlinux": "pacman", "manjaro": "pacman",
}  # fmt: skip

# ELF e_machine -> libguestfs arch, whichever the ELF class (32- or 64-bit)
ELF_MACHINES = {
    3: "i386",
    21: "ppc64",
    40: "arm",
    43: "sparc64",
    50: "ia64",
    62: "x86_64",
    183: "aarch64",
    258: "loongarch64",
}
# ELF e_machine -> (arch of the 32-bit class, of the 64-bit class), where the class decides
ELF_MACHINES_BY_CLASS = {
    2: ("sparc", "sparc64"),
    8: ("mips", "mips64"),
    20: ("ppc", "ppc64"),
    22: ("s390", "s390x"),
    243: ("riscv32", "riscv64"),
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
    by_class = ELF_MACHINES_BY_CLASS.get(machine)
    if by_class is not None:
        arch: str | None = by_class[1] if elf_class == 2 else by_class[0]
    else:
        arch = ELF_MACHINES.get(machine)
    if arch == "ppc64" and little:
        return "ppc64le"
    return arch


def _detect_arch(fs: GuestFS, warnings: list[str]) -> str | None:
    for path in ARCH_PROBES:
        if not is_file(fs, path):
            continue
        data = read_range(fs, path, 0, 64, warnings)
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


@dataclass(frozen=True)
class Release:
    """What one release file says; a field it does not give is None."""

    distro: str | None
    version: str | None = None
    product: str | None = None


ReleaseParser = Callable[[list[str]], "Release | None"]  # None: go on to the next file

# lsb-release DISTRIB_ID -> libguestfs distro name; another ID is kept, sanitised.
DISTRO_BY_LSB_ID = {
    "CoreOS": "coreos",
    "LinuxMint": "linuxmint",
    "Mageia": "mageia",
    "Ubuntu": "ubuntu",
}
# /etc/debian_version of testing and unstable says "bookworm/sid": the codename's release.
DEBIAN_CODENAMES = {
    "buzz": "1.1", "rex": "1.2", "bo": "1.3", "hamm": "2.0", "slink": "2.1", "potato": "2.2",
    "woody": "3.0", "sarge": "3.1", "etch": "4.0", "lenny": "5.0", "squeeze": "6.0",
    "wheezy": "7.0", "jessie": "8.0", "stretch": "9.0", "buster": "10.0", "bullseye": "11.0",
    "bookworm": "12.0", "trixie": "13.0", "forky": "14.0", "duke": "15.0",
}  # fmt: skip


def _version_in(text: str) -> str | None:
    """libguestfs's best effort: the first ``N.M`` anywhere, else the first ``N`` (minor 0)."""
    match = re.search(r"(\d{1,9})\.(\d{1,9})", text) or re.search(r"(\d{1,9})", text)
    if match is None:
        return None
    return f"{int(match.group(1))}.{match.group(2) if match.lastindex == 2 else 0}"


def _first_line_release(distro: str, patterns: Sequence[str] = ()) -> ReleaseParser:
    """A one-line release file naming ``distro``, as libguestfs's ``parse_generic``: with
    ``patterns``, one must match (major, and minor when it has a second group) or the file
    is passed over; without, the version is a best effort."""

    def parse(lines: list[str]) -> Release | None:
        line = lines[0].strip() if lines else ""
        if not line:
            return None
        if not patterns:
            return Release(distro, _version_in(line), line)
        for pattern in patterns:
            match = re.search(pattern, line)
            if match is not None:
                minor = match.group(2) if match.lastindex and match.lastindex >= 2 else "0"
                return Release(distro, f"{int(match.group(1))}.{minor}", line)
        return None

    return parse


def _rhel_like(name: str) -> tuple[str, str, str]:
    """Old (``release 4 ... Update 9``), ``N.M`` and major-only spellings, in that order."""
    return (
        rf"{name}.*release (\d+).*Update (\d+)",
        rf"{name}.*release (\d+)\.(\d+)",
        rf"{name}.*release (\d+)",
    )


def _redhat_release(lines: list[str]) -> Release | None:
    """/etc/redhat-release names the distribution in its text; what no pattern knows is
    ``redhat-based``, even an empty file."""
    candidates: list[tuple[str, Sequence[str]]] = [
        ("fedora", (r"Fedora release (\d+)",)),
        ("rhel", _rhel_like("Red Hat")),
        ("centos", _rhel_like("CentOS")),
        ("scientificlinux", _rhel_like("Scientific Linux")),
        # Not in libguestfs 1.48 (both ship os-release), but their text says who they are.
        ("rocky", _rhel_like("Rocky Linux")),
        ("almalinux", _rhel_like("AlmaLinux")),
    ]
    for distro, patterns in candidates:
        found = _first_line_release(distro, patterns)(lines)
        if found is not None:
            return found
    return _first_line_release("redhat-based")(lines) or Release("redhat-based")


def _lsb_release(lines: list[str]) -> Release | None:
    """Ubuntu before os-release (and Mint, Mageia, CoreOS): ``DISTRIB_ID``, ``_RELEASE``,
    ``_DESCRIPTION``. A bare file (RHEL 3: only ``LSB_VERSION``) is passed over."""
    values = shell_assignments(lines)
    distrib_id = values.get("DISTRIB_ID", "")
    product = values.get("DISTRIB_DESCRIPTION") or None
    if not distrib_id and product is None:
        return None
    distro = DISTRO_BY_LSB_ID.get(distrib_id) or _own_id(distrib_id)
    release = values.get("DISTRIB_RELEASE")
    return Release(distro, _version_in(release) if release else None, product)


def _suse_release(lines: list[str]) -> Release | None:
    """SLES (``VERSION = 11`` then ``PATCHLEVEL = 4`` on the next lines) or openSUSE."""
    if not lines or not lines[0].strip():
        return None
    product = lines[0].strip()
    if re.match(r"SUSE (Linux|LINUX) Enterprise |Novell Linux Desktop ", product):
        major = re.match(r"VERSION = (\d+)", lines[1]) if len(lines) > 1 else None
        minor = re.match(r"PATCHLEVEL = (\d+)", lines[2]) if len(lines) > 2 else None
        version = f"{int(major.group(1))}.{int(minor.group(1)) if minor else 0}" if major else None
        return Release("sles", version, product)
    if re.match(r"(openSUSE|SuSE Linux|SUSE LINUX) ", product):
        return Release("opensuse", _version_in(lines[1]) if len(lines) > 1 else None, product)
    return Release("suse-based", None, product)


def _debian_version(lines: list[str]) -> Release | None:
    """``12.8``, or a codename (``bookworm/sid``) on testing, unstable and Ubuntu."""
    line = lines[0].strip() if lines else ""
    if not line:
        return None
    codename = line.split("/", 1)[0].strip().lower()
    return Release("debian", _version_in(line) or DEBIAN_CODENAMES.get(codename), line)


# libguestfs's order (daemon/inspect_fs_unix.ml, linux_root_tests after os-release): the
# first file that exists and parses wins.
RELEASE_FILES: tuple[tuple[str, ReleaseParser], ...] = (
    ("/etc/lsb-release", _lsb_release),
    ("/etc/oracle-release", _first_line_release("oraclelinux", _rhel_like("Oracle Linux"))),
    ("/etc/centos-release", _first_line_release("centos", _rhel_like("CentOS"))),
    ("/etc/altlinux-release", _first_line_release("altlinux")),
    ("/etc/redhat-release", _redhat_release),
    ("/etc/debian_version", _debian_version),
    ("/etc/pardus-release", _first_line_release("pardus")),
    ("/etc/arch-release", lambda _lines: Release("archlinux")),  # empty on Arch
    ("/etc/gentoo-release", _first_line_release("gentoo")),
    ("/etc/meego-release", _first_line_release("meego")),
    ("/etc/slackware-version", _first_line_release("slackware")),
    ("/etc/ttylinux-target", _first_line_release("ttylinux")),
    ("/etc/SuSE-release", _suse_release),
    ("/etc/cirros/version", _first_line_release("cirros")),
    ("/etc/alpine-release", _first_line_release("alpinelinux")),
    ("/etc/frugalware-release", _first_line_release("frugalware", (r"Frugalware (\d+)\.(\d+)",))),
    ("/etc/pld-release", _first_line_release("pldlinux", (r"(\d+)\.(\d+) PLD Linux",))),
)


def release_files(fs: GuestFS, warnings: list[str]) -> Release | None:
    """What the first telling release file says, in libguestfs's order; None without one."""
    for path, parse in RELEASE_FILES:
        if not is_file(fs, path):
            continue
        found = parse(read_lines(fs, path, warnings, cap=RELEASE_FILE_CAP) or [])
        if found is not None:
            if found.product is not None and len(found.product) > PRODUCT_MAX:
                warnings.append(f"{safe_path(path)}: longer than {PRODUCT_MAX} characters, cut")
                found = replace(found, product=found.product[:PRODUCT_MAX])
            return found
    return None


def _own_id(os_id: str) -> str | None:
    """A distribution libguestfs does not name keeps its own ID (sanitised) rather than
    "unknown", so a baseline can still match it."""
    return re.sub(r"[^a-z0-9._-]", "", os_id.lower())[:64] or None


def detect_linux(fs: GuestFS, warnings: list[str]) -> OsInfo | None:
    """The Linux OS of a guest root, or None when the tree is not a Linux root."""
    if not is_dir(fs, "/etc"):
        return None
    release_path = "/etc/os-release" if is_file(fs, "/etc/os-release") else "/usr/lib/os-release"
    release = parse_os_release(read_lines(fs, release_path, warnings, cap=OS_RELEASE_CAP) or [])
    os_id = release.get("ID", "").lower()
    distro = DISTRO_BY_ID.get(os_id) or _own_id(os_id)
    version = major_minor(release["VERSION_ID"]) if "VERSION_ID" in release else None
    product = release.get("PRETTY_NAME") or release.get("NAME")
    if product is not None and len(product) > PRODUCT_MAX:
        warnings.append(
            f"{safe_path(release_path)}: PRETTY_NAME longer than {PRODUCT_MAX} characters, cut"
        )
        product = product[:PRODUCT_MAX]
    legacy: Release | None = None
    if distro is None:
        legacy = release_files(fs, warnings)
        if legacy is not None:
            distro, version, product = legacy.distro, legacy.version, product or legacy.product
    elif distro in ("debian", "centos") and "." not in release.get("VERSION_ID", ""):
        # As libguestfs: os-release says only "12" or "7"; /etc/debian_version says "12.8",
        # /etc/centos-release "CentOS Linux release 7.9.2009".
        legacy = release_files(fs, warnings)
        if legacy is not None and legacy.distro == distro and legacy.version is not None:
            version = legacy.version
    looks_unix = is_file(fs, "/etc/passwd") and (is_dir(fs, "/bin") or is_dir(fs, "/usr/bin"))
    if not release and legacy is None and not looks_unix:
        return None

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

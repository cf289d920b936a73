"""OS detection: libguestfs distro names, versions, hostname, ELF architecture."""

from __future__ import annotations

import struct

from vmaudit.collect.osinfo import detect_linux, elf_arch

from .conftest import Guest


def elf(machine: int, elf_class: int = 2, little: bool = True) -> bytes:
    order = "<" if little else ">"
    return (b"\x7fELF" + bytes([elf_class, 1 if little else 2, 1]) + b"\0" * 9
            + struct.pack(order + "HH", 3, machine) + b"\0" * 200)


def test_not_linux_without_etc(guest: Guest) -> None:
    guest.write("/Windows/System32/config/SOFTWARE", b"regf")
    assert detect_linux(guest.fs, []) is None


def test_debian_point_release_from_debian_version(guest: Guest) -> None:
    guest.write("/usr/lib/os-release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
                'NAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n')
    guest.symlink("/etc/os-release", "../usr/lib/os-release")
    guest.write("/etc/debian_version", "12.8\n")
    guest.write("/etc/hostname", "payroll-db-07\n")
    guest.write("/usr/bin/dash", elf(62))
    guest.symlink("/bin", "usr/bin")
    guest.symlink("/usr/bin/sh", "dash")
    warnings: list[str] = []
    info = detect_linux(guest.fs, warnings)
    assert info is not None
    assert (info.distro, info.version, info.product, info.hostname, info.arch,
            info.package_format) == ("debian", "12.8", "Debian GNU/Linux 12 (bookworm)",
                                     "payroll-db-07", "x86_64", "deb")
    assert warnings == []


def test_ubuntu_ignores_debian_version_sid(guest: Guest) -> None:
    guest.write("/etc/os-release",
                'ID=ubuntu\nVERSION_ID="22.04"\nPRETTY_NAME="Ubuntu 22.04.4 LTS"\n')
    guest.write("/etc/debian_version", "bookworm/sid\n")
    guest.write("/bin/sh", elf(183))
    info = detect_linux(guest.fs, [])
    assert info is not None
    assert (info.distro, info.version, info.arch) == ("ubuntu", "22.04", "aarch64")


def test_rpm_distros_and_sysconfig_hostname(guest: Guest) -> None:
    guest.write("/etc/os-release", 'ID="rocky"\nVERSION_ID="9.3"\nPRETTY_NAME="Rocky Linux 9.3"\n')
    guest.write("/etc/sysconfig/network", "HOSTNAME=rocky-01\n")
    guest.write("/usr/bin/ls", elf(62))
    info = detect_linux(guest.fs, [])
    assert info is not None
    assert (info.distro, info.version, info.hostname, info.package_format) == (
        "rocky", "9.3", "rocky-01", "rpm")


def test_major_only_version_gets_minor_zero_and_names_map(guest: Guest) -> None:
    for os_id, version, distro, version_out in [
        ("fedora", "39", "fedora", "39.0"), ("alpine", "3.19.1", "alpinelinux", "3.19"),
        ("opensuse-leap", "15.5", "opensuse", "15.5"), ("sles", "15.4", "sles", "15.4"),
        ("almalinux", "9.2", "almalinux", "9.2"), ("rhel", "8.9", "rhel", "8.9"),
    ]:
        guest.write("/etc/os-release", f"ID={os_id}\nVERSION_ID={version}\n")
        info = detect_linux(guest.fs, [])
        assert info is not None and (info.distro, info.version) == (distro, version_out)


def test_arch_linux_without_version(guest: Guest) -> None:
    guest.write("/etc/os-release", 'NAME="Arch Linux"\nID=arch\nBUILD_ID=rolling\n')
    info = detect_linux(guest.fs, [])
    assert info is not None
    assert (info.distro, info.version, info.package_format) == ("archlinux", None, "pacman")


def test_legacy_redhat_release(guest: Guest) -> None:
    guest.write("/etc/redhat-release", "CentOS release 6.10 (Final)\n")
    info = detect_linux(guest.fs, [])
    assert info is not None and (info.distro, info.version) == ("centos", "6.10")


def test_missing_elf_is_a_warning(guest: Guest) -> None:
    guest.write("/etc/os-release", "ID=debian\n")
    guest.write("/bin/sh", "#!/bin/false\n")
    warnings: list[str] = []
    info = detect_linux(guest.fs, warnings)
    assert info is not None and info.arch is None
    assert len(warnings) == 1 and warnings[0].startswith("architecture:")


def test_elf_machines() -> None:
    assert elf_arch(elf(3, elf_class=1)) == "i386"
    assert elf_arch(elf(21, little=True)) == "ppc64le"
    assert elf_arch(elf(21, little=False)) == "ppc64"
    assert elf_arch(elf(22)) == "s390x"
    assert elf_arch(elf(243)) == "riscv64"
    assert elf_arch(b"MZ" + b"\0" * 62) is None


def test_unknown_linux_keeps_own_id_or_none(guest: Guest) -> None:
    guest.write("/etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    guest.mkdir("/usr/bin")
    info = detect_linux(guest.fs, [])
    assert info is not None and info.type == "linux" and info.distro is None
    guest.write("/etc/os-release", "ID=myco-linux\nVERSION_ID=4\n")
    info = detect_linux(guest.fs, [])
    assert info is not None and (info.distro, info.version) == ("myco-linux", "4.0")

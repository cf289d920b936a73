"""OS detection: libguestfs distro names, versions, hostname, ELF architecture."""

from __future__ import annotations

import struct

from vmaudit.collect.osinfo import detect_linux, elf_arch

from .conftest import Guest


def elf(machine: int, elf_class: int = 2, little: bool = True) -> bytes:
    order = "<" if little else ">"
    return (
        b"\x7fELF"
        + bytes([elf_class, 1 if little else 2, 1])
        + b"\0" * 9
        + struct.pack(order + "HH", 3, machine)
        + b"\0" * 200
    )


def test_not_linux_without_etc(guest: Guest) -> None:
    guest.write("/Windows/System32/config/SOFTWARE", b"regf")
    assert detect_linux(guest.fs, []) is None


def test_debian_point_release_from_debian_version(guest: Guest) -> None:
    guest.write(
        "/usr/lib/os-release",
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
        'NAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n',
    )
    guest.symlink("/etc/os-release", "../usr/lib/os-release")
    guest.write("/etc/debian_version", "12.8\n")
    guest.write("/etc/hostname", "payroll-db-07\n")
    guest.write("/usr/bin/dash", elf(62))
    guest.symlink("/bin", "usr/bin")
    guest.symlink("/usr/bin/sh", "dash")
    warnings: list[str] = []
    info = detect_linux(guest.fs, warnings)
    assert info is not None
    assert (
        info.distro,
        info.version,
        info.product,
        info.hostname,
        info.arch,
        info.package_format,
    ) == ("debian", "12.8", "Debian GNU/Linux 12 (bookworm)", "payroll-db-07", "x86_64", "deb")
    assert warnings == []


def test_ubuntu_ignores_debian_version_sid(guest: Guest) -> None:
    guest.write(
        "/etc/os-release", 'ID=ubuntu\nVERSION_ID="22.04"\nPRETTY_NAME="Ubuntu 22.04.4 LTS"\n'
    )
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
        "rocky",
        "9.3",
        "rocky-01",
        "rpm",
    )


def test_major_only_version_gets_minor_zero_and_names_map(guest: Guest) -> None:
    for os_id, version, distro, version_out in [
        ("fedora", "39", "fedora", "39.0"),
        ("alpine", "3.19.1", "alpinelinux", "3.19"),
        ("opensuse-leap", "15.5", "opensuse", "15.5"),
        ("sles", "15.4", "sles", "15.4"),
        ("almalinux", "9.2", "almalinux", "9.2"),
        ("rhel", "8.9", "rhel", "8.9"),
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


def os_of(guest: Guest) -> tuple[str | None, str | None, str | None, str | None]:
    """(distro, version, product, package format), reading without a warning."""
    guest.write("/bin/sh", elf(62))
    warnings: list[str] = []
    info = detect_linux(guest.fs, warnings)
    assert info is not None and warnings == [], warnings
    return info.distro, info.version, info.product, info.package_format


def test_old_ubuntu_from_lsb_release_not_debian_version(guest: Guest) -> None:
    guest.write(
        "/etc/lsb-release",
        "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=10.04\n"
        'DISTRIB_CODENAME=lucid\nDISTRIB_DESCRIPTION="Ubuntu 10.04.4 LTS"\n',
    )
    guest.write("/etc/debian_version", "squeeze/sid\n")
    assert os_of(guest) == ("ubuntu", "10.04", "Ubuntu 10.04.4 LTS", "deb")


def test_bare_lsb_release_is_passed_over(guest: Guest) -> None:
    guest.write("/etc/lsb-release", "LSB_VERSION=1.3\n")
    guest.write("/etc/redhat-release", "Red Hat Enterprise Linux AS release 3 (Taroon Update 9)\n")
    assert os_of(guest) == (
        "rhel",
        "3.9",
        "Red Hat Enterprise Linux AS release 3 (Taroon Update 9)",
        "rpm",
    )


def test_lsb_release_of_a_distribution_libguestfs_does_not_name(guest: Guest) -> None:
    guest.write(
        "/etc/lsb-release",
        "DISTRIB_ID=MandrivaLinux\nDISTRIB_RELEASE=2010.1\n"
        'DISTRIB_DESCRIPTION="Mandriva Linux 2010.1"\n',
    )
    assert os_of(guest) == ("mandrivalinux", "2010.1", "Mandriva Linux 2010.1", None)


def test_redhat_release_texts(guest: Guest) -> None:
    for text, distro, version in [
        ("Red Hat Enterprise Linux Server release 6.10 (Santiago)", "rhel", "6.10"),
        ("Red Hat Enterprise Linux Server release 7 (Maipo)", "rhel", "7.0"),
        ("Fedora release 20 (Heisenbug)", "fedora", "20.0"),
        ("Scientific Linux release 6.4 (Carbon)", "scientificlinux", "6.4"),
        ("CentOS release 5.11 (Final)", "centos", "5.11"),
        ("Mystery Linux release 4.2 (Enigma)", "redhat-based", "4.2"),
    ]:
        guest.write("/etc/redhat-release", text + "\n")
        assert os_of(guest) == (distro, version, text, "rpm")


def test_empty_redhat_release_is_redhat_based(guest: Guest) -> None:
    guest.write("/etc/redhat-release", "")
    assert os_of(guest) == ("redhat-based", None, None, "rpm")


def test_centos_release_comes_before_redhat_release(guest: Guest) -> None:
    guest.write("/etc/centos-release", "CentOS Linux release 7.9.2009 (Core)\n")
    guest.write("/etc/redhat-release", "Derived from Red Hat Enterprise Linux 7.9 (Source)\n")
    assert os_of(guest) == ("centos", "7.9", "CentOS Linux release 7.9.2009 (Core)", "rpm")


def test_centos_point_release_from_centos_release_under_os_release(guest: Guest) -> None:
    guest.write(
        "/etc/os-release",
        'NAME="CentOS Linux"\nVERSION_ID="7"\nID="centos"\nPRETTY_NAME="CentOS Linux 7 (Core)"\n',
    )
    guest.write("/etc/centos-release", "CentOS Linux release 7.9.2009 (Core)\n")
    assert os_of(guest) == ("centos", "7.9", "CentOS Linux 7 (Core)", "rpm")


def test_fedora_release_file_alone_says_fedora(guest: Guest) -> None:
    # Fedora's fedora-release sits beside redhat-release, which libguestfs reads.
    guest.write("/etc/fedora-release", "Fedora release 14 (Laughlin)\n")
    guest.symlink("/etc/redhat-release", "fedora-release")
    assert os_of(guest) == ("fedora", "14.0", "Fedora release 14 (Laughlin)", "rpm")


def test_sles_and_opensuse_from_suse_release(guest: Guest) -> None:
    guest.write(
        "/etc/SuSE-release",
        "SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\nPATCHLEVEL = 4\n",
    )
    assert os_of(guest) == ("sles", "11.4", "SUSE Linux Enterprise Server 11 (x86_64)", "rpm")
    guest.write(
        "/etc/SuSE-release", "openSUSE 13.2 (x86_64)\nVERSION = 13.2\nCODENAME = Harlequin\n"
    )
    assert os_of(guest) == ("opensuse", "13.2", "openSUSE 13.2 (x86_64)", "rpm")


def test_empty_arch_release_is_arch(guest: Guest) -> None:
    guest.write("/etc/arch-release", "")
    assert os_of(guest) == ("archlinux", None, None, "pacman")


def test_debian_version_alone_with_point_release_or_codename(guest: Guest) -> None:
    guest.write("/etc/debian_version", "6.0.10\n")
    assert os_of(guest) == ("debian", "6.0", "6.0.10", "deb")
    guest.write("/etc/debian_version", "bookworm/sid\n")
    assert os_of(guest) == ("debian", "12.0", "bookworm/sid", "deb")
    guest.write("/etc/debian_version", "sid\n")
    assert os_of(guest) == ("debian", None, "sid", "deb")


def test_debian_testing_version_from_codename_under_os_release(guest: Guest) -> None:
    guest.write(
        "/etc/os-release",
        'PRETTY_NAME="Debian GNU/Linux trixie/sid"\nNAME="Debian GNU/Linux"\nID=debian\n',
    )
    guest.write("/etc/debian_version", "trixie/sid\n")
    assert os_of(guest) == ("debian", "13.0", "Debian GNU/Linux trixie/sid", "deb")


def test_os_release_wins_over_release_files(guest: Guest) -> None:
    guest.write("/etc/os-release", 'ID=rocky\nVERSION_ID="8.9"\nPRETTY_NAME="Rocky Linux 8.9"\n')
    guest.write("/etc/redhat-release", "Rocky Linux release 8.9 (Green Obsidian)\n")
    guest.write("/etc/centos-release", "Rocky Linux release 8.9 (Green Obsidian)\n")
    assert os_of(guest) == ("rocky", "8.9", "Rocky Linux 8.9", "rpm")


def test_long_release_text_is_cut_with_a_warning(guest: Guest) -> None:
    guest.write("/etc/redhat-release", "CentOS release 6.10 " + "x" * 400 + "\n")
    guest.write("/bin/sh", elf(62))
    warnings: list[str] = []
    info = detect_linux(guest.fs, warnings)
    assert info is not None and info.distro == "centos" and len(info.product or "") == 256
    assert warnings == ["/etc/redhat-release: longer than 256 characters, cut"]


def test_flatcar_root_reads_os_release_through_usr(guest: Guest) -> None:
    guest.write(
        "/usr/lib/os-release",
        'NAME="Flatcar Container Linux by Kinvolk"\nID=flatcar\n'
        "ID_LIKE=coreos\nVERSION_ID=3510.2.0\n"
        'PRETTY_NAME="Flatcar Container Linux by Kinvolk 3510.2.0 (Oklo)"\n',
    )
    guest.symlink("/etc/os-release", "../usr/lib/os-release")
    assert os_of(guest) == (
        "flatcar",
        "3510.2",
        "Flatcar Container Linux by Kinvolk 3510.2.0 (Oklo)",
        None,
    )

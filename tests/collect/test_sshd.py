"""sshd: first value wins, Include globs, Match blocks, defaults by OpenSSH version."""

from __future__ import annotations

from vmaudit.collect.sshd import collect_sshd
from vmaudit.models import Package, SshFacts

from .conftest import Guest

OPENSSH_9 = [Package("openssh-server", "1:9.2p1-2+deb12u3", "amd64", "openssh")]


def facts(guest: Guest, packages: list[Package] = OPENSSH_9) -> tuple[SshFacts, list[str]]:
    warnings: list[str] = []
    return collect_sshd(guest.fs, packages, warnings).facts(), warnings


def test_defaults_when_unset(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "UsePAM yes\n#PermitRootLogin yes\n")
    assert facts(guest) == (SshFacts(True, "prohibit-password", True), [])


def test_old_openssh_defaults_to_root_login_yes(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "")
    old = [Package("openssh-server", "1:6.6p1-2ubuntu1", "amd64", "openssh")]
    assert facts(guest, old)[0].permit_root_login == "yes"


def test_first_value_wins_and_keywords_are_case_insensitive(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config",
                "permitrootlogin No\nPermitRootLogin yes\nPASSWORDAUTHENTICATION=no\n"
                "PasswordAuthentication yes\n")
    assert facts(guest)[0] == SshFacts(True, "no", False)


def test_without_password_is_normalised(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "PermitRootLogin without-password\n")
    assert facts(guest)[0].permit_root_login == "prohibit-password"


def test_include_glob_relative_to_etc_ssh_read_in_sorted_order(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config",
                "Include sshd_config.d/*.conf\nPermitRootLogin no\nPasswordAuthentication no\n")
    guest.write("/etc/ssh/sshd_config.d/50-cloud.conf", "PasswordAuthentication yes\n")
    guest.write("/etc/ssh/sshd_config.d/10-root.conf", "PermitRootLogin yes\n")
    guest.write("/etc/ssh/sshd_config.d/60-late.conf", "PermitRootLogin forced-commands-only\n")
    guest.write("/etc/ssh/sshd_config.d/ignored.txt", "PasswordAuthentication no\n")
    assert facts(guest)[0] == SshFacts(True, "yes", True)


def test_match_block_does_not_change_the_global_value(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config",
                "Match User backup\n  PermitRootLogin yes\n  PasswordAuthentication no\n"
                "Match all\nPermitRootLogin forced-commands-only\n")
    assert facts(guest)[0] == SshFacts(True, "prohibit-password", True)


def test_match_in_included_file_ends_with_that_file(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "Include /etc/ssh/extra.conf\nPermitRootLogin no\n")
    guest.write("/etc/ssh/extra.conf", "Match Address 10.0.0.0/8\nPermitRootLogin yes\n")
    assert facts(guest)[0].permit_root_login == "no"


def test_include_inside_match_is_conditional(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "Match Group admins\nInclude /etc/ssh/admins.conf\n")
    guest.write("/etc/ssh/admins.conf", "PermitRootLogin yes\n")
    assert facts(guest)[0].permit_root_login == "prohibit-password"


def test_include_loop_terminates_with_warning(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "Include /etc/ssh/sshd_config\nPermitRootLogin no\n")
    result, warnings = facts(guest)
    assert result.permit_root_login == "no"
    assert warnings == ["/etc/ssh/sshd_config: sshd Include loop or too deep, skipped"]


def test_invalid_value_is_a_warning_and_the_default_stays(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "PermitRootLogin maybe\n")
    result, warnings = facts(guest)
    assert result.permit_root_login == "prohibit-password"
    assert len(warnings) == 1 and "PermitRootLogin 'maybe' is invalid" in warnings[0]


def test_not_installed_reports_no_settings(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "PermitRootLogin yes\n")
    assert facts(guest, [])[0] == SshFacts(False, None, None)


def test_sshd_binary_alone_counts_as_installed(guest: Guest) -> None:
    guest.write("/usr/sbin/sshd", b"\x7fELF")
    assert facts(guest, [])[0] == SshFacts(True, "prohibit-password", True)


def test_authorized_keys_file_setting_is_read(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "AuthorizedKeysFile /etc/ssh/keys/%u .ssh/mine\n")
    config = collect_sshd(guest.fs, OPENSSH_9, [])
    assert config.authorized_keys_files == ("/etc/ssh/keys/%u", ".ssh/mine")

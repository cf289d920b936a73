"""sshd: first value wins, Include globs, Match blocks for root's connection, sshd's lexer,
defaults by OpenSSH version."""

from __future__ import annotations

import time

from vmaudit.collect.sshd import MAX_CHARS, MAX_FILES, MAX_MESSAGES, collect_sshd
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
    guest.write(
        "/etc/ssh/sshd_config",
        "permitrootlogin No\nPermitRootLogin yes\nPASSWORDAUTHENTICATION=no\n"
        "PasswordAuthentication yes\n",
    )
    assert facts(guest)[0] == SshFacts(True, "no", False)


def test_without_password_is_normalised(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "PermitRootLogin without-password\n")
    assert facts(guest)[0].permit_root_login == "prohibit-password"


def test_include_glob_relative_to_etc_ssh_read_in_sorted_order(guest: Guest) -> None:
    guest.write(
        "/etc/ssh/sshd_config",
        "Include sshd_config.d/*.conf\nPermitRootLogin no\nPasswordAuthentication no\n",
    )
    guest.write("/etc/ssh/sshd_config.d/50-cloud.conf", "PasswordAuthentication yes\n")
    guest.write("/etc/ssh/sshd_config.d/10-root.conf", "PermitRootLogin yes\n")
    guest.write("/etc/ssh/sshd_config.d/60-late.conf", "PermitRootLogin forced-commands-only\n")
    guest.write("/etc/ssh/sshd_config.d/ignored.txt", "PasswordAuthentication no\n")
    assert facts(guest)[0] == SshFacts(True, "yes", True)


def test_a_match_block_for_another_connection_changes_nothing(guest: Guest) -> None:
    guest.write(
        "/etc/ssh/sshd_config",
        "Match User backup\n  PermitRootLogin yes\n  PasswordAuthentication no\n"
        "Match Address 10.0.0.0/8,!192.0.2.1\nPermitRootLogin yes\n"
        "Match User !root,*\nPermitRootLogin yes\n",
    )
    assert facts(guest) == (SshFacts(True, "prohibit-password", True), [])


def test_match_all_and_match_user_star_apply_and_override_the_global_value(guest: Guest) -> None:
    guest.write(
        "/etc/ssh/sshd_config",
        "PermitRootLogin no\nPasswordAuthentication no\n"
        "Match all\nPermitRootLogin yes\nMatch User *\nPasswordAuthentication yes\n",
    )
    assert facts(guest) == (SshFacts(True, "yes", True), [])


def test_the_first_applying_match_block_wins(guest: Guest) -> None:
    guest.write(
        "/etc/ssh/sshd_config",
        "Match User bob\nPermitRootLogin yes\nMatch User r?ot Host X\n"
        "PermitRootLogin forced-commands-only\nPermitRootLogin no\n"
        "Match Address 192.0.2.0/24\nPermitRootLogin no\n",
    )
    assert facts(guest)[0].permit_root_login == "forced-commands-only"


def test_match_address_is_parsed_as_getaddrinfo_parses_it(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "Match Address 3221225985\nPasswordAuthentication no\n")
    assert facts(guest)[0].password_authentication is False  # 3221225985 is 192.0.2.1


def test_match_group_uses_roots_groups_in_the_guest(guest: Guest) -> None:
    guest.write("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n")
    guest.write("/etc/group", "root:x:0:\nwheel:x:10:root\nstaff:x:50:\n")
    guest.write(
        "/etc/ssh/sshd_config",
        "Match Group staff\nPermitRootLogin no\nMatch Group admins,wheel\nPermitRootLogin yes\n",
    )
    assert facts(guest)[0].permit_root_login == "yes"


def test_match_on_the_local_side_is_not_applied_and_said(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "Match LocalPort 22\nPermitRootLogin yes\n")
    result, warnings = facts(guest)
    assert result.permit_root_login == "prohibit-password"
    assert warnings == [
        "sshd: /etc/ssh/sshd_config line 1: Match LocalPort 22 is not evaluated "
        "(the reported connection user=root,host=x,addr=192.0.2.1 has no local "
        "side)"
    ]


def test_match_in_included_file_ends_with_that_file(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "Include /etc/ssh/extra.conf\nPermitRootLogin no\n")
    guest.write("/etc/ssh/extra.conf", "Match Address 10.0.0.0/8\nPermitRootLogin yes\n")
    assert facts(guest)[0].permit_root_login == "no"


def test_include_inside_match_is_conditional(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "Match Group admins\nInclude /etc/ssh/admins.conf\n")
    guest.write("/etc/ssh/admins.conf", "PermitRootLogin yes\n")
    assert facts(guest)[0].permit_root_login == "prohibit-password"


def test_include_loop_is_a_config_sshd_refuses(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "Include /etc/ssh/sshd_config\nPermitRootLogin no\n")
    result, warnings = facts(guest)
    assert result.permit_root_login == "no"
    assert warnings == [
        "sshd would refuse to start: /etc/ssh/sshd_config: too many recursive Includes"
    ]


def test_exponential_include_fan_out_is_bounded(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "Include /etc/ssh/l1/*.conf\nPermitRootLogin no\n")
    for level in range(1, 16):  # 4^15 leaves at sshd's depth limit; sshd reads every one
        for name in "abcd":
            guest.write(f"/etc/ssh/l{level}/{name}.conf", f"Include /etc/ssh/l{level + 1}/*.conf\n")
    guest.write("/etc/ssh/l16/a.conf", "PasswordAuthentication no\n")
    started = time.monotonic()
    result, warnings = facts(guest)
    assert time.monotonic() - started < 20
    assert (result.permit_root_login, result.password_authentication) == ("no", False)
    assert warnings == [f"sshd: over {MAX_FILES} included files, the rest ignored"]


def test_invalid_value_is_a_warning_and_the_default_stays(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "PermitRootLogin maybe\n")
    result, warnings = facts(guest)
    assert result.permit_root_login == "prohibit-password"
    assert warnings == [
        "sshd would refuse to start: /etc/ssh/sshd_config line 1: bad value for "
        "PermitRootLogin: 'maybe'"
    ]


def test_lines_split_on_newline_only_and_carriage_returns_as_sshd_reads_them(
    guest: Guest,
) -> None:
    guest.write(
        "/etc/ssh/sshd_config",
        "# hardened\rPermitRootLogin no\n\r PasswordAuthentication\rno\r\f\n",
    )
    assert facts(guest) == (SshFacts(True, "prohibit-password", False), [])


def test_a_nul_joins_a_line_to_the_next(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", b"PasswordAuthentication no\0junk\nPermitRootLogin no\n")
    result, warnings = facts(guest)
    assert result.password_authentication is True
    assert warnings == [
        "sshd would refuse to start: /etc/ssh/sshd_config line 1: bad value for "
        "PasswordAuthentication: 'noPermitRootLogin no'"
    ]


def test_quotes_equals_and_comments_as_sshd_tokenises_them(guest: Guest) -> None:
    guest.write(
        "/etc/ssh/sshd_config", '"PermitRootLogin"\t"no" # why\nPasswordAuthentication=n"o"\n'
    )
    assert facts(guest) == (SshFacts(True, "no", False), [])


def test_a_global_directive_in_a_match_block_is_a_config_sshd_refuses(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "Match User bob\nUsePAM yes\n")
    assert facts(guest)[1] == [
        "sshd would refuse to start: /etc/ssh/sshd_config line 2: UsePAM "
        "is not allowed within a Match block"
    ]


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


def test_none_skips_only_itself_and_other_users_match_files_are_kept(guest: Guest) -> None:
    guest.write(
        "/etc/ssh/sshd_config",
        "AuthorizedKeysFile none .ssh/k\nMatch User ops\nAuthorizedKeysFile /srv/%u\n",
    )
    config = collect_sshd(guest.fs, OPENSSH_9, [])
    assert config.authorized_keys_files == (".ssh/k",)
    assert config.any_keys_files == (".ssh/k", "/srv/%u")


def test_hostile_match_lines_take_linear_time(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config",
                "Match " + "User *x " * 200_000 + "\nPermitRootLogin yes\n"
                + "Match Host " + "*" * 1000 + "y,*?*?*?*?*?*?z\nPermitRootLogin yes\n"
                + "\n" * 1_000_000 + "Match User *o*o*t\nPasswordAuthentication no\n")  # fmt: skip
    started = time.monotonic()
    result, warnings = facts(guest)
    assert time.monotonic() - started < 20
    assert (result.permit_root_login, result.password_authentication, warnings) == (
        "prohibit-password", False, [])  # fmt: skip


def test_a_million_bad_lines_give_bounded_warnings(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "a\n" * 1_000_000 + "PermitRootLogin no\n")
    started = time.monotonic()
    result, warnings = facts(guest)
    assert time.monotonic() - started < 60
    assert result.permit_root_login == "no"
    assert len(warnings) == MAX_MESSAGES + 1
    assert warnings[-1] == f"sshd would refuse to start: ... and {1_000_000 - MAX_MESSAGES} more"


def test_config_text_past_the_budget_is_ignored_with_a_warning(guest: Guest) -> None:
    guest.write("/etc/ssh/sshd_config", "Include /etc/ssh/big.conf\nPermitRootLogin no\n")
    guest.write("/etc/ssh/big.conf", "#" * MAX_CHARS + "\nPasswordAuthentication no\n")
    result, warnings = facts(guest)
    assert (result.permit_root_login, result.password_authentication) == ("no", True)
    assert warnings == [f"sshd: over {MAX_CHARS} characters of config, the rest ignored"]


def test_a_tilde_in_a_keys_file_is_expanded_when_sshd_reads_its_config(guest: Guest) -> None:
    guest.write(
        "/etc/passwd",
        "toor:x:0:0::/srv/toor:/bin/sh\nroot:x:0:0::/root:/bin/bash\n"
        "ops:x:1000:1000::/home/ops/:/bin/sh\n",
    )
    guest.write("/etc/ssh/sshd_config", "AuthorizedKeysFile ~/.ssh/k ~ops//k ~\n")
    config = collect_sshd(guest.fs, OPENSSH_9, [])
    # "~" is the home of sshd's uid, 0: getpwuid(0) is the first uid-0 line.
    assert config.authorized_keys_files == ("/srv/toor/.ssh/k", "/home/ops/k", "/srv/toor/")

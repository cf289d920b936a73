"""sudoers: includes, %groups, aliases, runas and command lists, include cycles."""

from __future__ import annotations

import time

from vmaudit.collect.sudoers import parse_sudoers

from .conftest import Guest


def admin_files(
    guest: Guest,
    user: str,
    groups: frozenset[str] | set[str] = frozenset(),
    uid: int = 1000,
    gids: frozenset[int] | set[int] = frozenset(),
) -> tuple[list[str], list[str]]:
    warnings: list[str] = []
    sudoers = parse_sudoers(guest.fs, warnings)
    return sudoers.admin_files(user, uid, set(groups), set(gids)), warnings


def test_direct_user_spec_with_all_grants_admin(guest: Guest) -> None:
    guest.write("/etc/sudoers", "root ALL=(ALL:ALL) ALL\nalice ALL=(ALL) NOPASSWD: ALL\n")
    assert admin_files(guest, "alice") == (["/etc/sudoers"], [])
    assert admin_files(guest, "bob")[0] == []


def test_group_spec_grants_members_only(guest: Guest) -> None:
    guest.write("/etc/sudoers", "%ops ALL=(ALL:ALL) ALL\n")
    assert admin_files(guest, "carol", {"ops"})[0] == ["/etc/sudoers"]
    assert admin_files(guest, "dave", {"dev"})[0] == []


def test_group_by_gid_and_user_by_uid(guest: Guest) -> None:
    guest.write("/etc/sudoers", "%#2000 ALL=(ALL) ALL\n#1234 ALL=(root) ALL\n")
    assert admin_files(guest, "x", gids={2000})[0] == ["/etc/sudoers"]
    assert admin_files(guest, "y", uid=1234)[0] == ["/etc/sudoers"]
    assert admin_files(guest, "z", uid=1235, gids={2001})[0] == []


def test_specific_commands_do_not_grant_admin(guest: Guest) -> None:
    guest.write(
        "/etc/sudoers",
        "alice ALL=(ALL) /usr/bin/systemctl restart nginx, /bin/ls\n"
        "bob ALL=(nobody) ALL\ncarol ALL=(:wheel) ALL\ndave ALL=(ALL) !ALL\n"
        "erin ALL=() ALL\n",
    )
    for user in ("alice", "bob", "carol", "dave", "erin"):
        assert admin_files(guest, user)[0] == [], user


def test_user_alias_runas_alias_and_cmnd_alias_expand(guest: Guest) -> None:
    guest.write(
        "/etc/sudoers",
        "User_Alias ADMINS = erin, %netops : OTHERS = frank\n"
        "Runas_Alias SUPER = root\n"
        "Cmnd_Alias EVERYTHING = ALL\n"
        "ADMINS ALL = (SUPER) NOPASSWD:SETENV: EVERYTHING\n"
        "OTHERS ALL = (SUPER) /bin/true\n",
    )
    assert admin_files(guest, "erin")[0] == ["/etc/sudoers"]
    assert admin_files(guest, "gus", {"netops"})[0] == ["/etc/sudoers"]
    assert admin_files(guest, "frank")[0] == []


def test_alias_defined_after_use_still_counts(guest: Guest) -> None:
    guest.write("/etc/sudoers", "LATE ALL=(ALL) ALL\nUser_Alias LATE = henry\n")
    assert admin_files(guest, "henry")[0] == ["/etc/sudoers"]


def test_negation_in_user_list_last_match_wins(guest: Guest) -> None:
    guest.write("/etc/sudoers", "ALL, !mallory ALL=(ALL) ALL\n")
    assert admin_files(guest, "mallory")[0] == []
    assert admin_files(guest, "ivan")[0] == ["/etc/sudoers"]


def test_second_segment_after_colon_is_read(guest: Guest) -> None:
    guest.write("/etc/sudoers", "judy host1 = /bin/ls : host2 = (root) NOPASSWD: ALL\n")
    assert admin_files(guest, "judy")[0] == ["/etc/sudoers"]


def test_line_continuation_and_comments(guest: Guest) -> None:
    guest.write("/etc/sudoers", "# kate ALL=(ALL) ALL\nkate ALL=(ALL) \\\n    ALL  # trailing\n")
    assert admin_files(guest, "kate")[0] == ["/etc/sudoers"]


def test_includedir_skips_names_with_dot_or_tilde(guest: Guest) -> None:
    guest.write("/etc/sudoers", "@includedir /etc/sudoers.d\n")
    guest.write("/etc/sudoers.d/ops", "leo ALL=(ALL) ALL\n")
    guest.write("/etc/sudoers.d/backup~", "mia ALL=(ALL) ALL\n")
    guest.write("/etc/sudoers.d/old.conf", "ned ALL=(ALL) ALL\n")
    assert admin_files(guest, "leo")[0] == ["/etc/sudoers.d/ops"]
    assert admin_files(guest, "mia")[0] == []
    assert admin_files(guest, "ned")[0] == []


def test_hash_include_and_relative_paths(guest: Guest) -> None:
    guest.write("/etc/sudoers", "#include sudo/extra\n#includedir /etc/more\n")
    guest.write("/etc/sudo/extra", '@include "nested file"\n')
    guest.write("/etc/sudo/nested file", "olga ALL=(ALL:ALL) ALL\n")
    guest.write("/etc/more/p", "pete ALL=ALL\n")
    assert admin_files(guest, "olga")[0] == ["/etc/sudo/nested file"]
    assert admin_files(guest, "pete")[0] == ["/etc/more/p"]


def test_self_include_terminates_with_warning(guest: Guest) -> None:
    guest.write("/etc/sudoers", "@include /etc/sudoers\n@include /etc/a\nquinn ALL=(ALL) ALL\n")
    guest.write("/etc/a", "@include /etc/b\n")
    guest.write("/etc/b", "@include /etc/a\n")
    files, warnings = admin_files(guest, "quinn")
    assert files == ["/etc/sudoers"]
    assert any("/etc/sudoers: sudoers include cycle" in w for w in warnings)
    assert any("/etc/a: sudoers include cycle" in w for w in warnings)


def test_missing_include_is_a_warning(guest: Guest) -> None:
    guest.write("/etc/sudoers", "@include /etc/sudoers.local\nroot ALL=(ALL) ALL\n")
    files, warnings = admin_files(guest, "root", uid=0)
    assert files == ["/etc/sudoers"]
    assert warnings == ["/etc/sudoers.local: included sudoers file missing"]


def test_defaults_lines_grant_nothing(guest: Guest) -> None:
    guest.write("/etc/sudoers", "Defaults:rose !authenticate\nDefaults env_reset\n")
    assert admin_files(guest, "rose")[0] == []


def test_runas_list_with_commas(guest: Guest) -> None:
    guest.write("/etc/sudoers", "sam ALL=(operator, root) ALL\ntom ALL=(operator, backup) ALL\n")
    assert admin_files(guest, "sam")[0] == ["/etc/sudoers"]
    assert admin_files(guest, "tom")[0] == []


def test_runas_and_tags_carry_over_within_a_command_list(guest: Guest) -> None:
    guest.write(
        "/etc/sudoers",
        "ann ALL = (root) NOPASSWD: /bin/ls, ALL\nben ALL = (nobody) /bin/ls, ALL\ncal ALL = ALL\n",
    )
    assert admin_files(guest, "ann")[0] == ["/etc/sudoers"]
    assert admin_files(guest, "ben")[0] == []
    assert admin_files(guest, "cal")[0] == ["/etc/sudoers"]


def test_comment_ending_in_backslash_does_not_swallow_the_next_line(guest: Guest) -> None:
    guest.write("/etc/sudoers", "# hardened \\\numa ALL=(ALL) ALL\n")
    assert admin_files(guest, "uma")[0] == ["/etc/sudoers"]


def test_sudo_lexer_tokens_tag_colon_blanks_crlf_and_uid_runas(guest: Guest) -> None:
    guest.write(
        "/etc/sudoers",
        "vic ALL = (root) NOPASSWD : ALL\r\nwes ALL=(#00) ALL\nxia ALL=(ALL) \\ \t\n ALL\n",
    )
    for user in ("vic", "wes", "xia"):
        assert admin_files(guest, user)[0] == ["/etc/sudoers"], user


def test_carriage_return_is_no_line_break(guest: Guest) -> None:
    guest.write("/etc/sudoers", "# note\ryan ALL=(ALL) ALL\nzoe ALL=(ALL)\rALL\nabe ALL=ALL\n")
    files, warnings = admin_files(guest, "yan")
    assert files == []
    assert admin_files(guest, "zoe")[0] == []
    assert admin_files(guest, "abe")[0] == ["/etc/sudoers"]
    assert warnings == [
        "/etc/sudoers: 1 sudoers entry with syntax errors ignored, as sudo ignores them"
    ]


def test_hash_include_only_at_column_zero(guest: Guest) -> None:
    guest.write("/etc/sudoers", "  #include /etc/a\n  @include /etc/b\n")
    guest.write("/etc/a", "amy ALL=(ALL) ALL\n")
    guest.write("/etc/b", "bea ALL=(ALL) ALL\n")
    assert admin_files(guest, "amy")[0] == []
    assert admin_files(guest, "bea")[0] == ["/etc/b"]


def test_last_matching_rule_wins(guest: Guest) -> None:
    guest.write(
        "/etc/sudoers",
        "%ops ALL=(ALL) ALL\ncid ALL=(ALL) !ALL\ndot ALL=(ALL) ALL\ndot host1=(ALL) !ALL\n",
    )
    assert admin_files(guest, "cid", {"ops"})[0] == []
    # A denial limited to some host may not apply where the image boots: the grant stands.
    assert admin_files(guest, "dot")[0] == ["/etc/sudoers"]


def test_lexing_is_linear_on_hostile_text(guest: Guest) -> None:
    guest.write(
        "/etc/sudoers",
        "eve ALL = " + "^" * 60_000 + "\n" + "\\\n" * 90_000 + "fay ALL=(ALL) ALL\n",
    )
    start = time.monotonic()
    files, _ = admin_files(guest, "fay")
    assert time.monotonic() - start < 10
    assert files == ["/etc/sudoers"]  # leading continuations are blanks to sudo


def test_sudo_conf_names_the_policy_file(guest: Guest) -> None:
    guest.write("/etc/sudoers", "gil ALL=(ALL) ALL\n")
    guest.write("/etc/sudoers.alt", "hal ALL=(ALL) ALL\n")
    guest.write(
        "/etc/sudo.conf",
        "# Plugin sudoers_policy sudoers.so sudoers_file=/x\n"
        "Plugin sudoers_policy sudoers.so sudoers_file=/etc/sudoers.alt\n",
    )
    assert admin_files(guest, "gil")[0] == []
    assert admin_files(guest, "hal")[0] == ["/etc/sudoers.alt"]


def test_entry_continued_into_the_end_of_a_file_rejects_the_whole_policy(guest: Guest) -> None:
    message = (
        "/etc/sudoers.d/z: ends inside an entry continued by a backslash: sudo rejects "
        "the whole policy and grants nothing"
    )
    guest.write("/etc/sudoers", "ida ALL=(ALL) ALL\n@includedir /etc/sudoers.d\n")
    guest.write("/etc/sudoers.d/z", "jon ALL=(ALL) ALL \\\n")
    assert admin_files(guest, "ida") == ([], [message])
    guest.write("/etc/sudoers.d/z", "jon ALL=(ALL) ALL\n\\\n")  # nothing left to continue
    assert admin_files(guest, "ida") == (["/etc/sudoers"], [])


def test_policies_over_the_line_or_token_budget_are_a_warning(guest: Guest) -> None:
    guest.write("/etc/sudoers", "kim ALL=(ALL) ALL\n@include /etc/big\n")
    guest.write("/etc/big", "lou ALL=(ALL) ALL\n" * 100_000)
    files, warnings = admin_files(guest, "kim")
    assert files == ["/etc/sudoers"]
    assert admin_files(guest, "lou")[0] == []
    assert warnings == ["/etc/big: sudoers files over 100000 lines in all, not read"]
    guest.write("/etc/big", ("(" * 60_000 + "\n") * 40 + "lou ALL=(ALL) ALL\n")
    start = time.monotonic()
    files, warnings = admin_files(guest, "lou")
    assert time.monotonic() - start < 30
    assert files == []
    assert "/etc/big: sudoers files over 2000000 tokens in all, the rest not read" in warnings


def test_deep_alias_chains_resolve_and_loops_match_nothing(guest: Guest) -> None:
    chain = "".join(f"User_Alias U{i} = U{i + 1}\n" for i in range(3000))
    runas = "".join(f"Runas_Alias R{i} = R{i + 1}\n" for i in range(3000))
    cmnds = "".join(f"Cmnd_Alias C{i} = C{i + 1}\n" for i in range(3000))
    guest.write(
        "/etc/sudoers",
        chain
        + "User_Alias U3000 = max\n"
        + runas
        + "Runas_Alias R3000 = root\n"
        + cmnds
        + "Cmnd_Alias C3000 = ALL\n"
        + "U0 ALL = (R0) C0\nUser_Alias LA = LB\nUser_Alias LB = LA, ned\n"
        + "LA ALL=(ALL) ALL\n",
    )
    assert admin_files(guest, "max")[0] == ["/etc/sudoers"]
    assert admin_files(guest, "ned")[0] == ["/etc/sudoers"]
    assert admin_files(guest, "oz")[0] == []

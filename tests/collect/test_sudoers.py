"""sudoers: includes, %groups, aliases, runas and command lists, include cycles."""

from __future__ import annotations

from vmaudit.collect.sudoers import grants_all, parse_sudoers

from .conftest import Guest


def admin_files(guest: Guest, user: str, groups: frozenset[str] | set[str] = frozenset(),
                uid: int = 1000, gids: frozenset[int] | set[int] = frozenset()
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
    guest.write("/etc/sudoers", "alice ALL=(ALL) /usr/bin/systemctl restart nginx, /bin/ls\n"
                "bob ALL=(nobody) ALL\ncarol ALL=(:wheel) ALL\ndave ALL=(ALL) !ALL\n")
    for user in ("alice", "bob", "carol", "dave"):
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


def test_grants_all_reads_tags_and_runas_carry_over() -> None:
    assert grants_all("ALL = (root) NOPASSWD: /bin/ls, ALL", {})
    assert not grants_all("ALL = (nobody) /bin/ls, ALL", {})
    assert grants_all("ALL = ALL", {})

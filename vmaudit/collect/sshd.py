"""sshd's effective global settings as the daemon would read them at boot.

Reads ``/etc/ssh/sshd_config`` in order, following ``Include`` (globs, relative paths under
``/etc/ssh``, matches in sorted order, depth limit 16 as in OpenSSH). The first value of a
keyword wins; keywords and the values we check are case-insensitive. ``Match`` blocks are
connection-specific and do not change the global value (``sshd -T`` without ``-C``); a Match
opened in an included file ends with that file. Unset keywords take OpenSSH's built-in
default for the packaged version.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from vmaudit.guest.base import GuestFS, is_file, read_lines, safe_path
from vmaudit.models import Package, SshFacts

from .common import guest_glob, packages_by_name

CONFIG_PATH = "/etc/ssh/sshd_config"
MAX_DEPTH = 16  # OpenSSH's SERVCONF_MAX_DEPTH
SSHD_BINARIES = ("/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd")
SSHD_PACKAGES = ("openssh-server", "openssh")
ROOT_LOGIN = {
    "yes": "yes",
    "no": "no",
    "prohibit-password": "prohibit-password",
    "without-password": "prohibit-password",  # the pre-7.0 name of the same setting
    "forced-commands-only": "forced-commands-only",
}
BOOLEAN = {"yes": True, "no": False}
DEFAULT_KEYS_FILES = (".ssh/authorized_keys", ".ssh/authorized_keys2")


@dataclass(frozen=True)
class SshdConfig:
    """The global settings the collectors need, defaults applied."""

    installed: bool
    permit_root_login: str
    password_authentication: bool
    use_pam: bool
    authorized_keys_files: tuple[str, ...]  # as written: %h, %u, %U tokens, relative to home

    def facts(self) -> SshFacts:
        if not self.installed:
            return SshFacts(installed=False, permit_root_login=None, password_authentication=None)
        return SshFacts(True, self.permit_root_login, self.password_authentication)


@dataclass
class _Reader:
    fs: GuestFS
    warnings: list[str]
    values: dict[str, list[str]] = field(default_factory=dict)
    stack: list[str] = field(default_factory=list)

    def read(self, path: str) -> None:
        if path in self.stack or len(self.stack) >= MAX_DEPTH:
            self.warnings.append(f"{safe_path(path)}: sshd Include loop or too deep, skipped")
            return
        lines = read_lines(self.fs, path, self.warnings)
        if lines is None:
            return
        self.stack.append(path)
        try:
            in_match = False
            for line in lines:
                words = _split(line)
                if not words:
                    continue
                keyword = words[0].lower()
                if keyword == "match":
                    in_match = True
                elif in_match:
                    continue
                elif keyword == "include":
                    for pattern in words[1:]:
                        if not pattern.startswith("/"):
                            pattern = "/etc/ssh/" + pattern
                        for included in guest_glob(self.fs, pattern, self.warnings):
                            self.read(included)
                else:
                    self.values.setdefault(keyword, words[1:])
        finally:
            self.stack.pop()


def _split(line: str) -> list[str]:
    """``Keyword value...`` or ``Keyword=value``, quotes honoured, ``#`` comments dropped."""
    line = line.strip()
    if not line or line.startswith("#"):
        return []
    match = re.match(r"^([^\s=]+)\s*(?:=\s*|\s+|$)(.*)$", line)
    if match is None:
        return []
    try:
        rest = shlex.split(match.group(2), comments=True)
    except ValueError:
        rest = match.group(2).split()
    return [match.group(1), *rest]


def _openssh_version(packages: dict[str, Package]) -> tuple[int, int] | None:
    for name in SSHD_PACKAGES:
        package = packages.get(name)
        if package is None:
            continue
        upstream = package.version.split(":", 1)[-1]
        match = re.match(r"(\d+)\.(\d+)", upstream)
        if match:
            return int(match.group(1)), int(match.group(2))
    return None


def collect_sshd(fs: GuestFS, packages: list[Package], warnings: list[str]) -> SshdConfig:
    """sshd's effective global PermitRootLogin, PasswordAuthentication, UsePAM and keys files."""
    by_name = packages_by_name(packages)
    installed = any(name in by_name for name in SSHD_PACKAGES) or any(
        is_file(fs, path) for path in SSHD_BINARIES
    )
    reader = _Reader(fs, warnings)
    reader.read(CONFIG_PATH)

    version = _openssh_version(by_name)
    # OpenSSH 7.0 changed the default from "yes"; an unknown version is taken as current.
    permit_root_login = "yes" if version is not None and version < (7, 0) else "prohibit-password"
    raw = reader.values.get("permitrootlogin")
    if raw:
        value = ROOT_LOGIN.get(raw[0].lower())
        if value is None:
            warnings.append(
                f"sshd: PermitRootLogin {safe_path(raw[0])!r} is invalid (sshd would not "
                "start); the default is reported"
            )
        else:
            permit_root_login = value

    password_authentication = _boolean(reader.values, "passwordauthentication", True, warnings)
    use_pam = _boolean(reader.values, "usepam", False, warnings)
    keys_files = tuple(reader.values.get("authorizedkeysfile") or DEFAULT_KEYS_FILES)
    if keys_files and keys_files[0].lower() == "none":
        keys_files = ()
    return SshdConfig(installed, permit_root_login, password_authentication, use_pam, keys_files)


def _boolean(
    values: dict[str, list[str]], keyword: str, default: bool, warnings: list[str]
) -> bool:
    raw = values.get(keyword)
    if not raw:
        return default
    value = BOOLEAN.get(raw[0].lower())
    if value is None:
        warnings.append(
            f"sshd: {keyword} {safe_path(raw[0])!r} is invalid; the default is reported"
        )
        return default
    return value

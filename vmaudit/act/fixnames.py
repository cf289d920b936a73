"""The names of the offline fixes and the rules each one answers (light: the hook reads it)."""

from __future__ import annotations

from typing import Literal

Fix = Literal["lock-revoked", "remove-keys", "revoke-sudo", "ssh-root-login"]
FIXES: tuple[Fix, ...] = ("lock-revoked", "remove-keys", "revoke-sudo", "ssh-root-login")
REVOKED_RULES = ("account.revoked-active", "account.revoked-present")
# The rules whose findings a fix can clear (vmaudit.act.fixes decides case by case whether
# it does: a sudo grant in /etc/sudoers itself, say, is left alone).
ANSWERS: dict[Fix, tuple[str, ...]] = {
    "lock-revoked": REVOKED_RULES,
    "remove-keys": ("ssh.authorized-key",),
    "revoke-sudo": ("account.unapproved-admin",),
    "ssh-root-login": ("ssh.root-login",),
}

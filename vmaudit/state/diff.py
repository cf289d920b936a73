"""What changed in a guest between two audits: ``diff_facts(old, new)``.

The result is plain JSON-ready data stored with a ``modified`` event and shown by
``vmaudit history``. Only sections that changed are present; identical facts give ``{}``.
Package versions are ordered with the guest's own algorithm (``baseline.versions``), so an
upgrade is never reported as a downgrade.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from vmaudit.models import Facts, FirewallBackend, Package, User
from vmaudit.versions import comparator_for

_OS_FIELDS = ("type", "distro", "version", "product", "hostname", "arch", "build", "edition")
_SSH_FIELDS = ("installed", "permit_root_login", "password_authentication")
_BACKEND_FIELDS = ("installed", "enabled", "default_inbound")
_USER_FIELDS = (
    "uid",
    "gid",
    "shell",
    "home",
    "password",
    "max_days",
    "expires",
    "can_login",
    "groups",
    "authorized_keys",
    "disabled",
)
_DORMANCY_FIELDS = ("last_boot", "last_login", "last_update")


def _change(old: Any, new: Any) -> dict[str, Any]:
    return {
        "old": list(old) if isinstance(old, tuple) else old,
        "new": list(new) if isinstance(new, tuple) else new,
    }


def _field_changes(old: object, new: object, names: tuple[str, ...]) -> dict[str, Any]:
    return {
        name: _change(getattr(old, name), getattr(new, name))
        for name in names
        if getattr(old, name) != getattr(new, name)
    }


def _versions_by_key(packages: tuple[Package, ...]) -> dict[tuple[str, str | None], set[str]]:
    grouped: dict[tuple[str, str | None], set[str]] = defaultdict(set)
    for package in packages:
        grouped[(package.name, package.arch)].add(package.version)
    return grouped


def _package_changes(old: Facts, new: Facts) -> dict[str, Any]:
    compare = comparator_for(new)
    old_versions = _versions_by_key(old.packages)
    new_versions = _versions_by_key(new.packages)
    added: list[dict[str, Any]] = []
    removed: list[dict[str, Any]] = []
    upgraded: list[dict[str, Any]] = []
    downgraded: list[dict[str, Any]] = []
    for key in sorted(old_versions.keys() | new_versions.keys(), key=lambda k: (k[0], k[1] or "")):
        name, arch = key
        before, after = old_versions.get(key, set()), new_versions.get(key, set())
        if before == after:
            continue
        if len(before) == 1 and len(after) == 1:
            (old_version,), (new_version,) = before, after
            entry = {"name": name, "arch": arch, "old": old_version, "new": new_version}
            (upgraded if compare(old_version, new_version) < 0 else downgraded).append(entry)
            continue
        # Several versions of one name side by side (kernels): report each version that
        # came or went rather than guess which replaced which.
        added.extend({"name": name, "arch": arch, "version": v} for v in sorted(after - before))
        removed.extend({"name": name, "arch": arch, "version": v} for v in sorted(before - after))
    sections = {"added": added, "removed": removed, "upgraded": upgraded, "downgraded": downgraded}
    return {name: items for name, items in sections.items() if items}


def _user_summary(user: User) -> dict[str, Any]:
    return {
        "name": user.name,
        "uid": user.uid,
        "admin": user.admin,
        "admin_via": list(user.admin_via),
        "can_login": user.can_login,
    }


def _user_changes(old: Facts, new: Facts) -> dict[str, Any]:
    old_users = {u.name: u for u in old.users}
    new_users = {u.name: u for u in new.users}
    added = [_user_summary(new_users[n]) for n in sorted(new_users.keys() - old_users.keys())]
    removed = [_user_summary(old_users[n]) for n in sorted(old_users.keys() - new_users.keys())]
    granted: list[dict[str, Any]] = []
    revoked: list[dict[str, Any]] = []
    via_changed: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for name in sorted(old_users.keys() & new_users.keys()):
        before, after = old_users[name], new_users[name]
        if before.admin != after.admin:
            entry = {"name": name, "admin_via": list(after.admin_via or before.admin_via)}
            (granted if after.admin else revoked).append(entry)
        elif before.admin_via != after.admin_via:
            via_changed.append({"name": name, **_change(before.admin_via, after.admin_via)})
        fields = _field_changes(before, after, _USER_FIELDS)
        if fields:
            changed.append({"name": name, "fields": fields})
    admin = {"granted": granted, "revoked": revoked, "via_changed": via_changed}
    result: dict[str, Any] = {"added": added, "removed": removed, "changed": changed}
    result = {key: items for key, items in result.items() if items}
    admin = {key: items for key, items in admin.items() if items}
    if admin:
        result["admin"] = admin
    return result


def _admins(facts: Facts) -> set[str]:
    return {u.name for u in facts.users if u.admin}


def _backend_changes(
    old: tuple[FirewallBackend, ...], new: tuple[FirewallBackend, ...]
) -> dict[str, Any]:
    old_by_name = {b.name: b for b in old}
    new_by_name = {b.name: b for b in new}
    changed = []
    for name in sorted(old_by_name.keys() & new_by_name.keys()):
        fields = _field_changes(old_by_name[name], new_by_name[name], _BACKEND_FIELDS)
        if fields:
            changed.append({"name": name, "fields": fields})
    result = {
        "added": sorted(new_by_name.keys() - old_by_name.keys()),
        "removed": sorted(old_by_name.keys() - new_by_name.keys()),
        "changed": changed,
    }
    return {key: items for key, items in result.items() if items}


def _firewall_changes(old: Facts, new: Facts) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if old.firewall.enabled != new.firewall.enabled:
        result["enabled"] = _change(old.firewall.enabled, new.firewall.enabled)
    backends = _backend_changes(old.firewall.backends, new.firewall.backends)
    if backends:
        result["backends"] = backends
    return result


def _dormancy_changes(old: Facts, new: Facts) -> dict[str, Any]:
    result = _field_changes(old.dormancy, new.dormancy, _DORMANCY_FIELDS)
    if "last_boot" in result and new.dormancy.last_boot is not None:
        # The guest recorded a boot we had not seen: the dormant VM was powered on.
        result["powered_on"] = True
    return result


def _hotfix_changes(old: Facts, new: Facts) -> dict[str, Any]:
    before = {h.id for h in old.hotfixes}
    after = {h.id for h in new.hotfixes}
    result = {"added": sorted(after - before), "removed": sorted(before - after)}
    return {key: items for key, items in result.items() if items}


def diff_facts(old: Facts, new: Facts) -> dict[str, Any]:
    """The guest-visible changes from ``old`` to ``new``; ``{}`` when nothing changed.

    Sections: ``os`` (field: {old, new}), ``packages`` (added, removed, upgraded,
    downgraded), ``hotfixes`` (added, removed), ``users`` (added, removed, changed, and
    ``admin``: granted, revoked, via_changed), ``admins`` (the admin names before and
    after, when they differ), ``ssh`` and ``firewall`` (enabled, backends), ``dormancy``
    (last_boot, last_login, last_update, and ``powered_on``). ``days_idle`` is left out: it
    grows every day without the guest changing.
    """
    sections: dict[str, Any] = {
        "os": _field_changes(old.os, new.os, _OS_FIELDS),
        "packages": _package_changes(old, new),
        "hotfixes": _hotfix_changes(old, new),
        "users": _user_changes(old, new),
        "ssh": _field_changes(old.ssh, new.ssh, _SSH_FIELDS),
        "firewall": _firewall_changes(old, new),
        "dormancy": _dormancy_changes(old, new),
    }
    if _admins(old) != _admins(new):
        sections["admins"] = _change(sorted(_admins(old)), sorted(_admins(new)))
    return {name: section for name, section in sections.items() if section}

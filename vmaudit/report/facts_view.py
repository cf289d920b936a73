"""``vmaudit inspect --format table``: one guest's facts as readable sections of text.

Takes the ``vmaudit.facts/v1`` dict and returns text; every guest string is made
terminal-safe before it is shown.
"""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from vmaudit.report.common import terminal_safe


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value) or "-"
    return terminal_safe(str(value))


def _section(title: str, rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return f"{title}: none"
    table = [[_cell(row.get(column)) for column in columns] for row in rows]
    return f"{title} ({len(rows)}):\n" + tabulate(table, headers=columns, tablefmt="simple")


def render_facts(facts: dict[str, Any], color: bool = False) -> str:
    """Plain-text sections: image, OS, users, SSH, firewall, dormancy, packages, warnings."""
    del color  # plain text reads the same on a terminal and in a file
    image, os_info = facts.get("image", {}), facts.get("os", {})
    parts = [
        _section("Image", [image], ["path", "format", "size_bytes", "mtime", "vm"]),
        _section(
            "OS",
            [os_info],
            ["type", "distro", "version", "product", "hostname", "arch", "build", "edition"],
        ),
        _section(
            "Users",
            facts.get("users", []),
            [
                "name",
                "uid",
                "password",
                "can_login",
                "admin_via",
                "authorized_keys",
                "last_change",
                "expires",
            ],
        ),
        _section(
            "SSH",
            [facts.get("ssh", {})],
            ["installed", "permit_root_login", "password_authentication"],
        ),
        _section(
            "Firewall",
            facts.get("firewall", {}).get("backends", []),
            ["name", "installed", "enabled", "default_inbound"],
        ),
        _section(
            "Dormancy",
            [facts.get("dormancy", {})],
            ["last_boot", "last_login", "last_update", "days_idle"],
        ),
        _section("Hotfixes", facts.get("hotfixes", []), ["id", "installed_at"]),
        _section("Packages", facts.get("packages", []), ["name", "version", "arch"]),
    ]
    warnings = facts.get("warnings", [])
    parts.append(
        "Warnings:\n" + "\n".join(f"  {terminal_safe(w)}" for w in warnings)
        if warnings
        else "Warnings: none"
    )
    return "\n\n".join(parts)

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


POWER_ON_COLUMNS = ["what", "name", "source", "user", "active"]


def power_on_rows(linux: dict[str, Any] | None) -> list[dict[str, Any]]:
    """What runs at power-on of a Linux guest (the ``config.linux`` facts): services at
    boot, then the @reboot lines, persistent timers, rc.local and unpackaged units, with
    what is configured but would not run marked not active, and why."""
    if not linux:
        return []
    rows: list[dict[str, Any]] = []
    source = "boot transaction" if linux.get("systemd") else "unit links (no boot target)"
    rows += [
        {"what": "systemd unit", "name": u, "source": source, "active": "yes"}
        for u in linux.get("boot_units", [])
    ]
    rows += [
        {"what": "SysV rc link", "name": s, "source": "/etc/rc[2-5].d", "active": "yes"}
        for s in linux.get("sysv_services", [])
    ]
    rows += [
        {"what": "inetd service", "name": s, "source": "inetd.conf/xinetd.d", "active": "yes"}
        for s in linux.get("inetd_services", [])
    ]
    rows += [
        {
            "what": "inetd service",
            "name": s,
            "source": "inetd.conf/xinetd.d",
            "active": "no: no inetd or xinetd installed",
        }
        for s in linux.get("inetd_not_active", [])
    ]
    for entry in linux.get("startup", []):
        reason = entry.get("not_active")
        rows.append(
            {**entry, "what": entry.get("kind"), "active": f"no: {reason}" if reason else "yes"}
        )
    return rows


def render_facts(facts: dict[str, Any], color: bool = False) -> str:
    """Plain-text sections: image, OS, users, SSH, firewall, dormancy, what runs at
    power-on (Linux), hotfixes, packages, warnings."""
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
        _section(
            "What runs at power-on",
            power_on_rows((facts.get("config") or {}).get("linux")),
            POWER_ON_COLUMNS,
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

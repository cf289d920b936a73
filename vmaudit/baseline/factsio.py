"""Facts back from JSON: ``vmaudit.facts/v1`` dicts into ``Facts``, checked by the schema.

The inverse of ``Facts.to_dict()``: rule fixtures, the state database and saved
``vmaudit inspect`` output come back through here. Keys the spec marks as
Windows- or Linux-only (``rid``, ``build``, ``publisher``...) may be absent.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from vmaudit.models import (
    Coverage,
    Dormancy,
    Facts,
    FirewallBackend,
    FirewallFacts,
    Hotfix,
    ImageInfo,
    OsInfo,
    Package,
    SshFacts,
    User,
)


class FactsFormatError(ValueError):
    """A document that is not valid ``vmaudit.facts/v1``; the message says where."""


@cache
def load_schema(name: str) -> dict[str, Any]:
    """One of vmaudit's JSON Schemas (``facts`` or ``report``) as a dict."""
    text = (resources.files("vmaudit") / "schemas" / f"{name}.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_facts_dict(data: Any) -> None:
    """Raise ``FactsFormatError`` naming the first wrong key when ``data`` is not facts."""
    validator = jsonschema.Draft202012Validator(load_schema("facts"))
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(top)"
        raise FactsFormatError(f"facts: {where}: {error.message}")


def facts_from_dict(data: dict[str, Any]) -> Facts:
    """``Facts`` from a ``vmaudit.facts/v1`` dict; round-trips ``Facts.to_dict()``."""
    validate_facts_dict(data)
    image = data["image"]
    os_info = data["os"]
    return Facts(
        image=ImageInfo(
            image["path"],
            image["format"],
            image["size_bytes"],
            image["mtime"],
            image["sha256_head"],
            image["vm"],
            tuple(image["disks"]),
        ),
        os=OsInfo(
            os_info["type"],
            os_info["distro"],
            os_info["version"],
            os_info["product"],
            os_info["hostname"],
            os_info["arch"],
            os_info["package_format"],
            os_info.get("build"),
            os_info.get("edition"),
        ),
        packages=tuple(
            Package(p["name"], p["version"], p.get("arch"), p.get("source"), p.get("publisher"))
            for p in data["packages"]
        ),
        hotfixes=tuple(Hotfix(h["id"], h["installed_at"]) for h in data["hotfixes"]),
        users=tuple(_user(u) for u in data["users"]),
        ssh=SshFacts(
            data["ssh"]["installed"],
            data["ssh"]["permit_root_login"],
            data["ssh"]["password_authentication"],
        ),
        firewall=FirewallFacts(
            data["firewall"]["enabled"],
            tuple(
                FirewallBackend(b["name"], b["installed"], b["enabled"], b["default_inbound"])
                for b in data["firewall"]["backends"]
            ),
        ),
        dormancy=Dormancy(
            data["dormancy"]["last_boot"],
            data["dormancy"]["last_login"],
            data["dormancy"]["last_update"],
            data["dormancy"]["days_idle"],
        ),
        warnings=tuple(data["warnings"]),
        coverage=tuple(
            Coverage(c["section"], c["status"], c["reason"]) for c in data.get("coverage", ())
        ),
    )


def _user(u: dict[str, Any]) -> User:
    return User(
        name=u["name"],
        uid=u["uid"],
        gid=u["gid"],
        shell=u["shell"],
        home=u["home"],
        password=u["password"],
        last_change=u["last_change"],
        max_days=u["max_days"],
        expires=u["expires"],
        can_login=u["can_login"],
        groups=tuple(u["groups"]),
        admin=u["admin"],
        admin_via=tuple(u["admin_via"]),
        authorized_keys=u["authorized_keys"],
        rid=u.get("rid"),
        disabled=u.get("disabled"),
        last_logon=u.get("last_logon"),
    )

"""Facts back from JSON: round trip of ``Facts.to_dict()`` and refusal of bad documents."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from vmaudit.baseline.factsio import FactsFormatError, facts_from_dict, load_schema
from vmaudit.models import (
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

RULE_FIXTURES = Path(__file__).parent / "rules"

FULL = Facts(
    image=ImageInfo(
        "/ds/a.qcow2",
        "qcow2",
        10,
        "2026-01-01T00:00:00Z",
        "ab",
        "vm-a",
        ("/ds/a.qcow2", "/ds/a-1.qcow2"),
    ),
    os=OsInfo(
        "windows",
        "windows",
        "10.0",
        "Windows Server 2019",
        "A\x1b[2J",
        "x86_64",
        None,
        "17763.3388",
        "ServerStandard",
    ),
    packages=(Package("7-Zip", "19.00", None, None, "Igor Pavlov"),),
    hotfixes=(Hotfix("KB5005112", "2021-08-20"),),
    users=(
        User(
            "Administrator",
            None,
            None,
            None,
            "C:\\Users\\Administrator",
            "set",
            "2026-01-01",
            None,
            None,
            True,
            ("Administrators",),
            True,
            ("group:Administrators",),
            0,
            500,
            False,
            "2026-02-01T00:00:00Z",
        ),
    ),
    ssh=SshFacts(True, "no", False),
    firewall=FirewallFacts(True, (FirewallBackend("Domain", True, True, "deny"),)),
    dormancy=Dormancy("2026-01-01T00:00:00Z", None, None, 3),
    warnings=("registry hive SAM unreadable",),
)


def test_to_dict_round_trips_through_json() -> None:
    text = json.dumps(FULL.to_dict())
    assert facts_from_dict(json.loads(text)) == FULL


def test_to_dict_is_valid_against_the_facts_schema() -> None:
    jsonschema.Draft202012Validator(load_schema("facts")).validate(FULL.to_dict())


def test_linux_facts_may_omit_windows_only_keys() -> None:
    data = FULL.to_dict()
    for key in ("build", "edition"):
        del data["os"][key]
    for key in ("rid", "disabled", "last_logon"):
        del data["users"][0][key]
    facts = facts_from_dict(data)
    assert facts.os.build is None and facts.users[0].rid is None


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d.pop("users"), "(top)"),
        (lambda d: d["os"].update(type="beos"), "os/type"),
        (lambda d: d["users"][0].update(password="hunter2"), "users/0/password"),
        (lambda d: d.update(schema="vmaudit.facts/v2"), "schema"),
        (lambda d: d["image"].update(extra=1), "image"),
    ],
)
def test_bad_documents_are_refused_with_their_place(change: object, where: str) -> None:
    data = FULL.to_dict()
    change(data)  # type: ignore[operator]
    with pytest.raises(FactsFormatError, match=re.escape(f"facts: {where}")):
        facts_from_dict(data)


def test_every_rule_fixture_round_trips() -> None:
    for path in sorted(RULE_FIXTURES.glob("*/*.json")):
        if path.name == "expected.json":
            continue
        data = json.loads(path.read_text("utf-8"))
        assert facts_from_dict(data).to_dict() == data, path

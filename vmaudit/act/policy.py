"""The power-on gate's policy file (``kind: GatePolicy``), validated like a baseline.

A policy is hostile input as much as a baseline is: it is read with the same bounded YAML
composer and the same typed schema walk, so an unknown key, a wrong type or a bad value is
a problem with file, line and key (exit 2), never a traceback. Paths in it are relative to
the file. A missing *default* policy file means the defaults below; a missing file named
on the command line is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmaudit.act import DEFAULT_POLICY
from vmaudit.act.fixnames import FIXES
from vmaudit.baseline.inventory import Inventory, load_inventory
from vmaudit.baseline.loader import MAX_FILE_BYTES, load_baseline, read_text_file
from vmaudit.baseline.model import Baseline
from vmaudit.baseline.schema import (
    API_VERSION,
    Const,
    Enum,
    FilePath,
    Int,
    Invalid,
    Key,
    ListOf,
    Problem,
    Section,
    Spec,
    Str,
    Walk,
    read_document,
)
from vmaudit.errors import ConfigError
from vmaudit.judge.verdict import FAIL_ON_CHOICES

DEFAULT_DATASTORES = ("/var/lib/libvirt/images",)
ON_ERROR = ("refuse", "allow")


@dataclass(frozen=True)
class _RelativePath(Spec):
    """A file path relative to the policy (it need not exist yet); with ``urls``, a
    ``postgresql://`` URL is taken as it is."""

    urls: bool = False

    @property
    def describe(self) -> str:  # type: ignore[override]
        path = "path (relative to this file)"
        return f"{path} or postgresql:// URL" if self.urls else path

    def check(self, node: Any, walk: Walk, key: str) -> Any:
        value = Str().check(node, walk, key)
        if isinstance(value, Invalid) or (self.urls and "://" in value):
            return value
        return str((walk.base_dir / value).resolve())


@dataclass(frozen=True)
class _AbsoluteDir(Spec):
    describe: str = "absolute folder path"

    def check(self, node: Any, walk: Walk, key: str) -> Any:
        value = Str().check(node, walk, key)
        if isinstance(value, Invalid):
            return value
        if not os.path.isabs(value) or "\0" in value:
            return walk.problem(node, key, f"{value!r} is not an absolute path")
        return os.path.normpath(value)


GATE_POLICY = Section(
    {
        "apiVersion": Key(Const(API_VERSION), "Schema version of the file.", required=True),
        "kind": Key(Const("GatePolicy"), "What the file is.", required=True),
        "baselines": Key(
            ListOf(Str(), single_ok=True),
            "Built-in baseline names or baseline files (relative to this file); default `default`.",
        ),
        "inventory": Key(FilePath(), "Inventory file mapping images to applications."),
        "fail_on": Key(
            Enum(FAIL_ON_CHOICES), "Refuse a start on a finding at or above this severity."
        ),
        "timeout": Key(Int(1), "Seconds an image not known unchanged may take to be audited."),
        "on_error": Key(
            Enum(ON_ERROR), "What an image that cannot be audited in time gets (default refuse)."
        ),
        "state": Key(_RelativePath(urls=True), "The state database shared with `vmaudit scan`."),
        "feeds_db": Key(
            _RelativePath(), "The vulnerability feeds database `vuln.cve` is judged against."
        ),
        "datastores": Key(
            ListOf(_AbsoluteDir(), single_ok=True),
            "Folders a disk must lie in; any other disk is an error (on_error).",
        ),
        "exempt": Key(
            ListOf(Str(), single_ok=True), "Domain names or globs that always pass (recorded)."
        ),
        "remediate": Key(
            ListOf(Enum(FIXES), single_ok=True),
            "Offline fixes a refusal may point to (`vmaudit remediate --fix`).",
        ),
    }
)


@dataclass(frozen=True)
class GatePolicy:
    """What the gate decides by; ``source`` is the file it came from (None: defaults)."""

    source: str | None = None
    baselines: tuple[str, ...] = ("default",)
    inventory: str | None = None
    fail_on: str = "critical"
    timeout: int = 120
    on_error: str = "refuse"
    state: str | None = None  # None: vmaudit's default state database
    feeds_db: str | None = None  # None: vmaudit's default feeds database
    datastores: tuple[str, ...] = DEFAULT_DATASTORES
    exempt: tuple[str, ...] = ()
    remediate: tuple[str, ...] = ()  # fixes a refusal names the remediate command for
    base_dir: str = field(default=".", compare=False)  # baselines named as files are found here

    def load_baselines(self) -> tuple[Baseline, ...]:
        """The policy's baselines; ``ConfigError`` naming every problem."""
        return tuple(load_baseline(ref, Path(self.base_dir)) for ref in self.baselines)

    def load_inventory(self) -> Inventory | None:
        return load_inventory(self.inventory) if self.inventory else None


def validate_policy(path: str | Path) -> tuple[GatePolicy, list[Problem]]:
    """The policy of a file and every problem found in it (or in the baselines it names)."""
    display = str(path)
    problems: list[Problem] = []
    text = read_text_file(Path(path), display, MAX_FILE_BYTES, problems)
    if text is None:
        return GatePolicy(source=display), problems
    base = Path(path).resolve().parent
    walk = Walk(display, base)
    node = read_document(text, walk)
    document = GATE_POLICY.check(node, walk, "") if node is not None else {}
    problems.extend(walk.problems)
    if not isinstance(document, dict):
        document = {}
    policy = GatePolicy(
        source=display,
        baselines=tuple(document.get("baselines", ("default",))),
        inventory=document.get("inventory"),
        fail_on=document.get("fail_on", "critical"),
        timeout=int(document.get("timeout", 120)),
        on_error=document.get("on_error", "refuse"),
        state=document.get("state"),
        feeds_db=document.get("feeds_db"),
        datastores=tuple(document.get("datastores", DEFAULT_DATASTORES)),
        exempt=tuple(document.get("exempt", ())),
        remediate=tuple(document.get("remediate", ())),
        base_dir=str(base),
    )
    if not problems:
        for position, ref in enumerate(policy.baselines):
            try:
                load_baseline(ref, base)
            except ConfigError as exc:
                line = _item_line(node, "baselines", position)
                problems.append(Problem(display, line, "baselines", exc.message))
    return policy, problems


def _item_line(node: Any, name: str, position: int) -> int | None:
    for key_node, value_node in getattr(node, "value", []):
        if getattr(key_node, "value", None) != name:
            continue
        items = value_node.value if isinstance(value_node.value, list) else [value_node]
        target = items[position] if position < len(items) else value_node
        return int(target.start_mark.line) + 1
    return None


def load_policy(path: str | None) -> GatePolicy:
    """The policy at ``path`` (default ``/etc/vmaudit/gate.yaml``, built-in defaults when that
    file does not exist); ``ConfigError`` listing every problem, one a line."""
    if path is None:
        if not os.path.lexists(DEFAULT_POLICY):
            return GatePolicy()
        path = DEFAULT_POLICY
    policy, problems = validate_policy(path)
    if problems:
        raise ConfigError("\n".join(str(problem) for problem in problems))
    return policy

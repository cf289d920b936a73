"""Reading baselines: YAML with line numbers, validation, ``extends`` and the resolved value.

Built-in baselines live in the repository's ``baselines/`` folder and are named without
extension; anything with a path separator or a ``.yaml``/``.yml`` suffix is a file,
relative to the file that names it. Parents are merged first and later wins: mappings
merge key by key, lists and scalars are replaced. Every problem of every file read is
collected and reported as ``file:line: key: message``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

import vmaudit
from vmaudit.baseline.model import Baseline, Match
from vmaudit.baseline.schema import BASELINE, Problem, Walk, read_document
from vmaudit.errors import ConfigError

BUILTIN_DIR = Path(vmaudit.__file__).resolve().parent.parent / "baselines"
MAX_FILE_BYTES = 4 * 1024 * 1024  # a baseline or inventory; far more than any real one
MAX_REVOKED_BYTES = 16 * 1024 * 1024
MAX_EXTENDS_DEPTH = 32  # parents of parents; each level is a recursion of the loader
_HEADER_KEYS = ("apiVersion", "kind", "metadata", "extends")


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or os.sep in ref or ref.endswith((".yaml", ".yml"))


def _builtin_path(name: str) -> Path | None:
    for suffix in (".yaml", ".yml"):
        candidate = BUILTIN_DIR / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def builtin_names() -> list[str]:
    """Names of the built-in baselines, sorted."""
    if not BUILTIN_DIR.is_dir():
        return []
    return sorted(p.stem for p in BUILTIN_DIR.iterdir() if p.suffix in (".yaml", ".yml"))


def read_text_file(path: Path, display: str, cap: int, problems: list[Problem]) -> str | None:
    """A small UTF-8 text file, or None with a problem recorded."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(cap + 1)
    except OSError as exc:
        problems.append(Problem(display, None, "", f"cannot read: {exc.strerror or exc}"))
        return None
    if len(data) > cap:
        problems.append(Problem(display, None, "", f"larger than {cap} bytes"))
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problems.append(Problem(display, line, "", "not valid UTF-8"))
        return None


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``: mappings merge key by key, everything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _child(node: yaml.Node | None, name: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == name:
            found: yaml.Node = value_node
            return found
    return None


class _Resolver:
    """Loads files and their parents once each, collecting every problem."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self._loaded: dict[Path, tuple[dict[str, Any], dict[str, Any], list[str]]] = {}

    def load(
        self, path: Path, display: str, stack: tuple[Path, ...] = ()
    ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        """(metadata, merged settings, files merged parents first) of one file."""
        real = path.resolve()
        if real in self._loaded:
            return self._loaded[real]
        text = read_text_file(path, display, MAX_FILE_BYTES, self.problems)
        if text is None:
            return {}, {}, [display]
        walk = Walk(display, path.parent)
        node = read_document(text, walk)
        document = BASELINE.check(node, walk, "") if node is not None else {}
        self.problems.extend(walk.problems)
        if not isinstance(document, dict):
            document = {}
        settings: dict[str, Any] = {}
        files: list[str] = []
        extends_node = _child(node, "extends")
        items = (
            extends_node.value
            if isinstance(extends_node, yaml.SequenceNode)
            else [extends_node]
            if extends_node is not None
            else []
        )
        for position, item in enumerate(items):
            ref = item.value if isinstance(item, yaml.ScalarNode) else None
            if not isinstance(ref, str) or not ref.strip():
                continue  # the schema walk has reported it
            key = (
                f"extends[{position}]" if isinstance(extends_node, yaml.SequenceNode) else "extends"
            )
            target = self._find(ref, path.parent, display, item, key)
            if target is None:
                continue
            target_path, target_display = target
            if target_path.resolve() in (*stack, real):
                self.problems.append(
                    Problem(
                        display,
                        item.start_mark.line + 1,
                        key,
                        f"cycle: {target_display} extends this file",
                    )
                )
                continue
            if len(stack) + 1 >= MAX_EXTENDS_DEPTH:
                self.problems.append(
                    Problem(
                        display,
                        item.start_mark.line + 1,
                        key,
                        f"extends chain deeper than {MAX_EXTENDS_DEPTH} files",
                    )
                )
                continue
            _, parent_settings, parent_files = self.load(
                target_path, target_display, (*stack, real)
            )
            settings = deep_merge(settings, parent_settings)
            files.extend(f for f in parent_files if f not in files)
        own = {k: v for k, v in document.items() if k not in _HEADER_KEYS}
        settings = deep_merge(settings, own)
        files.append(display)
        result = (document.get("metadata", {}), settings, files)
        self._loaded[real] = result
        return result

    def _find(
        self, ref: str, base_dir: Path, display: str, node: yaml.Node, key: str
    ) -> tuple[Path, str] | None:
        line = node.start_mark.line + 1
        if _looks_like_path(ref):
            candidate = base_dir / ref
            if candidate.is_file():
                return candidate, os.path.normpath(candidate)
            self.problems.append(
                Problem(display, line, key, f"file not found: {os.path.normpath(candidate)}")
            )
            return None
        builtin = _builtin_path(ref)
        if builtin is not None:
            return builtin, str(builtin)
        self.problems.append(
            Problem(
                display,
                line,
                key,
                f"unknown built-in baseline {ref!r} (built-in: {', '.join(builtin_names())})",
            )
        )
        return None

    def build(self, path: Path, display: str) -> Baseline:
        metadata, settings, files = self.load(path, display)
        accounts = settings.get("accounts", {})
        revoked = list(accounts.get("revoked", []))
        if "revoked_file" in accounts:
            revoked.extend(
                n for n in self._revoked_names(Path(accounts["revoked_file"])) if n not in revoked
            )
        match = settings.get("match", {})
        patches = settings.get("patches", {})
        windows = patches.get("windows", {})
        packages = settings.get("packages", {})
        ssh = settings.get("ssh", {})
        firewall = settings.get("firewall", {})
        return Baseline(
            name=metadata.get("name", path.stem),
            description=metadata.get("description", ""),
            origin=display,
            match=Match(match.get("os"), tuple(match.get("distro", ())), match.get("version")),
            max_days_idle=settings.get("dormancy", {}).get("max_days_idle"),
            minimum_versions=dict(patches.get("minimum_versions", {})),
            repository_index=tuple(patches.get("repository_index", ())),
            max_days_since_update=patches.get("max_days_since_update"),
            hotfixes_required=tuple(windows.get("hotfixes_required", ())),
            minimum_build=windows.get("minimum_build"),
            forbidden_packages=tuple(packages.get("forbidden", ())),
            required_packages=tuple(packages.get("required", ())),
            revoked=tuple(revoked),
            allowed_admins=tuple(accounts.get("allowed_admins", ())),
            forbid_empty_password=accounts.get("forbid_empty_password", False),
            forbid_extra_uid0=accounts.get("forbid_extra_uid0", False),
            max_password_age_days=accounts.get("max_password_age_days"),
            forbid_authorized_keys=tuple(accounts.get("forbid_authorized_keys", ())),
            permit_root_login=ssh.get("permit_root_login"),
            password_authentication=ssh.get("password_authentication"),
            firewall_required=firewall.get("required", False),
            default_inbound=firewall.get("default_inbound"),
            severity=dict(settings.get("severity", {})),
            extends=tuple(files[:-1]),
            settings=settings,
        )

    def _revoked_names(self, path: Path) -> list[str]:
        text = read_text_file(path, str(path), MAX_REVOKED_BYTES, self.problems)
        if text is None:
            return []
        names = []
        for line in text.splitlines():
            name = line.split("#", 1)[0].strip()
            if name:
                names.append(name)
        return names


def _locate(ref: str, base_dir: Path | None) -> tuple[Path, str]:
    base = base_dir if base_dir is not None else Path.cwd()
    if not _looks_like_path(ref):
        builtin = _builtin_path(ref)
        if builtin is not None:
            return builtin, str(builtin)
        if not (base / ref).is_file():
            raise ConfigError(
                f"unknown baseline {ref!r}: neither a built-in "
                f"({', '.join(builtin_names())}) nor a file"
            )
    candidate = Path(ref) if Path(ref).is_absolute() else base / ref
    if not candidate.is_file():
        raise ConfigError(f"{ref}: baseline file not found")
    return candidate, ref if base_dir is None else os.path.normpath(candidate)


def load_baseline(ref: str, base_dir: Path | None = None) -> Baseline:
    """A built-in name or a file (relative to ``base_dir``, default the working directory).

    Raises ``ConfigError`` whose message lists every problem, one ``file:line: key:
    message`` a line.
    """
    path, display = _locate(ref, base_dir)
    resolver = _Resolver()
    baseline = resolver.build(path, display)
    if resolver.problems:
        raise ConfigError("\n".join(str(problem) for problem in resolver.problems))
    return baseline


def validate_files(paths: Iterable[str | Path]) -> list[Problem]:
    """Every problem of the given baseline files and of the files they extend."""
    problems: list[Problem] = []
    for path in paths:
        resolver = _Resolver()
        resolver.build(Path(path), str(path))
        problems.extend(p for p in resolver.problems if p not in problems)
    return problems


def builtin_baselines() -> list[tuple[str, str]]:
    """(name, description) of each built-in baseline."""
    return [(name, load_baseline(name).description) for name in builtin_names()]


def dump_resolved(baseline: Baseline) -> str:
    """The fully resolved baseline as YAML that loads back to the same checks."""
    document: dict[str, Any] = {
        "apiVersion": "vmaudit/v1",
        "kind": "Baseline",
        "metadata": {"name": baseline.name},
    }
    if baseline.description:
        document["metadata"]["description"] = baseline.description
    document.update(baseline.settings)
    sources = ", ".join((*baseline.extends, baseline.origin))
    header = f"# resolved from: {sources}\n"
    return header + yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True, default_flow_style=False
    )

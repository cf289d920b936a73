"""The inventory: which business application, owner and criticality each image belongs to.

Validated like a baseline (file, line, key). An image is matched by glob on its path
relative to the scanned root, or by its VM name (``images:``), or by what its hypervisor
says of it (``match:``: the VM's name, source, a Proxmox tag, the libvirt title and
description / Proxmox description / vmx annotation, libvirt ``<metadata>`` leaves, whether
it is a template); the first application that matches wins. All keys of one ``match`` entry
must hold, any one entry suffices; values are case-sensitive globs.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path, PurePath

from vmaudit.baseline.loader import MAX_FILE_BYTES, read_text_file
from vmaudit.baseline.schema import INVENTORY, Problem, Walk, read_document
from vmaudit.errors import ConfigError
from vmaudit.models import Business, ImageRef

UNMAPPED = Business(application=None, owner=None, criticality="medium")


@dataclass(frozen=True)
class Match:
    """One ``match:`` entry: every key given must hold of the VM (globs on text)."""

    name: str | None = None
    source: str | None = None
    tag: str | None = None
    notes: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    template: bool | None = None

    def holds(self, image: ImageRef) -> bool:
        def glob(value: str | None, pattern: str | None) -> bool:
            return pattern is None or (value is not None and fnmatch.fnmatchcase(value, pattern))

        return (
            glob(image.vm, self.name)
            and (self.source is None or image.source == self.source)
            and (self.tag is None or any(fnmatch.fnmatchcase(t, self.tag) for t in image.tags))
            and glob(image.notes, self.notes)
            and all(
                any(k == key and fnmatch.fnmatchcase(v, pattern) for k, v in image.labels)
                for key, pattern in self.metadata
            )
            and (self.template is None or image.template == self.template)
        )


@dataclass(frozen=True)
class Application:
    name: str
    owner: str | None
    criticality: str
    images: tuple[str, ...]
    matches: tuple[Match, ...] = ()


@dataclass(frozen=True)
class Inventory:
    applications: tuple[Application, ...] = ()

    def business_for(
        self, image_path: str, vm: str | None, root: str, image: ImageRef | None = None
    ) -> Business:
        """The business mapping of one image; ``UNMAPPED`` (medium, no owner) if none fits.

        ``image`` carries what the hypervisor says of it, for ``match:`` entries.
        """
        relative = relative_image_path(image_path, root)
        for application in self.applications:
            found = any(
                fnmatch.fnmatchcase(relative, pattern)
                or (vm is not None and fnmatch.fnmatchcase(vm, pattern))
                for pattern in application.images
            ) or (image is not None and any(m.holds(image) for m in application.matches))
            if found:
                return Business(application.name, application.owner, application.criticality)
        return UNMAPPED


def relative_image_path(image_path: str, root: str) -> str:
    """The image path as inventory globs see it: relative to the scanned root.

    A root that is the image itself gives its file name; an image outside the root keeps
    its path as given.
    """
    image, base = PurePath(image_path), PurePath(root)
    if image == base:
        return image.name
    try:
        return image.relative_to(base).as_posix()
    except ValueError:
        return image.as_posix()


def validate_inventory(path: str | Path) -> tuple[Inventory, list[Problem]]:
    """The inventory of a file and every problem found in it."""
    display = str(path)
    problems: list[Problem] = []
    text = read_text_file(Path(path), display, MAX_FILE_BYTES, problems)
    if text is None:
        return Inventory(), problems
    walk = Walk(display, Path(path).parent)
    node = read_document(text, walk)
    document = INVENTORY.check(node, walk, "") if node is not None else {}
    problems.extend(walk.problems)
    applications = []
    entries = document.get("applications", []) if isinstance(document, dict) else []
    for position, entry in enumerate(entries):
        key = f"applications[{position}]"
        matches = tuple(_match(m) for m in entry.get("match", []))
        if any(m == Match() for m in matches):
            problems.append(Problem(display, None, f"{key}.match", "an empty entry matches all"))
        if "name" in entry and ("images" in entry or "match" in entry):
            applications.append(
                Application(
                    entry["name"],
                    entry.get("owner"),
                    entry.get("criticality", "medium"),
                    tuple(entry.get("images", ())),
                    matches,
                )
            )
    return Inventory(tuple(applications)), problems


def _match(entry: dict[str, object]) -> Match:
    metadata = entry.get("metadata")
    template = entry.get("template")
    return Match(
        name=str(entry["name"]) if "name" in entry else None,
        source=str(entry["source"]) if "source" in entry else None,
        tag=str(entry["tag"]) if "tag" in entry else None,
        notes=str(entry["notes"]) if "notes" in entry else None,
        metadata=tuple((str(k), str(v)) for k, v in metadata.items())
        if isinstance(metadata, dict)
        else (),
        template=template if isinstance(template, bool) else None,
    )


def load_inventory(path: str | Path) -> Inventory:
    """The inventory at ``path``; ``ConfigError`` listing every problem when it is invalid."""
    inventory, problems = validate_inventory(path)
    if problems:
        raise ConfigError("\n".join(str(problem) for problem in problems))
    return inventory

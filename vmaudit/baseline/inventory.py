"""The inventory: which business application, owner and criticality each image belongs to.

Validated like a baseline (file, line, key). An image is matched by glob on its path
relative to the scanned root, or by its VM name; the first application that matches wins.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path, PurePath

from vmaudit.baseline.loader import MAX_FILE_BYTES, read_text_file
from vmaudit.baseline.schema import INVENTORY, Problem, Walk, read_document
from vmaudit.errors import ConfigError
from vmaudit.models import Business

UNMAPPED = Business(application=None, owner=None, criticality="medium")


@dataclass(frozen=True)
class Application:
    name: str
    owner: str | None
    criticality: str
    images: tuple[str, ...]


@dataclass(frozen=True)
class Inventory:
    applications: tuple[Application, ...] = ()

    def business_for(self, image_path: str, vm: str | None, root: str) -> Business:
        """The business mapping of one image; ``UNMAPPED`` (medium, no owner) if none fits."""
        relative = relative_image_path(image_path, root)
        for application in self.applications:
            for pattern in application.images:
                if fnmatch.fnmatchcase(relative, pattern) or (
                    vm is not None and fnmatch.fnmatchcase(vm, pattern)
                ):
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
    for entry in document.get("applications", []) if isinstance(document, dict) else []:
        if "name" in entry and "images" in entry:
            applications.append(
                Application(
                    entry["name"],
                    entry.get("owner"),
                    entry.get("criticality", "medium"),
                    tuple(entry["images"]),
                )
            )
    return Inventory(tuple(applications)), problems


def load_inventory(path: str | Path) -> Inventory:
    """The inventory at ``path``; ``ConfigError`` listing every problem when it is invalid."""
    inventory, problems = validate_inventory(path)
    if problems:
        raise ConfigError("\n".join(str(problem) for problem in problems))
    return inventory

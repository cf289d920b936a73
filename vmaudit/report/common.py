"""What every format shares: neutralising guest-controlled text, counts, the OS label.

Host names, user names and package names come from the guest and may hold terminal
escapes, newlines, bidi overrides, formula prefixes or bytes that are not text. Each
format calls the neutraliser that fits its medium.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence

from vmaudit.judge.risk import rank
from vmaudit.judge.rules import os_label, parse_when
from vmaudit.models import SEVERITIES, Finding, ImageRef, ImageResult, Risk
from vmaudit.text import csv_cell as csv_cell
from vmaudit.text import terminal_safe as terminal_safe
from vmaudit.text import xml_safe as xml_safe


def severity_counts(findings: Iterable[Finding]) -> dict[str, int]:
    """Number of findings per severity, every severity present."""
    counts = Counter(finding.severity for finding in findings)
    return {severity: counts.get(severity, 0) for severity in SEVERITIES}


def os_text(result: ImageResult) -> str:
    """The OS label of an image, empty when it was not audited."""
    return os_label(result.facts) if result.facts is not None else ""


def last_seen_running(result: ImageResult) -> str | None:
    """The guest's last sign of running: latest boot or login, else the image's mtime."""
    if result.facts is None:
        return None
    dormancy = result.facts.dormancy
    seen = [
        (when, text)
        for text in (dormancy.last_boot, dormancy.last_login)
        if text is not None and (when := parse_when(text)) is not None
    ]
    if seen:
        return max(seen)[1]
    return result.facts.image.mtime or None


def common_folder(results: Sequence[ImageResult]) -> str:
    """The folder all images lie under, so a table or chart can name them by what differs."""
    folders = [os.path.dirname(r.image.path) for r in results if os.path.isabs(r.image.path)]
    if len(folders) != len(results) or not folders:
        return ""
    return os.path.commonpath(folders)


def sort_by_risk(results: Iterable[ImageResult]) -> list[ImageResult]:
    """Riskiest first (by exposure, then path); images in error after the audited ones."""
    return rank(results)


def score_text(risk: Risk) -> str:
    """The score as tables show it: rounded down to a whole number, so that the number shown
    never reaches a level the image does not have (74.9 is ``74``, high); a score above 0
    but below 1 is ``<1`` (low, not none)."""
    if 0 < risk.score < 1:
        return "<1"
    return str(math.floor(risk.score))


def exposure_text(risk: Risk) -> str:
    """The exposure with one decimal: ranks where scores near 100 all read ``100``."""
    return "?" if risk.exposure is None else f"{risk.exposure:.1f}"


def vm_fields(image: ImageRef) -> dict[str, str | bool | None]:
    """``vm.name``, ``vm.source``, ``vm.template``, ``vm.state`` of the report (issue 20)."""
    return {
        "name": image.vm,
        "source": image.source,
        "template": image.template,
        "state": image.state,
    }


def vm_label(image: ImageRef) -> str:
    """One line naming a hypervisor's guest ("libvirt VM web01, shut off"); "" for an image
    a folder walk found that is no template (its path names it)."""
    if not (image.template or image.state is not None or image.source in ("libvirt", "proxmox")):
        return ""
    kind = "template" if image.template else "VM"
    parts = [f"{image.source} {kind} {image.vm or '(unnamed)'}"]
    if image.state is not None:
        parts.append(image.state)
    if image.in_use:
        parts.append("in use")
    return ", ".join(parts)

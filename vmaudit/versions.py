"""Version ordering: dpkg's, rpm's and Windows' dotted numbers, and ``match.version`` tests.

Package versions are compared with the distribution's own algorithm taken from maintained
libraries (python-debian for dpkg, rpm-vercmp for rpm), never with a home-made one: a
wrong ordering either hides a missing patch or invents one.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from rpm_vercmp import vercmp as _rpm_segment_compare

from vmaudit.models import Facts

Comparator = Callable[[str, str], int]

_DOTTED = re.compile(r"\d+(?:\.\d+)*")
_EXPR = re.compile(r"^\s*(>=|<=|==|!=|>|<)?\s*(\d+(?:\.\d+)*)\s*$")


def dpkg_compare(left: str, right: str) -> int:
    """dpkg's ordering (epoch, upstream, revision, ``~`` sorting first): -1, 0 or 1."""
    from debian.debian_support import version_compare  # apt_pkg: loaded when first asked

    result = int(version_compare(left, right))
    return (result > 0) - (result < 0)


def _split_evr(version: str) -> tuple[str, str, str]:
    epoch, _, rest = version.partition(":") if ":" in version else ("0", "", version)
    upstream, _, release = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return (epoch or "0"), upstream, release


def rpm_compare(left: str, right: str) -> int:
    """rpm's ordering of ``[epoch:]version[-release]`` as rpmVersionCompare does it.

    rpm-vercmp implements rpmvercmp() on one segment; rpm compares epoch, version and
    release one after the other, a missing release comparing equal to any.
    """
    left_e, left_v, left_r = _split_evr(left)
    right_e, right_v, right_r = _split_evr(right)
    epoch_order = _rpm_segment_compare(left_e, right_e)
    if epoch_order:
        return int(epoch_order)
    version_order = _rpm_segment_compare(left_v, right_v)
    if version_order or not left_r or not right_r:
        return int(version_order)
    return int(_rpm_segment_compare(left_r, right_r))


def dotted_key(version: str) -> tuple[int, ...]:
    """The numbers of a dotted version (``"17763.5458"``); trailing text is ignored."""
    found = _DOTTED.search(version)
    if found is None:
        return ()
    return tuple(int(part) for part in found.group(0).split("."))


def dotted_compare(left: str, right: str) -> int:
    """Windows builds and application versions: numeric per dot, missing parts are 0."""
    left_key, right_key = dotted_key(left), dotted_key(right)
    width = max(len(left_key), len(right_key))
    left_key += (0,) * (width - len(left_key))
    right_key += (0,) * (width - len(right_key))
    return (left_key > right_key) - (left_key < right_key)


def comparator_for(facts: Facts) -> Comparator:
    """The ordering of this guest's packages, from its package format."""
    if facts.os.type == "windows":
        return dotted_compare
    if facts.os.package_format == "rpm":
        return rpm_compare
    if facts.os.package_format == "deb":
        return dpkg_compare
    # An unknown format on Linux is rare (pacman, apk); dotted numbers are the safest
    # guess that never raises.
    return dotted_compare


def is_version_expression(text: str) -> bool:
    """True when every comma-separated part of ``text`` is ``[op]N[.N...]``."""
    return all(_EXPR.match(part) for part in text.split(","))


def version_matches(expression: str, os_version: str | None) -> bool:
    """Whether an OS version satisfies a ``match.version`` expression.

    The OS version is reduced to major.minor. ``"12"`` (no operator) means "a 12.x";
    ``"==12.4"`` means exactly 12.4; ``>=``, ``<=``, ``>``, ``<``, ``!=`` compare
    numerically, missing parts counting as 0. Comma-separated parts must all hold.
    """
    if os_version is None:
        return False
    actual = dotted_key(os_version)[:2]
    if not actual:
        return False
    for part in expression.split(","):
        parsed = _EXPR.match(part)
        if parsed is None:
            return False
        operator, wanted_text = parsed.group(1), parsed.group(2)
        wanted = tuple(int(p) for p in wanted_text.split("."))
        if operator is None:
            if actual[: len(wanted)] != wanted:
                return False
            continue
        order = dotted_compare(".".join(map(str, actual)), wanted_text)
        holds = {
            ">=": order >= 0,
            "<=": order <= 0,
            ">": order > 0,
            "<": order < 0,
            "==": order == 0,
            "!=": order != 0,
        }[operator]
        if not holds:
            return False
    return True

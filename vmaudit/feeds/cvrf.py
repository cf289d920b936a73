"""Microsoft's monthly CVRF 1.1 documents (MSRC ``cvrf/YYYY-Mon``) as Windows advisories.

Parsed as a stream (a month is ~6 MB of XML) with defusedxml's ``iterparse`` and the DTD
forbidden, so no entity is ever expanded and no external resource is ever fetched. Each
``<vuln:Vulnerability>`` is read whole, turned into one advisory per CVE and dropped from
the tree; a single element of more than ``MAX_ELEMENTS`` descendants is refused. Only the
Vendor Fix remediations of Windows products are kept: per product its KB, ``FixedBuild``,
``Supercedence``, MSRC severity and CVSS base score.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

from vmaudit.feeds.osv import iso_time
from vmaudit.feeds.records import (
    CVE_PATTERN,
    Advisory,
    FeedError,
    WindowsFix,
    checked_id,
    short_text,
)

VULN = "{http://www.icasi.org/CVRF/schema/vuln/1.1}"
PROD = "{http://www.icasi.org/CVRF/schema/prod/1.1}"
CVRF = "{http://www.icasi.org/CVRF/schema/cvrf/1.1}"
ROOT_TAG = f"{CVRF}cvrfdoc"
MAX_ELEMENTS = 500_000  # in one top-level element; a real Vulnerability has a few thousand
MAX_PRODUCTS = 100_000
BUILD = re.compile(r"\d{1,6}(?:\.\d{1,6}){1,3}")
KB_NUMBER = re.compile(r"(?:KB)?(\d{6,8})")


def _text(element: Element | None, cap: int = 256) -> str:
    """An element's text on one line, without control characters, at most ``cap`` long."""
    if element is None or element.text is None:
        return ""
    return " ".join(short_text(element.text[: cap * 4]).split())[:cap]


def _product_ids(element: Element) -> list[str]:
    return [_text(p, 32) for p in element.findall(f"{VULN}ProductID") if _text(p, 32)]


def _score(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0.0 <= value <= 10.0 else None


def _vulnerability(
    path: str, doc: str, initial: str | None, element: Element, products: dict[str, str]
) -> Advisory | None:
    raw_id = _text(element.find(f"{VULN}CVE"), 64)
    if not raw_id:
        return None  # a note-only entry (some months carry ADV notes without an id)
    cve = checked_id(path, f"{doc}/{raw_id[:40]}", raw_id, "CVE id")
    record = f"{doc}/{cve}"
    ratings: dict[str, str] = {}
    for threat in element.iterfind(f"{VULN}Threats/{VULN}Threat"):
        if threat.get("Type") == "Severity":
            for pid in _product_ids(threat):
                ratings[pid] = _text(threat.find(f"{VULN}Description"), 40)
    scores: dict[str, float] = {}
    for score_set in element.iterfind(f"{VULN}CVSSScoreSets/{VULN}ScoreSet"):
        base = _score(_text(score_set.find(f"{VULN}BaseScore"), 16))
        if base is not None:
            for pid in _product_ids(score_set):
                scores[pid] = base
    fixes: list[WindowsFix] = []
    for remedy in element.iterfind(f"{VULN}Remediations/{VULN}Remediation"):
        if remedy.get("Type") != "Vendor Fix":
            continue
        kb_found = KB_NUMBER.fullmatch(_text(remedy.find(f"{VULN}Description"), 32))
        build = _text(remedy.find(f"{VULN}FixedBuild"), 32)
        supersedes = KB_NUMBER.fullmatch(_text(remedy.find(f"{VULN}Supercedence"), 32))
        for pid in _product_ids(remedy):
            product = products.get(pid, "")
            if not product.startswith("Windows"):
                continue  # Office, Exchange, .NET...: not the OS vmaudit matches
            fixes.append(
                WindowsFix(
                    product=product,
                    kb=f"KB{kb_found.group(1)}" if kb_found else None,
                    fixed_build=build if BUILD.fullmatch(build) else None,
                    supersedes=f"KB{supersedes.group(1)}" if supersedes else None,
                    rating=ratings.get(pid),
                    cvss=scores.get(pid),
                )
            )
    if not fixes:
        return None
    dates = [
        iso_time(path, record, _text(revision.find(f"{CVRF}Date"), 64) or None, "Date")
        for revision in element.iterfind(f"{VULN}RevisionHistory/{VULN}Revision")
    ]
    known = sorted(d for d in dates if d is not None)
    cvss_values = [f.cvss for f in fixes if f.cvss is not None]
    return Advisory(
        key=f"msrc:{doc}:{cve}",
        id=cve,
        cves=(cve,) if CVE_PATTERN.fullmatch(cve) else (),
        published=known[0] if known else initial,
        modified=known[-1] if known else initial,
        summary=_text(element.find(f"{VULN}Title"), 300),
        cvss=max(cvss_values) if cvss_values else None,
        rating=next((f.rating for f in fixes if f.rating), None),
        windows=tuple(fixes),
        extra={"document": doc},
    )


def parse_cvrf(path: str, stream: IO[bytes]) -> Iterator[Advisory]:
    """Every Windows advisory of one CVRF document, in document order."""
    products: dict[str, str] = {}
    doc: str | None = None
    initial: str | None = None
    root: Element | None = None
    depth = 0
    elements = 0
    record: str | None = None
    try:
        for event, element in iterparse(stream, events=("start", "end"), forbid_dtd=True):
            if event == "start":
                depth += 1
                if depth == 1:
                    if element.tag != ROOT_TAG:
                        raise FeedError(
                            path, None, f"root element {element.tag[:80]} is not a CVRF 1.1 cvrfdoc"
                        )
                    root = element
                elif depth == 2:
                    elements = 0
                elements += 1
                if elements > MAX_ELEMENTS:
                    raise FeedError(
                        path, record, f"an element with more than {MAX_ELEMENTS} descendants"
                    )
                continue
            depth -= 1
            if element.tag == f"{PROD}FullProductName":
                pid = element.get("ProductID", "")[:32]
                if pid:
                    products[pid] = _text(element, 200)
                    if len(products) > MAX_PRODUCTS:
                        raise FeedError(path, None, f"more than {MAX_PRODUCTS} products")
            if element.tag == f"{VULN}CVE" and depth == 2:
                record = f"{doc}/{_text(element, 40)}"  # errors from here on name it
            if depth != 1 or root is None:
                continue
            if element.tag == f"{CVRF}DocumentTracking":
                doc_id = _text(element.find(f"{CVRF}Identification/{CVRF}ID"), 64)
                doc = checked_id(path, None, doc_id, "document ID")
                initial = iso_time(
                    path,
                    doc,
                    _text(element.find(f"{CVRF}InitialReleaseDate"), 64) or None,
                    "InitialReleaseDate",
                )
            elif element.tag == f"{VULN}Vulnerability":
                if doc is None:
                    raise FeedError(path, None, "a Vulnerability before the DocumentTracking ID")
                advisory = _vulnerability(path, doc, initial, element, products)
                if advisory is not None:
                    yield advisory
            root.clear()  # each top-level element is done with: memory stays bounded
    except DefusedXmlException as exc:
        raise FeedError(
            path,
            record,
            f"refused XML: {type(exc).__name__} (DTDs and entities are not accepted in a feed)",
        ) from None
    except ParseError as exc:
        raise FeedError(path, record, f"malformed or truncated XML ({exc})") from None
    if root is None:
        raise FeedError(path, None, "empty XML document")

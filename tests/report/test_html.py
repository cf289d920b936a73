"""The HTML report on a scan of real guest trees whose strings are hostile.

The report is built the way a scan builds it: facts from ``collect_facts`` on ``TreeFS``
trees, findings from ``evaluate`` with a real baseline file, risk from ``risk.score``.
The page is then parsed back with the standard library's HTML parser.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.imaging import MINI_FILES, write_tree
from vmaudit.baseline.loader import load_baseline
from vmaudit.guest.tree import TreeFS
from vmaudit.judge.risk import exposure_by_severity, score
from vmaudit.judge.rules import evaluate
from vmaudit.judge.verdict import exit_code
from vmaudit.models import (
    SEVERITIES,
    AuditedImage,
    Business,
    DiskRef,
    FailedImage,
    ImageError,
    ImageInfo,
    ImageRef,
    ImageResult,
    ScanReport,
)
from vmaudit.report import Format, render
from vmaudit.report import html as html_report
from vmaudit.report.common import sort_by_risk
from vmaudit.report.json import report_dict
from vmaudit.run.audit import collect_facts

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SCRIPT_TAG = "<script>alert(1)</script>"
IMG_TAG = '"><img src=x onerror=alert(1)>'
TERMINAL = "\x1b[2J\x1b]0;pwned\x07"
HOSTILE_HOST = f"{SCRIPT_TAG}{TERMINAL}"
HOSTILE_APP = "<b onmouseover=alert(3)>pay</b>"
ERROR_MESSAGE = "backing file /etc/shadow\x1b[31m is outside <script>alert(2)</script>"
BASELINE_YAML = """\
apiVersion: vmaudit/v1
kind: Baseline
metadata:
  name: test-hardening
  description: What the HTML tests judge the guests by
dormancy:
  max_days_idle: 30
accounts:
  allowed_admins: [root, alice]
  forbid_extra_uid0: true
  forbid_empty_password: true
ssh:
  permit_root_login: "no"
firewall:
  required: true
"""


def _guest(
    root: Path,
    hostname: str,
    *,
    extra_passwd: str = "",
    sudo: str = "alice",
    backdoor: bool = True,
    root_login: str = "yes",
    firewall: bool = False,
) -> Path:
    """The mini Debian tree; ``backdoor`` keeps its uid-0 ``toor`` with an empty password."""
    files = dict(MINI_FILES)
    keep = (lambda line: True) if backdoor else (lambda line: not line.startswith("toor:"))
    for name in ("etc/passwd", "etc/shadow"):
        files[name] = "".join(line + "\n" for line in MINI_FILES[name].splitlines() if keep(line))
    files["etc/passwd"] += extra_passwd
    files["etc/hostname"] = hostname + "\n"
    files["etc/group"] = f"root:x:0:\nsudo:x:27:{sudo}\nalice:x:1000:\n"
    files["etc/ssh/sshd_config"] = f"PermitRootLogin {root_login}\nPasswordAuthentication no\n"
    if firewall:
        files["etc/ufw/ufw.conf"] = "ENABLED=yes\n"
        files["etc/default/ufw"] = 'DEFAULT_INPUT_POLICY="DROP"\n'
        files["usr/sbin/ufw"] = "#!/bin/sh\n"
    tree = write_tree(root, files)
    (tree / "bin" / "bash").write_bytes(Path("/bin/bash").read_bytes())
    return tree


def _audited(tree: Path, path: str, days_idle: int, business: Business) -> ImageResult:
    mtime = (NOW - timedelta(days=days_idle, hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ref = ImageRef(path, "qcow2", (DiskRef(path, "qcow2", (path,), ("qcow2",)),))
    facts = collect_facts(
        TreeFS(tree), ImageInfo(path, "qcow2", 1, mtime, "0" * 64, None, (path,)), NOW
    )
    baseline_file = tree.parent / "test-hardening.yaml"
    baseline_file.write_text(BASELINE_YAML)
    evaluation = evaluate(facts, [load_baseline(str(baseline_file))], NOW)
    return AuditedImage(
        image=ref,
        facts=facts,
        findings=evaluation.findings,
        risk=score(evaluation.findings, facts.dormancy.days_idle, business.criticality),
        business=business,
        rules_evaluated=evaluation.rules_evaluated,
    )


def hostile_report(base: Path) -> ScanReport:
    """Four audited guests (idle 9, 30, 270 and 1047 days) and one image in error.

    web-01 is clean (risk 0), web-02 allows root SSH logins (low), the hostile guest and
    the legacy one have a uid-0 backdoor with an empty password (critical; high for the
    legacy one, whose application's criticality is low).
    """
    hostile = _audited(
        _guest(
            base / "hostile",
            HOSTILE_HOST,
            extra_passwd=f"{IMG_TAG}:x:1001:1001::/home/x:/bin/bash\n{SCRIPT_TAG}:x:0:0::/root:/bin/bash\n",
            sudo=f"alice,{IMG_TAG}",
        ),
        f"/ds/{SCRIPT_TAG}.qcow2",
        270,
        Business(HOSTILE_APP, "finance-it", "high"),
    )
    fresh = _audited(
        _guest(base / "fresh", "web-01", backdoor=False, root_login="no", firewall=True),
        "/ds/web-01.qcow2",
        9,
        Business("web", "web-team", "medium"),
    )
    month = _audited(
        _guest(base / "month", "web-02", backdoor=False, firewall=True),
        "/ds/web-02.qcow2",
        30,
        Business("web", "web-team", "medium"),
    )
    ancient = _audited(
        _guest(base / "ancient", "legacy"), "/ds/legacy.qcow2", 1047, Business(None, None, "low")
    )
    broken = FailedImage(
        image=ImageRef("/ds/evil.qcow2", "qcow2", ()),
        error=ImageError("unsafe-backing-file", ERROR_MESSAGE),
    )
    results = (fresh, broken, month, hostile, ancient)
    return ScanReport(
        "2026-11-27T12:00:00Z",
        "2026-11-27T12:05:00Z",
        ("test-hardening", "default"),
        "high",
        results,
        exit_code(results, "high"),
    )


# ---------------------------------------------------------------- a small DOM


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    parent: Node | None = None
    text_parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.text_parts) + "".join(child.text for child in self.children)

    def iter(self, tag: str | None = None) -> list[Node]:
        found = [self] if tag is None or self.tag == tag else []
        for child in self.children:
            found.extend(child.iter(tag))
        return found

    def find(self, tag: str, **attrs: str) -> list[Node]:
        wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        return [n for n in self.iter(tag) if all(n.attrs.get(k) == v for k, v in wanted.items())]


VOID = {"meta", "br", "link", "img", "input", "hr"}  # HTML void elements


class DomBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.current = self.root
        self.start_tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.start_tags.append(tag)
        node = Node(tag, {k: v or "" for k, v in attrs}, parent=self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.start_tags.append(tag)
        self.current.children.append(Node(tag, {k: v or "" for k, v in attrs}, parent=self.current))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        assert node is not None and node.parent is not None, f"stray </{tag}>"
        self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.text_parts.append(data)


def parse(page: str) -> DomBuilder:
    builder = DomBuilder()
    builder.feed(page)
    builder.close()
    return builder


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> ScanReport:
    return hostile_report(tmp_path_factory.mktemp("guests"))


@pytest.fixture(scope="module")
def page(report: ScanReport) -> str:
    return render(report, Format.HTML)


@pytest.fixture(scope="module")
def dom(page: str) -> DomBuilder:
    return parse(page)


# ---------------------------------------------------------------- self-contained and inert


def test_the_format_factory_maps_html(report: ScanReport, page: str) -> None:
    assert Format("html") is Format.HTML
    assert page == html_report.render(report)
    assert page.startswith("<!DOCTYPE html>")


def test_csp_meta_tag_forbids_every_fetch(dom: DomBuilder) -> None:
    metas = dom.root.find("meta", http_equiv="Content-Security-Policy")
    assert len(metas) == 1
    policy = {
        part.split()[0]: part.split()[1:]
        for part in metas[0].attrs["content"].split(";")
        if part.strip()
    }
    assert policy["default-src"] == ["'none'"]
    assert policy["img-src"] == ["data:"]
    assert policy["script-src"] == ["'unsafe-inline'"]
    assert policy["style-src"] == ["'unsafe-inline'"]
    # The CSP meta must come before anything that could load.
    assert dom.start_tags.index("meta") < dom.start_tags.index("style")


def test_nothing_is_fetched_from_anywhere(page: str, dom: DomBuilder) -> None:
    assert not re.search(r"(?i)https?://|//[a-z0-9.-]+\.[a-z]{2,}/|url\(|@import", page)
    for node in dom.root.iter():
        assert "src" not in node.attrs, node.tag
        for name in ("href", "xlink:href", "action", "srcset", "poster"):
            value = node.attrs.get(name)
            assert value is None or value.startswith("#"), (node.tag, name, value)
    assert not {"link", "img", "iframe", "object", "embed", "base"} & set(dom.start_tags)


def test_hostile_guest_strings_never_become_markup(page: str, dom: DomBuilder) -> None:
    assert SCRIPT_TAG not in page
    assert "<img" not in page
    assert "onerror=" not in page.replace("onerror=alert(1)&gt;", "")
    assert "<b " not in page
    assert dom.start_tags.count("script") == 1
    (script,) = dom.root.iter("script")
    assert script.text == html_report.SCRIPT  # the constant, no data in it
    # Shown as text, escaped, control characters visible as \xNN.
    assert html_lib.escape(SCRIPT_TAG, quote=True) in page
    assert html_lib.escape(IMG_TAG, quote=True) in page
    assert "\x1b" not in page and "\x07" not in page
    assert "\\x1b[2J\\x1b]0;pwned\\x07" in page
    text = dom.root.text
    assert f"{SCRIPT_TAG}\\x1b[2J" in text  # the hostname, exactly as text
    assert IMG_TAG in text and HOSTILE_APP in text


def test_hostile_strings_in_attributes_stay_inside_their_quotes(dom: DomBuilder) -> None:
    cells = [td for td in dom.root.iter("td") if "data-value" in td.attrs]
    values = {td.attrs["data-value"] for td in cells}
    assert f"/ds/{SCRIPT_TAG}.qcow2" in values  # read back whole, one attribute
    bars = dom.root.find("rect", data_kind="max")
    assert HOSTILE_APP in {bar.attrs["data-application"] for bar in bars}
    for node in dom.root.iter():
        assert not any(name.startswith("on") for name in node.attrs), (node.tag, node.attrs)


# ---------------------------------------------------------------- content


def _stats(dom: DomBuilder) -> dict[str, int]:
    return {
        div.attrs["data-stat"]: int(div.find("span", **{"class_": "count"})[0].text)
        for div in dom.root.iter("div")
        if "data-stat" in div.attrs
    }


def test_summary_counts_match_the_report(report: ScanReport, dom: DomBuilder) -> None:
    summary = report_dict(report)["summary"]
    stats = _stats(dom)
    assert stats["images"] == 5 == summary["images"]
    assert stats["audited"] == 4
    assert stats["errors"] == 1
    assert stats["from cache"] == 0
    assert stats["exit code"] == report.exit_code == 1
    for severity, count in summary["findings"].items():
        assert stats[severity] == count
    assert stats["critical"] >= 1  # the uid-0 account of the hostile guest


def test_the_guests_span_the_risk_levels(report: ScanReport) -> None:
    levels = {r.image.path: r.risk.level for r in report.results if r.error is None}
    assert levels == {
        f"/ds/{SCRIPT_TAG}.qcow2": "critical",
        "/ds/legacy.qcow2": "high",  # a low-criticality application halves its exposure
        "/ds/web-02.qcow2": "low",
        "/ds/web-01.qcow2": "none",
    }


def _image_rows(dom: DomBuilder) -> list[Node]:
    (table,) = dom.root.find("table", id="images-table")
    (body,) = table.iter("tbody")
    return body.iter("tr")


def test_images_table_starts_riskiest_first_errors_last(
    report: ScanReport, dom: DomBuilder
) -> None:
    paths = [row.iter("td")[0].attrs["data-value"] for row in _image_rows(dom)]
    audited = sorted(
        (r for r in report.results if r.error is None),
        key=lambda r: (-(r.risk.exposure or 0), r.image.path),
    )
    assert paths == [r.image.path for r in audited] + ["/ds/evil.qcow2"]


def test_numeric_columns_carry_numbers_to_sort_by(report: ScanReport, dom: DomBuilder) -> None:
    (table,) = dom.root.find("table", id="images-table")
    headings = [th.text for th in table.iter("th")]
    types = [th.attrs["data-type"] for th in table.iter("th")]
    assert headings[:7] == [
        "Image",
        "OS",
        "Hostname",
        "Application",
        "Owner",
        "Criticality",
        "Days idle",
    ]
    assert types[headings.index("Days idle")] == "number"
    assert types[headings.index("Risk")] == "number"
    assert types[headings.index("Hostname")] == "text"
    idle_column, risk_column = headings.index("Days idle"), headings.index("Risk")
    exposure_column = headings.index("Exposure")
    assert types[exposure_column] == "number"
    by_path = {r.image.path: r for r in report.results}
    for row in _image_rows(dom):
        cells = row.iter("td")
        result = by_path[cells[0].attrs["data-value"]]
        if result.facts is None:
            assert cells[idle_column].attrs["data-value"] == ""
            assert cells[risk_column].attrs["data-value"] == ""
            assert cells[exposure_column].attrs["data-value"] == ""
        else:
            assert int(cells[idle_column].attrs["data-value"]) == result.facts.dormancy.days_idle
            assert float(cells[risk_column].attrs["data-value"]) == result.risk.score
            assert float(cells[exposure_column].attrs["data-value"]) == result.risk.exposure


def test_each_image_lists_its_findings(report: ScanReport, dom: DomBuilder) -> None:
    rows = _image_rows(dom)
    for row in rows:
        anchor = row.iter("a")[0].attrs["href"]
        (section,) = dom.root.find("section", id=anchor[1:])
        result = next(
            r for r in report.results if r.image.path == row.iter("td")[0].attrs["data-value"]
        )
        if result.error is not None:
            assert section.find("tr", class_="error-row")
            continue
        findings_rows = [tr for tr in section.iter("tr") if tr.iter("td")]
        assert len(findings_rows) == len(result.findings)
        if not result.findings:
            assert "No finding (6 rule(s) evaluated)" in section.text
        for tr, finding in zip(findings_rows, result.findings, strict=True):
            cells = [td.text for td in tr.iter("td")]
            assert cells[:3] == [
                finding.rule,
                finding.severity,
                finding.subject.replace("\x1b", "\\x1b"),
            ]
            assert cells[3] == finding.message
            assert cells[5] == finding.baseline
            for key in finding.evidence:
                assert f'"{key}"' in cells[4]


def test_hostile_guest_has_its_findings_on_hostile_subjects(
    report: ScanReport, dom: DomBuilder
) -> None:
    hostile = next(r for r in report.results if r.image.path == f"/ds/{SCRIPT_TAG}.qcow2")
    pairs = {(f.rule, f.subject) for f in hostile.findings}
    assert ("account.extra-uid0", SCRIPT_TAG) in pairs
    assert ("account.unapproved-admin", IMG_TAG) in pairs
    subjects = {td.text for td in dom.root.iter("td")}
    assert SCRIPT_TAG in subjects and IMG_TAG in subjects


def test_errors_are_listed_with_kind_and_message(dom: DomBuilder) -> None:
    (section,) = dom.root.find("section", id="errors")
    rows = [[td.text for td in tr.iter("td")] for tr in section.iter("tr") if tr.iter("td")]
    assert rows == [
        ["/ds/evil.qcow2", "unsafe-backing-file", ERROR_MESSAGE.replace("\x1b", "\\x1b")]
    ]


def test_baselines_used_are_listed(dom: DomBuilder) -> None:
    (section,) = dom.root.find("section", id="baselines")
    assert [li.text for li in section.iter("li")] == ["test-hardening", "default"]


def test_chart_of_risk_by_application(report: ScanReport, dom: DomBuilder) -> None:
    (chart,) = dom.root.find("svg", id="chart-applications")
    maxima = {
        r.attrs["data-application"]: float(r.attrs["width"])
        for r in chart.find("rect", data_kind="max")
    }
    means = {
        r.attrs["data-application"]: float(r.attrs["width"])
        for r in chart.find("rect", data_kind="mean")
    }
    expected = html_report.risk_by_application(report.results)
    assert [row.application for row in expected] == list(maxima)
    assert set(maxima) == {HOSTILE_APP, "web", html_report.UNASSIGNED}
    web = [r.risk.score for r in report.results if r.business.application == "web"]
    full = 440  # the bar length of a score of 100
    assert maxima["web"] == pytest.approx(full * max(web) / 100, abs=0.1)
    assert means["web"] == pytest.approx(full * sum(web) / len(web) / 100, abs=0.1)


def test_scatter_of_risk_against_days_idle(report: ScanReport, dom: DomBuilder) -> None:
    (chart,) = dom.root.find("svg", id="chart-dormancy")
    points = sorted(
        (int(c.attrs["data-days"]), float(c.attrs["data-risk"])) for c in chart.iter("circle")
    )
    expected = sorted(
        (r.facts.dormancy.days_idle or 0, r.risk.score)
        for r in report.results
        if r.facts is not None
    )
    assert [days for days, _ in points] == [9, 30, 270, 1047]
    assert points == expected
    # Farther right means more days idle.
    xs = {int(c.attrs["data-days"]): float(c.attrs["cx"]) for c in chart.iter("circle")}
    assert xs[9] < xs[30] < xs[270] < xs[1047]


def test_an_empty_scan_still_renders(tmp_path: Path) -> None:
    empty = ScanReport("2026-11-27T12:00:00Z", "2026-11-27T12:00:01Z", (), "high", (), 0)
    dom = parse(render(empty, Format.HTML))
    assert _stats(dom)["images"] == 0
    assert not dom.root.find("svg", id="chart-applications")
    assert "No audited image" in dom.root.text


def test_ranking_chart_stacks_each_images_exposure_by_severity(
    report: ScanReport, dom: DomBuilder
) -> None:
    (chart,) = dom.root.find("svg", id="chart-ranking")
    rows = chart.find("g", class_="bar-row")
    ranked = [r for r in sort_by_risk(report.results) if r.error is None]
    assert [row.attrs["data-path"] for row in rows] == [r.image.path for r in ranked]
    full, largest = 460, max(r.risk.exposure or 0 for r in ranked)  # the longest bar
    lengths = []
    for row, result in zip(rows, ranked, strict=True):
        shares = {s: x for s, x in exposure_by_severity(result).items() if x > 0}
        rects = row.iter("rect")
        assert [rect.attrs["data-severity"] for rect in rects] == list(shares)
        x = float(rects[0].attrs["x"]) if rects else 0.0
        for rect in rects:  # segments follow each other, each as long as its share
            severity = next(s for s in SEVERITIES if s == rect.attrs["data-severity"])
            assert rect.attrs["fill"] == html_report.SEVERITY_COLORS[severity]
            assert float(rect.attrs["x"]) == pytest.approx(x, abs=0.02)
            width = float(rect.attrs["width"])
            assert width == pytest.approx(full * shares[severity] / largest, abs=0.02)
            x += width
        lengths.append(sum(float(rect.attrs["width"]) for rect in rects))
        assert lengths[-1] == pytest.approx(full * (result.risk.exposure or 0) / largest, abs=0.1)
    assert lengths == sorted(lengths, reverse=True) and lengths[0] == pytest.approx(full)
    assert lengths[-1] == 0  # the clean guest has a row and no bar
    assert rows[0].find("title")[0].text.startswith(f"/ds/{SCRIPT_TAG}.qcow2: exposure ")

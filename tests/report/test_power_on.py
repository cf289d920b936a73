"""What runs at power-on of a Linux guest, in ``inspect``'s text and the HTML report,
from the config facts collected on a real tree."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tests.collect.conftest import Guest, image_info
from vmaudit.collect.linux import collect_linux
from vmaudit.collect.osinfo import detect_linux
from vmaudit.models import AuditedImage, Facts, ImageRef, ScanReport
from vmaudit.report import html as html_report
from vmaudit.report.facts_view import render_facts

NOW = datetime(2026, 11, 27, tzinfo=UTC)
STATUS = "Package: base-files\nStatus: install ok installed\nVersion: 12.4\nArchitecture: amd64\n"


def _facts(tmp_path: Path) -> Facts:
    guest = Guest(tmp_path / "guest")
    guest.write("/etc/os-release", 'ID=debian\nVERSION_ID="12"\n')
    guest.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    guest.write("/var/lib/dpkg/status", STATUS)  # installed: base-files, no cron, no inetd
    guest.write("/etc/rc.local", "#!/bin/sh\n/opt/erp/bin/licsrv --daemon\n", 0o755)
    guest.write("/etc/crontab", "@reboot root /opt/agent/start\n")
    guest.write("/etc/inetd.conf", "telnet stream tcp nowait root /usr/sbin/tcpd in.telnetd\n")
    guest.mkdir("/etc/rc2.d")
    guest.symlink("/etc/rc2.d/S01ssh", "../init.d/ssh")
    warnings: list[str] = []
    os_info = detect_linux(guest.fs, warnings)
    assert os_info is not None
    return collect_linux(guest.fs, image_info(), os_info, NOW, warnings)


def test_inspect_lists_what_runs_at_power_on_and_what_would_not(tmp_path: Path) -> None:
    text = render_facts(_facts(tmp_path).to_dict())
    section = text.split("What runs at power-on (4):\n", 1)[1].split("\n\n", 1)[0]
    rows = [line.split() for line in section.splitlines()[2:]]
    assert rows == [
        ["SysV", "rc", "link", "ssh", "/etc/rc[2-5].d", "-", "yes"],
        ["inetd", "service", "telnet", "inetd.conf/xinetd.d", "-", "no:", "no", "inetd", "or",
         "xinetd", "installed"],
        ["cron-reboot", "/opt/agent/start", "/etc/crontab", "root", "no:", "no", "cron",
         "installed", "(cron,", "cronie,", "systemd-cron,", "bcron)"],
        ["rc-local", "/etc/rc.local", "/etc/rc.local", "-", "yes"],
    ]  # fmt: skip


def test_inspect_of_a_guest_without_config_facts_says_none(tmp_path: Path) -> None:
    facts = _facts(tmp_path)
    data = facts.to_dict()
    del data["config"]
    assert "What runs at power-on: none" in render_facts(data)


def test_html_report_folds_what_runs_at_power_on_into_the_image(tmp_path: Path) -> None:
    facts = _facts(tmp_path)
    result = AuditedImage(image=ImageRef("/ds/erp.qcow2", "qcow2", ()), facts=facts)
    report = ScanReport("2026-11-27T12:00:00Z", "2026-11-27T12:00:01Z", (), "high", (result,), 0)
    page = html_report.render(report)
    assert "<summary>what runs at power-on (4)</summary>" in page
    assert "<td>rc-local</td><td>/etc/rc.local</td><td>/etc/rc.local</td>" in page
    assert "<td>root</td><td>no: no cron installed (cron, cronie, systemd-cron, bcron)</td>" in page

"""Every command that takes --state, on both backends, through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from vmaudit.cli import main


def test_scan_report_and_history_share_the_state_they_are_given(
    tmp_path: Path, state_ref: Path | str
) -> None:
    datastore = tmp_path / "datastore"
    datastore.mkdir()
    (datastore / "broken.qcow2").write_bytes(b"not an image at all")
    runner = CliRunner()
    scan = runner.invoke(
        main, ["scan", str(datastore), "--state", str(state_ref), "-q", "-f", "json"]
    )
    assert scan.exit_code == 3, scan.output  # the one image could not be audited
    report = runner.invoke(main, ["report", "-f", "json", "--state", str(state_ref)])
    assert report.exit_code == 0, report.output
    (image,) = json.loads(report.output)["images"]
    assert image["path"] == str(datastore / "broken.qcow2") and image["status"] == "error"
    history = runner.invoke(
        main, ["history", str(datastore / "broken.qcow2"), "-f", "json", "--state", str(state_ref)]
    )
    assert history.exit_code == 0, history.output
    (entry,) = json.loads(history.output)
    assert [event["kind"] for event in entry["events"]] == ["appeared"]

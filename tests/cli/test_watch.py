"""``vmaudit watch``: an image that appears, changes or goes is reported as it happens."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.imaging import convert, qemu_processes_mentioning, raw_disk_from_tree, write_tree
from tests.safety.test_opening import scan_env


def _reader(stream: Any, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def next_event(lines: queue.Queue[str], timeout: float = 400) -> dict[str, Any]:
    return dict(json.loads(lines.get(timeout=timeout)))


@pytest.mark.appliance
def test_watch_audits_appeared_and_modified_images_and_reports_gone_ones(tmp_path: Path) -> None:
    source = convert(
        raw_disk_from_tree(write_tree(tmp_path / "tree"), tmp_path / "g.raw"),
        "qcow2",
        tmp_path / "g.qcow2",
    )
    store = tmp_path / "store"
    store.mkdir()
    env = scan_env(tmp_path)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vmaudit.cli",
            "watch",
            str(store),
            "--format",
            "json",
            "--interval",
            "0.2",
            "--settle",
            "1",
            "--state",
            str(tmp_path / "state.db"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    try:
        time.sleep(1)
        image = store / "new-vm.qcow2"
        shutil.copy(source, image)
        appeared = next_event(lines)
        assert (appeared["event"], appeared["path"]) == ("appeared", str(image))
        assert appeared["status"] == "audited" and appeared["hostname"] == "mini-01"
        assert ("account.extra-uid0", "toor") in {
            (f["rule"], f["subject"]) for f in appeared["findings"]
        }

        os.utime(image, (time.time(), time.time() + 5))
        modified = next_event(lines)
        assert (modified["event"], modified["status"]) == ("modified", "audited")

        image.unlink()
        gone = next_event(lines, timeout=60)
        assert (gone["event"], gone["path"]) == ("disappeared", str(image))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert qemu_processes_mentioning(str(tmp_path / "tmpdir")) == []
    history = subprocess.run(
        [
            sys.executable,
            "-m",
            "vmaudit.cli",
            "history",
            str(store / "new-vm.qcow2"),
            "--state",
            str(tmp_path / "state.db"),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    kinds = [e["kind"] for entry in json.loads(history.stdout) for e in entry["events"]]
    assert kinds[:2] == ["appeared", "modified"]

"""The empty hive generator against the documented layout and the hivex reference hive."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import hivex
import pytest

from fixtures.windows.regf import checksum, empty_hive
from vmaudit.collect.windows_registry import open_hivex

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "windows" / "minimal-hive"


def _summary(path: Path) -> tuple[str, list[int], list[int]]:
    h = hivex.Hivex(str(path))
    root = h.root()
    return h.node_name(root), list(h.node_children(root)), list(h.node_values(root))


def test_empty_hive_is_semantically_the_reference_hive(tmp_path: Path) -> None:
    if not REFERENCE.is_file():
        pytest.skip(f"reference hive {REFERENCE} absent")
    ours = tmp_path / "hive"
    ours.write_bytes(empty_hive())
    assert ours.stat().st_size == REFERENCE.stat().st_size == 8192
    assert _summary(ours) == _summary(REFERENCE) == ("$$$PROTO.HIV", [], [])


def test_empty_hive_follows_the_regf_layout() -> None:
    hive = empty_hive(minor_version=5)
    assert hive[:4] == b"regf"
    primary, secondary = struct.unpack_from("<II", hive, 4)
    assert primary == secondary  # a clean hive
    assert struct.unpack_from("<II", hive, 0x14) == (1, 5)
    root_offset, bins_size = struct.unpack_from("<II", hive, 0x24)
    assert bins_size == 4096
    assert struct.unpack_from("<I", hive, 0x1FC)[0] == checksum(hive[:0x1FC])
    assert hive[4096:4100] == b"hbin"
    cell = 4096 + root_offset
    assert struct.unpack_from("<i", hive, cell)[0] < 0  # allocated
    assert hive[cell + 4 : cell + 6] == b"nk"
    flags = struct.unpack_from("<H", hive, cell + 6)[0]
    assert flags == 0x04 | 0x08 | 0x20  # hive entry, no delete, compressed name


def test_a_bad_checksum_is_refused_by_hivex(tmp_path: Path) -> None:
    broken = bytearray(empty_hive())
    broken[0x1FC] ^= 0xFF
    path = tmp_path / "hive"
    path.write_bytes(bytes(broken))
    with pytest.raises(RuntimeError):
        open_hivex(str(path))  # hivex's own class would leave an unraisable error behind


def test_hivexregedit_grows_the_empty_hive(tmp_path: Path) -> None:
    hive = tmp_path / "SOFTWARE"
    hive.write_bytes(empty_hive())
    reg = tmp_path / "x.reg"
    reg.write_text(
        "Windows Registry Editor Version 5.00\n\n"
        "[HKEY_LOCAL_MACHINE\\SOFTWARE\\Vendor]\n"
        '"Name"="value"\n"Count"=dword:0000002a\n',
        encoding="utf-8",
    )
    subprocess.run(
        [
            "hivexregedit",
            "--merge",
            "--prefix",
            "HKEY_LOCAL_MACHINE\\SOFTWARE",
            str(hive),
            str(reg),
        ],
        check=True,
    )
    h = hivex.Hivex(str(hive))
    vendor = h.node_get_child(h.root(), "Vendor")
    count = h.node_get_value(vendor, "Count")
    assert h.value_dword(count) == 42

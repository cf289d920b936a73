"""Hostile headers and descriptors: each file gets its own error kind, discovery goes on.

Every header integer that names an offset or a size is bounded before it is used; text
descriptors (VMDK, .vmx, .ovf, libvirt XML) are parsed in linear time. Each test builds the
bad file next to a good image and checks the good one is still found. Time bounds are
generous: the benchmark measures speed, these only catch a hang or a quadratic parse.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from pathlib import Path

import pytest

from tests.imaging import vhd_checksum
from tests.safety.test_opening import scan_env, vmaudit
from vmaudit.discover.formats import read_head, sniff
from vmaudit.discover.walk import DiscoveryResult, discover
from vmaudit.errors import VmauditError
from vmaudit.guest.vhd import read_layer

from .conftest import qemu_img

HUGE = 2**63
MAX_U64 = 2**64 - 1
NEWLINES = 4 * 1024 * 1024  # a 4 MiB file of newlines: hours with a quadratic regex


def kinds(result: DiscoveryResult) -> dict[str, str]:
    return {os.path.basename(s.path): str(s.kind) for s in result.skipped}


def leaves(result: DiscoveryResult) -> list[str]:
    return [os.path.basename(i.path) for i in result.images]


def patch(path: Path, offset: int, data: bytes) -> None:
    content = bytearray(path.read_bytes())
    content[offset : offset + len(data)] = data
    path.write_bytes(bytes(content))


def qcow2_with_backing(path: Path, offset: int, size: int) -> Path:
    qemu_img("create", "-f", "qcow2", str(path), "16M")
    patch(path, 8, struct.pack(">QI", offset, size))
    return path


def sparse_vmdk_with_descriptor(path: Path, sector: int, sectors: int) -> Path:
    qemu_img("create", "-f", "vmdk", str(path), "16M")
    patch(path, 28, struct.pack("<QQ", sector, sectors))
    return path


def timed_discover(folder: Path) -> tuple[DiscoveryResult, float]:
    started = time.monotonic()
    result = discover([str(folder)])
    return result, time.monotonic() - started


@pytest.mark.parametrize(
    ("offset", "size"),
    [
        (HUGE, 16),  # seek(2**63) raised ValueError in the main process
        (MAX_U64, 1023),
        (512, 2**32 - 1),  # a name longer than qemu's 1023 bytes
        (65536 - 8, 64),  # a name running past the 64 KiB header cluster
    ],
)
def test_qcow2_backing_name_outside_its_header_is_corrupt(
    tmp_path: Path, offset: int, size: int
) -> None:
    qemu_img("create", "-f", "qcow2", str(tmp_path / "good.qcow2"), "16M")
    qcow2_with_backing(tmp_path / "bad.qcow2", offset, size)
    result = discover([str(tmp_path)])
    assert leaves(result) == ["good.qcow2"]
    assert kinds(result) == {"bad.qcow2": "corrupt-image"}
    assert "bad.qcow2: qcow2 backing file name" in result.skipped[0].message


def test_qcow2_backing_name_past_the_end_of_a_truncated_file_is_corrupt(tmp_path: Path) -> None:
    bad = qcow2_with_backing(tmp_path / "short.qcow2", 4096, 100)
    bad.write_bytes(bad.read_bytes()[:4000])
    result = discover([str(tmp_path)])
    assert kinds(result) == {"short.qcow2": "corrupt-image"}


def test_qcow2_cluster_bits_and_header_length_are_bounded(tmp_path: Path) -> None:
    qemu_img("create", "-f", "qcow2", str(tmp_path / "bits.qcow2"), "16M")
    patch(tmp_path / "bits.qcow2", 20, struct.pack(">I", 64))
    qemu_img("create", "-f", "qcow2", str(tmp_path / "length.qcow2"), "16M")
    patch(tmp_path / "length.qcow2", 100, struct.pack(">I", 2**32 - 1))
    (tmp_path / "stub.qcow2").write_bytes(b"QFI\xfb\0\0\0\3")
    result = discover([str(tmp_path)])
    assert result.images == []
    assert kinds(result) == {
        "bits.qcow2": "corrupt-image",
        "length.qcow2": "corrupt-image",
        "stub.qcow2": "corrupt-image",
    }


@pytest.mark.parametrize("sector", [HUGE // 512, HUGE // 512 + 1, MAX_U64, 2**40])
def test_vmdk_descriptor_outside_the_file_is_corrupt(tmp_path: Path, sector: int) -> None:
    qemu_img("create", "-f", "vmdk", str(tmp_path / "good.vmdk"), "16M")
    sparse_vmdk_with_descriptor(tmp_path / "bad.vmdk", sector, 20)
    result = discover([str(tmp_path)])
    assert leaves(result) == ["good.vmdk"]
    assert kinds(result) == {"bad.vmdk": "corrupt-image"}
    assert "VMDK embedded descriptor at offset" in result.skipped[0].message


def test_vmdk_descriptor_size_of_2_64_is_read_bounded(tmp_path: Path) -> None:
    # A size no file has: only the first bytes are read, the image itself is fine.
    sparse_vmdk_with_descriptor(tmp_path / "wide.vmdk", 1, MAX_U64)
    result = discover([str(tmp_path)])
    assert leaves(result) == ["wide.vmdk"]
    assert result.skipped == []


def test_vmdk_parent_hint_is_read_where_qemu_reads_it(tmp_path: Path) -> None:
    # qemu takes parentFileNameHint from sector 1 of a sparse extent, whatever the header's
    # descriptor offset says: a benign descriptor elsewhere cannot hide a host parent.
    leaf = tmp_path / "leaf.vmdk"
    qemu_img("create", "-f", "vmdk", str(leaf), "16M")
    data = bytearray(leaf.read_bytes())
    descriptor = bytes(data[512:1024])
    hostile = descriptor.replace(
        b'createType="monolithicSparse"', b'parentFileNameHint="/etc/passwd"'
    )
    assert hostile != descriptor and hostile[512:].strip(b"\0") == b""
    data[512:1024] = hostile[:512]
    data[len(data) - 1024 : len(data) - 512] = descriptor  # the header's copy, benign
    data[28:36] = struct.pack("<Q", len(data) // 512 - 2)
    leaf.write_bytes(bytes(data))
    result = discover([str(tmp_path)])
    assert kinds(result) == {"leaf.vmdk": "unsafe-backing-file"}


def test_commented_parent_hint_counts_as_qemu_reads_it(tmp_path: Path) -> None:
    # qemu-img info on this file says "backing file: /etc/shadow": strstr, not a line parse.
    (tmp_path / "desc.vmdk").write_text(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
        '# parentFileNameHint="/etc/shadow"\n'
        'createType="monolithicFlat"\nRW 2048 FLAT "desc-flat.bin" 0\n'
    )
    (tmp_path / "desc-flat.bin").write_bytes(b"\0" * 2048 * 512)
    result = discover([str(tmp_path)])
    assert kinds(result) == {"desc.vmdk": "unsafe-backing-file"}


def differencing_vhd(path: Path, data_offset: int) -> Path:
    qemu_img("create", "-f", "vpc", str(path), "16M")
    data = bytearray(path.read_bytes())
    for at in (0, len(data) - 512):
        footer = data[at : at + 512]
        footer[16:24] = struct.pack(">Q", data_offset)
        footer[60:64] = struct.pack(">I", 4)
        vhd_checksum(footer)
        data[at : at + 512] = footer
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("data_offset", [HUGE, MAX_U64])
def test_vhd_dynamic_header_offset_of_2_63_is_a_missing_parent(
    tmp_path: Path, data_offset: int
) -> None:
    qemu_img("create", "-f", "vpc", str(tmp_path / "good.vhd"), "16M")
    differencing_vhd(tmp_path / "child.vhd", data_offset)
    result = discover([str(tmp_path)])
    assert leaves(result) == ["good.vhd"]
    assert kinds(result) == {"child.vhd": "missing-parent"}


@pytest.mark.parametrize(
    ("field", "value"), [("data_offset", HUGE), ("table_offset", HUGE), ("table_offset", MAX_U64)]
)
def test_vhd_merge_refuses_offsets_outside_the_file(tmp_path: Path, field: str, value: int) -> None:
    path = tmp_path / "layer.vhd"
    qemu_img("create", "-f", "vpc", str(path), "16M")
    data = bytearray(path.read_bytes())
    if field == "data_offset":
        for at in (0, len(data) - 512):
            footer = data[at : at + 512]
            footer[16:24] = struct.pack(">Q", value)
            vhd_checksum(footer)
            data[at : at + 512] = footer
    else:
        (dynamic,) = struct.unpack(">Q", data[16:24])
        data[dynamic + 16 : dynamic + 24] = struct.pack(">Q", value)
    path.write_bytes(bytes(data))
    with pytest.raises(VmauditError) as raised:
        read_layer(str(path))
    assert str(raised.value.kind) == "corrupt-image"


def test_vmdk_descriptor_of_newlines_is_parsed_in_linear_time(tmp_path: Path) -> None:
    # Only the first 64 KiB decide a descriptor; a 64 KiB one of newlines was quadratic.
    text = '# Disk DescriptorFile\ncreateType="monolithicFlat"\n'
    text += "\n" * (64 * 1024 - len(text) - 60) + 'RW 2048 FLAT "/etc/passwd" 0\n'
    (tmp_path / "blank.vmdk").write_text(text)
    (tmp_path / "spaces.vmdk").write_text('# Disk DescriptorFile\ncreateType="x"\n' + " \n" * 30000)
    result, elapsed = timed_discover(tmp_path)
    assert elapsed < 20
    # The extent after 64 KiB of newlines was read; a descriptor of blanks names no extent.
    assert kinds(result) == {"blank.vmdk": "unsafe-extent", "spaces.vmdk": "corrupt-image"}


def test_vmdk_descriptor_line_of_blanks_is_parsed_in_linear_time(tmp_path: Path) -> None:
    # '"?([^"]*)"?\s*$' backtracked quadratically over 60,000 blanks inside quotes.
    (tmp_path / "wide.vmdk").write_text(
        '# Disk DescriptorFile\ncreateType="monolithicFlat"\nRW 2048 FLAT "wide-flat.bin" 0\n'
        'ddb.comment = "' + " " * 60000 + '"x\n'
    )
    (tmp_path / "wide-flat.bin").write_bytes(b"\0" * 2048 * 512)
    result, elapsed = timed_discover(tmp_path)
    assert elapsed < 20
    assert leaves(result) == ["wide.vmdk"]
    assert [os.path.basename(p) for p in result.images[0].disks[0].chain] == [
        "wide.vmdk",
        "wide-flat.bin",
    ]


def test_vmx_of_newlines_is_parsed_in_linear_time(tmp_path: Path) -> None:
    qemu_img("create", "-f", "vmdk", str(tmp_path / "disk.vmdk"), "16M")
    body = 'displayName = "blank"\n' + "\n" * (200 * 1024) + 'scsi0:0.fileName = "disk.vmdk"\n'
    (tmp_path / "blank.vmx").write_text(body)
    (tmp_path / "huge.vmx").write_text(" \n" * (NEWLINES // 2))  # over the size cap: no VM
    result, elapsed = timed_discover(tmp_path)
    assert elapsed < 20
    assert [(os.path.basename(i.path), i.vm) for i in result.images] == [("blank.vmx", "blank")]
    assert result.skipped == []


@pytest.mark.parametrize("suffix", [".xml", ".ovf"])
def test_xml_descriptor_of_newlines_is_parsed_in_linear_time(tmp_path: Path, suffix: str) -> None:
    qemu_img("create", "-f", "qcow2", str(tmp_path / "a.qcow2"), "16M")
    (tmp_path / f"blank{suffix}").write_text("\n" * (200 * 1024) + "<domain>")
    (tmp_path / f"huge{suffix}").write_text("\n" * NEWLINES)
    result, elapsed = timed_discover(tmp_path)
    assert elapsed < 20
    assert leaves(result) == ["a.qcow2"]
    assert result.skipped == []


def test_unreadable_descriptor_is_its_own_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    qemu_img("create", "-f", "qcow2", str(tmp_path / "a.qcow2"), "16M")
    (tmp_path / "locked.vmx").write_text('scsi0:0.fileName = "a.vmdk"\n')
    (tmp_path / "locked.vmx").chmod(0)
    result = discover([str(tmp_path)])
    assert leaves(result) == ["a.qcow2"]
    assert kinds(result) == {"locked.vmx": "permission-denied"}


def test_a_datastore_of_many_hostile_files_is_discovered_whole(tmp_path: Path) -> None:
    """Hundreds of hostile headers and descriptors cost each their own entry, nothing more."""
    template = tmp_path / "template.qcow2"
    qcow2_with_backing(template, HUGE, 16)
    bad_qcow2 = template.read_bytes()
    template.unlink()
    vmdk_template = sparse_vmdk_with_descriptor(tmp_path / "t.vmdk", MAX_U64, 20)
    bad_vmdk = vmdk_template.read_bytes()
    vmdk_template.unlink()
    newlines = '# Disk DescriptorFile\ncreateType="x"\n' + "\n" * 60000
    expected: dict[str, str] = {}
    for index in range(150):
        folder = tmp_path / f"vm{index:03}"
        folder.mkdir()
        (folder / f"q{index}.qcow2").write_bytes(bad_qcow2)
        (folder / f"v{index}.vmdk").write_bytes(bad_vmdk)
        (folder / f"d{index}.vmdk").write_text(newlines)
        (folder / f"m{index}.vmx").write_text("\n" * 200_000)
        expected.update(
            {
                f"q{index}.qcow2": "corrupt-image",
                f"v{index}.vmdk": "corrupt-image",
                f"d{index}.vmdk": "corrupt-image",
            }
        )
    qemu_img("create", "-f", "qcow2", str(tmp_path / "vm000" / "good.qcow2"), "16M")
    result, elapsed = timed_discover(tmp_path)
    assert elapsed < 120
    assert leaves(result) == ["good.qcow2"]
    assert kinds(result) == expected


def test_scan_of_hostile_headers_reports_each_and_exits_3(tmp_path: Path) -> None:
    """Through the CLI: no traceback, every image in the report with its kind."""
    store = tmp_path / "store"
    store.mkdir()
    qcow2_with_backing(store / "offset.qcow2", HUGE, 16)
    sparse_vmdk_with_descriptor(store / "offset.vmdk", HUGE // 512, 20)
    differencing_vhd(store / "offset.vhd", HUGE)
    (store / "blank.vmdk").write_text('# Disk DescriptorFile\ncreateType="x"\n' + "\n" * 60000)
    (store / "blank.vmx").write_text("\n" * 200_000)
    env = {**scan_env(tmp_path), "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}
    proc = vmaudit(
        "scan",
        str(store),
        "--format",
        "json",
        "--fail-on",
        "never",
        "--no-cache",
        env=env,
        timeout=300,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    status = {
        os.path.basename(i["path"]): (i["status"], i["error"]["kind"]) for i in report["images"]
    }
    assert status == {
        "offset.qcow2": ("error", "corrupt-image"),
        "offset.vmdk": ("error", "corrupt-image"),
        "offset.vhd": ("error", "missing-parent"),
        "blank.vmdk": ("error", "corrupt-image"),
    }


def test_unusable_paths_given_on_the_command_line_are_each_reported(tmp_path: Path) -> None:
    qemu_img("create", "-f", "qcow2", str(tmp_path / "a.qcow2"), "16M")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    too_long = str(tmp_path / ("x" * 300))
    result = discover([str(tmp_path / "a.qcow2"), str(tmp_path / "loop" / "x.qcow2"), too_long])
    assert leaves(result) == ["a.qcow2"]
    assert {os.path.basename(s.path): str(s.kind) for s in result.skipped} == {
        "x.qcow2": "corrupt-image",
        "x" * 300: "corrupt-image",
    }


@pytest.mark.parametrize("name", ["swapped.qcow2", "swapped.vmx"])
def test_a_fifo_swapped_in_after_lstat_is_refused_not_waited_on(tmp_path: Path, name: str) -> None:
    """Discovery lstat's first; a file replaced by a FIFO before it is opened must not block
    (a plain open() of a FIFO waits for a writer forever)."""
    fifo = tmp_path / name
    os.mkfifo(fifo)
    outcome: list[BaseException | object] = []

    def read() -> None:
        path = str(fifo)
        try:
            outcome.append(sniff(path) if name.endswith(".qcow2") else read_head(path, 10))
        except BaseException as exc:  # the outcome is checked below
            outcome.append(exc)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(20)
    assert outcome, "blocked on a FIFO"
    assert isinstance(outcome[0], VmauditError)
    assert str(outcome[0].kind) == "not-a-regular-file"

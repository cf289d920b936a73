"""Identity of an image on disk: stat plus the SHA-256 of the first MiB of each file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from state_helpers import make_image

from vmaudit.discover.identity import (
    HEAD_BYTES,
    Identity,
    changed_files,
    image_files,
    image_identity,
    sha256_head,
)
from vmaudit.errors import ErrorKind, VmauditError
from vmaudit.models import DiskRef, ImageRef


def test_sha256_head_hashes_only_the_first_mib(tmp_path: Path) -> None:
    data = os.urandom(HEAD_BYTES) + b"tail that does not count" * 1000
    image = tmp_path / "big.raw"
    image.write_bytes(data)
    assert sha256_head(image) == hashlib.sha256(data[:HEAD_BYTES]).hexdigest()


def test_sha256_head_of_a_small_file_is_its_whole_hash(tmp_path: Path) -> None:
    image = tmp_path / "small.raw"
    image.write_bytes(b"abc")
    assert sha256_head(image) == hashlib.sha256(b"abc").hexdigest()


def test_identity_is_stable_for_unchanged_files(tmp_path: Path) -> None:
    image = tmp_path / "vm.qcow2"
    image.write_bytes(b"x" * 4096)
    first = image_identity(make_image(image))
    second = image_identity(make_image(image))
    assert first == second
    assert first.digest == second.digest
    assert len(first.digest) == 64
    assert first.files[0].path == str(image)
    assert first.files[0].size == 4096


def test_identity_changes_when_a_byte_of_the_head_changes_even_with_same_mtime(
    tmp_path: Path,
) -> None:
    image = tmp_path / "vm.qcow2"
    image.write_bytes(b"x" * 4096)
    before = image_identity(make_image(image))
    stat = image.stat()
    image.write_bytes(b"y" + b"x" * 4095)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = image_identity(make_image(image))
    assert after.digest != before.digest
    assert changed_files(before, after) == [
        {"path": str(image), "change": "modified", "fields": ["sha256_head"]}
    ]


def test_identity_changes_with_mtime_alone(tmp_path: Path) -> None:
    image = tmp_path / "vm.qcow2"
    image.write_bytes(b"x" * 10)
    before = image_identity(make_image(image))
    os.utime(image, ns=(1, 1_000_000_000))
    after = image_identity(make_image(image))
    assert after.digest != before.digest
    assert changed_files(before, after)[0]["fields"] == ["mtime_ns"]


def test_identity_covers_descriptor_and_every_chain_file_leaf_first(tmp_path: Path) -> None:
    vmx = tmp_path / "web.vmx"
    leaf = tmp_path / "web-000001.vmdk"
    base = tmp_path / "web.vmdk"
    for path in (vmx, leaf, base):
        path.write_text(path.name)
    image = ImageRef(
        str(vmx), "vmdk", (DiskRef(str(leaf), "vmdk", (str(leaf), str(base))),), vm="web"
    )
    assert image_files(image) == [str(vmx), str(leaf), str(base)]
    identity = image_identity(image)
    assert [f.path for f in identity.files] == [str(vmx), str(leaf), str(base)]
    before = identity.digest
    base.write_text("the base changed")
    assert image_identity(image).digest != before


def test_identity_round_trips_through_its_dict(tmp_path: Path) -> None:
    image = tmp_path / "vm.qcow2"
    image.write_bytes(b"z")
    identity = image_identity(make_image(image))
    again = Identity.from_dict(identity.to_dict())
    assert again == identity
    assert again.digest == identity.digest


def test_a_missing_file_is_an_image_changed_error(tmp_path: Path) -> None:
    with pytest.raises(VmauditError) as caught:
        image_identity(make_image(tmp_path / "gone.qcow2"))
    assert caught.value.kind is ErrorKind.IMAGE_CHANGED


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "real.qcow2"
    target.write_bytes(b"data")
    link = tmp_path / "link.qcow2"
    link.symlink_to(target)
    with pytest.raises(VmauditError) as caught:
        image_identity(make_image(link))
    assert caught.value.kind is ErrorKind.NOT_A_REGULAR_FILE


def test_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.raw"
    os.mkfifo(fifo)
    with pytest.raises(VmauditError) as caught:
        image_identity(make_image(fifo))
    assert caught.value.kind is ErrorKind.NOT_A_REGULAR_FILE


def test_reading_the_identity_leaves_the_file_unchanged(tmp_path: Path) -> None:
    image = tmp_path / "vm.qcow2"
    image.write_bytes(os.urandom(2 * HEAD_BYTES))
    before_bytes, before_stat = image.read_bytes(), image.stat()
    image_identity(make_image(image))
    assert image.read_bytes() == before_bytes
    assert image.stat().st_mtime_ns == before_stat.st_mtime_ns

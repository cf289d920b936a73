"""Batch sizes and vCPUs per appliance: the launch spread over as many images as is safe."""

from __future__ import annotations

import pytest

from vmaudit.models import DiskRef, ImageRef
from vmaudit.run.sizing import MAX_BATCH, MAX_SMP, appliance_smp, batch_size, cut_batches


def test_a_requested_batch_is_kept() -> None:
    assert batch_size(3, images=100, jobs=2) == 3
    assert batch_size(0, images=100, jobs=2) == 1


@pytest.mark.parametrize(
    ("images", "jobs", "expected"),
    [(0, 2, 1), (1, 2, 1), (12, 2, 6), (24, 2, 12), (24, 8, 3), (7, 2, 4)],
)
def test_images_are_spread_evenly_over_the_jobs(images: int, jobs: int, expected: int) -> None:
    assert batch_size(None, images, jobs) == expected


def test_batches_grow_with_the_datastore_up_to_the_cap() -> None:
    sizes = [batch_size(None, images, 2) for images in (8, 16, 24, 32)]
    assert sizes == [4, 8, 12, 16]
    assert batch_size(None, 1000, 2) <= MAX_BATCH


def test_past_the_cap_the_rounds_are_equal() -> None:
    # 34 images per job cut in 3 rounds of 12, 11, 11: never 16, 16 and a straggler of 2
    size = batch_size(None, 68, 2)
    assert size == 12
    per_job = 34
    rounds = -(-per_job // size)
    assert rounds == 3 and per_job - (rounds - 1) * size >= size - 2


def test_appliances_share_the_host_cpus() -> None:
    assert appliance_smp(cpus=2, batches=2, jobs=2) == 1
    assert appliance_smp(cpus=2, batches=1, jobs=2) == 2
    assert appliance_smp(cpus=8, batches=2, jobs=8) == 4
    assert appliance_smp(cpus=64, batches=1, jobs=1) == MAX_SMP
    assert appliance_smp(cpus=1, batches=5, jobs=3) == 1


def _image(path: str, *chain: str) -> ImageRef:
    return ImageRef(path, "vmdk", (DiskRef(path, "vmdk", chain or (path,)),))


def test_batches_are_cut_in_order_as_slicing_would() -> None:
    images = [_image(f"/ds/{n}.qcow2") for n in range(7)]
    assert cut_batches(images, 3) == [images[0:3], images[3:6], images[6:7]]


def test_a_template_and_its_linked_clone_never_share_an_appliance() -> None:
    base = "/ds/crm/crm-base.vmdk"
    vm = _image("/ds/crm/crm.vmx", "/ds/crm/crm-000001.vmdk", base)
    template = _image("/ds/crm/crm-gold.vmtx", base)  # the clone's snapshot base
    others = [_image(f"/ds/{n}.qcow2") for n in range(3)]
    batches = cut_batches([vm, template, *others], 4)
    assert batches == [[vm, *others], [template]]
    assert len(cut_batches([vm, template, *others], 3)) == 2  # no more appliances than needed


def test_images_sharing_files_spread_over_the_batches_the_others_fill() -> None:
    """Two templates with their clones among 22 other images, two appliances of 13: the
    four that share files go two to each batch, and no third appliance is launched."""
    pairs = []
    for n in (1, 2):
        base = f"/ds/c{n}/crm-base.vmdk"
        pairs += [_image(f"/ds/c{n}/crm.vmx", f"/ds/c{n}/crm-000001.vmdk", base)]
        pairs += [_image(f"/ds/c{n}/crm-gold.vmtx", base)]
    others = [_image(f"/ds/{n}.qcow2") for n in range(22)]
    images = [*others[:11], pairs[0], pairs[1], *others[11:], pairs[2], pairs[3]]
    batches = cut_batches(images, 13)
    assert [len(batch) for batch in batches] == [13, 13]
    for batch in batches:
        assert sorted(batch, key=images.index) == batch  # each batch in the images' order
        assert len({path for image in batch for path in sorted(_files_of(image))}) == sum(
            len(_files_of(image)) for image in batch
        )  # no file twice in one appliance


def _files_of(image: ImageRef) -> set[str]:
    return {path for disk in image.disks for path in disk.chain}

"""How a scan's images are cut into appliances, and how many vCPUs each appliance gets.

An appliance launch costs about as much as reading a dozen guests in it (software
emulation: 15 to 25 s), so the images are spread evenly over the appliances that run at
once, and a batch grows with the datastore up to ``MAX_BATCH``: beyond it, a batch that
fails as a whole (and is re-run image by image) or times out would cost too much, and more
images would share one appliance kernel (README, "Speed").
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vmaudit.models import ImageRef

MAX_BATCH = 16
MAX_SMP = 4


def batch_size(requested: int | None, images: int, jobs: int) -> int:
    """Images per appliance: as asked, or the images spread evenly over ``jobs`` appliances,
    at most ``MAX_BATCH`` each (a datastore of more images gets more rounds of appliances)."""
    if requested is not None:
        return max(1, requested)
    per_job = -(-max(0, images) // max(1, jobs))
    if per_job <= MAX_BATCH:
        return max(1, per_job)
    rounds = -(-per_job // MAX_BATCH)
    return -(-per_job // rounds)  # equal batches, so the last round is not a straggler


def appliance_smp(cpus: int, batches: int, jobs: int) -> int:
    """vCPUs for each appliance: the host's CPUs shared by the appliances running at once.

    In software emulation a second vCPU shortens the launch (QEMU runs each vCPU in a host
    thread); more vCPUs than host CPUs per appliance only adds contention.
    """
    at_once = max(1, min(batches, jobs))
    return max(1, min(MAX_SMP, cpus // at_once))


def _files(image: ImageRef) -> set[str]:
    """Every file qemu reads for the image: its disks' chains (a leaf alone when unknown)."""
    found: set[str] = set()
    for disk in image.disks:
        found.update(os.path.realpath(path) for path in disk.chain or (disk.path,))
    return found


def cut_batches(images: Sequence[ImageRef], size: int) -> list[list[ImageRef]]:
    """The images in batches of at most ``size``, each in the first batch with room (in
    order, as slicing would cut them), except that two images sharing a file (a template and
    the linked clone made from it, two VMs on one base) never share a batch: one appliance
    cannot tell their roots apart, and both would be audited again, alone.

    The images that share a file are placed first, so that they spread over the batches the
    others fill anyway instead of opening one more appliance at the end."""
    files = [_files(image) for image in images]
    readers = Counter(path for mine in files for path in mine)
    shares = [any(readers[path] > 1 for path in mine) for mine in files]
    batches: list[tuple[list[int], set[str]]] = []
    for index in sorted(range(len(images)), key=lambda i: not shares[i]):  # stable: in order
        mine = files[index]
        home = next((b for b in batches if len(b[0]) < size and not b[1] & mine), None)
        if home is None:
            home = ([], set())
            batches.append(home)
        home[0].append(index)
        home[1].update(mine)
    return [[images[i] for i in sorted(batch)] for batch, _files_used in batches]

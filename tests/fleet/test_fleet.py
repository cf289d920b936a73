"""vmaudit.run.fleet without an appliance: path maps, resource detection, worker deaths.

The clusters here are real ``distributed.LocalCluster`` instances; the batches they run are a
``Runner`` whose ``run_batch`` answers from the paths it is given (or kills its worker), so
the fleet's own work is what is tested: translation, submission, rows for lost images.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import dask
import pytest
from distributed import Client, LocalCluster

from vmaudit.errors import ConfigError
from vmaudit.models import DiskRef, Facts, ImageInfo, ImageRef, OsInfo
from vmaudit.run.fleet import (
    FleetExecutor,
    PathMap,
    PathTranslator,
    appliance_resources,
    capacity,
    check_fleet_options,
    connect,
    parse_path_map,
)
from vmaudit.run.runner import RawOutcome, Runner

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEADLY = "deadly"


def image(path: str) -> ImageRef:
    return ImageRef(
        path=path,
        format="qcow2",
        disks=(DiskRef(path, "qcow2", chain=(path,), chain_formats=("qcow2",)),),
    )


class EchoRunner(Runner):
    """Answers each image with facts naming the path it saw; an image named ``deadly`` kills
    the worker process that runs it, as a crashing host would."""

    def run_batch(self, images: Sequence[ImageRef], now: datetime) -> list[RawOutcome]:
        if any(DEADLY in i.path for i in images):
            os.kill(os.getpid(), signal.SIGKILL)
        return [RawOutcome(i, seen_facts(i.path, [d.path for d in i.disks]), None) for i in images]


def seen_facts(path: str, disks: Sequence[str]) -> Facts:
    """Facts naming only the paths an audit saw."""
    return Facts(ImageInfo(path, "qcow2", 0, "", "", None, tuple(disks)), OsInfo("linux"))


def test_path_map_needs_local_equals_remote_absolute() -> None:
    assert parse_path_map("/srv/ds=/mnt/ds/") == PathMap("/srv/ds", "/mnt/ds")
    for bad in ("/srv/ds", "=/mnt", "/srv=", "srv=/mnt"):
        with pytest.raises(ConfigError, match="--path-map"):
            parse_path_map(bad)


def test_fleet_options_without_scheduler_are_refused() -> None:
    with pytest.raises(ConfigError, match="need --scheduler"):
        check_fleet_options(None, ("/a=/b",), False)
    with pytest.raises(ConfigError, match="need --scheduler"):
        check_fleet_options(None, (), True)
    check_fleet_options("tcp://h:8786", ("/a=/b",), True)


def test_longest_mapped_folder_wins_and_translation_round_trips() -> None:
    paths = PathTranslator([PathMap("/srv", "/mnt/a"), PathMap("/srv/ds", "/data")])
    assert paths.to_worker("/srv/ds/vm/disk.qcow2") == "/data/vm/disk.qcow2"
    assert paths.to_worker("/srv/other.img") == "/mnt/a/other.img"
    assert paths.to_worker("/srvx/disk.img") == "/srvx/disk.img"  # a prefix, not a folder
    ref = image("/srv/ds/vm/disk.qcow2")
    remote = paths.image(ref, paths.to_worker)
    assert remote.disks[0].chain == ("/data/vm/disk.qcow2",)
    assert paths.image(remote, paths.to_client) == ref


@pytest.fixture
def threads_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(
        n_workers=2,
        processes=False,
        threads_per_worker=1,
        dashboard_address=":0",
        local_directory=str(tmp_path),
    ) as cluster:
        yield cluster


def test_plain_workers_get_tasks_without_resources(threads_cluster: LocalCluster) -> None:
    with Client(threads_cluster, set_as_default=False) as client:
        assert appliance_resources(client) is None
        assert capacity(client) == 2


def test_declared_appliances_are_requested_and_counted(tmp_path: Path) -> None:
    with (
        LocalCluster(
            n_workers=2,
            processes=False,
            threads_per_worker=1,
            resources={"appliance": 3},
            dashboard_address=":0",
            local_directory=str(tmp_path),
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        assert appliance_resources(client) == {"appliance": 1}
        assert capacity(client) == 6


def test_workers_see_their_paths_and_the_report_keeps_the_clients(
    threads_cluster: LocalCluster,
) -> None:
    paths = PathTranslator([PathMap("/client/ds", "/worker/ds")])
    images = [image(f"/client/ds/vm{n}/disk.qcow2") for n in range(3)]
    with Client(threads_cluster, set_as_default=False) as client:
        runner = EchoRunner(
            jobs=1, timeout=60, batch=2, executor=FleetExecutor(client, paths, lambda message: None)
        )
        outcomes = sorted(runner.run(images, NOW), key=lambda o: o.image.path)
    assert [o.image for o in outcomes] == images
    assert [o.facts for o in outcomes] == [seen_facts(i.path, [i.path]) for i in images]


def test_an_image_that_kills_workers_is_an_error_row_and_spares_its_batch(tmp_path: Path) -> None:
    images = [image("/ds/good.qcow2"), image(f"/ds/{DEADLY}.qcow2")]
    # One task on the worker at a time: a queued task would share the dying worker's blame.
    config = {
        "distributed.scheduler.allowed-failures": 0,
        "distributed.scheduler.worker-saturation": 1.0,
    }
    with (
        dask.config.set(config),
        LocalCluster(
            n_workers=1,
            processes=True,
            threads_per_worker=1,
            dashboard_address=":0",
            local_directory=str(tmp_path),
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        runner = EchoRunner(
            jobs=1,
            timeout=60,
            batch=2,
            executor=FleetExecutor(client, PathTranslator(), lambda m: None),
        )
        outcomes = {o.image.path: o for o in runner.run(images, NOW)}
    good, deadly = outcomes["/ds/good.qcow2"], outcomes[f"/ds/{DEADLY}.qcow2"]
    assert good.error is None and good.facts is not None
    assert deadly.facts is None and deadly.error is not None
    assert deadly.error.kind == "appliance-failed"
    assert "workers died" in deadly.error.message


def test_an_unreachable_scheduler_is_a_configuration_error() -> None:
    with (
        pytest.raises(ConfigError, match="cannot reach the Dask scheduler"),
        connect("tcp://127.0.0.1:1", timeout="1s"),
    ):
        pass


def test_workers_discover_their_view_and_the_client_gets_its_paths(
    threads_cluster: LocalCluster, tmp_path: Path
) -> None:
    on_workers = tmp_path / "mounted-here"
    (on_workers / "vm").mkdir(parents=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(on_workers / "vm" / "a.qcow2"), "1M"],
        check=True,
    )
    (on_workers / "vm" / "notes.txt").write_text("not an image\n")
    client_view = tmp_path / "not-mounted-on-the-client"
    maps = [PathMap(str(client_view), str(on_workers))]

    with connect(threads_cluster.scheduler_address, maps) as fleet:
        found = fleet.discover([str(client_view)], [])

    assert [i.path for i in found.images] == [str(client_view / "vm" / "a.qcow2")]
    assert found.images[0].disks[0].chain == (str(client_view / "vm" / "a.qcow2"),)
    assert found.skipped == []

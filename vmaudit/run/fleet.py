"""Fleet scans: batches of images audited on the workers of a Dask ``distributed`` cluster.

A batch becomes one Dask task that runs ``Runner.run_batch`` on the worker host, so it is the
same audit as a local scan (a ``vmaudit.run.worker`` child in its own session, killed as a group
on timeout). Image paths are translated client -> worker with ``--path-map`` before a batch is
sent and back when its outcomes return, so the report and the state database hold the
client's paths. Tasks ask for one ``appliance`` resource when the workers declare it
(``dask worker --resources appliance=N``). Dask reschedules a task whose worker died; a
batch that kills workers ``distributed.scheduler.allowed-failures`` times comes back as
``appliance-failed`` rows (a batch of several images is first retried image by image, so
only the image that kills workers is lost).

``distributed`` is the optional extra ``fleet``; it is imported only when a fleet is used.
The CLI turns a connected ``Fleet`` into the scan's ``Auditors``; the scan never picks them.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from vmaudit.discover.walk import DiscoveryResult, discover
from vmaudit.errors import ConfigError, ErrorKind
from vmaudit.models import DiskRef, Facts, ImageError, ImageRef, Skipped
from vmaudit.run.runner import Auditors, RawOutcome, Runner

if TYPE_CHECKING:
    from distributed import Client

APPLIANCE = "appliance"
CONNECT_TIMEOUT = "20s"

P = ParamSpec("P")
T = TypeVar("T")


# ---------------------------------------------------------------- path maps


@dataclass(frozen=True)
class PathMap:
    """One datastore seen at ``local`` by the client and at ``remote`` by the workers."""

    local: str
    remote: str


def parse_path_map(text: str) -> PathMap:
    """``LOCAL=REMOTE`` as given to ``--path-map``; ``ConfigError`` when malformed."""
    local, sep, remote = text.partition("=")
    if not sep or not local or not remote:
        raise ConfigError(f"--path-map {text!r}: expected LOCAL=REMOTE")
    if not (os.path.isabs(local) and os.path.isabs(remote)):
        raise ConfigError(f"--path-map {text!r}: both paths must be absolute")
    return PathMap(os.path.normpath(local), os.path.normpath(remote))


def check_fleet_options(
    scheduler: str | None, path_maps: Sequence[str], discover_on_workers: bool
) -> None:
    """``ConfigError`` for a malformed ``--path-map`` or a fleet option without ``--scheduler``."""
    if scheduler is None and (path_maps or discover_on_workers):
        raise ConfigError("--path-map and --discover-on-workers need --scheduler")
    for text in path_maps:
        parse_path_map(text)


def _moved(path: str, pairs: Sequence[tuple[str, str]]) -> str:
    """``path`` with the longest matching ``old`` prefix (a whole folder) replaced by ``new``."""
    best: tuple[str, str] | None = None
    for old, new in pairs:
        inside = path == old or path.startswith(old.rstrip("/") + "/")
        if inside and (best is None or len(old) > len(best[0])):
            best = (old, new)
    if best is None:
        return path
    old, new = best
    return new + path[len(old) :] if old != "/" else os.path.join(new, path[1:])


class PathTranslator:
    """Client paths to worker paths and back, for every path an image or its facts carry."""

    def __init__(self, maps: Sequence[PathMap] = ()) -> None:
        self._out = [(m.local, m.remote) for m in maps]
        self._back = [(m.remote, m.local) for m in maps]

    def to_worker(self, path: str) -> str:
        return _moved(path, self._out)

    def to_client(self, path: str) -> str:
        return _moved(path, self._back)

    def image(self, image: ImageRef, move: Callable[[str], str]) -> ImageRef:
        disks = tuple(
            DiskRef(
                path=move(d.path),
                format=d.format,
                chain=tuple(move(p) for p in d.chain),
                chain_formats=d.chain_formats,
            )
            for d in image.disks
        )
        return replace(image, path=move(image.path), disks=disks)

    def facts_to_client(self, facts: Facts) -> Facts:
        info = facts.image
        moved = replace(
            info, path=self.to_client(info.path), disks=tuple(self.to_client(p) for p in info.disks)
        )
        return replace(facts, image=moved)

    def discovery_to_client(self, found: DiscoveryResult) -> DiscoveryResult:
        return DiscoveryResult(
            images=[self.image(i, self.to_client) for i in found.images],
            skipped=[Skipped(self.to_client(s.path), s.kind, s.message) for s in found.skipped],
        )


# ---------------------------------------------------------------- on the worker

_worker_software_emulation = False  # per worker process: a KVM failure is paid once


def audit_on_worker(
    runner: Runner,
    images: list[ImageRef],
    now: datetime,
) -> tuple[list[RawOutcome], bool]:
    """The Dask task: the local audit of one batch, on the worker host.

    Returns the outcomes (in the order of ``images``) and whether a KVM launch failed during
    this batch. ``VMAUDIT_FORCE_TCG`` is read from the worker's environment, since emulation
    is a property of the host that runs the appliance.
    """
    global _worker_software_emulation
    if _worker_software_emulation or os.environ.get("VMAUDIT_FORCE_TCG", "") not in ("", "0"):
        runner.note_fallback()
    emulated_before = runner.software_emulation
    outcomes = runner.run_batch(images, now)
    _worker_software_emulation = runner.software_emulation
    return outcomes, _worker_software_emulation and not emulated_before


# ---------------------------------------------------------------- on the client


def workers_died_error(attempts: str) -> ImageError:
    return ImageError(
        ErrorKind.APPLIANCE_FAILED,
        f"Dask workers died while auditing this image ({attempts}); not retried",
    )


class FleetExecutor(Executor):
    """An executor for ``Runner.run_batch`` whose batches run as Dask tasks.

    ``submit`` returns a ``concurrent.futures.Future`` that resolves to the batch's outcomes
    with client paths, so ``Runner.run`` collects them with ``as_completed`` as from a local
    pool; a task that failed on the cluster resolves to error outcomes, never to an exception.
    """

    def __init__(
        self, client: Client, translator: PathTranslator, on_notice: Callable[[str], None]
    ) -> None:
        self.client = client
        self.translator = translator
        self.on_notice = on_notice
        self.resources = appliance_resources(client)
        self._lock = threading.Lock()
        self._told_fallback = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        runner = getattr(fn, "__self__", None)
        if (
            not isinstance(runner, Runner)
            or getattr(fn, "__name__", "") != "run_batch"
            or kwargs
            or len(args) != 2
        ):
            raise TypeError("a FleetExecutor runs Runner.run_batch(images, now) only")
        images, now = list(cast(Sequence[ImageRef], args[0])), cast(datetime, args[1])
        result: Future[list[RawOutcome]] = Future()
        result.set_running_or_notify_cancel()
        self._send(runner, images, now, result)
        return cast("Future[T]", result)

    def _send(
        self,
        runner: Runner,
        images: list[ImageRef],
        now: datetime,
        result: Future[list[RawOutcome]],
    ) -> None:
        remote = [self.translator.image(i, self.translator.to_worker) for i in images]
        task = self.client.submit(
            audit_on_worker,
            runner,
            remote,
            now,
            key=f"vmaudit-batch-{uuid.uuid4().hex}",
            pure=False,
            resources=self.resources,
        )

        def finished(task: Any) -> None:
            try:
                outcomes, fell_back = task.result()
                translated = [
                    self._to_client(image, outcome)
                    for image, outcome in zip(images, outcomes, strict=True)
                ]
            except BaseException as exc:  # every failure of the task becomes error rows
                try:
                    self._failed(runner, images, now, exc, result)
                except BaseException as cause:  # never leave the scan waiting on this batch
                    if not result.done():
                        result.set_exception(cause)
                return
            if fell_back:
                self._tell_fallback()
            result.set_result(translated)

        task.add_done_callback(finished)

    def _failed(
        self,
        runner: Runner,
        images: list[ImageRef],
        now: datetime,
        exc: BaseException,
        result: Future[list[RawOutcome]],
    ) -> None:
        from distributed import KilledWorker

        if isinstance(exc, KilledWorker) and len(images) > 1:
            # Which image kills its workers is unknown: find it alone, spare the others.
            singles: list[Future[list[RawOutcome]]] = [Future() for _ in images]
            for single in singles:
                single.set_running_or_notify_cancel()
            _gather_into(singles, result)
            for image, single in zip(images, singles, strict=True):
                self._send(runner, [image], now, single)
            return
        if isinstance(exc, KilledWorker):
            error = workers_died_error(str(exc))
        else:
            error = ImageError(
                ErrorKind.INTERNAL, f"Dask task failed: {type(exc).__name__}: {exc}"[:500]
            )
        result.set_result([RawOutcome(image, None, error) for image in images])

    def _to_client(self, image: ImageRef, outcome: RawOutcome) -> RawOutcome:
        facts = None if outcome.facts is None else self.translator.facts_to_client(outcome.facts)
        return RawOutcome(image, facts, outcome.error)

    def _tell_fallback(self) -> None:
        with self._lock:
            first, self._told_fallback = not self._told_fallback, True
        if first:
            self.on_notice(
                "KVM launch failed on a Dask worker; that worker retries in software "
                "emulation (force_tcg) from now on"
            )


def _gather_into(
    parts: Sequence[Future[list[RawOutcome]]], whole: Future[list[RawOutcome]]
) -> None:
    """Resolve ``whole`` with the concatenated results of ``parts`` once all are done."""
    remaining = [len(parts)]
    lock = threading.Lock()

    def one_done(_: Future[list[RawOutcome]]) -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            try:
                whole.set_result([outcome for part in parts for outcome in part.result()])
            except BaseException as exc:
                whole.set_exception(exc)

    for part in parts:
        part.add_done_callback(one_done)


def appliance_resources(client: Client) -> dict[str, float] | None:
    """``{"appliance": 1}`` when some worker declares the resource, else ``None``."""
    workers = client.scheduler_info().get("workers", {})
    declared = any(APPLIANCE in (w.get("resources") or {}) for w in workers.values())
    return {APPLIANCE: 1} if declared else None


def capacity(client: Client) -> int:
    """Appliances the cluster runs at once: declared ``appliance`` resources, else threads."""
    workers = client.scheduler_info().get("workers", {}).values()
    appliances = sum(int((w.get("resources") or {}).get(APPLIANCE, 0)) for w in workers)
    return max(1, appliances or sum(int(w.get("nthreads", 1)) for w in workers))


class Fleet:
    """A connected Dask client plus the path maps: discovery and an executor for batches."""

    def __init__(
        self, client: Client, maps: Sequence[PathMap], on_notice: Callable[[str], None]
    ) -> None:
        self.client = client
        self.translator = PathTranslator(maps)
        self.on_notice = on_notice

    def capacity(self) -> int:
        return capacity(self.client)

    def executor(self) -> FleetExecutor:
        return FleetExecutor(self.client, self.translator, self.on_notice)

    def auditors(self, discover_on_workers: bool = False) -> Auditors:
        """The scan's auditors on this fleet: its executor, and discovery here or on a worker."""
        return Auditors(
            self.discover if discover_on_workers else discover, self.capacity(), self.executor()
        )

    def discover(self, paths: Sequence[str], excludes: Sequence[str]) -> DiscoveryResult:
        """Discovery run by a worker on its view of the datastore, in client paths."""
        remote = [self.translator.to_worker(os.path.abspath(p)) for p in paths]
        task = self.client.submit(
            discover, remote, list(excludes), pure=False, key=f"vmaudit-discover-{uuid.uuid4().hex}"
        )
        found: DiscoveryResult = task.result()
        return self.translator.discovery_to_client(found)


@contextmanager
def connect(
    address: str,
    maps: Sequence[PathMap] = (),
    on_notice: Callable[[str], None] | None = None,
    timeout: str = CONNECT_TIMEOUT,
) -> Iterator[Fleet]:
    """A ``Fleet`` on the scheduler at ``address``; ``ConfigError`` when it cannot be used."""
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError(
            "--scheduler needs the 'fleet' extra: pip install 'vmaudit[fleet]'"
        ) from None
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    try:
        yield Fleet(client, maps, on_notice or (lambda message: None))
    finally:
        client.close()

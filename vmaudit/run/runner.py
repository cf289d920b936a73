"""Running audits in child processes: N at once, each bounded by a wall-clock timeout.

A child runs in its own session; on timeout the whole process group (the worker and the
qemu it started) is killed, so nothing is left behind. Before its launch a child asks
vmaudit.guest.accel whether KVM works on this host (probed once per boot, cached); its answer,
or a child that still had to fall back from KVM, makes every later launch start in software
emulation, and the ``on_notice`` callback is told once.

Batches run on a local thread pool, or on any ``concurrent.futures.Executor`` given as
``executor`` (vmaudit.run.fleet sends them to Dask workers); a ``Runner`` pickles without its lock
and callback so that ``run_batch`` can run on another host.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vmaudit.baseline.factsio import FactsFormatError, facts_from_dict
from vmaudit.discover.walk import DiscoveryResult, discover
from vmaudit.errors import ErrorKind
from vmaudit.guest import accel
from vmaudit.guest.appliance import LaunchOptions
from vmaudit.models import CodecError, Facts, ImageError, ImageRef, from_jsonable, to_jsonable
from vmaudit.run.sizing import appliance_smp, cut_batches
from vmaudit.run.timing import StageTimes
from vmaudit.run.worker import RESULT_PREFIX

STDERR_TAIL = 2000


@dataclass(frozen=True)
class Auditors:
    """Who discovers and audits: local worker processes (the default) or a Dask fleet.

    Built by the CLI and handed to the scan, which never chooses them itself.
    """

    discover: Callable[[Sequence[str], Sequence[str]], DiscoveryResult]
    capacity: int  # appliances running at once, to size batches
    executor: Executor | None = None  # None: a local thread pool of worker processes

    @classmethod
    def local(cls, jobs: int) -> Auditors:
        return cls(discover, max(1, jobs))


@dataclass(frozen=True)
class RawOutcome:
    """A child's answer: facts as a ``vmaudit.facts/v1`` dict, or an error."""

    image: ImageRef
    facts: Facts | None
    error: ImageError | None


class Runner:
    def __init__(
        self,
        jobs: int,
        timeout: float,
        options: LaunchOptions | None = None,
        on_notice: Callable[[str], None] | None = None,
        batch: int = 1,
        executor: Executor | None = None,
        stage_timing: bool = False,
    ) -> None:
        self.jobs = max(1, jobs)
        self.batch = max(1, batch)
        self.timeout = timeout
        self.options = options or LaunchOptions()
        self.on_notice = on_notice or (lambda message: None)
        self._lock = threading.Lock()
        self._force_tcg = self.options.force_tcg or accel.forced_tcg()
        self._told = False
        self.executor = executor
        self.stage_timing = stage_timing  # tell on_notice where each batch's seconds went
        self._smp = self.options.smp

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for local_only in ("_lock", "on_notice", "executor"):
            del state[local_only]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self.on_notice = lambda message: None
        self.executor = None

    @property
    def software_emulation(self) -> bool:
        """Whether launches start in software emulation (asked for, or after a KVM failure)."""
        with self._lock:
            return self._force_tcg

    def _launch_options(self) -> dict[str, Any]:
        with self._lock:
            force_tcg = self._force_tcg
        return {
            "force_tcg": force_tcg,
            "memsize_mb": self.options.memsize_mb,
            "smp": self._smp,
        }

    def note_verdict(self, verdict: dict[str, Any]) -> None:
        """A child's answer to "does KVM work here": later launches follow it."""
        if verdict.get("kvm", True):
            return
        with self._lock:
            self._force_tcg = True
            first, self._told = not self._told, True
        if first:
            self.on_notice(accel.Acceleration(**verdict).notice() or "")

    def note_fallback(self) -> None:
        with self._lock:
            first = not self._force_tcg and not self._told
            self._force_tcg = True
            self._told = True
        if first:
            self.on_notice(
                "KVM launch failed; retrying in software emulation (force_tcg) "
                "for the rest of this run"
            )

    def run_one(self, image: ImageRef, now: datetime) -> RawOutcome:
        return self.run_batch([image], now)[0]

    def run_batch(self, images: Sequence[ImageRef], now: datetime) -> list[RawOutcome]:
        """Audit ``images`` in one appliance; a batch that fails as a whole is re-run singly."""
        # The worker's private folder holds our overlays and libguestfs's own temporary
        # files (TMPDIR), so that it is removed whole even when the worker is killed.
        workdir = tempfile.mkdtemp(prefix="vmaudit-")
        try:
            answer, failure = self._run_in(workdir, images, now)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if failure is not None:
            if len(images) > 1:
                return [self.run_one(image, now) for image in images]
            return [RawOutcome(images[0], None, failure)]
        assert answer is not None
        if isinstance(answer.get("acceleration"), dict):
            self.note_verdict(answer["acceleration"])
        if answer.get("tcg_fallback"):
            self.note_fallback()
        timings = StageTimes.from_dict(answer.get("timings")) if self.stage_timing else None
        if timings is not None:
            self.on_notice(timings.line())
        outcomes = [
            _outcome(image, entry)
            for image, entry in zip(images, answer.get("results", []), strict=True)
        ]
        for index in answer.get("clashing", []):
            outcomes[index] = self.run_one(images[index], now)
        return outcomes

    def _run_in(
        self,
        workdir: str,
        images: Sequence[ImageRef],
        now: datetime,
    ) -> tuple[dict[str, Any] | None, ImageError | None]:
        request = {
            "images": [to_jsonable(image) for image in images],
            "options": self._launch_options(),
            "now": now.isoformat(),
            "workdir": workdir,
        }
        env = {
            **os.environ,
            "TMPDIR": workdir,
            "LIBGUESTFS_CACHEDIR": os.environ.get("LIBGUESTFS_CACHEDIR")
            or os.environ.get("TMPDIR")
            or "/var/tmp",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "vmaudit.run.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=env,
        )
        limit = self.timeout * len(images)
        try:
            out, err = proc.communicate(json.dumps(request).encode(), timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return None, ImageError(
                ErrorKind.TIMEOUT, f"no result within {limit:g} s; appliance killed"
            )
        finally:
            _kill_group(proc)  # whatever the worker left running (it should be nothing)
        answer = _parse(out)
        if answer is None or len(answer.get("results", images)) != len(images):
            tail = err.decode("utf-8", errors="replace").strip()[-STDERR_TAIL:]
            return None, ImageError(
                ErrorKind.APPLIANCE_FAILED,
                f"audit process ended with code {proc.returncode}: {tail or 'no output'}",
            )
        if "batch_error" in answer:
            error = answer["batch_error"]
            return None, _error_of(error)
        return answer, None

    def run(self, images: Sequence[ImageRef], now: datetime) -> Iterator[RawOutcome]:
        """Outcomes as batches finish (not in input order)."""
        batches = cut_batches(images, self.batch)
        if not batches:
            return
        if self.executor is not None:  # remote workers decide KVM on their own hosts
            yield from _as_finished(self.executor, self.run_batch, batches, now)
            return
        if self.options.smp is None:
            self._smp = appliance_smp(os.cpu_count() or 1, len(batches), self.jobs)
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            yield from _as_finished(pool, self.run_batch, batches, now)


def _as_finished(
    pool: Executor,
    run_batch: Callable[[list[ImageRef], datetime], list[RawOutcome]],
    batches: Sequence[list[ImageRef]],
    now: datetime,
) -> Iterator[RawOutcome]:
    futures = [pool.submit(run_batch, batch, now) for batch in batches]
    for future in as_completed(futures):
        yield from future.result()


def _outcome(image: ImageRef, entry: dict[str, Any]) -> RawOutcome:
    if "error" in entry:
        error = entry["error"]
        return RawOutcome(image, None, _error_of(error))
    try:
        return RawOutcome(image, facts_from_dict(entry["facts"]), None)
    except (FactsFormatError, KeyError, TypeError) as exc:  # the worker is ours; its bytes
        return RawOutcome(
            image,
            None,
            ImageError(
                ErrorKind.INTERNAL,  # came through a pipe
                f"facts unreadable: {exc}",
            ),
        )


def _error_of(data: Any) -> ImageError:
    """A worker's error entry; one whose kind is not an ``ErrorKind`` is an internal error."""
    try:
        return from_jsonable(ImageError, data)
    except CodecError as exc:
        return ImageError(ErrorKind.INTERNAL, f"unreadable error from the worker: {exc}")


def _parse(out: bytes) -> dict[str, Any] | None:
    for line in reversed(out.decode("utf-8", errors="replace").splitlines()):
        if line.startswith(RESULT_PREFIX):
            try:
                value = json.loads(line[len(RESULT_PREFIX) :])
            except json.JSONDecodeError:
                return None
            return value if isinstance(value, dict) else None
    return None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

"""The child process that audits one image: ``python -m vmaudit.run.worker`` (JSON in, JSON out).

Each audit runs in its own process and session so that a hung or crashed appliance (qemu
included) can be killed as a whole process group without touching the scan or its
neighbours. The request arrives on stdin; the answer is the last stdout line that starts
with ``RESULT_PREFIX``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import json
import os
import signal
import sys
from datetime import datetime
from typing import Any

from vmaudit.errors import ErrorKind, VmauditError
from vmaudit.guest.appliance import LaunchOptions
from vmaudit.models import image_ref_from_dict

RESULT_PREFIX = "VMAUDIT-RESULT "
PR_SET_PDEATHSIG = 1


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"kind": kind, "message": message}}


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """Audit the request's images in one appliance; one answer entry per image."""
    from vmaudit.run.audit import audit_batch

    refs = [image_ref_from_dict(image) for image in request["images"]]
    options = LaunchOptions(**request.get("options", {}))
    now = datetime.fromisoformat(request["now"])
    try:
        outcome = audit_batch(refs, options, now, request["workdir"])
    except VmauditError as exc:  # the appliance itself failed: every image shares it
        return {"batch_error": {"kind": str(exc.kind), "message": exc.message}}
    except Exception as exc:  # a bug must cost this batch, not the scan
        return {"batch_error": {"kind": ErrorKind.INTERNAL.value, "message": repr(exc)[:500]}}
    results = [
        _error(str(r.kind), r.message) if isinstance(r, VmauditError) else {"facts": r.to_dict()}
        for r in outcome.results
    ]
    verdict = outcome.acceleration
    return {
        "results": results,
        "tcg_fallback": outcome.tcg_fallback,
        "acceleration": None if verdict is None else dataclasses.asdict(verdict),
        "clashing": list(outcome.clashing),
        "timings": None if outcome.timings is None else outcome.timings.to_dict(),
    }


def die_with_parent() -> None:
    """Be killed when the process that started us dies (a scan or a Dask worker killed).

    The worker runs in its own session so that a timeout can kill its whole group; without
    this, a killed parent would leave it (and its qemu) running with no timeout at all.
    """
    parent = os.getppid()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def probe_kvm() -> int:
    """Exit status 0 when an appliance launches with hardware acceleration here.

    ``QEMU_STARTED`` goes to stdout when libguestfs starts qemu, so that the parent
    (vmaudit.guest.accel) times the launch, not the appliance's first build.
    """
    import guestfs

    from vmaudit.guest.accel import QEMU_STARTED
    from vmaudit.guest.appliance import new_handle

    last: list[str] = []

    def on_message(event: int, handle_id: int, message: str, array: object) -> None:
        # Every verbose message comes here (none to stderr, which the parent reads last).
        lines = [line.strip() for line in message.split("\n") if line.strip()]
        last[:] = [*last, *lines][-20:]
        if event == guestfs.EVENT_LIBRARY and "finished testing qemu features" in message:
            sys.stdout.write(QEMU_STARTED + "\n")
            sys.stdout.flush()

    handle = new_handle(LaunchOptions(force_tcg=False))
    try:
        handle.set_event_callback(
            on_message,
            guestfs.EVENT_LIBRARY
            | guestfs.EVENT_APPLIANCE
            | guestfs.EVENT_WARNING
            | guestfs.EVENT_TRACE,
        )
        handle.set_verbose(True)
        handle.add_drive_scratch(1024 * 1024)
        handle.launch()
    except RuntimeError as exc:
        sys.stderr.write("\n".join([*last, str(exc)])[-4000:] + "\n")
        return 1
    finally:
        handle.close()
    return 0


def main() -> None:
    die_with_parent()
    if sys.argv[1:] == ["--probe-kvm"]:
        raise SystemExit(probe_kvm())
    request = json.loads(sys.stdin.read())
    answer = handle(request)
    sys.stdout.write(RESULT_PREFIX + json.dumps(answer) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

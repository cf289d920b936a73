"""The child process that audits one image: ``python -m vmaudit.worker`` (JSON in, JSON out).

Each audit runs in its own process and session so that a hung or crashed appliance (qemu
included) can be killed as a whole process group without touching the scan or its
neighbours. The request arrives on stdin; the answer is the last stdout line that starts
with ``RESULT_PREFIX``.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from vmaudit.errors import ErrorKind, VmauditError
from vmaudit.guest.appliance import LaunchOptions
from vmaudit.models import image_ref_from_dict

RESULT_PREFIX = "VMAUDIT-RESULT "


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"kind": kind, "message": message}}


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """Audit the request's images in one appliance; one answer entry per image."""
    from vmaudit.audit import audit_batch

    refs = [image_ref_from_dict(image) for image in request["images"]]
    options = LaunchOptions(**request.get("options", {}))
    now = datetime.fromisoformat(request["now"])
    try:
        outcome = audit_batch(refs, options, now, request["workdir"])
    except VmauditError as exc:  # the appliance itself failed: every image shares it
        return {"batch_error": {"kind": str(exc.kind), "message": exc.message}}
    except Exception as exc:  # a bug must cost this batch, not the scan
        return {"batch_error": {"kind": str(ErrorKind.INTERNAL), "message": repr(exc)[:500]}}
    results = [
        _error(str(r.kind), r.message) if isinstance(r, VmauditError) else {"facts": r.to_dict()}
        for r in outcome.results
    ]
    return {"results": results, "tcg_fallback": outcome.tcg_fallback,
            "clashing": list(outcome.clashing)}


def main() -> None:
    request = json.loads(sys.stdin.read())
    answer = handle(request)
    sys.stdout.write(RESULT_PREFIX + json.dumps(answer) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

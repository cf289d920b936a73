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


def handle(request: dict[str, Any]) -> dict[str, Any]:
    from vmaudit.audit import audit_image

    ref = image_ref_from_dict(request["image"])
    options = LaunchOptions(**request.get("options", {}))
    now = datetime.fromisoformat(request["now"])
    try:
        outcome = audit_image(ref, options, now, request["workdir"])
    except VmauditError as exc:
        return {"error": {"kind": str(exc.kind), "message": exc.message}}
    except PermissionError as exc:
        return {"error": {"kind": str(ErrorKind.PERMISSION_DENIED), "message": str(exc)}}
    except Exception as exc:  # a bug must cost one image, not the scan
        return {"error": {"kind": str(ErrorKind.INTERNAL), "message": repr(exc)[:500]}}
    return {"facts": outcome.facts.to_dict(), "tcg_fallback": outcome.tcg_fallback}


def main() -> None:
    request = json.loads(sys.stdin.read())
    answer = handle(request)
    sys.stdout.write(RESULT_PREFIX + json.dumps(answer) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

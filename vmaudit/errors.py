"""The one root exception of vmaudit and the fixed list of error kinds.

Every failure that reaches a report carries a kind from ``ErrorKind``; the CLI maps
configuration errors to exit code 2 and image errors to an ``error`` row.
"""

from __future__ import annotations

import errno
from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """vmaudit's exit codes (spec/cli.md)."""

    OK = 0  # nothing at or above --fail-on, every image fully audited
    FINDINGS = 1  # a finding at or above --fail-on
    CONFIG = 2  # usage or configuration error: nothing was scanned
    NOT_AUDITED = 3  # an image could not be audited, or not fully


class ErrorKind(StrEnum):
    """Error kinds as documented in spec/report.md (``image.error.kind``)."""

    UNSAFE_BACKING_FILE = "unsafe-backing-file"
    UNSAFE_EXTENT = "unsafe-extent"
    UNSAFE_DATA_FILE = "unsafe-data-file"
    MISSING_PARENT = "missing-parent"
    UNSUPPORTED_FORMAT = "unsupported-format"
    FORMAT_MISMATCH = "format-mismatch"
    NOT_A_REGULAR_FILE = "not-a-regular-file"
    NO_OPERATING_SYSTEM = "no-operating-system"
    ENCRYPTED = "encrypted"
    TIMEOUT = "timeout"
    APPLIANCE_FAILED = "appliance-failed"
    PERMISSION_DENIED = "permission-denied"
    CORRUPT_IMAGE = "corrupt-image"
    IMAGE_CHANGED = "image-changed"
    OUTSIDE_DATASTORE = "outside-datastore"  # a hypervisor names a disk outside the roots
    HYPERVISOR_UNREACHABLE = "hypervisor-unreachable"  # a libvirt URI that does not answer
    INTERNAL = "internal-error"
    CONFIG = "config"

    @property
    def exit_code(self) -> ExitCode:
        """A configuration error stops everything (2); any other costs its image (3)."""
        return ExitCode.CONFIG if self is ErrorKind.CONFIG else ExitCode.NOT_AUDITED


class VmauditError(Exception):
    """Root of every error vmaudit raises on purpose; carries its kind."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"

    @property
    def exit_code(self) -> ExitCode:
        return self.kind.exit_code


def os_error_kind(exc: OSError, missing: ErrorKind = ErrorKind.CORRUPT_IMAGE) -> ErrorKind:
    """The kind of an ``OSError`` met on an image file: denied, a link where a file was
    wanted, gone (``missing``: changed since discovery, or simply unreadable), or unreadable."""
    if isinstance(exc, PermissionError):
        return ErrorKind.PERMISSION_DENIED
    if exc.errno == errno.ELOOP:
        return ErrorKind.NOT_A_REGULAR_FILE
    if isinstance(exc, FileNotFoundError):
        return missing
    return ErrorKind.CORRUPT_IMAGE


class ConfigError(VmauditError):
    """A baseline, inventory or option is wrong: nothing is scanned (exit 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorKind.CONFIG, message)


class GuestFileError(Exception):
    """One guest file could not be read; collectors turn it into a warning."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

"""The power-on decision: may this guest start, judged against today's baselines?

A guest's disks (from a libvirt domain XML, a Proxmox VM config or the command line) are
checked to be regular files or block devices (LVs, zvols, pool volumes: checked to be the
device they name) inside the policy's datastores and read as one guest. When the
state database holds facts for exactly these files (the identity of ``vmaudit scan``), they
are judged again with today's baselines and no appliance starts; otherwise the guest is
audited now, bounded by the policy's timeout. Findings at or above ``fail_on`` refuse;
anything that cannot be audited (unreadable XML, no disk, a disk outside the datastores, a
network disk, an audit that failed or timed out, an incomplete audit) gets what
``on_error`` says. Every decision is recorded in the state database.

Nothing here calls libvirt (it holds the domain's lock while its hook runs), starts a VM or
opens an image writable: images are read through ``vmaudit.run`` as a scan reads them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vmaudit.act.domain import GuestDisks
from vmaudit.act.fixnames import ANSWERS, FIXES
from vmaudit.act.policy import GatePolicy
from vmaudit.discover.hypervisor import guest_image as hypervisor_image
from vmaudit.discover.identity import Identity, image_identity
from vmaudit.errors import VmauditError
from vmaudit.feeds.db import default_feeds_path
from vmaudit.feeds.match import open_feeds
from vmaudit.judge.verdict import at_or_above
from vmaudit.models import Finding, ImageRef, ImageResult, PowerOn
from vmaudit.scan import Judge
from vmaudit.state.db import StateDB, StateError, open_state
from vmaudit.text import terminal_safe

MAX_REASON = 600  # libvirt shows the hook's stderr in one error line
MAX_LISTED = 8  # findings named in a refusal; the rest are counted


@dataclass(frozen=True)
class Decision:
    """What the gate answers, and why; ``result`` is the judged guest when there was one."""

    allowed: bool
    reason: str  # one line, terminal-safe
    name: str | None
    source: str
    at: str
    result: ImageResult | None = None
    error: str | None = None  # what on_error was applied to
    exempt: str | None = None  # the exempt pattern that matched
    disks: tuple[str, ...] = ()
    notices: tuple[str, ...] = field(default=(), compare=False)
    identity: Identity | None = field(default=None, compare=False, repr=False)  # of the facts

    @property
    def exit_code(self) -> int:
        return 0 if self.allowed else 1

    def details(self) -> dict[str, Any]:
        result = self.result
        return {
            "disks": list(self.disks),
            "error": self.error,
            "exempt": self.exempt,
            "from_cache": result.from_cache if result is not None else None,
            "findings": [
                {"rule": f.rule, "severity": f.severity, "subject": f.subject}
                for f in (result.findings if result is not None else ())
            ],
            "notices": list(self.notices),
        }


class _Undecidable(Exception):
    """The guest cannot be audited: ``on_error`` decides (the message says why)."""


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _one_line(text: str) -> str:
    flat = " ".join(terminal_safe(text).split())
    return flat if len(flat) <= MAX_REASON else flat[: MAX_REASON - 3] + "..."


def guest_image(guest: GuestDisks, datastores: tuple[str, ...]) -> ImageRef:
    """The guest as one image to audit, keyed by its first disk: file disks and block disks
    (LVs, zvols, pool volumes) checked as a scan checks them (vmaudit.discover.hypervisor);
    ``_Undecidable`` when it cannot be audited from this host."""
    try:
        return hypervisor_image(guest, datastores)
    except VmauditError as exc:
        raise _Undecidable(exc.message) from None


class Gate:
    """Decides for one policy; the baselines and inventory are loaded once, at creation.

    ``ConfigError`` (exit 2) when the policy's baselines or inventory are invalid.
    """

    def __init__(self, policy: GatePolicy, state: str | None = None) -> None:
        self.policy = policy
        self.state_ref = state if state is not None else policy.state
        self.baselines = policy.load_baselines()
        self.inventory = policy.load_inventory()
        # as a scan opens them (vmaudit.scan.load_judge): a missing feeds database means no
        # vuln.cve finding, and is said in each decision's notices when a baseline asks for it
        feeds_path = Path(policy.feeds_db) if policy.feeds_db else default_feeds_path()
        self.feeds, notice = open_feeds(feeds_path)
        wanted = any(b.vulnerabilities is not None for b in self.baselines)
        self.feeds_notice = notice if wanted else None

    def decide(self, guest: GuestDisks, source: str) -> Decision:
        """Decide and record; never raises for what the guest's configuration holds."""
        now = _now()
        at = now.isoformat().replace("+00:00", "Z")
        notices: list[str] = [self.feeds_notice] if self.feeds_notice else []
        disks = tuple(disk.describe() for disk in guest.disks)
        pattern = self._exempt(guest.name)
        try:
            db = open_state(self.state_ref)
        except StateError as exc:
            decision = self._on_error(guest, source, at, exc.message, disks, ())
            return decision  # nowhere to record it: the reason says why
        try:
            if pattern is not None:
                decision = Decision(
                    True,
                    _one_line(f"{guest.name}: exempt by policy ({pattern})"),
                    guest.name,
                    source,
                    at,
                    exempt=pattern,
                    disks=disks,
                )
            else:
                decision = self._judged(db, guest, source, now, at, disks, notices)
            self._record(db, decision)
        except StateError as exc:
            decision = self._on_error(guest, source, at, exc.message, disks, tuple(notices))
        finally:
            db.close()
        return decision

    def _exempt(self, name: str | None) -> str | None:
        if name is None:
            return None
        return next((p for p in self.policy.exempt if fnmatch.fnmatchcase(name, p)), None)

    def _judge(self, now: datetime) -> Judge:
        return Judge(
            self.baselines,
            self.inventory,
            self.policy.datastores,
            now,
            self.feeds,
            self.feeds_notice,
        )

    def _judged(
        self,
        db: StateDB,
        guest: GuestDisks,
        source: str,
        now: datetime,
        at: str,
        disks: tuple[str, ...],
        notices: list[str],
    ) -> Decision:
        judge = self._judge(now)
        try:
            image = guest_image(guest, self.policy.datastores)
        except _Undecidable as exc:
            return self._on_error(guest, source, at, str(exc), disks, tuple(notices))
        identity: Identity | None
        try:
            identity = image_identity(image)
        except VmauditError as exc:
            identity = None
            notices.append(f"identity: {exc.message}")
        facts = db.lookup_facts(identity) if identity is not None else None
        result: ImageResult
        if facts is not None:
            result = judge.judge(image, facts, from_cache=True)
        else:  # only here: a decision from cached facts loads no worker, no libguestfs
            from vmaudit.run.runner import Runner

            runner = Runner(jobs=1, timeout=float(self.policy.timeout), on_notice=notices.append)
            outcome = runner.run_one(image, now)
            result = judge.outcome(image, outcome)
            if result.error is None:
                try:  # the facts are cached only for the files they were read from
                    identity = image_identity(image)
                except VmauditError:
                    identity = None
            else:
                identity = None
        return self._verdict(guest, source, at, result, identity, disks, tuple(notices))

    def _verdict(
        self,
        guest: GuestDisks,
        source: str,
        at: str,
        result: ImageResult,
        identity: Identity | None,
        disks: tuple[str, ...],
        notices: tuple[str, ...],
    ) -> Decision:
        name = guest.name or result.image.path
        failing = [f for f in result.findings if at_or_above(f.severity, self.policy.fail_on)]
        origin = "cached facts" if result.from_cache else "audited now"
        if failing:
            named = ", ".join(
                f"{f.rule} ({f.subject})" if f.subject else f.rule for f in failing[:MAX_LISTED]
            )
            more = f" and {len(failing) - MAX_LISTED} more" if len(failing) > MAX_LISTED else ""
            reason = (
                f"{name}: {len(failing)} finding(s) at or above {self.policy.fail_on}: "
                f"{named}{more} ({origin})"
            )
            repair = remediation_hint(result.image.path, failing, self.policy.remediate)
            if repair:
                reason = (
                    f"{name}: {len(failing)} finding(s) at or above {self.policy.fail_on} "
                    f"({origin}); {repair}; findings: {named}{more}"
                )
            allowed = False
        elif result.error is not None:
            return self._on_error(
                guest,
                source,
                at,
                f"{result.error.kind}: {result.error.message}",
                disks,
                notices,
                result,
            )
        elif not result.complete:
            sections = ", ".join(sorted(result.facts.failed_sections())) if result.facts else ""
            return self._on_error(
                guest,
                source,
                at,
                f"incomplete audit: could not read {sections}",
                disks,
                notices,
                result,
                identity,
            )
        else:
            below = len(result.findings)
            reason = (
                f"{name}: no finding at or above {self.policy.fail_on} ({below} below; {origin})"
            )
            allowed = True
        decision = Decision(allowed, _one_line(reason), guest.name, source, at, result)
        return replace(decision, disks=disks, notices=notices, identity=identity)

    def _on_error(
        self,
        guest: GuestDisks,
        source: str,
        at: str,
        error: str,
        disks: tuple[str, ...],
        notices: tuple[str, ...],
        result: ImageResult | None = None,
        identity: Identity | None = None,
    ) -> Decision:
        allowed = self.policy.on_error == "allow"
        name = guest.name or "guest"
        verb = "allowed" if allowed else "refused"
        reason = f"{name}: cannot be audited ({verb} by on_error: {self.policy.on_error}): {error}"
        decision = Decision(allowed, _one_line(reason), guest.name, source, at, result, error=error)
        return replace(decision, disks=disks, notices=notices, identity=identity)

    def _record(self, db: StateDB, decision: Decision) -> None:
        record = PowerOn(
            at=decision.at,
            source=decision.source,
            domain=decision.name,
            decision="allow" if decision.allowed else "refuse",
            reason=decision.reason,
            image=decision.result.image.path if decision.result is not None else None,
            details=decision.details(),
        )
        db.record_power_on(
            record,
            decision.result,
            decision.identity,
            [b.name for b in self.baselines],
            self.policy.fail_on,
        )


def remediation_hint(image: str, failing: Sequence[Finding], allowed: Sequence[str]) -> str:
    """The ``vmaudit remediate`` command the policy's fixes offer for these findings, if any.

    It "would make it pass" only when every refusing finding is one a named fix answers;
    otherwise it says how many it answers.
    """
    fixes = [fix for fix in FIXES if fix in allowed]
    answered = [f for f in failing if any(f.rule in ANSWERS[fix] for fix in fixes)]
    used = [fix for fix in fixes if any(f.rule in ANSWERS[fix] for f in answered)]
    if not used:
        return ""
    flags = " ".join(f"--fix {fix}" for fix in used)
    command = f"vmaudit remediate {image} -o {image}.remediated.qcow2 {flags}"
    if len(answered) == len(failing):
        return f"offline repair would make it pass: {command}"
    return f"offline repair answers {len(answered)} of them: {command}"

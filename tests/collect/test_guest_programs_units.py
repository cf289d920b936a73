"""Differential: vmaudit's "started at boot" for the firewall units against systemd itself.

Oracle 1 is systemd 252's own boot transaction: ``systemd --test --system`` (run as nobody,
which it requires) computes the jobs it would enqueue at start-up from the unit files it sees.
It reads the host's unit directories, so it runs in a private mount namespace where the
tree's ``/etc/systemd`` and ``/usr/lib/systemd/system`` are bound over the host's: the
host's systemd binary, the guest's unit files, and the host's /dev (as at boot, where /dev
is a devtmpfs with ``null`` in it). Oracle 2 is ``systemctl --root=TREE is-enabled`` and
``get-default``, which read the tree offline: they agree on masks and the default target,
and say ``enabled`` for a unit wanted only by a target nothing reaches, which the boot
transaction (and vmaudit) does not start.

The debootstrap tree has no systemd package, so the host's own ``*.target`` units (the
same systemd 252) are copied in first, as installing systemd would.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vmaudit.collect.units import boot_units

from .conftest import Guest
from .guestprog import systemd_boot_jobs

FIREWALL_UNITS = ("nftables.service", "netfilter-persistent.service", "firewalld.service",
                  "ufw.service")  # fmt: skip
HOST_UNITS = Path("/usr/lib/systemd/system")
SYSTEMD = Path("/usr/lib/systemd/systemd")
LIB = "/usr/lib/systemd/system"

UNIT_FILES = {
    "nftables.service": "[Unit]\nDescription=nftables\nWants=network-pre.target\n"
    "Before=network-pre.target shutdown.target\nConflicts=shutdown.target\n"
    "DefaultDependencies=no\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n"
    "ExecStart=/usr/sbin/nft -f /etc/nftables.conf\n\n[Install]\nWantedBy=sysinit.target\n",
    "netfilter-persistent.service": "[Unit]\nDescription=netfilter persistent configuration\n"
    "DefaultDependencies=no\nWants=network-pre.target systemd-modules-load.service\n"
    "Before=network-pre.target shutdown.target\n\n[Service]\nType=oneshot\n"
    "ExecStart=/usr/sbin/netfilter-persistent start\n\n[Install]\nWantedBy=multi-user.target\n",
    "rescue.service": "[Unit]\nDefaultDependencies=no\n[Service]\nExecStart=/bin/sh\n",
    "firewalld.service": "[Unit]\nDescription=firewalld\nBefore=network-pre.target\n"
    "Wants=network-pre.target\n\n[Service]\nExecStart=/usr/sbin/firewalld --nofork\n\n"
    "[Install]\nWantedBy=multi-user.target\nAlias=dbus-org.fedoraproject.FirewallD1.service\n",
}


class UnitTree:
    def __init__(self, root: Path, pristine: Path) -> None:
        self.guest = Guest(root)
        self.pristine = pristine

    def reset(self) -> None:
        for rel in ("etc/systemd", "usr/lib/systemd/system"):
            shutil.rmtree(self.guest.root / rel)
            subprocess.run(["cp", "-a", str(self.pristine / rel), str(self.guest.root / rel)],
                           check=True)  # fmt: skip

    def systemd_starts(self) -> set[str]:
        """The units of systemd's initial boot transaction on this tree."""
        empty = self.guest.root.parent / "empty"
        empty.mkdir(exist_ok=True)
        root = self.guest.root
        binds = [(f"{root}/etc/systemd", "/etc/systemd"), (f"{root}{LIB}", LIB)]
        return systemd_boot_jobs(binds, str(empty))

    def systemctl(self, *args: str) -> str:
        command = ["systemctl", f"--root={self.guest.root}", *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        return result.stdout.strip() or f"error: {result.stderr.strip()}"

    def vmaudit_starts(self) -> set[str]:
        units = boot_units(self.guest.fs, [])
        return {unit for unit in FIREWALL_UNITS if units.state(unit) == "started"}


def _usable() -> bool:
    return SYSTEMD.exists() and shutil.which("unshare") is not None and \
        shutil.which("setpriv") is not None  # fmt: skip


@pytest.fixture(scope="module")
def unit_tree(debian_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UnitTree]:
    if not _usable():
        pytest.skip("needs the host's systemd 252, unshare and setpriv (Debian 12)")
    base = tmp_path_factory.mktemp("units")
    root = base / "tree"
    subprocess.run(["cp", "-a", str(debian_rootfs), str(root)], check=True)
    guest = Guest(root)
    for unit in HOST_UNITS.iterdir():
        if unit.name.endswith((".target", ".target.wants")) and not guest.host(
                f"{LIB}/{unit.name}").exists():  # fmt: skip
            subprocess.run(["cp", "-a", str(unit), str(guest.host(f"{LIB}/{unit.name}"))],
                           check=True)  # fmt: skip
    for name, text in UNIT_FILES.items():
        guest.write(f"{LIB}/{name}", text)
    guest.symlink(
        "/etc/systemd/system/sysinit.target.wants/nftables.service",
        "/lib/systemd/system/nftables.service",
    )
    pristine = base / "pristine"
    for rel in ("etc/systemd", "usr/lib/systemd/system"):
        (pristine / rel).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(root / rel), str(pristine / rel)], check=True)
    yield UnitTree(root, pristine)
    shutil.rmtree(base, ignore_errors=True)


ETC = "/etc/systemd/system"


def link(target: str, path: str) -> Callable[[Guest], None]:
    def apply(guest: Guest) -> None:
        host = guest.host(path)
        if host.is_symlink() or host.exists():
            host.unlink()
        guest.symlink(path, target)

    return apply


def write(path: str, text: str) -> Callable[[Guest], None]:
    def apply(guest: Guest) -> None:
        guest.write(path, text)

    return apply


def remove(path: str) -> Callable[[Guest], None]:
    return lambda guest: guest.host(path).unlink()


NFT_WANTS = f"{ETC}/sysinit.target.wants/nftables.service"
# (name, changes, units started as systemd 252 said when these were written,
#  systemctl --root is-enabled of nftables.service)
SCENARIOS: list[tuple[str, list[Callable[[Guest], None]], set[str], str]] = [
    ("the tree as installed", [], {"nftables.service", "ufw.service"}, "enabled"),
    (
        "masked by an empty unit file",
        [write(f"{ETC}/nftables.service", "")],
        {"ufw.service"},
        "masked",
    ),
    (
        "masked by a relative link to /dev/null",
        [link("../../../dev/null", f"{ETC}/nftables.service")],
        {"ufw.service"},
        "masked",
    ),
    (
        "a relative link that misses /dev/null does not load",
        [link("../../dev/null", f"{ETC}/nftables.service")],
        {"ufw.service"},
        "error",
    ),
    (
        "an absolute link through /dev/..",
        [link("/dev/../dev/null", f"{ETC}/nftables.service")],
        {"ufw.service"},
        "masked",
    ),
    (
        "a link that cannot resolve is ignored, the packaged unit stays",
        [link("/nonexistent/../dev/null", f"{ETC}/nftables.service")],
        {"nftables.service", "ufw.service"},
        "enabled",
    ),
    (
        "a dangling .wants link still pulls the unit in by its name",
        [link("/nonexistent/x.service", f"{ETC}/multi-user.target.wants/firewalld.service")],
        {"nftables.service", "ufw.service", "firewalld.service"},
        "enabled",
    ),
    (
        "a .wants entry that is a regular file is ignored",
        [
            write(
                f"{ETC}/multi-user.target.wants/firewalld.service", UNIT_FILES["firewalld.service"]
            )
        ],
        {"nftables.service", "ufw.service"},
        "enabled",
    ),
    (
        "a .wants link to /dev/null is a masked dependency",
        [link("/dev/null", f"{ETC}/multi-user.target.wants/firewalld.service")],
        {"nftables.service", "ufw.service"},
        "enabled",
    ),
    (
        "wanted only by a target never reached",
        [
            remove(NFT_WANTS),
            write(f"{ETC}/fw.target", "[Unit]\nDescription=fw\n"),
            link(f"{LIB}/nftables.service", f"{ETC}/fw.target.wants/nftables.service"),
        ],
        {"ufw.service"},
        "enabled",
    ),
    (
        "the same target pulled in by multi-user.target",
        [
            remove(NFT_WANTS),
            write(f"{ETC}/fw.target", "[Unit]\nDescription=fw\n"),
            link(f"{LIB}/nftables.service", f"{ETC}/fw.target.wants/nftables.service"),
            link(f"{ETC}/fw.target", f"{ETC}/multi-user.target.wants/fw.target"),
        ],
        {"nftables.service", "ufw.service"},
        "enabled",
    ),
    (
        "an alias name in a .wants directory",
        [
            link(f"{LIB}/firewalld.service", f"{ETC}/fw.service"),
            link(f"{ETC}/fw.service", f"{ETC}/multi-user.target.wants/fw.service"),
        ],
        {"nftables.service", "ufw.service", "firewalld.service"},
        "enabled",
    ),
    (
        "Wants= in a target's drop-in",
        [
            write(
                f"{ETC}/multi-user.target.d/fw.conf", "[Unit]\nWants=netfilter-persistent.service\n"
            )
        ],
        {"nftables.service", "ufw.service", "netfilter-persistent.service"},
        "enabled",
    ),
    (
        "booting into rescue.target",
        [
            link(f"{LIB}/rescue.target", f"{ETC}/default.target"),
            write(
                f"{LIB}/rescue.service",
                "[Unit]\nDefaultDependencies=no\n[Service]\nExecStart=/bin/sh\n",
            ),
        ],
        {"nftables.service"},
        "enabled",
    ),
    (
        "ufw's unit masked",
        [link("/dev/null", f"{ETC}/ufw.service")],
        {"nftables.service"},
        "enabled",
    ),
    (
        "a chain of 7 aliases still loads",
        [link(f"{ETC}/a{i + 1}.service", f"{ETC}/a{i}.service") for i in range(6)]
        + [
            link(f"{LIB}/firewalld.service", f"{ETC}/a6.service"),
            link(f"{ETC}/a0.service", f"{ETC}/multi-user.target.wants/a0.service"),
        ],
        {"nftables.service", "ufw.service", "firewalld.service"},
        "enabled",
    ),
    (
        "a chain of 8 aliases is one hop too many",
        [link(f"{ETC}/a{i + 1}.service", f"{ETC}/a{i}.service") for i in range(7)]
        + [
            link(f"{LIB}/firewalld.service", f"{ETC}/a7.service"),
            link(f"{ETC}/a0.service", f"{ETC}/multi-user.target.wants/a0.service"),
        ],
        {"nftables.service", "ufw.service"},
        "enabled",
    ),
    # systemd 252: "Cannot add dependency job, ignoring: Unit ... not found" (or masked):
    # the requiring unit still starts.
    (
        "Requires= a missing unit",
        [write(f"{ETC}/nftables.service.d/x.conf", "[Unit]\nRequires=nonexistent.service\n")],
        {"nftables.service", "ufw.service"},
        "enabled",
    ),
    (
        "Requires= a masked unit",
        [
            write(f"{ETC}/nftables.service.d/x.conf", "[Unit]\nRequires=firewalld.service\n"),
            link("/dev/null", f"{ETC}/firewalld.service"),
        ],
        {"nftables.service", "ufw.service"},
        "enabled",
    ),
]


@pytest.mark.parametrize(("name", "changes", "started", "is_enabled"), SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])  # fmt: skip
def test_firewall_units_start_at_boot_as_systemd_says(
    unit_tree: UnitTree,
    name: str,
    changes: list[Callable[[Guest], None]],
    started: set[str],
    is_enabled: str,
) -> None:
    unit_tree.reset()
    for change in changes:
        change(unit_tree.guest)
    by_systemd = unit_tree.systemd_starts() & set(FIREWALL_UNITS)
    assert by_systemd == started, f"systemd changed its mind: {name}"
    assert unit_tree.vmaudit_starts() == by_systemd
    state = unit_tree.systemctl("is-enabled", "nftables.service")
    assert (state if not state.startswith("error") else "error") == is_enabled
    units = boot_units(unit_tree.guest.fs, [])
    if is_enabled == "masked":
        assert units.state("nftables.service") == "masked"
    assert unit_tree.systemctl("get-default") == units.default_target


MASKS = [None, "", "/dev/null", "../../../dev/null", "../../dev/null", "/dev/../dev/null",
         "/nonexistent/../dev/null", "same"]  # fmt: skip
WANTED_BY = [None, "multi-user.target", "sysinit.target", "fw.target", "graphical.target",
             "rescue.target", "basic.target"]  # fmt: skip
LINKS = ["absolute", "absolute", "relative", "dangling", "regular", "/dev/null"]


def generated_changes(rng: random.Random) -> list[Callable[[Guest], None]]:
    """Random masks, .wants entries, a custom target, an alias, a drop-in, a default."""
    changes: list[Callable[[Guest], None]] = [remove(NFT_WANTS)]
    for unit in FIREWALL_UNITS:
        mask = rng.choice(MASKS)
        if mask == "":
            changes.append(write(f"{ETC}/{unit}", ""))
        elif mask == "same":
            changes.append(link(f"{LIB}/{unit}", f"{ETC}/{unit}"))
        elif mask is not None:
            changes.append(link(mask, f"{ETC}/{unit}"))
        target = rng.choice(WANTED_BY)
        if target is None:
            continue
        entry = f"{ETC}/{target}.wants/{unit}"
        kind = rng.choice(LINKS)
        if kind == "regular":
            changes.append(write(entry, UNIT_FILES.get(unit, "[Unit]\n")))
        else:
            changes.append(link({"absolute": f"/lib/systemd/system/{unit}",
                                 "relative": f"../../../../lib/systemd/system/{unit}",
                                 "dangling": f"/nonexistent/{unit}",
                                 "/dev/null": "/dev/null"}[kind], entry))  # fmt: skip
    changes.append(write(f"{ETC}/fw.target", "[Unit]\nDescription=fw\n"))
    if rng.random() < 0.5:
        changes.append(link(f"{ETC}/fw.target", f"{ETC}/multi-user.target.wants/fw.target"))
    if rng.random() < 0.3:
        changes.append(link(f"{LIB}/firewalld.service", f"{ETC}/fw.service"))
        changes.append(link(f"{ETC}/fw.service", f"{ETC}/multi-user.target.wants/fw.service"))
    if rng.random() < 0.3:
        changes.append(write(f"{ETC}/basic.target.d/x.conf",
                             "[Unit]\nWants=netfilter-persistent.service\n"))  # fmt: skip
    default = rng.choice([None, None, "multi-user.target", "rescue.target", "fw.target"])
    if default is not None:
        directory = ETC if default == "fw.target" else LIB
        changes.append(link(f"{directory}/{default}", f"{ETC}/default.target"))
    return changes


def test_generated_unit_trees_start_what_systemd_starts(unit_tree: UnitTree) -> None:
    rng = random.Random(15)
    outcomes: set[frozenset[str]] = set()
    for _ in range(30):
        unit_tree.reset()
        for change in generated_changes(rng):
            change(unit_tree.guest)
        by_systemd = unit_tree.systemd_starts() & set(FIREWALL_UNITS)
        listing = subprocess.run(["find", str(unit_tree.guest.host(ETC)), "-newer",
                                  str(unit_tree.pristine)], capture_output=True, text=True,
                                 check=False).stdout  # fmt: skip
        assert unit_tree.vmaudit_starts() == by_systemd, listing
        outcomes.add(frozenset(by_systemd))
    assert len(outcomes) >= 4

"""Differential: the services vmaudit says start at boot, on a tree whose unit links were
made by the host's own ``systemctl --root=TREE link|enable|disable|mask|set-default``.

The tree has the host's real ``*.target`` units (systemd 252, as installing systemd would
put them), a merged ``/lib -> usr/lib``, and these units, written by hand and then switched
on or off with systemctl only (vmaudit's tests never write a ``.wants`` link here):

=========================  =====================  ===================================
unit                       where                  what systemctl did to it
=========================  =====================  ===================================
telnet.socket              /usr/lib/systemd/...   enable (WantedBy=sockets.target)
tftpd-hpa.service          /usr/lib/systemd/...   enable (WantedBy=multi-user.target)
vsftpd.service             /etc/systemd/system    enable (multi-user, Alias=ftpd.service)
chargen.service            /usr/lib/systemd/...   enable (WantedBy=default.target)
daytime.service            /usr/lib/systemd/...   enable (RequiredBy=multi-user.target,
                                                  Also=echo.socket: enabled with it)
discard.service            /opt/discard           link, then enable (a linked unit file)
getty@.service             /usr/lib/systemd/...   enable getty@tty1.service (getty.target)
rsh.socket                 /usr/lib/systemd/...   enable, then mask
rlogin.socket              /usr/lib/systemd/...   enable, then disable
rexec.service              /usr/lib/systemd/...   enable (WantedBy=graphical.target only)
default.target             /etc/systemd/system    set-default multi-user.target
=========================  =====================  ===================================

What is compared, and why. ``systemctl --root`` reads the tree offline and answers about
*unit files*, not about a boot: ``list-unit-files --state=enabled`` lists every unit file
with an install symlink anywhere (a template as ``getty@.service``, not its instance), and
``is-enabled`` says ``enabled`` for a unit wanted by *any* target, reached or not. vmaudit's
``boot_units`` is the boot transaction: what ``default.target`` pulls in. So:

- ``is-enabled`` ``masked`` is vmaudit's ``masked``; ``disabled`` is never started; every
  unit vmaudit starts at boot is ``enabled`` (its template's file, for an instance);
- vmaudit's boot units (instances mapped to their template) are a subset of
  ``list-unit-files --state=enabled``, and the difference is exactly the units whose
  ``[Install]`` targets are all outside the boot transaction (``rexec.service``, wanted by
  ``graphical.target`` while ``get-default`` is ``multi-user.target``);
- where the host allows it (root, ``unshare``), systemd 252's own boot transaction
  (``systemd --test`` on the tree's unit directories, as in
  ``test_guest_programs_units.py``) is the oracle of the boot itself: it starts exactly
  vmaudit's units, plus the implicit slice of the template instance, which vmaudit does
  not model.

``service.forbidden-enabled`` judges the boot transaction: it fires for the forbidden units
systemctl reports enabled *and* the default target reaches, not for the masked or the
disabled one, and not for ``rexec.service``, enabled into a target that is never reached.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vmaudit.baseline.loader import load_baseline
from vmaudit.collect.config_linux import collect_linux_config
from vmaudit.collect.linux import collect_linux
from vmaudit.collect.osinfo import detect_linux
from vmaudit.collect.units import boot_units
from vmaudit.judge.rules import evaluate

from .conftest import Guest, image_info
from .guestprog import systemd_boot_jobs

NOW = datetime(2026, 11, 27, tzinfo=UTC)
HOST_UNITS = Path("/usr/lib/systemd/system")
SYSTEMD = Path("/usr/lib/systemd/systemd")
LIB = "/usr/lib/systemd/system"
ETC = "/etc/systemd/system"


def _service(description: str, program: str, install: str) -> str:
    return (
        f"[Unit]\nDescription={description}\n\n[Service]\nExecStart={program}\n\n"
        f"[Install]\n{install}\n"
    )


def _socket(description: str, port: int, install: str) -> str:
    return (
        f"[Unit]\nDescription={description}\n\n[Socket]\nListenStream={port}\nAccept=yes\n\n"
        f"[Install]\n{install}\n"
    )


# guest path -> unit file text
UNIT_FILES = {
    f"{LIB}/telnet.socket": _socket("Telnet server", 23, "WantedBy=sockets.target"),
    f"{LIB}/telnet@.service": "[Unit]\nDescription=Telnet session\n\n[Service]\n"
    "ExecStart=-/usr/sbin/in.telnetd\nStandardInput=socket\n",
    f"{LIB}/tftpd-hpa.service": _service(
        "TFTP server", "/usr/sbin/in.tftpd --listen", "WantedBy=multi-user.target"
    ),
    f"{ETC}/vsftpd.service": _service(
        "vsftpd FTP server", "/usr/sbin/vsftpd", "WantedBy=multi-user.target\nAlias=ftpd.service"
    ),
    f"{LIB}/chargen.service": _service(
        "chargen", "/usr/local/sbin/chargend", "WantedBy=default.target"
    ),
    f"{LIB}/daytime.service": _service(
        "daytime", "/usr/local/sbin/daytimed", "RequiredBy=multi-user.target\nAlso=echo.socket"
    ),
    f"{LIB}/echo.socket": _socket("echo server", 7, "WantedBy=sockets.target"),
    "/opt/discard/discard.service": _service(
        "discard", "/opt/discard/discard", "WantedBy=multi-user.target"
    ),
    f"{LIB}/getty@.service": _service(
        "Getty on %I",
        "-/sbin/agetty -o '-p -- \\\\u' --noclear - $TERM",
        "WantedBy=getty.target\nDefaultInstance=tty1",
    ),
    f"{LIB}/rsh.socket": _socket("rsh server", 514, "WantedBy=sockets.target"),
    f"{LIB}/rlogin.socket": _socket("rlogin server", 513, "WantedBy=sockets.target"),
    f"{LIB}/rexec.service": _service(
        "rexec server", "/usr/sbin/in.rexecd", "WantedBy=graphical.target"
    ),
}
OWN_UNITS = frozenset(path.rsplit("/", 1)[1] for path in UNIT_FILES)
# (systemctl verb, units), in this order
SYSTEMCTL_STEPS = [
    ("link", ["/opt/discard/discard.service"]),  # a path inside the tree, with --root
    ("enable", ["daytime.service", "discard.service"]),
    ("enable", ["telnet.socket", "tftpd-hpa.service", "vsftpd.service", "chargen.service",
                "getty@tty1.service", "rsh.socket", "rlogin.socket", "rexec.service"]),
    ("mask", ["rsh.socket"]),
    ("disable", ["rlogin.socket"]),
    ("set-default", ["multi-user.target"]),
]  # fmt: skip
ASKED = ("telnet.socket", "tftpd-hpa.service", "vsftpd.service", "ftpd.service",
         "chargen.service", "daytime.service", "echo.socket", "discard.service",
         "getty@tty1.service", "rsh.socket", "rlogin.socket",
         "rexec.service")  # fmt: skip
BASELINE = """\
apiVersion: vmaudit/v1
kind: Baseline
metadata:
  name: no-cleartext-services
  description: cleartext remote services must not start at boot
match:
  os: linux
services:
  forbidden: [telnet, "tftp*", vsftpd, chargen, "daytime*", "echo*", discard, rsh, rlogin, rexec]
"""


class BootTree:
    def __init__(self, root: Path) -> None:
        self.guest = Guest(root)

    def systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = ["systemctl", f"--root={self.guest.root}", "--no-pager", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    def is_enabled(self, unit: str) -> str:
        result = self.systemctl("is-enabled", unit)
        return result.stdout.strip() or "error"

    def enabled_unit_files(self) -> set[str]:
        result = self.systemctl("list-unit-files", "--state=enabled", "--no-legend")
        assert result.returncode == 0, result.stderr
        return {line.split()[0] for line in result.stdout.splitlines() if line.strip()}

    def systemd_starts(self) -> set[str]:
        """The units of systemd 252's own initial boot transaction on this tree: the host's
        systemd with the tree's unit directories, its /opt (where the linked unit file
        is) and its empty /etc/init.d (so that the SysV generator sees none of the host's
        scripts) bound over the host's."""
        root = self.guest.root
        empty = root.parent / "empty-run"
        empty.mkdir(exist_ok=True)
        binds = [
            (f"{root}/etc/systemd", "/etc/systemd"),
            (f"{root}{LIB}", LIB),
            (f"{root}/etc/init.d", "/etc/init.d"),
            (f"{root}/opt", "/opt"),
        ]
        return systemd_boot_jobs(binds, str(empty))


@pytest.fixture(scope="module")
def boot_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootTree]:
    if shutil.which("systemctl") is None:
        pytest.skip("systemctl is not installed")
    base = tmp_path_factory.mktemp("boot-services")
    tree = BootTree(base / "tree")
    guest = tree.guest
    guest.mkdir(LIB)
    guest.mkdir(ETC)
    guest.mkdir("/etc/init.d")
    guest.symlink("/lib", "usr/lib")  # merged /usr, as Debian 12 has it
    for unit in HOST_UNITS.iterdir():
        if unit.name.endswith((".target", ".target.wants")):
            subprocess.run(["cp", "-a", str(unit), str(guest.host(f"{LIB}/{unit.name}"))],
                           check=True)  # fmt: skip
    for path, text in UNIT_FILES.items():
        guest.write(path, text)
    guest.write("/etc/os-release", 'ID=debian\nVERSION_ID="12"\n')
    guest.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    for verb, units in SYSTEMCTL_STEPS:
        result = tree.systemctl(verb, *units)
        assert result.returncode == 0, (verb, units, result.stderr)
    yield tree
    shutil.rmtree(base, ignore_errors=True)


def _template(unit: str) -> str:
    """``getty@tty1.service`` -> ``getty@.service``: the file list-unit-files shows."""
    stem, _, suffix = unit.rpartition(".")
    return f"{stem.partition('@')[0]}@.{suffix}" if "@" in stem else unit


def _install_targets(unit: str) -> set[str]:
    """The targets a unit's [Install] section names (WantedBy=, RequiredBy=)."""
    path = next(p for p in UNIT_FILES if p.endswith(f"/{_template(unit)}"))
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string(UNIT_FILES[path])
    section = parser["Install"] if parser.has_section("Install") else {}
    return {t for key in ("WantedBy", "RequiredBy") for t in section.get(key, "").split()}


def test_systemctl_made_the_links_the_scenario_needs(boot_tree: BootTree) -> None:
    """The premises, in systemctl's own words: what each unit's state is before comparing."""
    states = {unit: boot_tree.is_enabled(unit) for unit in ASKED}
    assert states == {
        "telnet.socket": "enabled",
        "tftpd-hpa.service": "enabled",
        "vsftpd.service": "enabled",
        "ftpd.service": "alias",
        "chargen.service": "enabled",
        "daytime.service": "enabled",
        "echo.socket": "enabled",
        "discard.service": "enabled",
        "getty@tty1.service": "enabled",
        "rsh.socket": "masked",
        "rlogin.socket": "disabled",
        "rexec.service": "enabled",
    }
    assert boot_tree.systemctl("get-default").stdout.strip() == "multi-user.target"
    # mask leaves the enable link in place: only the mask keeps rsh.socket from starting
    assert boot_tree.guest.host(f"{ETC}/sockets.target.wants/rsh.socket").is_symlink()
    assert not boot_tree.guest.host(f"{ETC}/sockets.target.wants/rlogin.socket").is_symlink()


def test_boot_units_agree_with_systemctl_is_enabled(boot_tree: BootTree) -> None:
    config = collect_linux_config(boot_tree.guest.fs, [], [])
    units = boot_units(boot_tree.guest.fs, [])
    assert config.systemd and units.default_target == "multi-user.target"
    assert units.default_target == boot_tree.systemctl("get-default").stdout.strip()
    for unit in ASKED:
        state, ours = boot_tree.is_enabled(unit), units.state(unit)
        if state == "masked":
            assert ours == "masked", unit
        elif state == "disabled":
            assert ours == "not-started", unit
        elif ours == "started":
            assert state in ("enabled", "alias"), unit  # an alias starts its unit
        if ours == "masked":
            assert state == "masked", unit
    # an alias name loads as its unit: vmaudit reports the unit's own name
    assert units.state("ftpd.service") == "started"
    assert "ftpd.service" not in config.boot_units


def test_boot_units_are_the_enabled_unit_files_the_default_target_reaches(
    boot_tree: BootTree,
) -> None:
    config = collect_linux_config(boot_tree.guest.fs, [], [])
    units = boot_units(boot_tree.guest.fs, [])
    ours = {u for u in config.boot_units if _template(u) in OWN_UNITS}
    assert ours == {"telnet.socket", "tftpd-hpa.service", "vsftpd.service", "chargen.service",
                    "daytime.service", "echo.socket", "discard.service",
                    "getty@tty1.service"}  # fmt: skip
    enabled = boot_tree.enabled_unit_files() & OWN_UNITS
    templated = {_template(u) for u in ours}
    assert templated <= enabled  # nothing starts that systemctl does not call enabled
    not_reached = enabled - templated
    assert not_reached == {"rexec.service"}
    for unit in not_reached:  # enabled, but only into targets the boot never reaches
        targets = _install_targets(unit)
        assert targets and all(units.state(t) == "not-started" for t in targets), unit
    for unit in ours:  # and what starts is enabled into a target that the boot reaches
        assert any(units.state(t) == "started" for t in _install_targets(unit)), unit


def test_boot_units_are_systemd_s_own_boot_transaction(boot_tree: BootTree) -> None:
    if shutil.which("unshare") is None or shutil.which("setpriv") is None:
        pytest.skip("systemd --test needs unshare and setpriv")
    if not SYSTEMD.exists() or subprocess.run(["id", "-u"], capture_output=True,
                                              text=True).stdout.strip() != "0":  # fmt: skip
        pytest.skip("systemd --test in a private mount namespace needs root and systemd")
    by_systemd = boot_tree.systemd_starts()
    units = boot_units(boot_tree.guest.fs, [])
    # implicit dependencies (a template instance's slice) are not modelled (units.py)
    assert by_systemd - units.started == {"system-getty.slice"}
    assert units.started == by_systemd - {"system-getty.slice"}
    config = collect_linux_config(boot_tree.guest.fs, [], [])
    assert set(config.boot_units) == {
        u for u in by_systemd if u.rsplit(".", 1)[1] in ("service", "socket", "timer", "path")
    }


def test_forbidden_enabled_fires_for_enabled_units_the_boot_starts(
    boot_tree: BootTree, tmp_path: Path
) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(BASELINE)
    baseline = load_baseline(str(path))
    warnings: list[str] = []
    fs = boot_tree.guest.fs
    os_info = detect_linux(fs, warnings)
    assert os_info is not None
    facts = collect_linux(fs, image_info(), os_info, NOW, warnings)
    assert "config" not in facts.failed_sections()
    result = evaluate(facts, [baseline], NOW)
    assert "service.forbidden-enabled" in result.rules_evaluated
    assert not [n for n in result.not_judged if n.rule == "service.forbidden-enabled"]
    fired = {
        f.subject: f.evidence for f in result.findings if f.rule == "service.forbidden-enabled"
    }
    assert fired == {
        "telnet.socket": {"via": "systemd", "matched": "telnet"},
        "tftpd-hpa.service": {"via": "systemd", "matched": "tftp*"},
        "vsftpd.service": {"via": "systemd", "matched": "vsftpd"},
        "chargen.service": {"via": "systemd", "matched": "chargen"},
        "daytime.service": {"via": "systemd", "matched": "daytime*"},
        "echo.socket": {"via": "systemd", "matched": "echo*"},
        "discard.service": {"via": "systemd", "matched": "discard"},
    }
    # every finding is a unit systemctl reports enabled; the masked and the disabled one
    # are not reported, nor the one enabled only into a target the boot never reaches
    assert {boot_tree.is_enabled(unit) for unit in fired} == {"enabled"}
    for unit in ("rsh.socket", "rlogin.socket", "rexec.service"):
        assert unit not in fired
    assert boot_tree.is_enabled("rexec.service") == "enabled"

"""What the power-on hook loads: a decision from cached facts imports no appliance code.

The goal (spec/power-on.md, issue 17: under 200 ms for an unchanged image) is measured by
``make bench`` (bench/gate_bench.py); this checks the structure that makes it reachable.
The hook runs as libvirt runs it (``python -I -m vmaudit.act.cli``) on a real image whose
facts a real state database holds, with a real feeds database; at its exit the process
writes the names in ``sys.modules``, and none of the modules that only auditing an image
now, importing feeds or validating an outside document needs may be among them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.act.gatehelpers import (
    COMPLIANT,
    OUT_OF_BASELINE,
    build_image,
    cache_facts,
)
from tests.feeds.conftest import DSA_5724_1, write_json
from vmaudit.act.hook import CONFIG_EXIT
from vmaudit.act.libvirt import hook_script
from vmaudit.errors import ExitCode
from vmaudit.feeds import import_feeds

HOOK = "vmaudit.act.hook"

# The process runs ``module`` as ``-m`` would, and writes its modules whatever the exit.
_RECORDING = """
import json, runpy, sys
out, module, sys.argv = sys.argv[1], sys.argv[2], sys.argv[2:]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    with open(out, "w") as handle:
        json.dump(sorted(sys.modules), handle)
"""

# Prefixes no cached decision may load: libguestfs and the code that drives it, the
# workers, every feeds importer, JSON Schema, the report formatters, PostgreSQL's driver.
NOT_ON_THE_CACHED_PATH = (
    "guestfs",
    "hivex",
    "jsonschema",
    "psycopg",
    "multiprocessing",
    "concurrent.futures",
    "vmaudit.run.runner",  # vmaudit.run.sizing (batch arithmetic, no import) may load
    "vmaudit.run.worker",
    "vmaudit.run.audit",
    "vmaudit.run.fleet",
    "vmaudit.guest.appliance",
    "vmaudit.guest.accel",
    "vmaudit.collect",
    "vmaudit.feeds.importer",
    "vmaudit.feeds.osv",
    "vmaudit.feeds.cvrf",
    "vmaudit.feeds.debian_tracker",
    "vmaudit.feeds.jsonstream",
    "vmaudit.judge.repoindex",
    "vmaudit.report.table",
    "vmaudit.report.json",
    "vmaudit.report.html",
)


def loaded(out: Path, module: str, *args: str, stdin: bytes = b"") -> tuple[int, str, list[str]]:
    """(exit code, stderr + stdout, modules at exit) of ``python -I -m module args``."""
    done = subprocess.run(
        [sys.executable, "-I", "-c", _RECORDING, str(out), module, *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )
    modules = json.loads(out.read_text())
    return done.returncode, (done.stderr + done.stdout).decode(), modules


def unwanted(modules: list[str]) -> list[str]:
    return [
        name
        for name in modules
        if any(name == prefix or name.startswith(prefix + ".") for prefix in NOT_ON_THE_CACHED_PATH)
    ]


def domain_xml(name: str, disk: Path) -> bytes:
    return (
        f"<domain type='qemu'><name>{name}</name><devices><disk type='file' device='disk'>"
        f"<driver name='qemu' type='raw'/><source file='{disk}'/><target dev='vda'/></disk>"
        "</devices></domain>"
    ).encode()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two images whose facts a scan cached; a policy judging them with the default baseline
    and a vulnerabilities baseline against a feeds database that holds an advisory."""
    root = tmp_path_factory.mktemp("gate-imports")
    store = root / "images"
    state = root / "state.db"
    bad, bad_tree = build_image(store, "legacy.img", OUT_OF_BASELINE)
    good, good_tree = build_image(store, "clean.img", COMPLIANT)
    cache_facts(state, bad, bad_tree)
    cache_facts(state, good, good_tree)
    import_feeds(
        [str(write_json(root / "dsa.json", DSA_5724_1))], root / "feeds.db", lambda _: None
    )
    (root / "vulns.yaml").write_text(
        "apiVersion: vmaudit/v1\nkind: Baseline\nmetadata: {name: vulns}\nvulnerabilities: {}\n"
    )
    policy = root / "gate.yaml"
    policy.write_text(
        "apiVersion: vmaudit/v1\nkind: GatePolicy\nbaselines: [default, vulns.yaml]\n"
        f"state: {state}\ndatastores: [{store}]\nfeeds_db: feeds.db\n"
    )
    return {"root": root, "bad": bad, "good": good, "policy": policy}


# The installed hook's command (vmaudit.act.libvirt.hook_script) and ``vmaudit gate libvirt``.
ENTRIES = [(HOOK, ()), ("vmaudit.act.cli", ("libvirt",))]


@pytest.mark.parametrize(("module", "command"), ENTRIES)
def test_the_libvirt_hook_decides_from_cache_without_appliance_importer_or_schema(
    site: dict[str, Path], module: str, command: tuple[str, ...]
) -> None:
    for name, image, code in [("legacy", site["bad"], 1), ("clean", site["good"], 0)]:
        out = site["root"] / f"modules-{name}.json"
        args = (*command, "--policy", str(site["policy"]), name, "prepare", "begin", "-")
        exit_code, said, modules = loaded(out, module, *args, stdin=domain_xml(name, image))
        assert exit_code == code, said
        assert "cached facts)" in said, said  # decided from the state database, not audited
        # the decision's own parts did load: the check looks at the right process
        assert {"vmaudit.act.gate", "vmaudit.state.db", "vmaudit.feeds.match"} <= set(modules)
        assert unwanted(modules) == []
        if not command:  # the installed hook does without the CLI's parser
            assert "click" not in modules


def test_the_installed_hook_runs_the_module_that_does_without_click(tmp_path: Path) -> None:
    script = hook_script(str(tmp_path / "gate.yaml"))
    assert " -I -m vmaudit.act.hook --policy " in script
    assert script.rstrip().endswith('"$@"')


def test_gate_check_from_the_main_cli_decides_from_cache_with_the_same_imports(
    site: dict[str, Path],
) -> None:
    out = site["root"] / "modules-check.json"
    args = ("gate", "check", "--policy", str(site["policy"]), str(site["bad"]), str(site["good"]))
    exit_code, said, modules = loaded(out, "vmaudit.cli", *args)
    assert exit_code == 1, said
    assert said.count("cached facts)") == 2, said
    assert "vmaudit.act.gate" in modules
    assert unwanted(modules) == []


def test_a_call_that_decides_nothing_reads_no_policy_and_opens_no_database(
    site: dict[str, Path],
) -> None:
    for module, command in ENTRIES:
        out = site["root"] / "modules-pass.json"
        args = (*command, "--policy", str(site["policy"]), "legacy", "started", "begin", "-")
        exit_code, said, modules = loaded(out, module, *args)
        assert (exit_code, said) == (0, "")
        decision_parts = {
            "yaml", "sqlite3", "vmaudit.act.gate", "vmaudit.act.policy", "vmaudit.models"
        }  # fmt: skip
        assert decision_parts & set(modules) == set()
        if not command:  # nothing of vmaudit but the hook itself (run as __main__)
            assert [m for m in modules if m.startswith("vmaudit")] == ["vmaudit", "vmaudit.act"]


def test_the_hook_refuses_arguments_it_cannot_read(site: dict[str, Path]) -> None:
    """Fewer than DOMAIN OPERATION, or an option twice: exit 2 (the start is refused)."""
    for args in [("legacy",), ("--policy", "a.yaml", "--policy", "b.yaml", "x", "prepare")]:
        exit_code, said, _modules = loaded(site["root"] / "modules-bad.json", HOOK, *args)
        assert exit_code == ExitCode.CONFIG and "usage: vmaudit gate libvirt" in said, said
    assert CONFIG_EXIT == ExitCode.CONFIG  # the hook's copy, kept to import nothing to pass

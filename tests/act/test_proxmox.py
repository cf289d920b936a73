"""``vmaudit gate proxmox VMID PHASE`` as Proxmox VE runs a hookscript, on a configuration
folder laid out as /etc/pve (qemu-server/VMID.conf, storage.cfg) and a directory storage."""

from __future__ import annotations

from pathlib import Path

from tests.act.gatehelpers import (
    COMPLIANT,
    OUT_OF_BASELINE,
    build_image,
    cache_facts,
    vmaudit_gate,
    write_policy,
)
from vmaudit.state import StateDB


def pve(tmp_path: Path, storage: Path, conf: dict[str, str]) -> Path:
    root = tmp_path / "pve"
    (root / "qemu-server").mkdir(parents=True)
    (root / "storage.cfg").write_text(
        f"dir: local\n\tpath {storage}\n\tcontent images,iso\n\n"
        "lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent images\n"
    )
    for vmid, text in conf.items():
        (root / "qemu-server" / f"{vmid}.conf").write_text(text)
    return root


def test_pre_start_decides_and_every_other_phase_passes(tmp_path: Path) -> None:
    storage = tmp_path / "vz"
    bad, bad_tree = build_image(storage / "images" / "101", "vm-101-disk-0.raw", OUT_OF_BASELINE)
    good, good_tree = build_image(storage / "images" / "102", "vm-102-disk-0.raw", COMPLIANT)
    state = tmp_path / "state.db"
    cache_facts(state, bad, bad_tree)
    cache_facts(state, good, good_tree)
    root = pve(
        tmp_path,
        storage,
        {
            "101": "name: legacy-erp\nscsi0: local:101/vm-101-disk-0.raw,size=16M\n"
            "ide2: local:iso/debian.iso,media=cdrom\n",
            "102": "name: clean\nvirtio0: local:102/vm-102-disk-0.raw,size=16M\n",
            "103": "name: thin\nscsi0: local-lvm:vm-103-disk-0,size=8G\n",
        },
    )
    policy = write_policy(tmp_path / "gate.yaml", [storage], state)

    def hookscript(vmid: str, phase: str) -> tuple[int, str]:
        done = vmaudit_gate("proxmox", "--policy", str(policy), "--pve-dir", str(root), vmid, phase)
        return done.returncode, done.stderr.decode()

    code, err = hookscript("101", "pre-start")
    assert code == 1 and "refused legacy-erp:" in err and "account.extra-uid0 (toor)" in err
    assert hookscript("102", "pre-start")[0] == 0
    code, err = hookscript("103", "pre-start")
    assert code == 1
    # an LVM-thin volume is a block device now, audited when the policy allows its VG
    assert "scsi0: /dev/pve/vm-103-disk-0 is outside the allowed datastores" in err
    for phase in ("post-start", "pre-stop", "post-stop"):
        assert hookscript("101", phase) == (0, "")
    with StateDB(state) as db:
        decisions = [(d.source, d.domain, d.decision) for d in db.power_ons()]
    assert decisions == [
        ("proxmox", "legacy-erp", "refuse"),
        ("proxmox", "clean", "allow"),
        ("proxmox", "thin", "refuse"),
    ]

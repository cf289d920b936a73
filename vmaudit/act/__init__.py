"""What changes the world on request: the power-on gate (``gate.py``) and its hypervisor
hooks (libvirt's ``qemu`` hook, Proxmox hookscripts), driven by a ``GatePolicy`` file."""

DEFAULT_POLICY = "/etc/vmaudit/gate.yaml"

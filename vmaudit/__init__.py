"""vmaudit: audit dormant virtual-machine disk images read-only through libguestfs."""

__version__ = "0.1.0"

"""How guest files are reached: a libguestfs appliance or a directory tree on the host."""

from vmaudit.guest.base import GuestFS, GuestStat, read_lines, read_text

__all__ = ["GuestFS", "GuestStat", "read_lines", "read_text"]

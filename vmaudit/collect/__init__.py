"""Fact collectors: one module per guest artefact, all reading through ``GuestFS``.

``osinfo.detect_linux`` says whether a root is Linux and which; ``linux.collect_linux``
gathers the full ``vmaudit.facts/v1`` of a Linux guest from the other modules.
"""

"""Command-line interface (placeholder until the pipeline lands)."""


def main() -> None:
    raise SystemExit("vmaudit: not built yet")

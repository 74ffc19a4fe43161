"""The benchmarks' command lines: `--name value` options from a table, the script's docstring as help."""

from __future__ import annotations

import argparse


def arguments(doc: str, **options: tuple[type, object, str]) -> argparse.Namespace:
    """Parse `--some-name` for each `some_name=(type, default, help)`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, (kind, default, text) in options.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default, help=text or None)
    return parser.parse_args()

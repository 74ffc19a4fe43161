"""The library reports through `logging`, one logger per module under 'twoworlds' (e.g. the FFCV cache's
'writing ...', 'reusing ...'); the command line shows those lines on stdout, the message alone, like its own
progress lines. Called by the CLI and in every Ray trial process (their stdout reaches the driver)."""

from __future__ import annotations

import logging
import sys


class _Stdout(logging.StreamHandler):
    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout  # the stdout of now (a redirect, a test's capture), not the one of the first call
        super().emit(record)


def show_library_logs(level: int = logging.INFO) -> None:
    """INFO and above of the 'twoworlds' loggers, on stdout; once per process (a second call changes nothing)."""
    logger = logging.getLogger("twoworlds")
    if any(getattr(h, "twoworlds_cli", False) for h in logger.handlers):
        return
    handler = _Stdout()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.twoworlds_cli = True
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # a host application's root handler would print every line twice

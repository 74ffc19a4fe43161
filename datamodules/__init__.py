"""Sources (index-addressable pools), the world switch and the loaders.

Importing this package is cheap: `datamodules.config` holds the typed config and choice lists
without torch, and the names below load their (torch) modules on first access; the source
modules themselves register when a source is first looked up (sources.SOURCES).
"""

from __future__ import annotations

import importlib

_EXPORTS = {"DataConfig": "config", "SOURCES": "sources", "Source": "sources", "build_source": "sources",
            "register_source": "sources"}
__all__ = [*_EXPORTS, "sources"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if name == "sources":
        return importlib.import_module(f"{__name__}.sources")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

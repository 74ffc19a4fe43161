"""Sources (index-addressable pools), the world switch and the loaders."""

from datamodules import sources
from datamodules.sources import SOURCES, DataConfig, Source, build_source, register_source

# Importing a source module registers it.
from datamodules import mnist1d  # noqa: E402,F401  isort: skip
from datamodules import images  # noqa: E402,F401  isort: skip

__all__ = ["SOURCES", "DataConfig", "Source", "build_source", "register_source", "sources"]

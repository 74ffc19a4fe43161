"""Sources (index-addressable pools), the world switch and the loaders."""

from twoworlds.datamodules import sources
from twoworlds.datamodules.sources import SOURCES, DataConfig, Source, build_source, register_source

# Importing a source module registers it.
from twoworlds.datamodules import mnist1d  # noqa: E402,F401  isort: skip
from twoworlds.datamodules import images  # noqa: E402,F401  isort: skip

__all__ = ["SOURCES", "DataConfig", "Source", "build_source", "register_source", "sources"]

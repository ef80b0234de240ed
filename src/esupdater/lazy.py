"""Names a package serves from a submodule imported on first use: lighter `import esupdater`."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, sources: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level `__getattr__` for `package`: `sources` maps each name to the module
    that defines it; that module is imported when the name is first looked up."""

    def __getattr__(name: str) -> Any:
        source = sources.get(name)
        if source is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        found = getattr(importlib.import_module(source), name)
        setattr(sys.modules[package], name, found)  # later lookups skip this function
        return found

    return __getattr__

"""What the test tells the handler module it runs, read from `params.json` beside this file.

service_harness.Service.write_handlers writes that file: the service's Elasticsearch index,
its working directory, and the parameters the test passed (`new_service(..., params={...})`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_GIVEN: dict[str, Any] = json.loads((Path(__file__).parent / "params.json").read_text())

#: The index the test reads: unique to the test and the service.
INDEX: str = _GIVEN["index"]
#: The service's working directory: files a handler leaves for the test go there.
WORKDIR = Path(_GIVEN["workdir"])

_REQUIRED: Any = object()


def param(name: str, default: Any = _REQUIRED) -> Any:
    """The test's parameter `name`, else `default`; a missing one names the call to fix."""
    params: dict[str, Any] = _GIVEN["params"]
    if name in params:
        return params[name]
    if default is not _REQUIRED:
        return default
    raise KeyError(
        f"{Path(__file__).parent / 'params.json'}: no parameter {name!r}; pass it as "
        f"new_service(..., params={{{name!r}: ...}})"
    )

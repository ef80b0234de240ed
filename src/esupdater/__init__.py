"""esupdater: keep Elasticsearch documents in step with MySQL through Canal and Kafka.

Handlers import everything they need from here::

    from esupdater import Change, Context, on
    from esupdater import actions, maps      # mappers: plain functions returning actions

The test harness (`apply`, `MemorySink`, `make_change`, `changes_from_canal`, from
esupdater.testing) is importable from here too, but loads only when one of them is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from esupdater import actions
from esupdater.change import Change, Position
from esupdater.context import Context
from esupdater.errors import BulkItemError, DecodeError, EsupdaterError
from esupdater.lazy import lazy_names
from esupdater.routing import Registry, maps, on

if TYPE_CHECKING:
    from esupdater.testing import MemorySink, apply, changes_from_canal, make_change

__version__ = "0.1.0"

__all__ = [
    "BulkItemError",
    "Change",
    "Context",
    "DecodeError",
    "EsupdaterError",
    "MemorySink",
    "Position",
    "Registry",
    "__version__",
    "actions",
    "apply",
    "changes_from_canal",
    "make_change",
    "maps",
    "on",
]


__getattr__ = lazy_names(__name__, dict.fromkeys(
    ("MemorySink", "apply", "changes_from_canal", "make_change"), "esupdater.testing"
))

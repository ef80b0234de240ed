"""esupdater: keep Elasticsearch documents in step with MySQL through Canal and Kafka.

Handlers import everything they need from here::

    from esupdater import Change, Context, on
"""

from __future__ import annotations

from esupdater.change import Change, Position
from esupdater.context import Context
from esupdater.errors import BulkItemError, EsupdaterError
from esupdater.routing import Registry, on
from esupdater.testing import MemorySink, apply, changes_from_canal, make_change

__version__ = "0.1.0"

__all__ = [
    "BulkItemError",
    "Change",
    "Context",
    "EsupdaterError",
    "MemorySink",
    "Position",
    "Registry",
    "__version__",
    "apply",
    "changes_from_canal",
    "make_change",
    "on",
]

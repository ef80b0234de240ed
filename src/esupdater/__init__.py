"""esupdater: keep Elasticsearch documents in step with MySQL through Canal and Kafka.

Handlers import everything they need from here::

    from esupdater import Change, Context, on
"""

from __future__ import annotations

from esupdater.change import Change, Position
from esupdater.context import Context
from esupdater.errors import BulkItemError, EsupdaterError
from esupdater.routing import Registry, on

__version__ = "0.1.0"

__all__ = [
    "BulkItemError",
    "Change",
    "Context",
    "EsupdaterError",
    "Position",
    "Registry",
    "__version__",
    "on",
]

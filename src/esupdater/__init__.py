"""esupdater: keep Elasticsearch documents in step with MySQL through Canal and Kafka."""

from __future__ import annotations

from esupdater.change import Change, Position

__version__ = "0.1.0"

__all__ = ["Change", "Position", "__version__"]

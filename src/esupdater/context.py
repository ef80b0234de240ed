"""What a handler gets besides its Change: Elasticsearch writes that return once acknowledged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from elasticsearch import AsyncElasticsearch

from esupdater.bulk import Action, BulkSink
from esupdater.change import Change

_handler_log = logging.getLogger("esupdater.handler")


class Context:
    """Per-change handle on the shared bulk writer.

    Each write is queued into the one bulk stream all tasks share and returns the item's
    result when Elasticsearch acknowledged it; a refused item raises `BulkItemError` naming
    index, id and Elasticsearch's reason.
    """

    __slots__ = ("_log", "change", "es", "sink")

    def __init__(self, sink: BulkSink, es: AsyncElasticsearch | None, change: Change) -> None:
        self.sink = sink
        self.change = change
        self._log: logging.LoggerAdapter[logging.Logger] | None = None
        self.es = es  # type: ignore[assignment]  # None only in the test harness

    es: AsyncElasticsearch
    """The client itself, for anything the helpers below do not cover."""

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry the change's position (topic/partition@offset)."""
        if self._log is None:
            change = self.change
            self._log = logging.LoggerAdapter(
                _handler_log,
                {"position": str(change.position), "table": f"{change.database}.{change.table}"},
            )
        return self._log

    async def index(
        self, *, index: str, id: str, doc: Mapping[str, Any], version: int | None = None,
        **meta: Any,
    ) -> dict[str, Any]:
        """Create or replace the whole document.

        With `version` (usually `change.version`) the write is external-versioned: one older
        than the stored document is not applied and returns the item with `"result":
        "stale"` instead of raising.
        """
        return await self.sink.execute(
            _versioned({"_op_type": "index", "_index": index, "_id": id, "_source": doc,
                        **meta}, version)
        )

    async def upsert(
        self, *, index: str, id: str, doc: Mapping[str, Any], **meta: Any
    ) -> dict[str, Any]:
        """Merge `doc` into the document, creating it when missing (doc_as_upsert)."""
        _refuse_version("upsert", meta)
        return await self.sink.execute(
            {
                "_op_type": "update", "_index": index, "_id": id,
                "doc": doc, "doc_as_upsert": True, **meta,
            }
        )

    async def update(
        self, *, index: str, id: str, doc: Mapping[str, Any], **meta: Any
    ) -> dict[str, Any]:
        """Merge `doc` into an existing document; a missing one is an error."""
        _refuse_version("update", meta)
        return await self.sink.execute(
            {"_op_type": "update", "_index": index, "_id": id, "doc": doc, **meta}
        )

    async def delete(
        self, *, index: str, id: str, version: int | None = None, **meta: Any
    ) -> dict[str, Any]:
        """Delete the document; deleting one that is not there is not an error.

        `version` as for `index`: a delete older than the stored document is not applied.
        """
        return await self.sink.execute(
            _versioned({"_op_type": "delete", "_index": index, "_id": id, **meta}, version)
        )

    async def bulk(self, actions: Iterable[Action]) -> list[dict[str, Any]]:
        """Several raw bulk actions (helpers' format: `_op_type`, `_index`, `_id`, ...).

        They are queued in the given order and all awaited; the first failure is raised
        after every action has settled, so none is left unobserved.
        """
        results = await asyncio.gather(
            *(self.sink.execute(dict(action)) for action in actions), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if not isinstance(r, BaseException)]


def _versioned(action: Action, version: int | None) -> Action:
    if version is not None:
        action["version"] = version
        action.setdefault("version_type", "external")
    return action


def _refuse_version(what: str, meta: Mapping[str, Any]) -> None:
    if "version" in meta or "version_type" in meta:
        raise TypeError(
            f"ctx.{what} cannot be versioned (Elasticsearch's update API refuses external "
            "versions): send the whole row with ctx.index(..., version=change.version)"
        )

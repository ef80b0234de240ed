"""What a handler gets besides its Change: Elasticsearch writes that return once acknowledged."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any

from elasticsearch import AsyncElasticsearch

from esupdater import actions
from esupdater.actions import Action
from esupdater.bulk import BulkSink
from esupdater.change import Change
from esupdater.driven import pending_write
from esupdater.errors import UnawaitedCallError

Result = Coroutine[Any, Any, dict[str, Any]]

_new = object.__new__

_handler_log = logging.getLogger("esupdater.handler")


class Context:
    """Per-change handle on the shared bulk writer.

    Each write is queued into the one bulk stream all tasks share and returns the item's
    result when Elasticsearch acknowledged it; a refused item raises `BulkItemError` naming
    index, id and Elasticsearch's reason.

    The write methods are plain functions returning a coroutine, so a call is noticed when
    it is made: `unawaited_error` tells the runner about one the handler never awaited
    (its offset would otherwise be committed with nothing written).
    """

    __slots__ = ("_log", "_writes", "change", "driving", "es", "sink")

    def __init__(self, sink: BulkSink, es: AsyncElasticsearch | None, change: Change) -> None:
        self.sink = sink
        self.change = change
        self._log: logging.LoggerAdapter[logging.Logger] | None = None
        self.es = es  # type: ignore[assignment]  # None only in the test harness
        # Every write called, flat: method, its coroutine, method, ... (no tuple per write);
        # a finished coroutine has no frame. Any: typing's Coroutine does not declare
        # cr_frame, types.CoroutineType does. None: not kept (`stepped_context`).
        self._writes: list[Any] | None = []
        #: True while the batch running the handler steps its coroutine (esupdater.driven):
        #: a write awaited then goes to that batch rather than to a future of its own.
        self.driving = False

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

    def index(
        self, *, index: str, id: str, doc: Mapping[str, Any], version: int | None = None,
        **meta: Any,
    ) -> Result:
        """Create or replace the whole document (esupdater.actions.index).

        With `version` (usually `change.version`) the write is external-versioned: one older
        than the stored document is not applied and returns the item with `"result":
        "stale"` instead of raising.
        """
        return self._write("index", actions.index_action(index, id, doc, version, meta))

    def upsert(self, *, index: str, id: str, doc: Mapping[str, Any], **meta: Any) -> Result:
        """Merge `doc` into the document, creating it when missing (doc_as_upsert)."""
        return self._write("upsert", actions.upsert_action(index, id, doc, meta))

    def update(self, *, index: str, id: str, doc: Mapping[str, Any], **meta: Any) -> Result:
        """Merge `doc` into an existing document; a missing one is an error."""
        return self._write("update", actions.update_action(index, id, doc, meta))

    def delete(
        self, *, index: str, id: str, version: int | None = None, **meta: Any
    ) -> Result:
        """Delete the document; deleting one that is not there is not an error.

        `version` as for `index`: a delete older than the stored document is not applied.
        """
        return self._write("delete", actions.delete_action(index, id, version, meta))

    def write(self, action: Action) -> Result:
        """One bulk action as it is (helpers' format, e.g. built by esupdater.actions)."""
        return self._write(str(action.get("_op_type", "index")), action)

    def bulk(self, actions: Iterable[Action]) -> Coroutine[Any, Any, list[dict[str, Any]]]:
        """Several raw bulk actions (helpers' format: `_op_type`, `_index`, `_id`, ...).

        They are queued in the given order and all awaited; the first failure is raised
        after every action has settled, so none is left unobserved. Writes to one document
        are applied in the given order, retries included.
        """
        coroutine = self._gather(actions)
        if self._writes is not None:
            self._writes += ("bulk", coroutine)
        return coroutine

    def unfinished(self) -> bool:
        """Whether a write the handler called has not finished (cheap: no names built)."""
        writes = self._writes
        if writes is None:  # not kept: the handler awaits each write where it calls it
            return False
        for place in range(1, len(writes), 2):  # noqa: SIM110 - no generator per row
            if writes[place].cr_frame is not None:
                return True
        return False

    def unawaited_error(self, handler: str) -> UnawaitedCallError | None:
        """The error for writes the handler called and had not finished when it returned.

        The ones never started are closed (no "never awaited" warning at garbage
        collection); nothing of theirs was sent.
        """
        if not self.unfinished():  # every frame None: finished (or closed unstarted)
            return None  # the usual case, kept cheap
        never, running = [], []
        writes = self._writes
        assert writes is not None  # (unfinished: kept)
        for method, coroutine in zip(writes[::2], writes[1::2], strict=True):
            if coroutine.cr_frame is None:
                continue
            if inspect.getcoroutinestate(coroutine) == inspect.CORO_CREATED:
                coroutine.close()
                never.append(f"ctx.{method}(...)")
            else:
                running.append(f"ctx.{method}(...)")
        writes.clear()
        if not (never or running):
            return None
        where = f"{handler} ({self.change.position} row {self.change.row_index})"
        parts = []
        if never:
            parts.append(f"{', '.join(never)} {'was' if len(never) == 1 else 'were'} never "
                         f"awaited in {where}: nothing was written; put `await` before it")
        if running:
            parts.append(f"{', '.join(running)} had not finished when {where} returned: "
                         "await the task or gather running it before returning")
        return UnawaitedCallError("; ".join(parts))

    def _write(self, method: str, action: Action) -> Result:
        coroutine = self._driven(action) if self.driving else self.sink.execute(action)
        writes = self._writes
        if writes is not None:
            writes.append(method)
            writes.append(coroutine)
        return coroutine

    async def _driven(self, action: Action) -> dict[str, Any]:
        """A write called while the batch steps the handler: queued by the batch if still
        so when awaited, else (awaited later, in a task) as any other."""
        if self.driving:
            return await pending_write(action)
        return await self.sink.execute(action)

    async def _gather(self, actions: Iterable[Action]) -> list[dict[str, Any]]:
        results = await asyncio.gather(
            *(self.sink.execute(dict(action)) for action in actions), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if not isinstance(r, BaseException)]


def stepped_context(
    sink: BulkSink, es: AsyncElasticsearch | None, change: Change, keep_writes: bool = True,
) -> Context:
    """`Context(sink, es, change)` without its `__init__`, which Python calls from C: one is
    made per row a batch steps (esupdater.mapped_batch). Not `keep_writes`: for a handler
    that awaits each write where it calls it (`Route.awaits_every_write`), so none can be
    left unawaited; `unfinished` is then always False."""
    ctx: Context = _new(Context)
    ctx.sink = sink
    ctx.change = change
    ctx._log = None
    ctx.es = es  # type: ignore[assignment]  # None only in the test harness
    ctx._writes = [] if keep_writes else None
    ctx.driving = False
    return ctx

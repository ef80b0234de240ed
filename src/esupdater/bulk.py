"""The shared bulk writer: every handler's actions go through one `async_streaming_bulk` pipe.

Callers `await writer.execute(action)` and get the item's result once Elasticsearch has
acknowledged it. Actions are spread over `max_in_flight` lanes by (index, id), so two writes
to one document always travel the same lane, in order; each lane sends one request at a time.
A lane batches whatever is waiting when it becomes free (up to `chunk_size`, or for at most
`flush_interval`), so light load gets low latency and heavy load gets big requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from elastic_transport import SerializationError
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import BULK_FLUSH, async_streaming_bulk, expand_action

from esupdater.backoff import Backoff
from esupdater.errors import BulkItemError

log = logging.getLogger(__name__)

#: Item statuses worth retrying: Elasticsearch is busy or briefly unavailable.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Version types with which a 409 means "the document already holds a newer change".
EXTERNAL_VERSION_TYPES = frozenset({"external", "external_gt", "external_gte"})

Action = dict[str, Any]


class BulkSink(Protocol):
    """Where `Context` sends actions: Elasticsearch, or memory in the test harness."""

    async def execute(self, action: Action) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class BulkLimits:
    chunk_size: int = 500
    max_chunk_bytes: int = 10 * 1024 * 1024
    flush_interval: float = 0.05
    max_in_flight: int = 2


class _TransientFailure(Exception):
    """One attempt failed in a way that may succeed later (429, 5xx, connection)."""

    def __init__(self, reason: str, *, at_once: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.at_once = at_once  # innocent bystander of another item's failure: no backoff


_Item = tuple[Action, "asyncio.Future[dict[str, Any]]"]
_STOP = None


class BulkWriter:
    """Batches actions from all tasks into bulk requests; resolves each caller's future."""

    def __init__(
        self,
        es: AsyncElasticsearch,
        limits: BulkLimits,
        backoff: Backoff,
        *,
        quiet_retries: int = 8,
    ) -> None:
        self.es = es
        self.limits = limits
        self.backoff = backoff
        # Retries of one item logged as warnings; past that, each one is an error: the
        # index is falling behind. Retries themselves never stop (nothing is dropped).
        self.quiet_retries = quiet_retries
        self._lanes: list[asyncio.Queue[_Item | None]] = [
            asyncio.Queue() for _ in range(limits.max_in_flight)
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self.requests = 0
        self.transient_failures = 0
        # Versioned writes Elasticsearch did not apply because the document was newer.
        self.stale_writes = 0

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run_lane(lane), name=f"bulk-lane-{i}")
            for i, lane in enumerate(self._lanes)
        ]

    async def close(self) -> None:
        """Send what is queued, then stop the lanes."""
        for lane in self._lanes:
            lane.put_nowait(_STOP)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def execute(self, action: Action) -> dict[str, Any]:
        """Queue one action; return its item result once acknowledged.

        Transient failures are retried with capped exponential backoff for as long as it
        takes (the offset is not committed meanwhile); a permanent one raises BulkItemError.
        """
        attempt = 0
        while True:
            try:
                return await self._attempt(action)
            except _TransientFailure as failure:
                if failure.at_once:
                    continue
                self.transient_failures += 1
                delay = self.backoff.delay(attempt)
                attempt += 1
                level = logging.WARNING if attempt <= self.quiet_retries else logging.ERROR
                log.log(
                    level, "Elasticsearch %s, retrying %s/%s (attempt %d) in %.1fs",
                    failure.reason, action.get("_index"), action.get("_id"), attempt, delay,
                )
                await asyncio.sleep(delay)

    async def _attempt(self, action: Action) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        lane = hash((action.get("_index"), action.get("_id"))) % len(self._lanes)
        self._lanes[lane].put_nowait((action, future))
        return await future

    async def _run_lane(self, lane: asyncio.Queue[_Item | None]) -> None:
        """One long-lived `async_streaming_bulk` per lane; restarted after a failed request."""
        feed = _LaneFeed(self, lane)
        while not feed.stopping:
            feed.sent.clear()
            try:
                async for ok, info in async_streaming_bulk(
                    self.es,
                    feed.actions(),
                    chunk_size=self.limits.chunk_size,
                    max_chunk_bytes=self.limits.max_chunk_bytes,
                    raise_on_error=False,
                    raise_on_exception=False,
                    max_retries=0,  # retries happen per item in execute(), in order
                ):
                    action, future = feed.sent.popleft()
                    stale = not ok and is_stale(action, info)
                    if stale:
                        # Counted even when its caller is gone: that is the late write of
                        # a revoked partition, which the version kept out.
                        self.stale_writes += 1
                    if not future.done():
                        _resolve(future, action, ok, info, stale=stale)
            except SerializationError:
                self._fail_unserializable(list(feed.sent))
            except Exception as exc:  # noqa: BLE001 - any request-level failure is retried
                reason = f"request failed ({type(exc).__name__}: {exc})"
                for _, future in feed.sent:
                    if not future.done():
                        future.set_exception(_TransientFailure(reason))

    async def _collect(self, lane: asyncio.Queue[_Item | None], batch: list[_Item]) -> bool:
        """Add to `batch` what arrives while other tasks are still producing; True on stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.flush_interval
        while len(batch) < self.limits.chunk_size:
            if lane.empty():
                # Let every ready task run once: if none of them queued anything, nothing
                # more is coming soon and waiting would only add latency.
                await asyncio.sleep(0)
                if lane.empty() or loop.time() >= deadline:
                    return False
            item = lane.get_nowait()
            if item is _STOP:
                return True
            batch.append(item)
        return False

    def _fail_unserializable(self, batch: list[_Item]) -> None:
        """Refuse the actions that cannot be JSON for good; send the others again at once."""
        serializer = self.es.transport.serializers.get_serializer("application/json")
        for action, future in batch:
            if future.done():
                continue
            try:
                for part in expand_action(action):
                    if part is not None:
                        serializer.dumps(part)
            except SerializationError as exc:
                index, doc_id = str(action.get("_index")), str(action.get("_id"))
                op_type = str(action.get("_op_type", "index"))
                future.set_exception(BulkItemError(op_type, index, doc_id, 400, str(exc)))
            else:
                future.set_exception(_TransientFailure("batch had a bad item", at_once=True))


class _LaneFeed:
    """The action stream of one lane: batches of what waits, each closed by a flush."""

    def __init__(self, writer: BulkWriter, lane: asyncio.Queue[_Item | None]) -> None:
        self.writer = writer
        self.lane = lane
        self.sent: deque[_Item] = deque()  # handed to the helper, result not seen yet
        self.stopping = False

    async def actions(self) -> AsyncIterator[Any]:
        while not self.stopping:
            first = await self.lane.get()
            if first is _STOP:
                self.stopping = True
                return
            batch = [first]
            self.stopping = await self.writer._collect(self.lane, batch)
            # A caller cancelled while its action waited (its partition was revoked, the
            # drain timed out): that write must not land after the new owner's.
            batch = [item for item in batch if not item[1].done()]
            if not batch:
                continue
            self.sent.extend(batch)  # all of it first: a failure must see every item
            for action, _ in batch:
                yield action
            self.writer.requests += 1
            yield BULK_FLUSH  # send now: what was waiting is all there is


def is_stale(action: Action, info: Mapping[str, Any]) -> bool:
    """An external-versioned write refused because the document holds a newer version."""
    if action.get("version_type") not in EXTERNAL_VERSION_TYPES:
        return False
    item = next(iter(info.values()))
    error = item.get("error")
    return (
        item.get("status") == 409
        and isinstance(error, Mapping)
        and error.get("type") == "version_conflict_engine_exception"
    )


def _resolve(
    future: asyncio.Future[dict[str, Any]],
    action: Action,
    ok: bool,
    info: Mapping[str, Any],
    *,
    stale: bool = False,
) -> None:
    op_type, item = next(iter(info.items()))
    if stale:  # not applied, and rightly so: the document already holds a newer change
        future.set_result({**item, "result": "stale"})
        return
    if ok:
        future.set_result(item)
        return
    status = item.get("status")
    if op_type == "delete" and status == 404:
        future.set_result(item)  # deleting a missing document is not an error
        return
    error = item.get("error")
    if isinstance(error, Mapping):
        reason = f"{error.get('type')}: {error.get('reason')}"
    else:
        reason = str(error)
    if not isinstance(status, int) or status in TRANSIENT_STATUSES:
        future.set_exception(_TransientFailure(f"{status} {reason}"))
    else:
        index, doc_id = str(action.get("_index")), str(action.get("_id"))
        future.set_exception(BulkItemError(op_type, index, doc_id, status, reason))

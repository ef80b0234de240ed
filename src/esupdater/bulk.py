"""The shared bulk writer: every handler's actions go through one `async_streaming_bulk` pipe.

Callers `await writer.execute(action)` and get the item's result once Elasticsearch has
acknowledged it. Actions are spread over `max_in_flight` lanes by (index, id), so two writes
to one document always travel the same lane, in order; each lane sends one request at a time.
A lane batches whatever is waiting when it becomes free (up to `chunk_size`, or for at most
`flush_interval`), so light load gets low latency and heavy load gets big requests.

Writes to one document keep their order through retries: a write is not sent while an
earlier one to the same (index, id) waits to be retried, and a write Elasticsearch applied
while an earlier one of its document failed is sent again after that one (errors.py says
which failures are retried, held or refused).

The writer counts into the shared `Stats` (bulk_requests, es_retries, es_held, writes_applied,
stale_writes) and tells its sensor (`stats.sensor`) how long each request took.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from elastic_transport import SerializationError
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import BULK_FLUSH, async_streaming_bulk, expand_action

from esupdater.backoff import Backoff
from esupdater.errors import BulkItemError, FailureKind, classify, classify_item
from esupdater.stats import Stats

log = logging.getLogger(__name__)

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


class _Retry(Exception):
    """One attempt failed in a way that may succeed later: TRANSIENT or HELD."""

    def __init__(
        self, reason: str, kind: FailureKind = FailureKind.TRANSIENT, *, at_once: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        # Not this action's failure (a bystander of a bad item, or a write that has to
        # wait for an earlier one of its document): again without backoff or log.
        self.at_once = at_once


def _after_earlier() -> _Retry:
    """Sent instead of an action's result when an earlier write to its document must land
    first."""
    return _Retry("an earlier write of this document is retried first", at_once=True)


class _Ticket:
    """One `execute` call, in the submission order of its document's writes."""

    __slots__ = ("failed", "queue", "settled")

    def __init__(self, queue: list[_Ticket] | None) -> None:
        self.queue = queue  # the document's unsettled tickets, oldest first; None: no _id
        self.failed = False  # its latest attempt failed and it will be sent again
        self.settled: asyncio.Event | None = None  # made by whoever waits for it

    def behind_failed(self) -> _Ticket | None:
        """An earlier, unsettled write of the same document that is waiting to be retried."""
        queue = self.queue
        if queue is None or queue[0] is self:
            return None
        for ticket in queue:
            if ticket is self:
                return None
            if ticket.failed:
                return ticket
        return None


_Item = tuple[Action, "asyncio.Future[dict[str, Any]]", _Ticket]
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
        stats: Stats | None = None,
    ) -> None:
        self.es = es
        self.limits = limits
        self.backoff = backoff
        self.stats = Stats() if stats is None else stats
        # Retries of one item logged as warnings; past that, each one is an error: the
        # index is falling behind. Retries themselves never stop (nothing is dropped).
        self.quiet_retries = quiet_retries
        self._lanes: list[asyncio.Queue[_Item | None]] = [
            asyncio.Queue() for _ in range(limits.max_in_flight)
        ]
        self._tasks: list[asyncio.Task[None]] = []
        # Unsettled writes per (index, id), in submission order.
        self._order: dict[tuple[Any, Any], list[_Ticket]] = {}

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

        Transient and held failures are retried with capped exponential backoff for as long
        as they last (the offset is not committed meanwhile); a refused document raises
        BulkItemError.
        """
        doc_id = action.get("_id")
        if doc_id is None:  # Elasticsearch picks the id: no other write can target it
            ticket = _Ticket(None)
        else:
            key = (action.get("_index"), doc_id)
            queue = self._order.get(key)
            if queue is None:
                queue = self._order[key] = []
            ticket = _Ticket(queue)
            queue.append(ticket)
        try:
            return await self._until_done(action, ticket)
        finally:
            self._settle(action, ticket)

    async def _until_done(self, action: Action, ticket: _Ticket) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                return await self._attempt(action, ticket)
            except _Retry as failure:
                if not failure.at_once:
                    attempt += 1
                    await self._back_off(action, failure, attempt)
                while (earlier := ticket.behind_failed()) is not None:
                    if earlier.settled is None:
                        earlier.settled = asyncio.Event()
                    await earlier.settled.wait()

    async def _back_off(self, action: Action, failure: _Retry, attempt: int) -> None:
        self.stats.es_retries += 1
        delay = self.backoff.delay(attempt - 1)
        where = f"{action.get('_op_type', 'index')} {action.get('_index')}/{action.get('_id')}"
        if failure.kind is FailureKind.HELD:
            self.stats.es_held += 1
            log.error(
                "Elasticsearch refuses %s (%s): held, nothing is set aside and the offset "
                "waits; retrying (attempt %d) in %.1fs. %s",
                where, failure.reason, attempt, delay, _hint(failure.reason),
            )
        else:
            level = logging.WARNING if attempt <= self.quiet_retries else logging.ERROR
            log.log(level, "Elasticsearch %s, retrying %s (attempt %d) in %.1fs",
                    failure.reason, where, attempt, delay)
        await asyncio.sleep(delay)

    def _settle(self, action: Action, ticket: _Ticket) -> None:
        ticket.failed = False
        queue = ticket.queue
        if queue is not None:
            queue.remove(ticket)
            if not queue:
                del self._order[(action.get("_index"), action.get("_id"))]
        if ticket.settled is not None:
            ticket.settled.set()

    async def _attempt(self, action: Action, ticket: _Ticket) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        lane = hash((action.get("_index"), action.get("_id"))) % len(self._lanes)
        self._lanes[lane].put_nowait((action, future, ticket))
        return await future

    async def _run_lane(self, lane: asyncio.Queue[_Item | None]) -> None:
        """One long-lived `async_streaming_bulk` per lane; restarted after a failed request."""
        feed = _LaneFeed(lane, self.limits, self.stats)
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
                    action, future, ticket = feed.sent.popleft()
                    stale = not ok and is_stale(action, info)
                    if stale:
                        # Counted even when its caller is gone: that is the late write of
                        # a revoked partition, which the version kept out.
                        self.stats.stale_writes += 1
                    if not future.done():
                        _resolve(future, action, ticket, ok, info, stale=stale)
                        if not stale and future.done() and future.exception() is None:
                            self.stats.writes_applied += 1
                    if not feed.sent:
                        feed.answered(ok=True)
            except (SerializationError, RecursionError):
                # RecursionError: a document nested too deep for the serializer (or for
                # the repr in its error message).
                feed.answered(ok=False)
                self._fail_unserializable(list(feed.sent))
            except Exception as exc:  # noqa: BLE001 - any request-level failure is retried
                feed.answered(ok=False)
                kind = classify(exc)
                self._fail_all(
                    feed.sent,
                    _Retry(f"request failed ({type(exc).__name__}: {exc})",
                           kind if kind is FailureKind.TRANSIENT else FailureKind.HELD),
                )

    @staticmethod
    def _fail_all(batch: Iterable[_Item], failure: _Retry) -> None:
        for _, future, ticket in batch:
            if not future.done():
                ticket.failed = True
                future.set_exception(failure)

    def _fail_unserializable(self, batch: list[_Item]) -> None:
        """Refuse the actions that cannot be JSON for good; send the others again at once."""
        serializer = self.es.transport.serializers.get_serializer("application/json")
        bystanders: list[_Item] = []
        refused = 0
        for item in batch:
            action, future, _ = item
            if future.done():
                continue
            try:
                for part in expand_action(action):
                    if part is not None:
                        serializer.dumps(part)
            except (SerializationError, RecursionError) as exc:
                index, doc_id = str(action.get("_index")), str(action.get("_id"))
                op_type = str(action.get("_op_type", "index"))
                reason = (
                    "document nested too deep to serialise as JSON"
                    if isinstance(exc, RecursionError) or "ecursion" in str(exc)
                    else _shorten(str(exc))
                )
                future.set_exception(BulkItemError(op_type, index, doc_id, 400, reason))
                refused += 1
            else:
                bystanders.append(item)
        if refused:
            self._fail_all(bystanders, _Retry("batch had a bad item", at_once=True))
        else:  # no action is to blame: the failure came from elsewhere; hold loudly
            self._fail_all(bystanders, _Retry("request could not be serialised",
                                              FailureKind.HELD))


class _LaneFeed:
    """The action stream of one lane: batches of what waits, each closed by a flush.

    It counts each request it closes; the writer, which reads the helper's answers, calls
    `answered` when the batch on the wire has its answer, for the sensor.
    """

    def __init__(
        self, lane: asyncio.Queue[_Item | None], limits: BulkLimits, stats: Stats
    ) -> None:
        self.lane = lane
        self.limits = limits
        self.stats = stats
        self.sent: deque[_Item] = deque()  # handed to the helper, result not seen yet
        self.stopping = False
        self._started: float | None = None  # when the batch on the wire was handed over
        self._size = 0

    def answered(self, *, ok: bool) -> None:
        """The batch on the wire got its answer (ok) or failed as a whole."""
        if self._started is not None:
            self.stats.sensor.bulk_request_done(self._size, time.perf_counter() - self._started,
                                                ok)
            self._started = None

    async def actions(self) -> AsyncIterator[Any]:
        while not self.stopping:
            first = await self.lane.get()
            if first is _STOP:
                self.stopping = True
                return
            batch = [first]
            self.stopping = await self._collect(batch)
            # A caller cancelled while its action waited (its partition was revoked, the
            # drain timed out): that write must not land after the new owner's. A write
            # queued before an earlier one of its document failed waits for that one.
            batch = [item for item in batch if not item[1].done() and _may_go(item)]
            if not batch:
                continue
            self.sent.extend(batch)  # all of it first: a failure must see every item
            self._started, self._size = time.perf_counter(), len(batch)
            for action, _, _ in batch:
                yield action
            self.stats.bulk_requests += 1
            yield BULK_FLUSH  # send now: what was waiting is all there is

    async def _collect(self, batch: list[_Item]) -> bool:
        """Add to `batch` what arrives while other tasks are still producing; True on stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.flush_interval
        while len(batch) < self.limits.chunk_size:
            if self.lane.empty():
                # Let every ready task run once: if none of them queued anything, nothing
                # more is coming soon and waiting would only add latency.
                await asyncio.sleep(0)
                if self.lane.empty() or loop.time() >= deadline:
                    return False
            item = self.lane.get_nowait()
            if item is _STOP:
                return True
            batch.append(item)
        return False


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


def _may_go(item: _Item) -> bool:
    """Whether an action may be sent now: not while an earlier one of its document waits."""
    _, future, ticket = item
    if ticket.behind_failed() is None:
        ticket.failed = False  # sent again: what comes after it in the lane is in order
        return True
    future.set_exception(_after_earlier())
    return False


def _resolve(
    future: asyncio.Future[dict[str, Any]],
    action: Action,
    ticket: _Ticket,
    ok: bool,
    info: Mapping[str, Any],
    *,
    stale: bool = False,
) -> None:
    op_type, item = next(iter(info.items()))
    status = item.get("status")
    if stale or ok or (op_type == "delete" and status == 404):
        # Applied (or rightly not: stale, or nothing to delete), unless an earlier write of
        # this document failed in this request: that one lands later, so this goes again.
        if ticket.behind_failed() is not None:
            future.set_exception(_after_earlier())
        elif stale:  # the document already holds a newer change
            future.set_result({**item, "result": "stale"})
        else:
            future.set_result(item)
        return
    error = item.get("error")
    kind = classify_item(status, error, whole_request="exception" in item)
    if isinstance(error, Mapping):
        reason = f"{error.get('type')}: {error.get('reason')}"
    else:
        reason = str(error)
    if kind is FailureKind.REFUSED:
        index, doc_id = str(action.get("_index")), str(action.get("_id"))
        future.set_exception(BulkItemError(op_type, index, doc_id, int(status), reason))
    else:
        ticket.failed = True
        future.set_exception(_Retry(f"{status} {reason}", kind))


def _hint(reason: str) -> str:
    """What to fix for a held write, from Elasticsearch's status and error type."""
    for marker, hint in _HINTS:
        if marker in reason:
            return hint
    return "Fix the cause in Elasticsearch; esupdater goes on by itself once it accepts."


_HINTS = (
    ("401", "Check the credentials (ESUPDATER_ELASTICSEARCH__PASSWORD or __API_KEY)."),
    ("cluster_block_exception", "The index or cluster is write-blocked: lift the block."),
    ("403", "The user may not write there: grant the privilege."),
    ("index_not_found_exception", "Create the index or alias, or allow its auto-creation."),
    ("index_closed_exception", "Open the index."),
)


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."

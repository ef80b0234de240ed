"""The shared bulk writer: every handler's actions go through one batching pipe per lane.

Callers `await writer.execute(action)` and get the item's result once Elasticsearch has
acknowledged it. Actions are spread over `max_in_flight` lanes by (index, id), so two writes
to one document always travel the same lane, in order; each lane sends one request at a time.
While a lane's request is on the wire, what arrives waits; when the lane is free it takes all
of it (up to `chunk_size` actions and `max_chunk_bytes` bytes), after letting the tasks that
are still producing finish their turn: it sends as soon as a turn of the event loop adds
nothing, or after `flush_interval` at most. So light load gets low latency and heavy load
gets big requests. Lanes overlap only under load: while another lane's request is on the
wire, a lane sends once it holds its share of a full request, or that request has taken
`flush_interval` (`_hold_back`).

Each action is serialised once, as it joins a request, into its NDJSON lines with the
client's JSON serializer (orjson, Decimal exact: clients.py); the request body is those
lines, and the answer's items are matched to the actions by place. An action that cannot be
serialised is refused on its own (`BulkItemError`, status 400) and its batch goes on.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import orjson
from elastic_transport import SerializationError
from elasticsearch import ApiError, AsyncElasticsearch
from elasticsearch.helpers import expand_action

from esupdater.actions import Action
from esupdater.backoff import Backoff
from esupdater.errors import BulkItemError, FailureKind, classify, classify_item
from esupdater.stats import Stats

log = logging.getLogger(__name__)

#: Version types with which a 409 means "the document already holds a newer change".
EXTERNAL_VERSION_TYPES = frozenset({"external", "external_gt", "external_gte"})


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
        # Not this action's failure (a write that has to wait for an earlier one of its
        # document): again without backoff or log.
        self.at_once = at_once


def _after_earlier() -> _Retry:
    """Sent instead of an action's result when an earlier write to its document must land
    first."""
    return _Retry("an earlier write of this document is retried first", at_once=True)


class Ticket:
    """One `execute` call, in the submission order of its document's writes."""

    __slots__ = ("failed", "queue", "settled")

    def __init__(self, queue: list[Ticket] | None) -> None:
        # The document's unsettled tickets, oldest first, once it has more than one; None
        # while this is its only unsettled write (the usual case: no list) or it has no _id.
        self.queue = queue
        self.failed = False  # its latest attempt failed and it will be sent again
        self.settled: asyncio.Event | None = None  # made by whoever waits for it

    def behind_failed(self) -> Ticket | None:
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


_Item = tuple[Action, "asyncio.Future[dict[str, Any]]", Ticket]


class GroupOwner(Protocol):
    """Whoever queued a `Group`: told once per group how its actions went."""

    def done(self) -> bool:
        """True once it no longer wants the answers (cancelled): its tickets are settled."""
        ...

    def group_answered(
        self, group: Group, odd: dict[int, asyncio.Future[dict[str, Any]]],
        answers: list[dict[str, Any]] | None,
    ) -> None:
        """Every action of `group` has its answer. Those in `odd` (by place in the group)
        did not simply apply: each future holds what `execute` would have got (its
        ticket still unsettled); every other action applied and its ticket is settled.
        `answers`: the bulk response's items in the group's order (`{op_type: item}`),
        None when every action is in `odd`."""
        ...


class Group:
    """Actions of several rows queued as one item of a lane, their lines serialised once,
    answered in one call (`queue_group`): no future per action."""

    __slots__ = ("actions", "awaited", "keys", "lines", "owner", "rows", "size", "tickets")

    def __init__(self, owner: GroupOwner, awaited: bool = False) -> None:
        self.owner = owner
        #: Its owner hands each item on to a caller that may read it (a stepped handler's
        #: write): the request asks for whole items.
        self.awaited = awaited
        self.actions: list[Action] = []
        self.tickets: list[Ticket] = []
        self.keys: list[tuple[Any, Any]] = []
        self.rows: list[int] = []  # each action's row, for the owner
        self.lines: list[bytes] = []
        self.size = 0


_LaneItem = _Item | Group

#: Action keys that go into the action line (renamed without their underscore where
#: Elasticsearch's bulk API wants that), as elasticsearch.helpers.expand_action has them.
_META_KEYS: dict[str, str] = {
    **{key: key for key in (
        "_id", "_index", "_percolate", "_timestamp", "_type", "if_seq_no", "if_primary_term",
        "parent", "pipeline", "retry_on_conflict", "routing", "version", "version_type",
    )},
    **{key: key[1:] for key in (
        "_if_seq_no", "_if_primary_term", "_parent", "_retry_on_conflict", "_routing",
        "_version", "_version_type",
    )},
}  # fmt: skip
#: Each NDJSON line ends with one.
_NEWLINE = 1
_TWO_NEWLINES = 2 * _NEWLINE
#: The keys of the actions ctx.index and ctx.delete make when given no other option.
_INDEX_SHAPE = frozenset({"_op_type", "_index", "_id", "_source"})
_DELETE_SHAPE = frozenset({"_op_type", "_index", "_id"})
#: Action-line prefixes kept, one per (op_type, index); beyond that, start again.
_MAX_HEADERS = 1024


class _Lane:
    """Actions waiting for one lane's next request, and the lane task's wake-up."""

    __slots__ = ("items", "short", "stopping", "waiter")

    def __init__(self) -> None:
        self.items: deque[_LaneItem] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.stopping = False
        #: While the lane holds its request back for another lane's (`_hold_back`): the
        #: actions it still lacks to go alongside; 0 otherwise.
        self.short = 0

    def wake(self, actions: int = 1) -> None:
        """`actions` were added: the lane goes on, unless it holds back and lacks more."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if self.short > 0:
                self.short -= actions
                if self.short > 0:
                    return
            waiter.set_result(None)

    def release(self) -> None:
        """Go on whatever the lane lacks: another lane's request was answered, or closing."""
        self.short = 0
        self.wake()


#: What of each item a bulk answer carries (`filter_path`). A handler's write returns its
#: item, so that keeps every field a caller may read and drops only the shard counts; a
#: request of mapped rows' writes only, whose items nobody reads but the writer, asks for
#: what the writer reads: the status and the error. Parsing the answer was 3-4 % of a mapped
#: path's CPU with every field (830 against 200 ns per item).
ITEM_FIELDS = ("_index", "_id", "_version", "result", "status", "error", "_seq_no",
               "_primary_term")
_FULL_ITEMS = ",".join(f"items.*.{name}" for name in ITEM_FIELDS)
_STATUS_ITEMS = "items.*.status,items.*.error"


class _Batch:
    """The actions of one request and their serialised lines, in the same order."""

    __slots__ = ("actions", "awaited", "items", "lines", "size")

    def __init__(self) -> None:
        self.items: list[_LaneItem] = []
        self.lines: list[bytes] = []
        self.size = 0
        self.actions = 0  # a group counts its actions
        self.awaited = False  # an action's caller reads its item (`execute`)


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
        self._lanes = [_Lane() for _ in range(limits.max_in_flight)]
        # Requests on the wire, and the items a lane needs to send alongside one (_hold_back).
        self._on_wire = 0
        self._overlap_at = max(1, limits.chunk_size // limits.max_in_flight)
        self._tasks: list[asyncio.Task[None]] = []
        # Unsettled writes per (index, id): the ticket while it is the only one, then the
        # list of them in submission order.
        self._order: dict[tuple[Any, Any], Ticket | list[Ticket]] = {}
        serializer = es.transport.serializers.get_serializer("application/json")
        # The client's own serializer, as one C call where it offers that (clients.py).
        raw_dumps = getattr(serializer, "raw_dumps", None)
        self._dumps: Callable[[Any], bytes] = (
            raw_dumps() if callable(raw_dumps) else serializer.dumps
        )
        self._headers: dict[tuple[str, Any], bytes] = {}  # see _header
        # The "index" ones by index: one lookup per action, no call (the usual action).
        self._index_headers: dict[Any, bytes] = {}
        # The lanes' loop, kept: looking it up per action costs a system call (getpid).
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._run_lane(lane), name=f"bulk-lane-{i}")
            for i, lane in enumerate(self._lanes)
        ]

    async def close(self) -> None:
        """Send what is queued, then stop the lanes."""
        for lane in self._lanes:
            lane.stopping = True
            lane.release()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._loop = None

    async def execute(self, action: Action) -> dict[str, Any]:
        """Queue one action; return its item result once acknowledged.

        Transient and held failures are retried with capped exponential backoff for as long
        as they last (the offset is not committed meanwhile); a refused document raises
        BulkItemError.
        """
        # _ticket and done_with, inlined: this runs once per write of a handler.
        doc_id = action.get("_id")
        ticket = Ticket(None)
        if doc_id is None:  # Elasticsearch picks the id: no other write can target it
            key = None
        else:
            key = (action.get("_index"), doc_id)
            order = self._order
            earlier = order.get(key)
            if earlier is None:
                order[key] = ticket  # its document's only unsettled write
            elif isinstance(earlier, list):
                ticket.queue = earlier
                earlier.append(ticket)
            else:  # a second unsettled write of the document: from now on, a list
                queue = [earlier, ticket]
                earlier.queue = ticket.queue = order[key] = queue
        try:
            try:
                return await self._queue(action, ticket, key)
            except _Retry as failure:  # the rare path: retried in order, with backoff
                return await self._until_done(action, ticket, key, failure)
        finally:
            if ticket.queue is None and ticket.settled is None:
                if key is not None:
                    del self._order[key]
            else:
                self._settle(key, ticket)

    def queue_nowait(
        self, action: Action, future: asyncio.Future[dict[str, Any]]
    ) -> tuple[Ticket, tuple[Any, Any] | None]:
        """`execute`'s first attempt with no coroutine: the action is queued in its
        document's order and `future` gets its item or the failure. Then the caller calls
        `done_with` with what this returns once it went through, or awaits `finish`."""
        ticket, key = self._ticket(action)
        self._queue(action, ticket, key, future)
        return ticket, key

    async def finish(
        self, action: Action, ticket: Ticket, key: tuple[Any, Any] | None,
        failure: BaseException | None,
    ) -> dict[str, Any] | None:
        """What `execute` does once a `queue_nowait` attempt ended with `failure`: retried
        (transient, held) in the document's order until done (its item returned), or
        raised (refused); then `done_with`."""
        try:
            if failure is None:
                return None
            if not isinstance(failure, _Retry):
                raise failure
            return await self._until_done(action, ticket, key, failure)
        finally:
            self.done_with(ticket, key)

    def queue_group(
        self, owner: GroupOwner, rows: Iterable[tuple[int, Action]], awaited: bool = False
    ) -> tuple[list[int], list[Group]]:
        """Queue the one action of each of several rows (row number, action) as groups,
        one per lane, their lines serialised now and answered in one call per group
        (`GroupOwner.group_answered`). Returns the rows it left out, for their owner to
        queue one by one (`queue_nowait`): an action with no id, one whose document has
        another unsettled write (its order needs a ticket queue), or one that cannot be
        serialised or keyed (its failure is the row's own); and the groups it queued.
        `awaited`: the owner hands the items on to a caller that may read them (`Group`).
        """
        order, lanes = self._order, self._lanes
        lane_count = len(lanes)
        most_bytes = self.limits.max_chunk_bytes
        groups: list[Group | None] = [None] * lane_count
        left_out: list[int] = []
        sealed: list[Group] = []
        index_headers, dumps = self._index_headers, self._dumps
        new_ticket = object.__new__
        for row, action in rows:
            doc_id = action.get("_id")
            try:
                key = (action.get("_index"), doc_id)
                if doc_id is None or key in order:
                    left_out.append(row)
                    continue
                number = hash(key) % lane_count
                group = groups[number]
                if group is None:
                    group = groups[number] = Group(owner, awaited)
                # _lines's usual case, inlined: an index action of ctx.index's shape.
                if (
                    action.keys() == _INDEX_SHAPE and type(doc_id) is str
                    and action["_op_type"] == "index"
                    and (prefix := index_headers.get(key[0])) is not None
                ):
                    header_line = prefix + orjson.dumps(doc_id) + b"}}"
                    body_line = dumps(action["_source"])
                    size = len(header_line) + len(body_line) + _TWO_NEWLINES
                    if group.actions and group.size + size > most_bytes:
                        # Full: sealed as one request's worth; this action starts the next.
                        self._seal(group, number)
                        sealed.append(group)
                        group = groups[number] = Group(owner, awaited)
                    group.lines += (header_line, body_line)
                else:
                    lines = group.lines
                    before = len(lines)
                    try:
                        size = self._lines(action, lines)
                    except BaseException:
                        del lines[before:]
                        raise
                    if group.actions and group.size + size > most_bytes:
                        carried = lines[before:]
                        del lines[before:]
                        self._seal(group, number)
                        sealed.append(group)
                        group = groups[number] = Group(owner, awaited)
                        group.lines.extend(carried)
            except (SerializationError, RecursionError, orjson.JSONEncodeError, TypeError,
                    ValueError):
                left_out.append(row)  # queued alone, it fails as the row's own
                continue
            # Ticket(None) without its __init__ (a call from C): one per grouped row.
            ticket = new_ticket(Ticket)
            ticket.queue = None
            ticket.failed = False
            ticket.settled = None
            order[key] = ticket  # its document's only unsettled write
            group.actions.append(action)
            group.tickets.append(ticket)
            group.keys.append(key)
            group.rows.append(row)
            group.size += size
        for number, group in enumerate(groups):
            if group is not None and group.actions:
                self._seal(group, number)
                sealed.append(group)
        return left_out, sealed

    def _seal(self, group: Group, number: int) -> None:
        lane = self._lanes[number]
        lane.items.append(group)
        if lane.waiter is not None:
            lane.wake(len(group.actions))

    def done_with(self, ticket: Ticket, key: tuple[Any, Any] | None) -> None:
        """The action of `ticket` settled: later writes of its document no longer wait."""
        # _settle, inlined for a document's only write.
        if ticket.queue is None and ticket.settled is None:
            if key is not None:
                del self._order[key]
        else:
            self._settle(key, ticket)

    def _ticket(self, action: Action) -> tuple[Ticket, tuple[Any, Any] | None]:
        """A place in the order of the action's document's unsettled writes."""
        doc_id = action.get("_id")
        ticket = Ticket(None)
        if doc_id is None:  # Elasticsearch picks the id: no other write can target it
            return ticket, None
        key = (action.get("_index"), doc_id)
        order = self._order
        earlier = order.get(key)
        if earlier is None:
            order[key] = ticket  # its document's only unsettled write
        elif isinstance(earlier, list):
            ticket.queue = earlier
            earlier.append(ticket)
        else:  # a second unsettled write of the document: from now on, a list
            queue = [earlier, ticket]
            earlier.queue = ticket.queue = order[key] = queue
        return ticket, key

    def _queue(
        self, action: Action, ticket: Ticket, key: tuple[Any, Any] | None,
        future: asyncio.Future[dict[str, Any]] | None = None,
    ) -> asyncio.Future[dict[str, Any]]:
        if future is None:
            loop = self._loop
            if loop is None:  # not started: no lane runs, but the caller may still wait
                loop = asyncio.get_running_loop()
            future = loop.create_future()
        lanes = self._lanes
        lane = lanes[hash(key) % len(lanes)] if len(lanes) > 1 else lanes[0]
        lane.items.append((action, future, ticket))
        if lane.waiter is not None:
            lane.wake()
        return future

    async def _until_done(
        self, action: Action, ticket: Ticket, key: tuple[Any, Any] | None, failure: _Retry
    ) -> dict[str, Any]:
        attempt = 0
        while True:
            if not failure.at_once:
                attempt += 1
                await self._back_off(action, failure, attempt)
            while (earlier := ticket.behind_failed()) is not None:
                if earlier.settled is None:
                    earlier.settled = asyncio.Event()
                await earlier.settled.wait()
            try:
                return await self._queue(action, ticket, key)
            except _Retry as again:
                failure = again

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

    def _settle(self, key: tuple[Any, Any] | None, ticket: Ticket) -> None:
        ticket.failed = False
        queue = ticket.queue
        if queue is not None:
            queue.remove(ticket)
            if not queue:
                del self._order[key]  # type: ignore[arg-type]  # a queue means an _id
        elif key is not None:
            del self._order[key]
        if ticket.settled is not None:
            ticket.settled.set()

    # -- the lanes -------------------------------------------------------------------------------

    async def _run_lane(self, lane: _Lane) -> None:
        """Wait for actions, let the producers finish their turn, send; until closed."""
        loop = asyncio.get_running_loop()
        while True:
            if not lane.items:
                if lane.stopping:
                    return
                lane.waiter = loop.create_future()
                try:
                    await lane.waiter
                finally:
                    lane.waiter = None
                continue
            if not lane.stopping:
                await self._settle_in(lane, loop)
                if self._on_wire:
                    await self._hold_back(lane, loop)
            batch = self._take(lane)
            if batch.items:
                self._on_wire += 1
                try:
                    await self._send(batch)
                finally:
                    self._on_wire -= 1
                    for other in self._lanes:
                        if other.short:
                            other.release()

    async def _hold_back(self, lane: _Lane, loop: asyncio.AbstractEventLoop) -> None:
        """Wait while another lane's request is on the wire, until it is answered, this
        lane holds its share of a full request (`chunk_size / max_in_flight` actions), or
        `flush_interval` has passed (a slow answer does not hold the other lanes up).

        Requests overlap only when the load needs it: a backlog fills the lanes and they
        all send at once, while a steady flow goes one request at a time. Two concurrent
        partial requests into one shard made Elasticsearch write its indexing buffer on a
        bulk thread while the other waited: ~0.5 s without indexing every ~235,000 rows,
        where one request at a time had none (README, performance).
        """
        waiting = sum(len(item.actions) if isinstance(item, Group) else 1
                      for item in lane.items)
        if waiting >= self._overlap_at:
            return
        lane.short = self._overlap_at - waiting
        lane.waiter = loop.create_future()
        timer = loop.call_later(self.limits.flush_interval, lane.release)
        try:
            await lane.waiter
        finally:
            timer.cancel()
            lane.waiter = None
            lane.short = 0

    async def _settle_in(self, lane: _Lane, loop: asyncio.AbstractEventLoop) -> None:
        """Flush on idle: wait while each turn of the loop adds actions (the tasks woken by
        the previous answer are writing their next ones), until a turn adds none, the batch
        is full, or `flush_interval` has passed."""
        deadline = loop.time() + self.limits.flush_interval
        items, full = lane.items, self.limits.chunk_size
        seen = len(items)
        while seen < full:
            await asyncio.sleep(0)
            now = len(items)
            if now == seen or loop.time() >= deadline:
                return
            seen = now

    def _take(self, lane: _Lane) -> _Batch:
        """The next request: waiting actions in order, up to the count and byte limits.

        A caller cancelled while its action waited (its partition was revoked, the drain
        timed out) is left out: that write must not land after the new owner's. So is a
        write whose document has an earlier one waiting to be retried (it follows that
        one), and one that cannot be serialised (refused on its own).
        """
        batch = _Batch()
        items, limits = lane.items, self.limits
        while items and batch.actions < limits.chunk_size:
            item = items[0]
            if isinstance(item, Group):
                if item.owner.done():  # cancelled: its owner let go of its tickets
                    items.popleft()
                    continue
                count = len(item.actions)
                if batch.actions and (batch.actions + count > limits.chunk_size
                                      or batch.size + item.size > limits.max_chunk_bytes):
                    break  # the next request's first
                items.popleft()
                if item.awaited:
                    batch.awaited = True
                batch.items.append(item)
                batch.lines += item.lines
                batch.size += item.size
                batch.actions += count
                continue
            action, future, ticket = item
            if future.done():
                items.popleft()
                continue
            queue = ticket.queue
            if queue is not None and queue[0] is not ticket and not _may_go(item):
                items.popleft()
                continue
            ticket.failed = False  # sent again: what comes after it in the lane is in order
            lines = batch.lines
            before = len(lines)
            try:
                size = self._lines(action, lines)
            except (SerializationError, RecursionError, orjson.JSONEncodeError) as exc:
                del lines[before:]
                items.popleft()
                cause = exc.__cause__
                _refuse_unserialisable(
                    action, future, cause if isinstance(cause, SerializationError) else exc
                )
                continue
            if batch.items and batch.size + size > limits.max_chunk_bytes:
                del lines[before:]
                break  # the next request's first
            if type(future) is asyncio.Future:  # the writer's own: `execute`'s caller
                batch.awaited = True
            items.popleft()
            batch.items.append(item)
            batch.size += size
            batch.actions += 1
        return batch

    def _lines(self, action: Action, lines: list[bytes]) -> int:
        """Append the action's NDJSON lines to `lines` (the action line, and the document
        unless a delete); returns their size in bytes, newlines included. Appended in
        place: no list per action."""
        dumps = self._dumps
        op_type = action.get("_op_type", "index")
        # The shapes ctx.index and ctx.delete make without options, with a string id: their
        # action line is a prefix kept per index, and the id as a JSON string.
        size = len(action)
        if size == 4 and op_type == "index" and action.keys() == _INDEX_SHAPE:
            doc_id = action["_id"]
            if type(doc_id) is str:
                index = action["_index"]
                prefix = self._index_headers.get(index)
                if prefix is None:
                    prefix = self._index_headers[index] = self._header("index", index)
                header_line = prefix + orjson.dumps(doc_id) + b"}}"
                body_line = dumps(action["_source"])
                lines.append(header_line)
                lines.append(body_line)
                return len(header_line) + len(body_line) + 2 * _NEWLINE
        elif size == 3 and op_type == "delete" and action.keys() == _DELETE_SHAPE:
            doc_id = action["_id"]
            if type(doc_id) is str:
                header_line = (
                    self._header("delete", action["_index"]) + orjson.dumps(doc_id) + b"}}"
                )
                lines.append(header_line)
                return len(header_line) + _NEWLINE
        source = action.get("_source")
        if op_type == "update" and source is not None and not isinstance(source, Mapping):
            header, body = expand_action(action)  # _source filtering of an update: rare
            header_line = dumps(header)
            if body is None:
                lines.append(header_line)
                return len(header_line) + _NEWLINE
            body_line = dumps(body)
            lines.append(header_line)
            lines.append(body_line)
            return len(header_line) + len(body_line) + 2 * _NEWLINE
        meta: dict[str, Any] = {}
        rest = False
        for key, value in action.items():
            name = _META_KEYS.get(key)
            if name is not None:
                meta[name] = value
            elif key != "_op_type":
                rest = True
        header_line = dumps({op_type: meta})
        if op_type == "delete":
            lines.append(header_line)
            return len(header_line) + _NEWLINE
        if source is None or "_source" not in action:
            if not rest:
                source = {}
            else:
                source = {
                    k: v for k, v in action.items() if k != "_op_type" and k not in _META_KEYS
                }
        body_line = dumps(source)
        lines.append(header_line)
        lines.append(body_line)
        return len(header_line) + len(body_line) + 2 * _NEWLINE

    def _header(self, op_type: str, index: Any) -> bytes:
        """`{"<op_type>":{"_index":<index>,"_id":` serialised, kept per (op_type, index)."""
        key = (op_type, index)
        found = self._headers.get(key)
        if found is None:
            if len(self._headers) >= _MAX_HEADERS:
                self._headers.clear()
                self._index_headers.clear()
            line = self._dumps({op_type: {"_index": index, "_id": None}})
            if isinstance(line, str):
                line = line.encode()
            found = self._headers[key] = line[: line.rindex(b"null")]
        return found

    async def _send(self, batch: _Batch) -> None:
        """One bulk request; every action of it gets its item's outcome."""
        self.stats.bulk_requests += 1
        sensor = self.stats.sensor
        started = time.perf_counter()
        count = batch.actions
        try:
            # One body of the serialised lines: the client's NDJSON serializer sends bytes as
            # they are (a list would be copied line by line into a new buffer).
            body = b"\n".join(batch.lines) + b"\n"
            self.stats.bulk_request_bytes.observe(len(body))
            response = await self.es.bulk(
                operations=cast(Any, body),
                filter_path=_FULL_ITEMS if batch.awaited else _STATUS_ITEMS,
            )
        except ApiError as exc:  # the whole request refused (429, 413, ...): each item so
            sensor.bulk_request_done(count, time.perf_counter() - started, False)
            info = {"error": str(exc), "status": exc.status_code, "exception": exc}
            self._answer_each(batch.items, lambda _: {**info})
            return
        except Exception as exc:  # noqa: BLE001 - any request-level failure is retried
            sensor.bulk_request_done(count, time.perf_counter() - started, False)
            kind = classify(exc)
            self._fail_all(
                batch.items,
                _Retry(f"request failed ({type(exc).__name__}: {exc})",
                       kind if kind is FailureKind.TRANSIENT else FailureKind.HELD),
            )
            return
        sensor.bulk_request_done(count, time.perf_counter() - started, True)
        answers = response.body["items"]
        if len(answers) != count:
            self._fail_all(batch.items, _Retry(
                f"Elasticsearch answered {len(answers)} items for {count} actions"))
            return
        stats = self.stats
        applied = 0
        at = 0
        for entry in batch.items:
            if isinstance(entry, Group):
                width = len(entry.actions)
                applied += self._answer_group(entry, answers[at:at + width])
                at += width
                continue
            action, future, ticket = entry
            answer = answers[at]
            at += 1
            ((op_type, item),) = answer.items()
            status = item.get("status", 500)
            # _resolve, inlined for the usual case: applied, the document's only write.
            if 200 <= status < 300 and ticket.queue is None and not future.done():
                future.set_result(item)
                applied += 1
            else:
                _resolve(future, action, ticket, op_type, item, stats)
        stats.writes_applied += applied

    def _answer_group(self, group: Group, answers: list[dict[str, Any]]) -> int:
        """Settle a group from its answers; returns how many of its actions applied. The
        usual answer (applied, the document's only write) settles its ticket here; any
        other goes to the owner as the future `execute` would have had."""
        owner = group.owner
        if owner.done():  # cancelled meanwhile: it let go of its tickets then
            return 0
        order = self._order
        odd: dict[int, asyncio.Future[dict[str, Any]]] = {}
        applied = 0
        for at, (answer, ticket) in enumerate(zip(answers, group.tickets, strict=True)):
            ((op_type, item),) = answer.items()
            status = item.get("status", 500)
            if 200 <= status < 300 and ticket.queue is None and ticket.settled is None:
                del order[group.keys[at]]
                applied += 1
            else:
                odd[at] = future = self._new_future()
                _resolve(future, group.actions[at], ticket, op_type, item, self.stats)
        owner.group_answered(group, odd, answers)
        return applied

    def _answer_each(
        self, entries: Iterable[_LaneItem], info: Callable[[Action], dict[str, Any]]
    ) -> None:
        """Every action answered with the same item (a request refused as a whole)."""
        for entry in entries:
            if isinstance(entry, Group):
                if entry.owner.done():
                    continue
                odd = {}
                for at, (action, ticket) in enumerate(
                    zip(entry.actions, entry.tickets, strict=True)
                ):
                    odd[at] = future = self._new_future()
                    _resolve(future, action, ticket, action.get("_op_type", "index"),
                             info(action), self.stats)
                entry.owner.group_answered(entry, odd, None)
                continue
            action, future, ticket = entry
            if not future.done():
                _resolve(future, action, ticket, action.get("_op_type", "index"),
                         info(action), self.stats)

    def _fail_all(self, entries: Iterable[_LaneItem], failure: _Retry) -> None:
        for entry in entries:
            if isinstance(entry, Group):
                if entry.owner.done():
                    continue
                odd = {}
                for at, ticket in enumerate(entry.tickets):
                    ticket.failed = True
                    odd[at] = future = self._new_future()
                    future.set_exception(failure)
                entry.owner.group_answered(entry, odd, None)
                continue
            _, future, ticket = entry
            if not future.done():
                ticket.failed = True
                future.set_exception(failure)

    def _new_future(self) -> asyncio.Future[dict[str, Any]]:
        loop = self._loop
        if loop is None:
            loop = asyncio.get_running_loop()
        return loop.create_future()


def _refuse_unserialisable(
    action: Action, future: asyncio.Future[dict[str, Any]], exc: BaseException
) -> None:
    """A document with no JSON form is refused for good: no retry can change it."""
    index, doc_id = str(action.get("_index")), str(action.get("_id"))
    op_type = str(action.get("_op_type", "index"))
    reason = (
        "document nested too deep to serialise as JSON"
        if isinstance(exc, RecursionError) or "ecursion" in str(exc)
        else _shorten(str(exc))
    )
    future.set_exception(BulkItemError(op_type, index, doc_id, 400, reason))


def is_stale(action: Action, info: Mapping[str, Any]) -> bool:
    """An external-versioned write refused because the document holds a newer version
    (`info`: the bulk answer's `{op_type: item}`)."""
    return _stale(action, next(iter(info.values())))


def _stale(action: Action, item: Mapping[str, Any]) -> bool:
    if action.get("version_type") not in EXTERNAL_VERSION_TYPES:
        return False
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
    ticket: Ticket,
    op_type: str,
    item: dict[str, Any],
    stats: Stats,
) -> None:
    """Settle one action's future from its item in the answer, and count it."""
    status = item.get("status", 500)
    if 200 <= status < 300:
        stale = False
    else:
        stale = _stale(action, item)
        if stale:
            # Counted even when its caller is gone: that is the late write of a revoked
            # partition, which the version kept out.
            stats.stale_writes += 1
    if future.done():
        return
    if stale or 200 <= status < 300 or (op_type == "delete" and status == 404):
        # Applied (or rightly not: stale, or nothing to delete), unless an earlier write of
        # this document failed in this request: that one lands later, so this goes again.
        if ticket.behind_failed() is not None:
            future.set_exception(_after_earlier())
        elif stale:  # the document already holds a newer change
            future.set_result({**item, "result": "stale"})
        else:
            future.set_result(item)
            stats.writes_applied += 1
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

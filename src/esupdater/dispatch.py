"""The bounded, per-key-ordered task pool between the consumer and the handlers.

At most `max_in_flight` jobs are admitted at once; `submit` waits while the pool is full, which
is what pauses fetching under load. Jobs with the same key (a document) run one after another in
submission order; different keys run concurrently. Each job is one task, chained to its key's
previous task, so the slot is taken at submit time and chaining never needs a free slot. Work
that needs no task (a mapped row) holds its place with a future instead (`take`, `place`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable
from contextlib import suppress
from functools import partial
from types import CoroutineType

Job = Callable[[], Awaitable[None]]
#: A job's key, its second key (`after`) and its barrier scope: what it is ordered by.
_Keys = tuple[Hashable, Hashable | None, "tuple[Hashable, ...] | None"]


async def _awaiting(work: Awaitable[None]) -> None:
    await work


def _wake(waiter: asyncio.Future[None], _: object) -> None:
    if not waiter.done():
        waiter.set_result(None)


class KeyedDispatcher:
    """Run jobs concurrently across keys, strictly in order within a key, `max_in_flight` at most.

    The future `submit` returns carries the job's result or exception; that is the only place
    a failure surfaces. The dispatcher marks it retrieved as the job ends, so an unobserved
    failure is not logged by asyncio at garbage collection; callers must observe every future
    (the consumer adds a done callback that retries or dead-letters).
    """

    def __init__(self, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        # A counting semaphore, inlined: asyncio.Semaphore costs a third of submit's time.
        self._free = max_in_flight
        self._queue: deque[asyncio.Future[None]] = deque()  # submitters waiting for a slot
        self._tasks: set[asyncio.Future[None]] = set()  # strong refs: the loop keeps only weak ones
        self._tails: dict[Hashable, asyncio.Future[None]] = {}  # last admitted job per key
        self._groups: dict[Hashable, set[asyncio.Future[None]]] = {}  # jobs in flight per group
        self._drainers: dict[Hashable | None, list[asyncio.Future[None]]] = {}
        # The jobs each unfinished job comes after (its key's previous, and `after`'s). A job
        # cancelled before it ran never waited for them, so its successors look through it;
        # the entry is kept until those are done too (rare: only after a cancel).
        self._predecessors: dict[asyncio.Future[None], tuple[asyncio.Future[None], ...]] = {}
        # Unfinished barriers, per scope.
        self._barriers: dict[tuple[Hashable, ...], asyncio.Future[None]] = {}
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._claims_beyond = 0  # a holder of n claims is one task standing for n jobs

    @property
    def in_flight(self) -> int:
        """Jobs admitted and not finished, including those waiting for their key (a holder
        of claims counts its keys)."""
        return len(self._tasks) + self._claims_beyond

    def in_flight_for(self, group: Hashable) -> int:
        return len(self._groups.get(group, ()))

    @property
    def keys_in_flight(self) -> int:
        """Keys with an unfinished job; drops back to 0 when everything is done."""
        return len(self._tails)

    async def submit(
        self,
        key: Hashable,
        job: Job,
        *,
        group: Hashable | None = None,
        after: Hashable | None = None,
        barrier: tuple[Hashable, ...] | None = None,
        admit: Callable[[], bool] | None = None,
    ) -> asyncio.Future[None] | None:
        """Admit `job` (waiting while the pool is full) and return the future of its outcome.

        `after`: a second key the job is ordered in as well (a row whose primary key changed
        comes after the old key's jobs, and the old key's later jobs come after it).
        `barrier`: a key prefix (keys are tuples then); the job runs after every unfinished
        job whose key starts with it, and every later such job runs after it (a DDL change
        of a table). `admit`: asked again after waiting for a slot; if it says no (the
        job's partition was revoked meanwhile), the slot is given back and None returned.
        """
        if self._closed:
            raise RuntimeError("KeyedDispatcher is closed")
        if self._free and not self._queue:
            self._free -= 1
        else:
            await self._admission()
            if admit is not None and not admit():
                self._release()
                return None
        return self._start(key, job, group, after, barrier)

    def submit_nowait(
        self,
        key: Hashable,
        job: Job,
        *,
        group: Hashable | None = None,
        after: Hashable | None = None,
        barrier: tuple[Hashable, ...] | None = None,
    ) -> asyncio.Future[None] | None:
        """`submit` without waiting: the job's future if a slot is free now (and nobody
        waits for one), else None and nothing is admitted. The feeder's path for each row:
        no coroutine per submission."""
        if self._closed:
            raise RuntimeError("KeyedDispatcher is closed")
        if not self._free or self._queue:
            return None
        self._free -= 1  # take_nowait, inlined: this runs once per row
        return self._start(key, job, group, after, barrier)

    def take_nowait(self) -> bool:
        """Hold a slot if one is free now (and nobody waits for one): then `place` or
        `start` must use it."""
        if self._closed:
            raise RuntimeError("KeyedDispatcher is closed")
        if not self._free or self._queue:
            return False
        self._free -= 1
        return True

    async def take(self, admit: Callable[[], bool] | None = None) -> bool:
        """Wait for a slot and hold it, first come first served; False (and no slot held)
        if `admit`, asked after the wait, says no."""
        if self.take_nowait():
            return True
        if self._closed:
            raise RuntimeError("KeyedDispatcher is closed")
        await self._admission()
        if admit is not None and not admit():
            self._release()
            return False
        return True

    def place(
        self,
        key: Hashable,
        slot: asyncio.Future[None],
        begin: Callable[[], None],
        *,
        group: Hashable | None = None,
    ) -> bool:
        """Put work that runs without a task of its own (a mapped row) in a held slot:
        `slot` stands for it in `key`'s order, and `begin()` is called once the key's earlier
        jobs are done (at once if there are none). False, with the slot still held (for
        `start`), while a barrier is unfinished. The owner calls `release` as soon as `slot`
        is resolved or cancelled (no done callback per slot). Cancel (revocation, stop)
        cancels `slot`: its owner must then stop the work; `begin` is not called after."""
        if self._barriers:
            return False
        tails = self._tails
        previous = tails.get(key)
        tails[key] = slot
        self._tasks.add(slot)
        if group is not None:
            self._join(group, slot)
        if previous is None:
            begin()
        else:
            self._predecessors[slot] = (previous,)
            self._begin_after(previous, slot, begin)
        return True

    def claim(self, key: Hashable, holder: asyncio.Future[None]) -> bool:
        """Take a free slot for `key` if one is free now, nobody waits for one, `key` has
        nothing in flight and no barrier is unfinished: then `holder` stands for it in the
        key's order (later jobs of the key wait for it) until `release_claims`. Work of
        several keys that starts at once (a fetch's mapped rows) holds them so, with one
        holder; `admit` must put the holder in the pool before the caller awaits anything.
        """
        if not self._free or self._queue or self._barriers:
            return False
        tails = self._tails
        if key in tails:
            return False
        self._free -= 1
        tails[key] = holder
        return True

    def holder_of(self, key: Hashable) -> asyncio.Future[None] | None:
        """The last unfinished job (or holder of claims) of `key`, if any."""
        return self._tails.get(key)

    def claim_held(self, key: Hashable, holder: asyncio.Future[None]) -> bool:
        """`claim` with the slot the caller holds already (`take`): False, the slot still
        held, if `key` has something in flight or a barrier is unfinished."""
        if self._barriers or key in self._tails:
            return False
        self._tails[key] = holder
        return True

    def claim_again(
        self, key: Hashable, holder: asyncio.Future[None], *, held: bool = False
    ) -> bool:
        """Take a free slot (or, `held`, the one the caller holds: `take`) for a later job
        of `key` if `holder` holds the key (see `claim`); the holder then orders the key's
        jobs itself."""
        if self._tails.get(key) is not holder:
            return False
        if not held:
            if not self._free or self._queue:
                return False
            self._free -= 1
        if holder in self._tasks:  # admitted already: one more job it stands for
            self._claims_beyond += 1
        return True

    def release_keys(self, keys: Iterable[Hashable], holder: asyncio.Future[None]) -> None:
        """`holder` is done with `keys` before its end (their rows are done): their next
        jobs need not wait for the rest of it. Its slots stay held until `release_claims`."""
        tails = self._tails
        for key in keys:
            if tails.get(key) is holder:
                del tails[key]

    def admit(
        self, holder: asyncio.Future[None], claims: int, group: Hashable | None = None
    ) -> None:
        """Put a holder of `claims` claims in the pool: drained, and cancelled with its
        group."""
        self._claims_beyond += claims - 1
        self._tasks.add(holder)
        if group is not None:
            self._join(group, holder)

    def release_slots(self, count: int) -> None:
        """An admitted holder's `count` rows are done: their slots are free again (its
        keys go with `release_keys`)."""
        self._claims_beyond -= count
        self._free += count
        if self._queue:
            self._hand_over()

    def release_claims(
        self, holder: asyncio.Future[None], keys: list[Hashable], slots: int,
        group: Hashable | None,
    ) -> None:
        """`holder` (resolved or cancelled) gives back its `slots` slots and `keys` still
        held, and leaves the pool."""
        self._free += slots
        if self._queue:
            self._hand_over()
        tails = self._tails
        for key in keys:
            if tails.get(key) is holder:
                del tails[key]
        tasks = self._tasks
        if holder in tasks:
            tasks.discard(holder)
            self._claims_beyond -= slots - 1
        if group is not None:
            members = self._groups.get(group)
            if members is not None:
                members.discard(holder)
                if not members:
                    del self._groups[group]
                    self._wake_drainers(group)
        if not tasks:
            self._wake_drainers(None)

    def release(
        self, key: Hashable, group: Hashable | None, slot: asyncio.Future[None]
    ) -> None:
        """`slot` (of `place`) is resolved or cancelled: its place in the pool is free."""
        self._finished(key, group, None, None, slot)

    def _begin_after(
        self, previous: asyncio.Future[None], slot: asyncio.Future[None],
        begin: Callable[[], None], *_: object,
    ) -> None:
        """`begin` once `previous` and whatever it waits for are done; not if `slot` ended."""
        if slot.done():
            return
        ahead = self._ahead(previous)
        if ahead is None:
            begin()
        else:
            ahead.add_done_callback(partial(self._begin_after, previous, slot, begin))

    def start(
        self,
        key: Hashable,
        job: Job,
        *,
        group: Hashable | None = None,
        after: Hashable | None = None,
        barrier: tuple[Hashable, ...] | None = None,
    ) -> asyncio.Task[None]:
        """Run `job` in a held slot (`take`), after what it must follow, as `submit` does."""
        return self._start(key, job, group, after, barrier)

    def _start(
        self,
        key: Hashable,
        job: Job,
        group: Hashable | None,
        after: Hashable | None,
        barrier: tuple[Hashable, ...] | None,
    ) -> asyncio.Task[None]:
        """Make the admitted job's task, chained after what it must follow."""
        tails = self._tails
        previous = tails.get(key)
        earlier: list[asyncio.Future[None]] | None = None
        if previous is not None or after is not None or barrier is not None or self._barriers:
            earlier = [] if previous is None else [previous]
            if after is not None and (also := tails.get(after)) is not None:
                earlier.append(also)
            if barrier is not None:
                earlier.extend(self._scope_tails(barrier))
            elif self._barriers:
                earlier.extend(self._barriers_over(key))
        # The running loop, looked up only while nothing is in flight: asking for it costs a
        # system call (getpid) each time, and in-flight tasks pin the loop anyway.
        loop = self._loop
        if loop is None or not self._tasks:
            loop = self._loop = asyncio.get_running_loop()
        if earlier:
            task = loop.create_task(self._run(tuple(earlier), job))
            self._predecessors[task] = tuple(earlier)
        else:  # nothing to wait for: the job's own coroutine is the task
            work = job()
            if type(work) is not CoroutineType:
                work = _awaiting(work)
            task = loop.create_task(work)
        tails[key] = task
        if after is not None:
            tails[after] = task
        if barrier is not None:
            self._barriers[barrier] = task
        self._tasks.add(task)
        if group is not None:  # _join, inlined: this runs once per row
            members = self._groups.get(group)
            if members is None:
                members = self._groups[group] = set()
            members.add(task)
        task.add_done_callback(partial(self._finished, key, group, after, barrier))
        return task

    def _join(self, group: Hashable, member: asyncio.Future[None]) -> None:
        members = self._groups.get(group)
        if members is None:
            members = self._groups[group] = set()
        members.add(member)

    def _scope_tails(self, scope: tuple[Hashable, ...]) -> list[asyncio.Future[None]]:
        """The last job of every key under `scope`, and its last barrier: waiting for those
        is waiting for every job of the scope (each key's jobs run in order). O(keys in
        flight), paid only by a barrier."""
        width = len(scope)
        tails = {
            task for k, task in self._tails.items()
            if isinstance(k, tuple) and k[:width] == scope
        }
        prior = self._barriers.get(scope)
        if prior is not None:
            tails.add(prior)
        return list(tails)

    def _barriers_over(self, key: Hashable) -> list[asyncio.Future[None]]:
        """Unfinished barriers whose scope `key` is under (only while a barrier exists)."""
        if not isinstance(key, tuple):
            return []
        return [task for scope, task in self._barriers.items() if key[: len(scope)] == scope]

    async def _admission(self) -> None:
        """Wait for a slot, first come first served; a slot is handed over, never raced for."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot just as we were cancelled: pass it on
            else:
                with suppress(ValueError):  # _hand_over may have dropped it already
                    self._queue.remove(waiter)
                self._hand_over()  # we may have been the head while slots were free
            raise

    def _release(self) -> None:
        self._free += 1
        self._hand_over()

    def _hand_over(self) -> None:
        queue = self._queue
        while self._free and queue:
            waiter = queue.popleft()
            if not waiter.done():  # skip submitters cancelled while queued
                self._free -= 1
                waiter.set_result(None)

    async def _run(self, earlier: tuple[asyncio.Future[None], ...], job: Job) -> None:
        for previous in earlier:
            if self._ahead(previous) is not None:
                await self._after(previous)
        await job()

    def _ahead(self, previous: asyncio.Future[None]) -> asyncio.Future[None] | None:
        """The first unfinished job this one must still wait for, if any: `previous`, or,
        through finished jobs that were cancelled before they ran, one of theirs."""
        pending = [previous]
        while pending:
            job = pending.pop()
            if not job.done():
                return job
            pending.extend(self._predecessors.get(job, ()))
        return None

    async def _after(self, previous: asyncio.Future[None]) -> None:
        """Wait until the key's earlier jobs are done, ignoring their outcome.

        Awaiting the task itself would propagate our cancellation into it, and giving up
        early on cancel would let our successor overtake it: a cancelled job still ends only
        after its predecessor, and re-raises the cancellation then.
        """
        loop = asyncio.get_running_loop()
        cancelled = False
        while (ahead := self._ahead(previous)) is not None:
            waiter: asyncio.Future[None] = loop.create_future()
            ahead.add_done_callback(partial(_wake, waiter))
            try:
                await waiter
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError

    def _finished(
        self,
        key: Hashable,
        group: Hashable | None,
        after: Hashable | None,
        barrier: tuple[Hashable, ...] | None,
        task: asyncio.Future[None],
    ) -> None:
        # _release, inlined: this runs once per job.
        self._free += 1
        if self._queue:
            self._hand_over()
        tasks = self._tasks
        tasks.discard(task)
        if task.cancelled():
            self._forget_when_settled(task, (key, after, barrier))
        elif after is None and barrier is None:
            # It ran, so everything it came after is done (_forget, the usual case).
            if self._predecessors:
                self._predecessors.pop(task, None)
            tails = self._tails
            if tails.get(key) is task:
                del tails[key]  # last job of this key
            task.exception()  # marks it retrieved; the caller's future still carries it
        else:
            self._forget(task, key, after, barrier)
            task.exception()
        if group is not None:
            members = self._groups[group]
            members.discard(task)
            if not members:
                del self._groups[group]
                self._wake_drainers(group)
        if not tasks:
            self._wake_drainers(None)

    def _forget_when_settled(self, task: asyncio.Future[None], keys: _Keys, *_: object) -> None:
        """Drop a cancelled job's bookkeeping once nothing it came after is unfinished: until
        then its successors must see through it (and bookkeeping stays bounded after)."""
        ahead = self._ahead(task)
        if ahead is not None:
            ahead.add_done_callback(partial(self._forget_when_settled, task, keys))
        else:
            self._forget(task, *keys)

    def _forget(
        self,
        task: asyncio.Future[None],
        key: Hashable,
        after: Hashable | None,
        barrier: tuple[Hashable, ...] | None,
    ) -> None:
        if self._predecessors:
            self._predecessors.pop(task, None)
        if self._tails.get(key) is task:
            del self._tails[key]  # last job of this key
        if after is not None and self._tails.get(after) is task:
            del self._tails[after]
        if barrier is not None and self._barriers.get(barrier) is task:
            del self._barriers[barrier]

    def _wake_drainers(self, group: Hashable | None) -> None:
        for waiter in self._drainers.pop(group, ()):
            if not waiter.done():
                waiter.set_result(None)

    async def drain(
        self,
        group: Hashable | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a bool result, not an exception
    ) -> bool:
        """Wait until `group` (or everything, if None) has nothing in flight; False on timeout.

        Jobs submitted meanwhile count too, so stop submitting to the group first.
        """
        busy = len(self._groups.get(group, ())) if group is not None else len(self._tasks)
        if not busy:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drainers.setdefault(group, []).append(waiter)
        try:
            await asyncio.wait((waiter,), timeout=timeout)
        finally:
            waiting = self._drainers.get(group)
            if waiting is not None and waiter in waiting:
                waiting.remove(waiter)
                if not waiting:
                    del self._drainers[group]
        return waiter.done()

    def cancel_group(self, group: Hashable) -> int:
        """Cancel the unfinished jobs of one group (a revoked partition); returns how many."""
        pending = [task for task in self._groups.get(group, ()) if not task.done()]
        for task in pending:
            task.cancel()
        return len(pending)

    def cancel_all(self) -> int:
        """Cancel every unfinished job (when the drain timeout has passed); returns how many."""
        pending = [task for task in self._tasks if not task.done()]
        for task in pending:
            task.cancel()
        return len(pending)

    async def close(self, *, cancel: bool = False) -> None:
        """Refuse new jobs and wait for the admitted ones; cancel them first if asked."""
        self._closed = True
        if cancel:
            self.cancel_all()
        await self.drain()

"""Running the handlers of one row change: retries for errors, set-aside for what persists."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import KW_ONLY, dataclass
from functools import partial

from elasticsearch import AsyncElasticsearch

from esupdater.backoff import Backoff
from esupdater.bulk import BulkSink
from esupdater.change import Change
from esupdater.context import Context
from esupdater.deadletter import Failure, PartitionGate, SetAside, Unapplied
from esupdater.errors import FailureKind, HandlerCancelledError, classify
from esupdater.routing import Route
from esupdater.stats import Stats

log = logging.getLogger(__name__)


def error_class(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


@dataclass
class HandlerRunner:
    """Runs every matching handler of a change, one after another, in registration order.

    What a failure leads to is its kind (errors.classify): a handler that raises, or returns
    with a write it did not await, is retried with backoff up to `max_attempts` in all; a
    document Elasticsearch refuses for good is not retried. Then the row is set aside
    (dead-letter topic or skip) and the stream goes on, or, in block mode, its partition is
    held and the handler retried until it succeeds. Transient failures (Elasticsearch down
    or busy) are retried for as long as they last and never count as attempts; so are held
    ones (Elasticsearch refusing the client: credentials, blocks, missing index), which also
    hold the partition and are logged as errors every time.
    """

    sink: BulkSink
    es: AsyncElasticsearch | None
    stats: Stats
    set_aside: SetAside
    _: KW_ONLY
    max_attempts: int
    backoff: Backoff
    gate: PartitionGate | None = None

    async def run(self, change: Change, routes: tuple[Route, ...], value: bytes | None) -> None:
        sensor = self.stats.sensor  # told how each route's run went (telemetry.Sensor)
        clock = time.perf_counter  # as bulk requests are timed; no loop lookup (a getpid) per row
        for route in routes:
            started, outcome = clock(), "failed"
            try:
                # The first attempt inline, the usual case; failures go on in _run_one.
                ctx = Context(self.sink, self.es, change)
                try:
                    await route.handler(change, ctx)
                except asyncio.CancelledError as exc:
                    ctx.unawaited_error(route.name)
                    await self._run_one(change, route, value, stray_cancel(route, exc))
                except Exception as exc:  # noqa: BLE001 - a user's handler may raise anything
                    ctx.unawaited_error(route.name)  # close what it left unstarted
                    await self._run_one(change, route, value, exc)
                else:
                    if ctx.unfinished():
                        unawaited = ctx.unawaited_error(route.name)
                        if unawaited is not None:
                            await self._run_one(change, route, value, unawaited)
                outcome = "done"
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            finally:
                sensor.handler_done(route, change, clock() - started, outcome)

    async def run_failed(
        self, change: Change, route: Route, value: bytes | None, failed: Exception,
        started: float,
    ) -> None:
        """`run` for one route whose first attempt, made elsewhere at `started` (a mapper's,
        esupdater.feeding), failed with `failed`."""
        outcome = "failed"
        try:
            await self._run_one(change, route, value, failed)
            outcome = "done"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self.stats.sensor.handler_done(route, change, time.perf_counter() - started,
                                           outcome)

    async def _run_one(
        self, change: Change, route: Route, value: bytes | None, failed: Exception | None = None
    ) -> None:
        """Attempts of one route's handler until it succeeds or the row is set aside;
        `failed`: how the first attempt, already made, failed."""
        attempt = 0  # the handler's own failures
        waits = 0  # transient or held rounds, for their backoff
        held = False
        try:
            while True:
                attempt += 1
                if failed is None:
                    ctx = Context(self.sink, self.es, change)
                    try:
                        await _call(route, change, ctx)
                        unawaited = ctx.unawaited_error(route.name)
                        if unawaited is None:
                            return
                        raise unawaited
                    except asyncio.CancelledError:
                        ctx.unawaited_error(route.name)
                        raise
                    except Exception as exc:  # noqa: BLE001 - a user's handler may raise anything
                        ctx.unawaited_error(route.name)  # close what it left unstarted
                        failed = exc
                error, failed = failed, None
                kind = classify(error)
                if kind is FailureKind.TRANSIENT or kind is FailureKind.HELD:
                    attempt -= 1  # not the handler's fault: does not use up attempts
                    waits += 1
                    if kind is FailureKind.HELD and not held:
                        held = self._hold(change)
                    await self._pause(change, route, error, kind.value, waits)
                    continue
                permanent = kind is FailureKind.REFUSED
                if not permanent and attempt < self.max_attempts:
                    self.stats.handler_retries += 1
                    await self._pause(change, route, error, "retrying", attempt)
                    continue
                if permanent:
                    self.stats.rejected += 1
                else:
                    self.stats.handler_errors += 1
                # Skip, dead-letter, or (block mode) hold and try again until it works.
                await self.set_aside.give_up(Unapplied(
                    value, self._failure(change, route, error, attempt), gate=self.gate,
                    try_again=partial(self._try_again, change, route),
                ))
                return
        finally:
            if held and self.gate is not None:
                self.gate.release(change.position)

    async def _try_again(self, change: Change, route: Route) -> str | None:
        """One more run of a blocked row's handler: None if it went through, else why not."""
        ctx = Context(self.sink, self.es, change)
        try:
            await _call(route, change, ctx)
            unawaited = ctx.unawaited_error(route.name)
            if unawaited is not None:
                raise unawaited
        except Exception as exc:  # noqa: BLE001 - reported by the block loop, tried again
            ctx.unawaited_error(route.name)
            return f"{type(exc).__name__}: {exc}"
        return None

    def _hold(self, change: Change) -> bool:
        """Hold the partition (its offset cannot pass this row anyway); True once held."""
        if self.gate is not None:
            self.gate.hold(change.position)
        return True

    async def _pause(
        self, change: Change, route: Route, exc: Exception, why: str, attempt: int
    ) -> None:
        delay = self.backoff.delay(attempt - 1)
        if why == FailureKind.HELD.value:
            log.error("HELD %s row %d in %s: Elasticsearch refuses (%s: %s); nothing is set "
                      "aside and the offset waits; again in %.1fs (wait %d)",
                      change.position, change.row_index, route.name, type(exc).__name__, exc,
                      delay, attempt)
        else:
            log.warning("%s on %s row %d (%s, attempt %d of %d), again in %.1fs: %s: %s",
                        route.name, change.position, change.row_index, why, attempt,
                        self.max_attempts, delay, type(exc).__name__, exc)
        await asyncio.sleep(delay)

    @staticmethod
    def _failure(change: Change, route: Route, exc: Exception, attempts: int) -> Failure:
        return Failure(
            position=change.position,
            reason=f"{type(exc).__name__}: {exc}",
            error_class=error_class(exc),
            handler=route.name,
            row_index=change.row_index,
            attempts=attempts,
        )


async def _call(route: Route, change: Change, ctx: Context) -> None:
    """Run the handler; a `CancelledError` it raises without this row's task being
    cancelled is its own failure, not a stop: it must count, or the row would vanish."""
    try:
        await route.handler(change, ctx)
    except asyncio.CancelledError as exc:
        raise stray_cancel(route, exc) from exc


def stray_cancel(route: Route, exc: asyncio.CancelledError) -> HandlerCancelledError:
    """The handler's own failure for a CancelledError it raised; re-raises `exc` if this
    row's task is being cancelled (a revocation or a stop)."""
    task = asyncio.current_task()
    if task is None or task.cancelling():
        raise exc
    error = HandlerCancelledError(
        f"{route.name} raised CancelledError ({exc}) without being cancelled"
    )
    error.__cause__ = exc
    return error

"""Running the handlers of one row change: retries for errors, set-aside for what persists."""

from __future__ import annotations

import asyncio
import logging

from elasticsearch import AsyncElasticsearch

from esupdater.backoff import Backoff
from esupdater.bulk import BulkSink
from esupdater.change import Change
from esupdater.context import Context
from esupdater.deadletter import Failure, SetAside
from esupdater.errors import BulkItemError
from esupdater.routing import Route
from esupdater.stats import Stats

log = logging.getLogger(__name__)


class HandlerRunner:
    """Runs every matching handler of a change, one after another, in registration order.

    A handler that raises is retried (with backoff) up to `max_attempts` in all; a document
    Elasticsearch refuses for good is not retried. Either way the row is set aside with its
    reason and the stream goes on. Transient Elasticsearch failures never reach this level:
    the bulk writer retries them until they succeed.
    """

    def __init__(
        self,
        sink: BulkSink,
        es: AsyncElasticsearch | None,
        stats: Stats,
        set_aside: SetAside,
        *,
        max_attempts: int,
        backoff: Backoff,
    ) -> None:
        self.sink = sink
        self.es = es
        self.stats = stats
        self.set_aside = set_aside
        self.max_attempts = max_attempts
        self.backoff = backoff

    async def run(self, change: Change, routes: tuple[Route, ...], value: bytes | None) -> None:
        for route in routes:
            await self._run_one(change, route, value)

    async def _run_one(self, change: Change, route: Route, value: bytes | None) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await route.handler(change, Context(self.sink, self.es, change))
                return
            except asyncio.CancelledError:
                raise
            except BulkItemError as exc:
                self.stats.rejected += 1
                await self._give_up(change, route, value, exc, attempt)
                return
            except Exception as exc:  # noqa: BLE001 - a user's handler may raise anything
                if attempt >= self.max_attempts:
                    self.stats.handler_errors += 1
                    await self._give_up(change, route, value, exc, attempt)
                    return
                self.stats.handler_retries += 1
                delay = self.backoff.delay(attempt - 1)
                log.warning(
                    "%s failed on %s (attempt %d of %d), retrying in %.1fs: %s: %s",
                    route.name, change.position, attempt, self.max_attempts, delay,
                    type(exc).__name__, exc,
                )
                await asyncio.sleep(delay)

    async def _give_up(
        self, change: Change, route: Route, value: bytes | None, exc: Exception, attempts: int
    ) -> None:
        failure = Failure(
            position=change.position,
            reason=f"{type(exc).__name__}: {exc}",
            error_class=f"{type(exc).__module__}.{type(exc).__qualname__}",
            handler=route.name,
            attempts=attempts,
        )
        await self.set_aside.put(value, failure)

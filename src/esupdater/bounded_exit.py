"""Runs a command's coroutine on uvloop, with an exit that cannot hang.

`asyncio.run` and `uvloop.run` end by cancelling every task left and waiting for all of
them without a time limit. A library task that ignores its cancel (an old `wait_for`, a
retry loop) would then keep a stopped service alive forever after it said "stopped". Here
the leftovers get `LEFTOVER_TIMEOUT` seconds; those still running are named in the log with
where they are stuck, and the process ends anyway: by then offsets are committed and the
pidfile is released, so there is nothing left to lose.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds the tasks still running after the command's coroutine returned get to end.
LEFTOVER_TIMEOUT = 5.0


def run(main: Coroutine[Any, Any, T], *, leftover_timeout: float = LEFTOVER_TIMEOUT) -> T:
    """Run `main` to completion on a new uvloop loop; never wait unbounded for leftovers."""
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        try:
            return loop.run_until_complete(main)
        finally:
            stuck = loop.run_until_complete(_cancel_leftovers(leftover_timeout))
            if stuck:
                _exit_now(stuck, leftover_timeout, failed=sys.exc_info()[0] is not None)
            loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()


async def _cancel_leftovers(timeout: float) -> list[asyncio.Task[Any]]:  # noqa: ASYNC109
    current = asyncio.current_task()
    leftovers = [task for task in asyncio.all_tasks() if task is not current]
    for task in leftovers:
        task.cancel()
    if not leftovers:
        return []
    _, stuck = await asyncio.wait(leftovers, timeout=timeout)
    for task in leftovers:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("task %s ended with %r at exit", task.get_name(), task.exception())
    return list(stuck)


def _exit_now(stuck: list[asyncio.Task[Any]], timeout: float, *, failed: bool) -> None:
    for task in stuck:
        where = io.StringIO()
        task.print_stack(limit=8, file=where)
        log.warning("task %s ignored its cancel for %.0fs; exiting without it\n%s",
                    task.get_name(), timeout, where.getvalue().rstrip())
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if failed else 0)

"""Mappers: plain functions from a Change to the bulk actions it needs, `@maps` registered.

A mapper does what most handlers do (write the row, or delete it) without awaiting anything,
so the service runs it with no task, coroutine or Context per row: its actions go straight
into the bulk writer and the row is done when Elasticsearch has acknowledged them. When
anything fails, the row goes on through the handler path, as `as_handler(mapper)`, with the
same retries, set-aside and hold as an `async def` handler (esupdater.feeding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from esupdater.actions import Action
from esupdater.change import Change

#: What a mapper returns: one action, several (written in order), or None for nothing.
MapperResult = Action | Sequence[Action] | None
Mapper = Callable[[Change], MapperResult]


class MapperResultError(TypeError):
    """A mapper returned something that is not actions: its own failure, retried then set
    aside like a handler's exception."""


def actions_of(result: Any, mapper: Mapper) -> list[Action]:
    """A mapper's result as a list of actions; anything else is a MapperResultError."""
    if type(result) is dict:
        return [result]
    if result is None:
        return []
    if isinstance(result, list | tuple) and all(type(action) is dict for action in result):
        return list(result)
    name = f"{getattr(mapper, '__module__', '?')}:{getattr(mapper, '__qualname__', mapper)}"
    raise MapperResultError(
        f"{name} returned {type(result).__name__}: a mapper returns one action (a dict, "
        "e.g. esupdater.actions.index(...)), a list of them, or None"
    )


def as_handler(mapper: Mapper) -> Callable[[Change, Any], Any]:
    """The mapper as an `async def (change, ctx)` handler: its actions through `ctx`, awaited
    together. What runs it where there is no shortcut: retries, the test harness, backfill."""

    async def handler(change: Change, ctx: Any) -> None:
        actions = actions_of(mapper(change), mapper)
        if len(actions) == 1:
            await ctx.write(actions[0])
        elif actions:
            await ctx.bulk(actions)

    handler.__module__ = getattr(mapper, "__module__", handler.__module__)
    handler.__qualname__ = getattr(mapper, "__qualname__", handler.__qualname__)
    handler.__name__ = getattr(mapper, "__name__", handler.__name__)
    return handler

"""One scenario of versioned writes, run against MemorySink (unit) and Elasticsearch
(integration), so the harness and the real thing are held to the same outcome."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from esupdater import Context
from esupdater.bulk import BulkSink
from esupdater.testing import make_change

GetDocument = Callable[[str], Awaitable[dict[str, Any] | None]]


def _at(sink: BulkSink, offset: int, row_index: int = 0) -> Context:
    """The Context of a change to users/1 found at `offset`, row `row_index`."""
    change = make_change("shop", "users", "UPDATE", {"id": 1}, offset=offset, row_index=row_index)
    return Context(sink, None, change)


async def _index(ctx: Context, index: str, v: str) -> str:
    item = await ctx.index(index=index, id="1", doc={"v": v}, version=ctx.change.version)
    return str(item["result"])


async def _delete(ctx: Context, index: str) -> str:
    item = await ctx.delete(index=index, id="1", version=ctx.change.version)
    return str(item["result"])


async def run_versioning_scenario(sink: BulkSink, index: str, get: GetDocument) -> None:
    """Newer versions apply; older or equal ones come back "stale"; deletes are fenced too."""
    newer, older = _at(sink, offset=10, row_index=1), _at(sink, offset=10, row_index=0)
    much_older, later = _at(sink, offset=3), _at(sink, offset=11)

    assert await _index(newer, index, "10.1") == "created"

    assert await _index(older, index, "10.0") == "stale"  # a previous owner's late write
    assert await get("1") == {"v": "10.1"}

    assert await _index(newer, index, "10.1 again") == "stale"  # the same change replayed
    assert await get("1") == {"v": "10.1"}

    assert await _delete(much_older, index) == "stale"
    assert await get("1") == {"v": "10.1"}

    assert await _delete(later, index) == "deleted"
    assert await get("1") is None

    # The delete's version outlives the document (a tombstone): an older write stays out.
    assert await _index(newer, index, "10.1 resurrected") == "stale"
    assert await get("1") is None

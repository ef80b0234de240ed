"""Writes each change's `v`, then appends "pk v" to `applied.log` in the working directory once
Elasticsearch acknowledged it; keeps the peak number of changes in the handler at once in the
file `peak` (different keys must overlap, or an order test proves nothing).

`sleep`: each change first sleeps a random time up to that many seconds (0: none).
"""

from __future__ import annotations

import asyncio
import random

from esupdater import Change, Context, on

from .params import INDEX, WORKDIR, param

SLEEP = float(param("sleep"))

_log = (WORKDIR / "applied.log").open("a", buffering=1)
_inside = 0
_peak = 0


@on("shop.users")
async def apply(change: Change, ctx: Context) -> None:
    global _inside, _peak
    _inside += 1
    if _inside > _peak:
        _peak = _inside
        (WORKDIR / "peak").write_text(str(_peak))
    try:
        if SLEEP:
            await asyncio.sleep(random.random() * SLEEP)
        await ctx.index(index=INDEX, id=change.pk, doc={"v": change.row["v"]})
        _log.write(f"{change.pk} {change.row['v']}\n")
    finally:
        _inside -= 1

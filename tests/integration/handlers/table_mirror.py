"""Mirrors the table `table` of shop into INDEX, the same handler for the stream and a backfill:
one document per row, the row as esupdater typed it, versioned writes as the README
recommends. Nothing in it asks whether a change is backfilled: that is the point.

`one_partition` (default false): whether the topic keeps a key change and the old key's
changes in one partition (then the old key's delete is versioned too).

`backfill_delay` (default 0): a backfilled row first waits a random time up to that many
seconds, as behind a slow enrichment call or a busy Elasticsearch. It only moves the writes
later: the stream's changes committed after a chunk's snapshot then land before the chunk's
own writes, the race docs/backfill.md is about. What is written stays the same.

Each process also appends to `seen.log` in the working directory one line per kind of change
it handled the first time it meets it: "<pid> <type> <is_backfill> <source>", so a test can
tell what the stream and the backfill each gave the handler.
"""

from __future__ import annotations

import asyncio
import os
import random

from esupdater import Change, Context, on

from .params import INDEX, WORKDIR, param

ONE_PARTITION = bool(param("one_partition", False))
BACKFILL_DELAY = float(param("backfill_delay", 0))

_seen: set[tuple[str, bool, str]] = set()


def _note(change: Change) -> None:
    kind = (change.type, change.is_backfill, change.source)
    if kind not in _seen:
        _seen.add(kind)
        with (WORKDIR / "seen.log").open("a") as seen:
            seen.write(f"{os.getpid()} {kind[0]} {kind[1]} {kind[2]}\n")


@on(f"shop.{param('table')}")
async def mirror(change: Change, ctx: Context) -> None:
    _note(change)
    if change.is_backfill and BACKFILL_DELAY:
        await asyncio.sleep(random.random() * BACKFILL_DELAY)
    if change.is_delete:
        await ctx.delete(index=INDEX, id=change.pk, version=change.version)
        return
    if change.old_pk is not None:  # the key changed: the old document goes
        await ctx.delete(index=INDEX, id=change.old_pk,
                         version=change.version if ONE_PARTITION else None)
    await ctx.index(index=INDEX, id=change.pk, doc=change.row, version=change.version)

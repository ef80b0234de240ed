"""Mirrors the table `table` of shop into INDEX: one document per row, the row as esupdater
typed it; versioned writes, as the README recommends.

`one_partition`: whether the topic keeps a key change and the old key's changes in one
partition (then the old key's delete is versioned too).
"""

from __future__ import annotations

from esupdater import Change, Context, on

from .params import INDEX, param

ONE_PARTITION = bool(param("one_partition"))


@on(f"shop.{param('table')}")
async def mirror(change: Change, ctx: Context) -> None:
    if change.is_delete:
        await ctx.delete(index=INDEX, id=change.pk, version=change.version)
        return
    if change.old_pk is not None:  # the key changed: the old document goes
        await ctx.delete(index=INDEX, id=change.old_pk,
                         version=change.version if ONE_PARTITION else None)
    await ctx.index(index=INDEX, id=change.pk, doc=change.row, version=change.version)

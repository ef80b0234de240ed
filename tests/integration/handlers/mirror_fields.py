"""shop.users rows indexed with what their Change carried (type, table, offset, old, changed);
documents deleted on DELETE."""

from __future__ import annotations

from esupdater import Change, Context, on

from .params import INDEX


@on("shop.users")
async def mirror(change: Change, ctx: Context) -> None:
    if change.is_delete:
        await ctx.delete(index=INDEX, id=change.pk)
        return
    doc = dict(change.row, type=change.type, table=change.table, offset=change.offset,
               old=change.old, changed=sorted(change.changed))
    await ctx.index(index=INDEX, id=change.pk, doc=doc)

"""shop.users rows upserted, their documents deleted on DELETE."""

from __future__ import annotations

from esupdater import Change, Context, on

from .params import INDEX


@on("shop.users")
async def sync_user(change: Change, ctx: Context) -> None:
    if change.is_delete:
        await ctx.delete(index=INDEX, id=change.pk)
    else:
        await ctx.upsert(index=INDEX, id=change.pk, doc=change.row)

"""shop.users rows indexed as they come: the plain handler most tests need."""

from __future__ import annotations

from esupdater import Change, Context, on

from .params import INDEX


@on("shop.users")
async def sync_user(change: Change, ctx: Context) -> None:
    await ctx.index(index=INDEX, id=change.pk, doc=change.row)

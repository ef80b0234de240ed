"""shop.users rows indexed, except row 0, which always raises."""

from __future__ import annotations

from esupdater import Change, Context, on

from .params import INDEX


@on("shop.users")
async def sync_user(change: Change, ctx: Context) -> None:
    if change.pk == "0":
        raise RuntimeError("row 0 cannot be written")
    await ctx.index(index=INDEX, id=change.pk, doc=change.row)

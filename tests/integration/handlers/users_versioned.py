"""shop.users rows indexed with `version=change.version`: a late or replayed write is stale."""

from __future__ import annotations

from esupdater import Change, Context, on

from .params import INDEX


@on("shop.users")
async def sync_user(change: Change, ctx: Context) -> None:
    await ctx.index(index=INDEX, id=change.pk, doc=change.row, version=change.version)

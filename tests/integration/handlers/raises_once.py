"""shop.users rows indexed, each after failing once (a connection reset): retried, then fine."""

from __future__ import annotations

from esupdater import Change, Context, on

from .params import INDEX

failed_once: set[str] = set()


@on("shop.users")
async def sync_user(change: Change, ctx: Context) -> None:
    if change.pk not in failed_once:
        failed_once.add(change.pk)
        raise ConnectionResetError("the enrichment service hung up")
    await ctx.index(index=INDEX, id=change.pk, doc=change.row)

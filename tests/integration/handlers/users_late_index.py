"""shop.users rows indexed; keys from `late_from` on go to the index INDEX-late instead.

For a test where only the later rows meet trouble (an index that does not exist yet).
"""

from __future__ import annotations

from esupdater import Change, Context, on

from .params import INDEX, param

LATE_FROM = int(param("late_from"))


@on("shop.users")
async def sync_user(change: Change, ctx: Context) -> None:
    index = INDEX if int(change.pk) < LATE_FROM else INDEX + "-late"
    await ctx.index(index=index, id=change.pk, doc=change.row)

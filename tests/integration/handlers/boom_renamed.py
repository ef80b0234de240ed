"""boom.py's handler after a rename: `sync_user` is gone, `index_user` routes shop.users.

A dead letter naming `sync_user` has no handler now.
"""

from __future__ import annotations

from esupdater import Change, Context, on

from .params import INDEX


@on("shop.users")
async def index_user(change: Change, ctx: Context) -> None:
    await ctx.index(index=INDEX, id=change.pk, doc=change.row)

"""The rows of the table `table` of shop indexed as esupdater typed them, unversioned."""

from __future__ import annotations

from esupdater import Change, Context, on

from .params import INDEX, param


@on(f"shop.{param('table')}")
async def mirror(change: Change, ctx: Context) -> None:
    await ctx.index(index=INDEX, id=change.pk, doc=change.row)

"""shop.users rows indexed, then what each write's item said kept beside the document: the
item a handler awaits must be Elasticsearch's whole answer, however the handler is run."""

from __future__ import annotations

from esupdater import Change, Context, on

from .params import INDEX


@on("shop.users")
async def sync_user(change: Change, ctx: Context) -> None:
    item = await ctx.index(index=INDEX, id=change.pk, doc=change.row)
    seen = {name.lstrip("_"): item.get(name)
            for name in ("_index", "_id", "_version", "result", "status")}
    await ctx.index(index=f"{INDEX}-items", id=change.pk, doc=seen)

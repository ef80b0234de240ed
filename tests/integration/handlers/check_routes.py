"""Three routes for `esupdater check` to print: shop.users (default types), INSERTs of
shop.orders_* and a mapper of shop.customers. Only the route table is looked at; the
handlers never run."""

from __future__ import annotations

from esupdater import Change, Context, maps, on
from esupdater.actions import Action

from .params import INDEX


@on("shop.users")
async def sync_user(change: Change, ctx: Context) -> None:
    await ctx.upsert(index=INDEX, id=change.pk, doc=change.row)


@on("shop.orders_*", types={"INSERT"})
async def new_order(change: Change, ctx: Context) -> None:
    pass


@maps("shop.customers")
def customer_document(change: Change) -> Action | None:
    return None

"""The shop's search indexes: one document per user, one per order (across shards)."""

from __future__ import annotations

from esupdater import Change, Context, on

USERS_INDEX = "shop-users"
ORDERS_INDEX = "shop-orders"


@on("shop.users")
async def sync_user(change: Change, ctx: Context) -> None:
    """A user's searchable profile; only the columns search needs."""
    if change.is_delete:
        await ctx.delete(index=USERS_INDEX, id=change.pk)
        return
    row = change.row
    await ctx.upsert(
        index=USERS_INDEX,
        id=change.pk,
        doc={
            "name": row["name"],
            "email": row["email"],
            "city": row["city"],
            "balance": row["balance"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
        },
    )


@on("shop.orders_*")
async def sync_order(change: Change, ctx: Context) -> None:
    """Orders live in four shard tables; their ids are unique across shards.

    Whole rows, versioned by binlog order: a late write (a previous owner's, after a
    rebalance) can never replace a newer one. See "Versioned writes" in the README.
    """
    if change.is_delete:
        await ctx.delete(index=ORDERS_INDEX, id=change.pk, version=change.version)
        return
    if change.old_pk is not None:
        # The id itself changed: the document under the old one is stale. Not versioned:
        # Canal hashed the old id to another partition, whose offsets do not compare.
        await ctx.delete(index=ORDERS_INDEX, id=change.old_pk)
    await ctx.index(
        index=ORDERS_INDEX, id=change.pk, doc={**change.row, "shard": change.table},
        version=change.version,
    )

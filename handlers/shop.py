"""The shop's search indexes: one document per user, one per order (across shards)."""

from __future__ import annotations

from esupdater import Change, Context, on

USERS_INDEX = "shop-users"
ORDERS_INDEX = "shop-orders"

#: True when every change of an orders table reaches one partition (a one-partition topic, or
#: `canal.mq.partitionHash` by table, without `:$pk$`): an order whose id changes then has its
#: old id's changes in the same partition as the change itself, and the delete of the old
#: document can be versioned. False when Canal hashes by primary key: the old id's changes
#: may be in another partition, whose versions do not compare (README, "Primary-key changes").
#: (`make demo` hashes by id, but never changes an order's id.)
ORDERS_IN_ONE_PARTITION = True


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
        # The id itself changed: the document under the old one is stale. Versioned, like
        # every other write of a document: after a crash this change is replayed, maybe after
        # the old id was inserted again (document at v3 > this change's v2). Versioned, the
        # replayed delete comes back stale and the new document stays. Unversioned, it would
        # delete it and leave a tombstone at v3 + 1 (an unversioned write adds 1 to the
        # stored version), so the replayed insert at v3 is refused too: the document is gone
        # until the row changes again. Versions compare only within one partition: see
        # ORDERS_IN_ONE_PARTITION for topics that Canal hashes by primary key.
        old_version = change.version if ORDERS_IN_ONE_PARTITION else None
        await ctx.delete(index=ORDERS_INDEX, id=change.old_pk, version=old_version)
    await ctx.index(
        index=ORDERS_INDEX, id=change.pk, doc={**change.row, "shard": change.table},
        version=change.version,
    )

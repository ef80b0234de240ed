"""Who receives DDL: any DDL of shop (`ddl-<offset>`), only ALTERs of shop.users
(`alter-<offset>`), and the default types of every shop table (`row-<offset>`)."""

from __future__ import annotations

from esupdater import Change, Context, on

from .params import INDEX


@on("shop.*", types={"DDL"})
async def any_ddl(change: Change, ctx: Context) -> None:
    await ctx.index(index=INDEX, id=f"ddl-{change.offset}",
                    doc={"type": change.type, "sql": change.sql, "is_ddl": change.is_ddl})


@on("shop.users", types={"ALTER"})
async def alter_only(change: Change, ctx: Context) -> None:
    await ctx.index(index=INDEX, id=f"alter-{change.offset}", doc={"type": change.type})


@on("shop.*")
async def rows(change: Change, ctx: Context) -> None:
    await ctx.index(index=INDEX, id=f"row-{change.offset}", doc={"type": change.type})

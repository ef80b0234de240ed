"""One document per row change of the table `table` of shop: where Canal put it and what the
handler received (each value's Python type and its str)."""

from __future__ import annotations

from esupdater import Change, Context, on

from .params import INDEX, param


@on(f"shop.{param('table')}")
async def log(change: Change, ctx: Context) -> None:
    await ctx.index(
        index=INDEX, id=f"{change.partition}-{change.offset}-{change.row_index}",
        doc={
            "pk": change.pk, "type": change.type, "partition": change.partition,
            "types": {name: type(value).__name__ for name, value in change.row.items()},
            "strs": {name: None if value is None else str(value)
                     for name, value in change.row.items()},
            "pk_names": list(change.pk_names),
        },
    )

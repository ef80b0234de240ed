"""One document per row change of the table `table` of shop: each binary column's value as the
hex of its bytes (esupdater gives them as one character per byte)."""

from __future__ import annotations

from typing import Any

from esupdater import Change, Context, on

from .params import INDEX, param


def hex_of(values: dict[str, Any] | None) -> dict[str, str | None]:
    return {name: None if value is None else value.encode("latin-1").hex()
            for name, value in (values or {}).items() if name != "id"}


@on(f"shop.{param('table')}")
async def log(change: Change, ctx: Context) -> None:
    await ctx.index(
        index=INDEX, id=f"{change.partition}-{change.offset}-{change.row_index}",
        doc={"id": change.row["id"], "type": change.type, "row": hex_of(change.row),
             "old": hex_of(change.old)},
    )

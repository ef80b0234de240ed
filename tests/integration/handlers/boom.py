"""shop.users rows indexed, but rows named "boom..." raise until a file `fixed` exists in the
working directory (the fix ships), and "boom forever" raises even then.

`versioned` (default false): index with `version=change.version`.
"""

from __future__ import annotations

from esupdater import Change, Context, on

from .params import INDEX, WORKDIR, param

VERSIONED = bool(param("versioned", False))


@on("shop.users")
async def sync_user(change: Change, ctx: Context) -> None:
    name = change.row["name"]
    if name.startswith("boom") and not (WORKDIR / "fixed").exists():
        raise ValueError(f"cannot handle row {change.pk}: no rule for {name}")
    if name == "boom forever":
        raise ValueError(f"cannot handle row {change.pk}: still no rule")
    version = change.version if VERSIONED else None
    await ctx.index(index=INDEX, id=change.pk, doc=change.row, version=version)

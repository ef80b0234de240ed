"""Every shop.users row raises an error whose message repeats the row's (maybe large) name, as
many do."""

from __future__ import annotations

from esupdater import Change, Context, on


@on("shop.users")
async def sync_user(change: Change, ctx: Context) -> None:
    raise ValueError(f"cannot use name {change.row['name']!r}")

"""Every shop.users row leaves a file `started` in the working directory and then takes a
minute: a stop finds it still running."""

from __future__ import annotations

import asyncio

from esupdater import Change, Context, on

from .params import WORKDIR


@on("shop.users")
async def stuck(change: Change, ctx: Context) -> None:
    (WORKDIR / "started").touch()
    await asyncio.sleep(60)

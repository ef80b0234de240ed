"""The local MariaDB as the benchmark uses it: one asyncmy connection to `shop`, autocommit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncmy

from tools.local_stack import MARIADB, MARIADB_DATABASE, MARIADB_PASSWORD, MARIADB_USER


async def connect() -> asyncmy.Connection:
    """An autocommit connection to the database Canal follows, in UTC (like the tests')."""
    host, port = MARIADB.rsplit(":", 1)
    connection = await asyncmy.connect(
        host=host, port=int(port), user=MARIADB_USER, password=MARIADB_PASSWORD,
        database=MARIADB_DATABASE, autocommit=True, charset="utf8mb4",
    )
    await execute(connection, "SET time_zone = '+00:00'")
    return connection


async def execute(
    connection: asyncmy.Connection, sql: str, args: Sequence[Any] | None = None
) -> None:
    async with connection.cursor() as cursor:
        await cursor.execute(sql, args)


async def insert_many(
    connection: asyncmy.Connection, table: str, rows: Sequence[Sequence[Any]], *,
    per_statement: int = 2_000,
) -> None:
    """Rows as multi-row INSERTs of `per_statement` rows each: a table filled in seconds."""
    if not rows:
        return
    width = len(rows[0])
    tuple_sql = "(" + ", ".join(["%s"] * width) + ")"
    for start in range(0, len(rows), per_statement):
        part = rows[start:start + per_statement]
        sql = f"INSERT INTO {table} VALUES " + ", ".join([tuple_sql] * len(part))
        await execute(connection, sql, [value for row in part for value in row])

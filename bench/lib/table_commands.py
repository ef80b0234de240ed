"""`esupdater backfill` and `esupdater verify` timed on a MariaDB table of N rows.

The table is the benchmark's users table (bench/lib/dataset.py, every user at its first
version), named `quiet_bench_*` so Canal leaves it out of its topics; it is filled with
multi-row INSERTs. Both commands run as a user runs them: the `esupdater` CLI in a working
directory holding `settings.toml` ([mysql], [elasticsearch]) and a handler package mirroring
the table (one document per row, versioned as the README recommends), the password from the
environment. The figures are wall-clock times of the commands, start-up included, and
backfill's own time for the table from its summary line.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.lib import mariadb
from bench.lib.dataset import user_row
from bench.lib.stack import Stack
from tools.local_stack import (
    ELASTICSEARCH,
    KAFKA,
    MARIADB,
    MARIADB_DATABASE,
    MARIADB_PASSWORD,
    MARIADB_USER,
)

COLUMNS = """
    id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL, email VARCHAR(128) NOT NULL,
    city VARCHAR(32) NOT NULL, balance DECIMAL(12,2) NOT NULL, created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL, vip TINYINT(1) NOT NULL
"""
HANDLERS = '''"""Mirrors {route} into {index}: the benchmark's backfill and verify handler."""

from esupdater import Change, Context, on

INDEX = "{index}"


@on("{route}")
async def mirror(change: Change, ctx: Context) -> None:
    if change.is_delete:
        await ctx.delete(index=INDEX, id=change.pk, version=change.version)
    else:
        await ctx.index(index=INDEX, id=change.pk, doc=change.row, version=change.version)
'''
BACKFILL_LINE = re.compile(
    r"^backfill \S+: (?P<read>\d+) rows read, (?P<written>\d+) written, .* in "
    r"(?P<seconds>\d+(?:\.\d+)?) s$", re.MULTILINE)
VERIFY_LINE = re.compile(
    r"^verify \S+: \d+ rows, \d+ documents expected, .* orphans$", re.MULTILINE)


@dataclass
class TableFigures:
    rows: int
    fill_seconds: float
    backfill_seconds: float  # the command's own time for the table (summary line)
    backfill_wall_seconds: float  # the whole command, Python start-up included
    backfill_written: int
    documents: int
    verify_wall_seconds: float
    verify_line: str
    verify_ok: bool

    @property
    def backfill_rows_per_second(self) -> float:
        return self.rows / self.backfill_seconds if self.backfill_seconds else 0.0

    @property
    def verify_seconds_per_100k(self) -> float:
        return self.verify_wall_seconds * 100_000 / self.rows if self.rows else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "fill_seconds": round(self.fill_seconds, 2),
            "backfill_seconds": round(self.backfill_seconds, 2),
            "backfill_wall_seconds": round(self.backfill_wall_seconds, 2),
            "backfill_rows_per_second": round(self.backfill_rows_per_second, 1),
            "backfill_rows_per_second_wall": round(self.rows / self.backfill_wall_seconds, 1),
            "backfill_written": self.backfill_written,
            "documents_in_index": self.documents,
            "verify_wall_seconds": round(self.verify_wall_seconds, 2),
            "verify_seconds_per_100k_rows": round(self.verify_seconds_per_100k, 2),
            "verify_summary": self.verify_line,
            "verify_ok": self.verify_ok,
        }


def _settings() -> str:
    host, port = MARIADB.rsplit(":", 1)
    return "\n".join([
        "[kafka]", f"bootstrap_servers = {json.dumps(KAFKA)}",
        "[elasticsearch]", f"hosts = [{json.dumps(ELASTICSEARCH)}]",
        "[mysql]", f"host = {json.dumps(host)}", f"port = {int(port)}",
        f"user = {json.dumps(MARIADB_USER)}", f"database = {json.dumps(MARIADB_DATABASE)}",
        "[handlers]", 'package = "bench_handlers"',
        "[runtime]", 'dir = "runtime"',
        "[log]", 'level = "WARNING"', "",
    ])


async def _command(work: Path, *args: str) -> tuple[int, str, float]:
    """`esupdater ARGS` in `work`; (exit status, stdout then stderr, wall seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ESUPDATER_")}
    env.update(ESUPDATER_MYSQL__PASSWORD=MARIADB_PASSWORD, COLUMNS="200")
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "esupdater", *args, cwd=work, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    took = time.monotonic() - started
    return process.returncode or 0, (out + b"\n" + err).decode(errors="replace"), took


async def measure(stack: Stack, rows: int) -> TableFigures:
    table = f"quiet_bench_{stack.run_id.replace('-', '_')}"
    route = f"{MARIADB_DATABASE}.{table}"
    index = await stack.create_index("backfill")
    work = Path(tempfile.mkdtemp(prefix="esupdater-bench-backfill-"))
    (work / "settings.toml").write_text(_settings())
    (work / "bench_handlers").mkdir()
    (work / "bench_handlers" / "__init__.py").write_text(
        HANDLERS.format(route=route, index=index))
    connection = await mariadb.connect()
    try:
        await mariadb.execute(connection, f"CREATE TABLE {table} ({COLUMNS})")
        started = time.monotonic()
        values = [list(user_row(uid, 0).values()) for uid in range(1, rows + 1)]
        await mariadb.insert_many(connection, table, values)
        filled = time.monotonic() - started
        del values

        status, output, backfill_wall = await _command(work, "backfill", route)
        line = BACKFILL_LINE.search(output)
        if status != 0 or line is None:
            raise RuntimeError(f"esupdater backfill {route} exited {status}:\n{output[-3000:]}")
        documents = await stack.count(index)
        status, output, verify_wall = await _command(work, "verify", route)
        verified = VERIFY_LINE.search(output)
        if status not in (0, 1) or verified is None:
            raise RuntimeError(f"esupdater verify {route} exited {status}:\n{output[-3000:]}")
        return TableFigures(
            rows=rows, fill_seconds=filled, backfill_seconds=float(line["seconds"]),
            backfill_wall_seconds=backfill_wall, backfill_written=int(line["written"]),
            documents=documents, verify_wall_seconds=verify_wall,
            verify_line=verified.group(0), verify_ok=status == 0,
        )
    finally:
        await mariadb.execute(connection, f"DROP TABLE IF EXISTS {table}")  # never published
        connection.close()
        await stack.drop_index(index)
        shutil.rmtree(work, ignore_errors=True)

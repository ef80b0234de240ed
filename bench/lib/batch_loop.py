"""Contender D: the plain batch consumer a competent user writes in an afternoon.

`python -m bench.lib.batch_loop SPEC.json`, a child process like bench/child.py. aiokafka
`getmany` -> `orjson.loads` each Canal flat message -> one bulk action per row (index the row
as Canal sent it, `_id` from the primary key; delete for DELETE) -> one
`elasticsearch.helpers.async_bulk` of the whole batch -> `commit()`. No typing of values (the
index's mapping reads MySQL's date format instead), no per-key ordering machinery (a batch is
applied in order, then committed), no retries beyond the helper's, no dead letters. It is
what esupdater has to be worth its machinery against: the same backlog, the same
Elasticsearch, the client's orjson serializer as esupdater uses by default.

SIGTERM stops it after the batch in hand; on exit it writes its figures to the spec's
`result` path: first row, rows, batches, bulk requests (counted as the helper chunks them) and
its own peak RSS; with the spec's `latency`, each row's latency too (bench/lib/latency.py):
from its record's CreateTime to the end of the batch's `async_bulk`, which is when the loop
knows Elasticsearch took the row.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import orjson
import uvloop
from aiokafka import AIOKafkaConsumer
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_bulk
from elasticsearch.serializer import OrjsonSerializer

from bench.lib.stack import peak_rss_mb

#: async_bulk's defaults, named because the request count below depends on them.
CHUNK_SIZE = 500
MAX_CHUNK_BYTES = 100 * 1024 * 1024


def actions_of(message: dict[str, Any], index: str, table: str) -> list[dict[str, Any]]:
    """The bulk actions for one Canal flat message of `table` (`database.table`)."""
    if message.get("isDdl") or f"{message['database']}.{message['table']}" != table:
        return []
    keys = message["pkNames"]
    delete = message["type"] == "DELETE"
    actions = []
    for row in message["data"] or ():
        doc_id = ":".join(row[k] for k in keys)
        if delete:
            actions.append({"_op_type": "delete", "_index": index, "_id": doc_id})
        else:
            actions.append({"_op_type": "index", "_index": index, "_id": doc_id,
                            "_source": row})
    return actions


class BatchLoop:
    """The loop, and what it counted."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.first: float | None = None
        self.last = 0.0
        self.rows = 0
        self.batches = 0
        self.bulk_requests = 0
        self.errors = 0
        #: Pairs (record time, seconds from record time to acknowledgement), flattened.
        self.samples = array("d")

    async def run(self, stop: asyncio.Event) -> None:
        spec = self.spec
        consumer = AIOKafkaConsumer(
            spec["topic"], bootstrap_servers=spec["kafka"], group_id=spec["group"],
            enable_auto_commit=False, auto_offset_reset="earliest",
        )
        es = AsyncElasticsearch(spec["elasticsearch"], serializer=OrjsonSerializer(),
                                request_timeout=120)
        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500)
                actions: list[dict[str, Any]] = []
                stamps: list[tuple[float, int]] = []  # (record time, its rows), in latency mode
                for records in batch.values():
                    for record in records:
                        if record.value is not None:
                            rows = actions_of(orjson.loads(record.value), spec["index"],
                                              spec["route"])
                            actions += rows
                            if spec.get("latency"):
                                stamps.append((record.timestamp / 1000, len(rows)))
                if actions:
                    if self.first is None:
                        self.first = time.monotonic()
                    _, errors = await async_bulk(es, actions, ignore_status=(404,),
                                                 raise_on_error=False, stats_only=True)
                    self.errors += errors if isinstance(errors, int) else len(errors)
                    self.rows += len(actions)
                    self.batches += 1
                    # The helper cuts at CHUNK_SIZE actions (MAX_CHUNK_BYTES is never reached
                    # here); Elasticsearch's own count is read by the parent as a check.
                    self.bulk_requests += math.ceil(len(actions) / CHUNK_SIZE)
                    self.last = time.monotonic()
                    now = time.time()
                    for sent, count in stamps:
                        self.samples.extend((sent, now - sent) * count)
                if batch:
                    await consumer.commit()
        finally:
            await consumer.stop()
            await es.close()

    def figures(self) -> dict[str, Any]:
        return {
            "first_row_at": self.first,
            "last_ack_at": self.last,
            "rows": self.rows,
            "batches": self.batches,
            "bulk_requests": self.bulk_requests,
            "errors": self.errors,
            "samples": list(self.samples),
            "peak_rss_mb": peak_rss_mb(os.getpid()),
        }


async def _main(loop: BatchLoop) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await loop.run(stop)


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    loop = BatchLoop(spec)
    started = time.monotonic()
    uvloop.run(_main(loop))
    result = {"started_at": started, "stopped_at": time.monotonic(), **loop.figures()}
    Path(spec["result"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])

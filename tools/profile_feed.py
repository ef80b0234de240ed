"""CPU per row of esupdater's own path without Kafka or a server: a quick loop for changes.

    python -m tools.profile_feed [--rows 100000] [--shape 10] [--contender esupdater|D]

Feeds the benchmark's users dataset (bench/lib/dataset.py), already encoded, through the
service's parts as `esupdater run` builds them (decoder, registry, Feeder, KeyedDispatcher,
HandlerRunner, BulkWriter with default settings) into a client whose `bulk` answers every
item as created without a network, with the benchmark's handler. Prints CPU microseconds
per row for decoding alone and for the whole path; `tools/profile_hotpath.py` measures the
real thing against Kafka and Elasticsearch.

`--contender D` runs the benchmark's batch loop's per-batch work instead (`orjson.loads`,
its actions, one `async_bulk` of the fetched batch) into the same answering client, so the
two paths compare without Kafka, a server or the machine's noise:
`tools/count_instructions.py` counts both under valgrind. `--stage setup` builds the
dataset and stops (what a count subtracts); `--stage path` runs the contender's path alone.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from types import SimpleNamespace
from typing import Any

import orjson
import uvloop
from aiokafka.structs import TopicPartition
from elastic_transport import SerializerCollection
from elasticsearch.helpers import async_bulk

from bench.lib.batch_loop import actions_of
from bench.lib.dataset import messages, statements
from esupdater import Change, Context, Registry, actions
from esupdater.backoff import Backoff
from esupdater.bulk import BulkWriter
from esupdater.canal import CanalDecoder
from esupdater.change import Position
from esupdater.clients import ExactJsonSerializer, ExactNdjsonSerializer
from esupdater.components import bulk_limits
from esupdater.deadletter import SetAside
from esupdater.dispatch import KeyedDispatcher
from esupdater.feeding import Feeder
from esupdater.handling import HandlerRunner
from esupdater.metrics import FreshnessSensor
from esupdater.offsets import OffsetTracker
from esupdater.service import tune_gc
from esupdater.settings import Settings
from esupdater.stats import Stats

#: Records per fetch, over all partitions (aiokafka's max_poll_records default is 500 per
#: partition; a backlog's fetch brings several partitions at once).
FETCHED_RECORDS = 2000


class AnsweringElasticsearch:
    """`bulk` answers every action as applied after one loop turn; parses the body's
    action lines as Elasticsearch must (the documents are not parsed)."""

    def __init__(self) -> None:
        self.transport = SimpleNamespace(serializers=SerializerCollection({
            "application/json": ExactJsonSerializer(),
            "application/x-ndjson": ExactNdjsonSerializer(),
        }))
        self.requests = 0

    def options(self, **_: Any) -> AnsweringElasticsearch:
        return self

    async def bulk(self, *, operations: Any, **_: Any) -> _Answer:
        await asyncio.sleep(0.002)
        lines = operations if isinstance(operations, list) else operations.splitlines()
        items = []
        skip = False
        for line in lines:
            if skip:
                skip = False
                continue
            ((op, meta),) = orjson.loads(line).items()
            skip = op != "delete"
            items.append({op: {"_index": meta["_index"], "_id": meta["_id"], "status": 201,
                               "result": "created", "_version": 1}})
        self.requests += 1
        body = orjson.loads(orjson.dumps({"took": 1, "errors": False, "items": items}))
        return _Answer(body)


class _Answer(dict[str, Any]):
    """The answer as the client gives it: `body`, and subscriptable (the helpers read it so)."""

    @property
    def body(self) -> dict[str, Any]:
        return self


class _Gate:
    def hold(self, position: Position) -> None:
        pass

    def release(self, position: Position) -> None:
        pass


async def run(values: list[tuple[int, bytes, int]], rows: int, *, mapped: bool = False) -> float:
    """esupdater's path, its CPU seconds: the handler below, or (`mapped`) the same writes
    by a mapper."""
    settings = Settings()
    stats = Stats()
    stats.sensor = FreshnessSensor(stats)  # as `esupdater run` installs it
    es = AnsweringElasticsearch()
    writer = BulkWriter(es, bulk_limits(settings), Backoff(), stats=stats)  # type: ignore[arg-type]
    await writer.start()
    registry = Registry()

    async def handle(change: Change, ctx: Context) -> None:
        if change.is_delete:
            await ctx.delete(index="users", id=change.pk)
        else:
            await ctx.index(index="users", id=change.pk, doc=change.row)

    def user_document(change: Change) -> dict[str, Any]:
        if change.is_delete:
            return actions.delete(index="users", id=change.pk)
        return actions.index(index="users", id=change.pk, doc=change.row)

    if mapped:
        registry.add_mapper("shop.users", user_document)
    else:
        registry.add("shop.users", handle)
    gate = _Gate()
    runner = HandlerRunner(writer, None, stats, SetAside(stats), max_attempts=5,
                           backoff=Backoff(), gate=gate)
    feeder = Feeder(CanalDecoder(), registry, runner, SetAside(stats), stats,
                    dispatcher=KeyedDispatcher(settings.dispatch.max_rows_in_flight),
                    offsets=OffsetTracker(), backoff=Backoff(), gate=gate, writer=writer)
    tps = [TopicPartition("t", p) for p in range(4)]
    next_offset = [0] * 4
    # Fed as the consume loop feeds: each fetch's records of one partition in one call.
    fetched: dict[int, list[SimpleNamespace]] = {}
    started = time.process_time()
    for number, (partition, value, _) in enumerate(values, 1):
        offset = next_offset[partition]
        next_offset[partition] += 1
        fetched.setdefault(partition, []).append(
            SimpleNamespace(offset=offset, value=value, timestamp=-1))
        if number % FETCHED_RECORDS == 0 or number == len(values):
            for partition_number, records in fetched.items():
                await feeder.feed_records(tps[partition_number], records, lambda: True)
            fetched.clear()
    await feeder.dispatcher.drain()
    cpu = time.process_time() - started
    await writer.close()
    assert stats.rows_done == rows, (stats.rows_done, rows)
    print(f"  {es.requests} bulk requests, {rows / max(es.requests, 1):.0f} actions each")
    return cpu


async def run_batch_loop(values: list[tuple[int, bytes, int]], rows: int) -> float:
    """Contender D's work per fetched batch (bench/lib/batch_loop.py), fetches as large as
    `run` feeds, into the same answering client; its CPU seconds."""
    es = AnsweringElasticsearch()
    done = 0
    fetched: list[bytes] = []
    started = time.process_time()
    for number, (_, value, _) in enumerate(values, 1):
        fetched.append(value)
        if number % FETCHED_RECORDS == 0 or number == len(values):
            actions: list[dict[str, Any]] = []
            for record in fetched:
                actions += actions_of(orjson.loads(record), "users", "shop.users")
            client: Any = es  # answers as the client does, for what the helper reads
            await async_bulk(client, actions, ignore_status=(404,), raise_on_error=False,
                             stats_only=True)
            done += len(actions)
            fetched.clear()
    cpu = time.process_time() - started
    assert done == rows, (done, rows)
    print(f"  {es.requests} bulk requests, {rows / max(es.requests, 1):.0f} actions each")
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--shape", type=int, default=10)
    parser.add_argument("--contender", choices=("esupdater", "mapper", "D"), default="esupdater",
                        help="esupdater with an async handler or a mapper, or the batch loop D")
    parser.add_argument("--stage", choices=("setup", "path", "all"), default="all",
                        help="setup: build the dataset and stop; path: the contender's path "
                             "only, without timing decoding alone (both for instruction counts)")
    args = parser.parse_args()
    values = list(messages(statements(args.rows, partitions=4), args.shape))
    if args.stage == "setup":
        tune_gc()
        return
    if args.contender == "D":
        tune_gc()
        cpu = uvloop.run(run_batch_loop(values, args.rows))
        print(f"{args.shape}-row messages, D: whole path {cpu * 1e6 / args.rows:.1f} us/row")
        return
    if args.stage == "path":
        tune_gc()
        cpu = uvloop.run(run(values, args.rows, mapped=args.contender == "mapper"))
        per_row = cpu * 1e6 / args.rows
        print(f"{args.shape}-row messages, {args.contender}: whole path {per_row:.1f} us/row")
        return
    decoder = CanalDecoder()
    started = time.process_time()
    for offset, (partition, value, _) in enumerate(values):
        decoder.decode(value, Position("t", partition, offset))
    decode = time.process_time() - started
    tune_gc()  # as `esupdater run` does once started
    cpu = uvloop.run(run(values, args.rows, mapped=args.contender == "mapper"))
    per = 1e6 / args.rows
    print(f"{args.shape}-row messages: decode {decode * per:.1f} us/row, "
          f"whole path {cpu * per:.1f} us/row")


if __name__ == "__main__":
    main()

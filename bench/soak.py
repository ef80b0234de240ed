"""`make soak`: a million Canal rows through one esupdater process, verified, with peak RSS.

Produces the backlog first (multi-row flat messages, keyed by primary key), then runs
`esupdater run` as a child process until the group has committed everything, stops it,
and checks the index against the state computed while producing: count, and the content
of a random sample. Peak RSS is the kernel's high-water mark (VmHWM) of the child.
The rows go through an `async def` handler, or with `--mapper` through a `@maps` mapper
(the path with no task per row, whose actions wait in the bulk writer's lanes): each has
its own result file, results/soak.json and results/soak-mapper.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition
from elasticsearch import AsyncElasticsearch

from bench.lib.stack import peak_rss_mb
from esupdater.canal import flat_message
from tools.local_stack import ELASTICSEARCH, KAFKA

#: Where the figures go (the README quotes them), by path: handler or mapper.
RESULTS = {
    "handler": Path(__file__).resolve().parent / "results" / "soak.json",
    "mapper": Path(__file__).resolve().parent / "results" / "soak-mapper.json",
}
TYPES = {
    "id": "bigint(20)", "name": "varchar(64)", "email": "varchar(128)", "city": "varchar(32)",
    "balance": "decimal(12,2)", "vip": "tinyint(1)", "updated_at": "datetime",
}
CITIES = ["Paris", "Lyon", "Berlin", "Madrid", "Oslo", "Porto", "Rome", "Vienna"]

HANDLERS = '''
from esupdater import Change, Context, on

@on("soak.users")
async def sync(change: Change, ctx: Context) -> None:
    if change.is_delete:
        await ctx.delete(index=INDEX, id=change.pk)
    else:
        await ctx.index(index=INDEX, id=change.pk, doc=change.row)
'''

#: The same writes from a mapper: returned, not awaited.
MAPPERS = '''
from esupdater import Change, actions, maps

@maps("soak.users")
def sync(change: Change) -> actions.Action:
    if change.is_delete:
        return actions.delete(index=INDEX, id=change.pk)
    return actions.index(index=INDEX, id=change.pk, doc=change.row)
'''


def _row(user: int, version: int) -> dict[str, str | None]:
    return {
        "id": str(user),
        "name": f"user {user} v{version}",
        "email": f"u{user}@example.com",
        "city": CITIES[(user + version) % len(CITIES)],
        "balance": f"{version * 3}.{user % 100:02d}",
        "vip": str(version % 2),
        "updated_at": f"2026-11-{1 + version % 28:02d} 12:00:00",
    }


async def produce(
    topic: str, rows: int, users: int, per_message: int, partitions: int
) -> dict[str, dict[str, Any]]:
    """Produce `rows` row changes; return the expected final documents by id.

    Like Canal with partitionHash on the primary key: every row of a user lands in the
    same partition, and one message holds rows of one partition only.
    """
    expected: dict[str, dict[str, Any]] = {}
    versions: dict[int, int] = {}
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        sent = 0
        while sent < rows:
            partition = random.randrange(partitions)
            batch = []
            for _ in range(min(per_message, rows - sent)):
                user = random.randrange(users // partitions) * partitions + partition
                version = versions.get(user, -1) + 1
                versions[user] = version
                batch.append(_row(user, version))
            kind = "INSERT" if all(str(r["name"]).endswith(" v0") for r in batch) else "UPDATE"
            value = flat_message("soak", "users", kind, batch, mysql_types=TYPES)
            await producer.send(topic, value, partition=partition)
            for row in batch:
                expected[str(row["id"])] = row
            sent += len(batch)
        await producer.flush()
    finally:
        await producer.stop()
    return expected


async def lag(topic: str, group: str, partitions: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, group_id=group)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        total = 0
        for tp in tps:
            total += ends[tp] - (await consumer.committed(tp) or 0)
        return total
    finally:
        await consumer.stop()


async def verify(index: str, expected: dict[str, dict[str, Any]], sample: int) -> list[str]:
    es = AsyncElasticsearch(ELASTICSEARCH, request_timeout=60)
    problems: list[str] = []
    try:
        await es.indices.refresh(index=index)
        count = (await es.count(index=index))["count"]
        if count != len(expected):
            problems.append(f"count {count} != expected {len(expected)}")
        ids = random.sample(sorted(expected), min(sample, len(expected)))
        docs = await es.mget(index=index, ids=ids)
        for doc in docs["docs"]:
            want = expected[doc["_id"]]
            got = doc.get("_source", {})
            if not doc.get("found") or got.get("name") != want["name"]:
                problems.append(f"{doc['_id']}: got {got.get('name')!r}, want {want['name']!r}")
    finally:
        await es.close()
    return problems


async def main(args: argparse.Namespace) -> int:
    run_id = time.strftime("%Y%m%d%H%M%S")
    topic, group, index = f"soak-{run_id}", f"soak-{run_id}", f"soak-users-{run_id}"
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    await admin.create_topics([NewTopic(topic, args.partitions, 1)])
    started = time.monotonic()
    expected = await produce(topic, args.rows, args.users, args.per_message, args.partitions)
    produced_s = time.monotonic() - started
    print(f"produced {args.rows:,} rows ({len(expected):,} documents) in {produced_s:.0f}s")

    work = Path(tempfile.mkdtemp(prefix="esupdater-soak-"))
    (work / "soak_handlers").mkdir()
    path = "mapper" if args.mapper else "handler"
    code = MAPPERS if args.mapper else HANDLERS
    (work / "soak_handlers" / "__init__.py").write_text(f"INDEX = {index!r}\n" + code)
    env = {
        **os.environ, "PYTHONPATH": str(work),
        "ESUPDATER_KAFKA__BOOTSTRAP_SERVERS": KAFKA, "ESUPDATER_KAFKA__TOPICS": topic,
        "ESUPDATER_KAFKA__GROUP_ID": group, "ESUPDATER_HANDLERS__PACKAGE": "soak_handlers",
        "ESUPDATER_ELASTICSEARCH__HOSTS": ELASTICSEARCH, "ESUPDATER_RUNTIME__DIR": str(work / "rt"),
    }
    log = (work / "esupdater.log").open("w")
    child = subprocess.Popen([sys.executable, "-m", "esupdater", "run"], cwd=work, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
    began, peak, remaining = time.monotonic(), 0.0, -1
    try:
        while True:
            await asyncio.sleep(2)
            peak = max(peak, peak_rss_mb(child.pid))
            remaining = await lag(topic, group, args.partitions)
            elapsed = time.monotonic() - began
            print(f"\r{elapsed:5.0f}s lag {remaining:>9,} records, peak RSS {peak:.0f} MB", end="")
            if remaining == 0 or child.poll() is not None or elapsed > args.timeout:
                break
        consumed_s = time.monotonic() - began
        peak = max(peak, peak_rss_mb(child.pid)) if child.poll() is None else peak
        subprocess.run([sys.executable, "-m", "esupdater", "stop"], cwd=work, env=env, check=False)
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
        log.close()
    print()
    problems = await verify(index, expected, args.sample) if remaining == 0 else ["not caught up"]
    result = {
        "date": time.strftime("%Y-%m-%d"), "path": path, "rows": args.rows,
        "documents": len(expected),
        "rows_per_message": args.per_message, "seconds": round(consumed_s, 1),
        "rows_per_second": round(args.rows / consumed_s), "peak_rss_mb": round(peak),
        "verified_sample": args.sample, "problems": problems[:20], "exit_code": child.returncode,
    }
    print(json.dumps(result, indent=2))
    RESULTS[path].write_text(json.dumps(result, indent=2) + "\n")
    if not args.keep:
        await admin.delete_topics([topic])
        es = AsyncElasticsearch(ELASTICSEARCH)
        await es.indices.delete(index=index, ignore_unavailable=True)
        await es.close()
    await admin.close()
    return 0 if not problems and child.returncode == 0 else 1


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--per-message", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--sample", type=int, default=2_000)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--keep", action="store_true", help="keep the topic and index")
    parser.add_argument("--mapper", action="store_true",
                        help="a @maps mapper instead of an async def handler")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))

"""`make bench`: ceilings, two baselines and esupdater, on one machine in one run.

Steps: produce the dataset twice (1-row and 10-row Canal messages, same rows) as a backlog;
ceiling A (raw consume) per topic; ceiling B (raw bulk); baseline C (per-message, the seed's
shape: bench/lib/baseline.py); then per message shape `--pairs` back-to-back sets of
esupdater (default configuration, an `async def` handler), esupdater with a mapper (the same
writes, no task per row) and contender D (the plain batch loop a user would write:
bench/lib/batch_loop.py), each with its own process, group and index on the same backlog:
rows/s, own and Elasticsearch CPU per 1,000 rows, bulk requests, peak RSS, each esupdater
compared with D pair by pair; esupdater's other variants (event loop x serializer); two
esupdater processes in one group (scale-out); latency at half the best rate (the handler,
then the mapper at half its own, then D at the handler's); freshness through MariaDB and
Canal, once per `--freshness-refresh` value (the index's refresh_interval: `default`,
Elasticsearch's 1 s, and 500ms unless told), each split into commit -> Kafka, Kafka ->
acknowledged and acknowledged -> searchable; backfill and verify of a MariaDB
table; optionally (`--profile P.json`) py-spy profiles of four more runs, esupdater with a
handler and with a mapper on the 1-row and the 10-row backlog, each in its own speedscope
file (P-handler-1.json, P-mapper-1.json, P-handler-10.json, P-mapper-10.json) and
summarised by bench/hotspots.py under `hotspots` in results.json, one entry per run.
Every topic, index, consumer group and table it creates carries the run id; all are deleted
at the end, except a freshness table whose rows did not all arrive (dropping it could stop
Canal).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import uvloop
from rich.console import Console

from bench.hotspots import summarise
from bench.lib import baseline, ceilings, freshness, latency, table_commands
from bench.lib.cpu import elasticsearch_pid
from bench.lib.dataset import Census, produce_backlog
from bench.lib.e2e import BATCH, PAIRS, SCALE_OUT, VARIANTS, RunResult, Variant, run_esupdater
from bench.lib.machine import describe, source_digest, source_state
from bench.lib.report import Results, print_table, write_json
from bench.lib.stack import RAW_DATES_MAPPING, Stack

RESULTS = Path(__file__).resolve().parent / "results" / "results.json"
SHAPES = (1, 10)  # rows per Canal message
#: The profiled esupdater runs (--profile): with a handler and with a mapper (bench/child.py).
PROFILED = (("handler", False), ("mapper", True))
console = Console()
if not console.is_terminal:  # `make bench | tee`: do not squeeze the table into 80 columns
    console = Console(width=190)


def variants(matrix: str) -> list[Variant]:
    """esupdater's configurations besides the default one (which runs in the pairs):
    `core`: one factor changed at a time, 10-row messages; `full`: every mix, both shapes;
    `default`: none."""
    if matrix == "default":
        return []
    if matrix == "core":
        return [Variant(10, loop="asyncio"), Variant(10, orjson=False)]
    return [Variant(shape, loop=loop, orjson=orjson) for shape in SHAPES
            for loop, orjson in (("asyncio", True), ("uvloop", False), ("asyncio", False))]


class Bench:
    """One run: the stack, the backlog topics, and the results as they come in."""

    def __init__(self, args: argparse.Namespace, stack: Stack, results: Results) -> None:
        self.args = args
        self.stack = stack
        self.results = results
        self.topics: dict[int, str] = {}
        self.census = Census()
        self.es_pid = elasticsearch_pid()
        if self.es_pid is None:
            results.notes.append("Elasticsearch's process was not found: its CPU is not "
                                 "measured (0 in the figures).")

    async def backlog(self) -> None:
        for shape in SHAPES:
            self.topics[shape] = await self.stack.create_topic(f"{shape}row",
                                                               self.args.partitions)
            self.census, seconds = await produce_backlog(
                self.topics[shape], self.args.rows, partitions=self.args.partitions,
                rows_per_message=shape)
            console.print(f"produced {self.args.rows:,} rows as {shape}-row messages "
                          f"in {seconds:.1f}s")
        self.results.dataset = {**asdict(self.census),
                                "live_documents": self.census.live_documents,
                                "rows_per_message": list(SHAPES)}

    async def ceilings_and_baseline(self) -> None:
        args, stack, results = self.args, self.stack, self.results
        for shape in SHAPES:
            results.consume[shape] = await ceilings.consume_rate(
                self.topics[shape], args.partitions, args.rows)
            console.print(f"A {shape}-row: {results.consume[shape].rows_per_second:,.0f} rows/s")
        for attempt in range(args.ceiling_runs):  # a ceiling is the best of its runs
            index = await stack.create_index(f"ceiling-b{attempt}")
            actions = ceilings.build_actions(index, args.rows, args.partitions)
            bulk = await ceilings.bulk_rate(actions, es_pid=self.es_pid)
            del actions
            bulk.bulk_requests, bulk.bulk_actions = await stack.bulk_stats(index)
            await self.check_documents(index, "B")
            console.print(f"B run {attempt + 1}: {bulk.rows_per_second:,.0f} rows/s")
            if results.bulk is None or bulk.rows_per_second > results.bulk.rows_per_second:
                results.bulk = bulk
        if args.baseline_seconds > 0:
            index = await stack.create_index("baseline-c")
            results.seed = await baseline.seed_rate(
                self.topics[1], stack.name("group-c"), index,
                max_rows=args.baseline_rows, max_seconds=args.baseline_seconds)
            await stack.drop_index(index)
            console.print(f"C: {results.seed.rows_per_second:,.0f} rows/s")

    async def run(self, variant: Variant, part: str, pair: int | None = None) -> RunResult:
        """One contender over the backlog of its message shape, its documents checked."""
        kind = ("d" if variant.program == BATCH else f"{variant.loop}-{int(variant.orjson)}"
                + ("-map" if variant.mapper else ""))
        index = await self.stack.create_index(
            f"e2e-{part}-{variant.rows_per_message}-{kind}-x{variant.processes}"
            + ("" if pair is None else f"-pair{pair}"),
            mappings=RAW_DATES_MAPPING if variant.program == BATCH else None)
        run = await run_esupdater(self.stack, variant, self.topics[variant.rows_per_message],
                                  self.args.partitions, index=index, es_pid=self.es_pid,
                                  rows=self.args.rows)
        run.part, run.pair = part, pair
        await self.check_documents(index, variant.label, run)
        self.results.runs.append(run)
        console.print(f"{variant.label}{'' if pair is None else f' (pair {pair + 1})'}: "
                      f"{run.rows_per_second:,.0f} rows/s, CPU {run.cpu_per_1k_rows:.3f} "
                      f"s/1k rows, ES CPU {run.es_cpu_per_1k_rows:.3f} s/1k rows, "
                      f"{run.bulk_requests:,} bulk requests, peak RSS {run.peak_rss_mb:.0f} MB")
        return run

    async def pairs(self) -> None:
        """esupdater's handler, esupdater's mapper and D back to back (one "pair"), the order
        rotating and reversed every other pair so that over the pairs each comes first, in
        the middle and last, early and late: drift favours none."""
        for shape in SHAPES:
            for pair in range(self.args.pairs):
                order = _rotated([Variant(shape), Variant(shape, mapper=True),
                                  Variant(shape, program=BATCH)], pair)
                for variant in order:
                    await self.run(variant, PAIRS, pair)

    async def check_documents(self, index: str, what: str, run: RunResult | None = None) -> None:
        """Every contender must leave the same documents behind; a mismatch is noted."""
        count = await self.stack.count(index)
        if run is not None:
            run.documents = count
        if count != self.census.live_documents:
            self.results.notes.append(f"{what}: {count:,} documents in the index, "
                                      f"expected {self.census.live_documents:,}")
        await self.stack.drop_index(index)


def profile_path(base: Path, kind: str, shape: int) -> Path:
    """One profiled run's speedscope file, beside the one --profile named: p.json ->
    p-handler-1.json (each run needs its own file; py-spy overwrites)."""
    return base.with_name(f"{base.stem}-{kind}-{shape}{base.suffix or '.json'}")


async def profile(bench: Bench, base: Path) -> dict[str, Any]:
    """py-spy over esupdater with a handler and with a mapper on each backlog, each run on its
    own index; their summaries keyed like `contenders` (handler_1_row_msgs, ...). Not timed:
    a profiled run is slower, and none of the figures come from it."""
    base.parent.mkdir(parents=True, exist_ok=True)  # py-spy does not create it
    found: dict[str, Any] = {}
    for shape in SHAPES:
        for kind, mapper in PROFILED:
            path = profile_path(base, kind, shape)
            index = await bench.stack.create_index(f"profile-{kind}-{shape}")
            await run_esupdater(bench.stack, Variant(shape, mapper=mapper), bench.topics[shape],
                                bench.args.partitions, index=index, profile=path)
            await bench.stack.drop_index(index)
            try:
                spots = summarise(path)
            except (OSError, ValueError, KeyError) as error:  # keep the run's other figures
                bench.results.notes.append(
                    f"profile {kind}, {shape}-row msgs: {path} not summarised ({error!r})")
                continue
            found[f"{kind}_{shape}_row_msgs"] = {"profile": path.name, **spots.as_dict()}
            parts = ", ".join(f"{name} {percent:.0f} %" for name, percent in spots.parts)
            console.print(f"profile {kind}, {shape}-row msgs: {path} "
                          f"({spots.busy_seconds:.1f} busy s; {parts})")
    return found


def _rotated(contenders: list[Variant], pair: int) -> list[Variant]:
    """The contenders' order for pair `pair`: rotated every two pairs, reversed every other
    pair. With three, over six pairs: ABC, CBA, BCA, ACB, CAB, BAC (each twice in each place,
    each before each other one three times)."""
    turn = (pair // 2) % len(contenders)
    order = contenders[turn:] + contenders[:turn]
    return order if pair % 2 == 0 else order[::-1]


async def main(args: argparse.Namespace) -> Results:
    started = time.monotonic()
    stack = Stack()
    await stack.start()
    try:
        assert stack.es is not None
        results = Results(rows=args.rows, partitions=args.partitions, dataset={},
                          machine=await describe(stack.es), pairs=args.pairs,
                          source=source_state())
        bench = Bench(args, stack, results)
        await bench.backlog()
        await bench.ceilings_and_baseline()
        await bench.pairs()
        for variant in variants(args.matrix):
            await bench.run(variant, VARIANTS)
        if args.scale_processes > 1:  # one process, then several, back to back
            await bench.run(Variant(args.scale_shape), SCALE_OUT)
            await bench.run(Variant(args.scale_shape, processes=args.scale_processes), SCALE_OUT)

        if args.latency_seconds > 0:
            shape = max(results.shapes(), key=results.default_rate)
            results.latency = await latency.measure(
                stack, Variant(shape), results.default_rate(shape) / 2, args.latency_seconds,
                partitions=args.partitions, warmup=args.latency_warmup, es_pid=bench.es_pid)
            console.print(f"latency p99 {results.latency.p99_ms:.0f} ms")
            results.latency_mapper = await latency.measure(
                stack, Variant(shape, mapper=True), results.mapper_rate(shape) / 2,
                args.latency_seconds, partitions=args.partitions, warmup=args.latency_warmup,
                es_pid=bench.es_pid)
            console.print(f"latency with a mapper p99 {results.latency_mapper.p99_ms:.0f} ms")
            # D at the handler's rate: a tail both share is Elasticsearch's, not esupdater's.
            results.latency_d = await latency.measure(
                stack, Variant(shape, program=BATCH), results.default_rate(shape) / 2,
                args.latency_seconds, partitions=args.partitions, warmup=args.latency_warmup,
                es_pid=bench.es_pid)
            console.print(f"latency of D p99 {results.latency_d.p99_ms:.0f} ms")
        for refresh in [] if args.skip_freshness else args.freshness_refresh:
            fresh = await freshness.measure(
                stack, rate=args.freshness_rate, seconds=args.freshness_seconds,
                refresh=refresh, es_pid=bench.es_pid)
            results.freshness.append(fresh)
            console.print(f"freshness, refresh_interval {fresh.refresh_label}: p99 "
                          f"{fresh.p99_ms:.0f} ms ({fresh.stages_line()})")
            if not fresh.dropped:
                results.notes.append(
                    f"freshness: table shop.{fresh.table} kept (not every row arrived; "
                    "dropping it before Canal read its rows would stop Canal)")
        if not args.skip_backfill:
            results.tables = await table_commands.measure(stack, args.backfill_rows)
            console.print(f"backfill {results.tables.backfill_rows_per_second:,.0f} rows/s")

        if args.profile is not None:
            results.hotspots = await profile(bench, args.profile)
        results.notes += _notes(args)
        results.seconds = time.monotonic() - started
        # The stack is shared: a busy machine during the run explains noisy figures.
        results.machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        results.source["digest_at_end"] = source_digest()
        if results.source["digest_at_end"] != results.source["digest_at_start"]:
            results.notes.insert(0, "esupdater's source (src/esupdater) changed during this "
                                 "run: its runs measured different code; run again.")
        return results
    finally:
        await stack.close()


def _notes(args: argparse.Namespace) -> list[str]:
    notes = [
        "pairs: esupdater with an `async def` handler (esupdater_vs_D), esupdater with a "
        "mapper doing the same writes (Registry.add_mapper, no task per row: "
        "esupdater_mapper_vs_D) and D, back to back in an order rotating from pair to pair; "
        "each esupdater's ratios are to the D run of its pair.",
        "rows/s of esupdater and D: backlog rows / (first handled row -> group's committed "
        "offsets at the end offsets); includes up to one commit interval (esupdater: "
        "commit_interval_ms, 1 s; D commits after each batch); process start and group join "
        "are apart (startup_seconds).",
        "CPU s/1k rows: utime+stime from /proc/<pid>/stat over that same window, sampled "
        "every 50 ms; the contender's own process(es), and Elasticsearch's JVM (the stack is "
        "shared: anything else sent to Elasticsearch meanwhile is counted too; hence medians "
        f"of {args.pairs} pairs, run back to back in rotating order). B: the "
        "benchmark's own process while it bulk-writes (the documents prebuilt).",
        "other CPU: the share of the machine's cores over the window used by neither the "
        "contender, Elasticsearch nor the Kafka broker (this benchmark's own polling, and any "
        "other work on the machine: a high figure means a contended run); Kafka's CPU per "
        "1k rows is in results.json.",
        "bulk reqs and actions/req: Elasticsearch's index stats (bulk.total_operations; "
        "index_total + delete_total; one shard, so one shard-level bulk per request); "
        "esupdater's own bulk_requests counter and D's and B's own counts are in results.json "
        "(own_bulk_requests).",
        "D: aiokafka getmany -> orjson.loads -> index the row as Canal sent it (_id the "
        "primary key), delete for DELETE -> one async_bulk of the batch (chunks of 500) -> "
        "commit; uvloop and the client's orjson serializer like esupdater's default; its "
        "index reads MySQL's 'yyyy-MM-dd HH:mm:ss' dates (no typing in D).",
        "A: per message shape, rows carried by the records read; B: same documents, "
        "chunk_size/max_chunk_bytes as esupdater's defaults, max_requests_in_flight streams, "
        f"best of {args.ceiling_runs} runs.",
        f"C: the first {args.baseline_rows:,} rows (or {args.baseline_seconds:g}s) of the 1-row "
        "topic, one handler call, one ES request and one commit per message.",
        "Backlog indices: refresh_interval -1, 1 shard, 0 replicas, the same strict mapping. "
        "Freshness: one measurement per refresh_interval ("
        + ", ".join(args.freshness_refresh) + "; `default` leaves it unset: Elasticsearch's "
        "1 s), each with its own table, index and group.",
        "freshness stages, per row: commit -> Kafka (Canal: the Kafka record's CreateTime, "
        "set by Canal's producer as it takes the record), Kafka -> acknowledged (Canal's "
        "producer batching, the broker, esupdater's fetch and bulk write), acknowledged -> "
        "searchable (the refresh, plus up to one 20 ms poll and a search); a row's stages add "
        "up to its total, the stages' percentiles (over the rows with both ends) do not. "
        "commit -> Kafka can come out below 0 for a few rows: the commit time is when the "
        "benchmark saw its INSERT return, which Canal can beat.",
        "latency: each index like the backlog's but refreshing as a live one does (the "
        "default 1 s: with -1 the window meets Elasticsearch writing a heap-sized indexing "
        "buffer on a bulk thread, ~0.5 s without indexing); the paced producer "
        "encodes its messages before the clock starts and stamps each as it sends it; D's "
        "rows count from their record's time to the end of their batch's async_bulk.",
        f"scale-out: one esupdater process, then {args.scale_processes} in one group, back "
        f"to back on the {args.scale_shape}-row backlog; steady = from the moment every "
        "process is a member and has handled a row (the rebalance as the second joins is "
        "before it).",
        "backfill/verify: the `esupdater` CLI on a quiet_ table (Canal leaves it out) with "
        "a versioned mirror handler; backfill rows/s from its own summary line, verify from "
        "its wall time (Python start-up included).",
    ]
    if args.profile is not None:
        notes.append(
            "hotspots: py-spy (200 samples/s) over four more runs, not part of the figures "
            "above: esupdater with a handler and with a mapper, 1-row and 10-row msgs, one "
            "speedscope file each; percentages of the busy samples, start-up left out; "
            "self_percent_by_part groups all self time as the README's \"Where the CPU goes\" "
            "table (bench/hotspots.py, PARTS).")
    return notes


def refresh_intervals(text: str) -> list[str]:
    """--freshness-refresh's values in order, each once: refused here rather than by
    Elasticsearch after the rest of the run (-1 never refreshes: the rows would never be
    searchable, and their table would have to be kept)."""
    values: list[str] = []
    for part in text.split(","):
        value = part.strip()
        if not value or value in values:
            continue
        if value != freshness.DEFAULT_REFRESH and not freshness.REFRESH_VALUE.fullmatch(value):
            raise argparse.ArgumentTypeError(
                f"{value!r}: `{freshness.DEFAULT_REFRESH}` or a positive whole time value "
                "such as 500ms or 2s")
        values.append(value)
    if not values:
        raise argparse.ArgumentTypeError("no refresh interval given (--skip-freshness skips "
                                         "freshness)")
    return values


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000,
                        help="backlog size in rows (default 200,000; --full: 1,000,000)")
    parser.add_argument("--full", action="store_true", help="a 1,000,000-row backlog")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=3,
                        help="esupdater (handler), esupdater (mapper) and D sets per message "
                        "shape; ratios to D are their medians")
    parser.add_argument("--matrix", choices=("default", "core", "full"), default="core",
                        help="esupdater's variants besides the default: none (default), one "
                        "factor at a time on 10-row msgs (core), all mixes (full)")
    parser.add_argument("--ceiling-runs", type=int, default=2,
                        help="runs of ceiling B; the best counts (the stack is shared)")
    parser.add_argument("--baseline-rows", type=int, default=3_000)
    parser.add_argument("--baseline-seconds", type=float, default=20.0, help="0 to skip C")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="0 to skip")
    parser.add_argument("--latency-warmup", type=float, default=3.0)
    parser.add_argument("--scale-processes", type=int, default=2,
                        help="esupdater processes in one group for the scale-out run (<2: skip)")
    parser.add_argument("--scale-shape", type=int, choices=SHAPES, default=10)
    parser.add_argument("--skip-scale-out", action="store_true")
    parser.add_argument("--skip-freshness", action="store_true")
    parser.add_argument("--freshness-refresh", type=refresh_intervals,
                        default=f"{freshness.DEFAULT_REFRESH},500ms", metavar="LIST",
                        help="the freshness index's refresh_interval, one measurement per "
                        "comma-separated value: `default` (left unset: Elasticsearch's 1 s) "
                        "or a time value such as 500ms (default: default,500ms)")
    parser.add_argument("--freshness-rate", type=float, default=500.0, help="rows/s inserted")
    parser.add_argument("--freshness-seconds", type=float, default=30.0)
    parser.add_argument("--skip-backfill", action="store_true", help="no backfill/verify")
    parser.add_argument("--backfill-rows", type=int, default=100_000)
    parser.add_argument("--profile", type=Path, default=None, metavar="P.json",
                        help="also profile esupdater with py-spy: a handler and a mapper on "
                        "1-row and 10-row msgs, four more runs, each to its own speedscope file "
                        "beside this path (P-handler-1.json, P-mapper-1.json, ...)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.full:
        args.rows = 1_000_000
    if args.profile is not None:  # py-spy runs in the child's own working directory
        args.profile = args.profile.resolve()
    if args.skip_scale_out:
        args.scale_processes = 0
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    return args


def run(argv: list[str] | None = None) -> int:
    args = parse(argv)
    results = uvloop.run(main(args))
    print_table(results, console)
    write_json(results, args.output)
    console.print(f"written {args.output} ({results.seconds / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(run())

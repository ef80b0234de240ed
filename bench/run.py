"""`make bench`: ceilings, a baseline shaped like the seed (the PHP tool esupdater replaces:
bench/lib/baseline.py) and esupdater, on one machine in one run.

Steps: produce the dataset twice (1-row and 10-row Canal messages, same rows) as a backlog;
ceiling A (raw consume) per topic; ceiling B (raw bulk); baseline C (per-message, seed shape);
esupdater per variant (message shape x event loop x serializer); latency at half the best
rate; optionally a py-spy profile of the default 10-row run. Everything created (topics,
indices, groups' topics) carries the run id and is deleted at the end.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import uvloop
from rich.console import Console

from bench.hotspots import summarise
from bench.lib import baseline, ceilings, latency
from bench.lib.dataset import Census, produce_backlog
from bench.lib.e2e import RunResult, Variant, run_esupdater
from bench.lib.machine import describe
from bench.lib.report import Results, print_table, write_json
from bench.lib.stack import Stack

RESULTS = Path(__file__).resolve().parent / "results" / "results.json"
SHAPES = (1, 10)  # rows per Canal message
console = Console()
if not console.is_terminal:  # `make bench | tee`: do not squeeze the table into 80 columns
    console = Console(width=150)


def variants(matrix: str) -> list[Variant]:
    """`core`: the default config plus one factor changed at a time; `full`: every mix;
    `default`: the default config only (quick runs, e.g. RSS with --full)."""
    found = []
    for shape in SHAPES:
        found.append(Variant(shape))
        if matrix == "default":
            continue
        found.append(Variant(shape, loop="asyncio"))
        found.append(Variant(shape, orjson=False))
        if matrix == "full":
            found.append(Variant(shape, loop="asyncio", orjson=False))
    return found


async def main(args: argparse.Namespace) -> Results:
    stack = Stack()
    await stack.start()
    try:
        assert stack.es is not None
        results = Results(rows=args.rows, partitions=args.partitions, dataset={},
                          machine=await describe(stack.es))
        topics: dict[int, str] = {}
        census = Census()
        for shape in SHAPES:
            topics[shape] = await stack.create_topic(f"{shape}row", args.partitions)
            census, seconds = await produce_backlog(
                topics[shape], args.rows, partitions=args.partitions, rows_per_message=shape)
            console.print(f"produced {args.rows:,} rows as {shape}-row messages in {seconds:.1f}s")
        results.dataset = {**asdict(census), "live_documents": census.live_documents,
                           "rows_per_message": list(SHAPES)}

        for shape in SHAPES:
            results.consume[shape] = await ceilings.consume_rate(topics[shape], args.partitions,
                                                                 args.rows)
            console.print(f"A {shape}-row: {results.consume[shape].rows_per_second:,.0f} rows/s")
        for attempt in range(args.ceiling_runs):  # a ceiling is the best of its runs
            index = await stack.create_index(f"ceiling-b{attempt}")
            actions = ceilings.build_actions(index, args.rows, args.partitions)
            bulk = await ceilings.bulk_rate(actions)
            del actions
            await _check_documents(stack, index, census, results, "B")
            console.print(f"B run {attempt + 1}: {bulk.rows_per_second:,.0f} rows/s")
            if results.bulk is None or bulk.rows_per_second > results.bulk.rows_per_second:
                results.bulk = bulk

        index = await stack.create_index("baseline-c")
        results.seed = await baseline.seed_rate(
            topics[1], stack.name("group-c"), index,
            max_rows=args.baseline_rows, max_seconds=args.baseline_seconds)
        await stack.drop_index(index)
        console.print(f"C: {results.seed.rows_per_second:,.0f} rows/s")

        for variant in variants(args.matrix):
            index = await stack.create_index(
                f"e2e-{variant.rows_per_message}-{variant.loop}-{int(variant.orjson)}")
            run = await run_esupdater(stack, variant, topics[variant.rows_per_message],
                                      args.partitions, index=index)
            await _check_documents(stack, index, census, results, variant.label, run)
            results.runs.append(run)
            console.print(f"{variant.label}: {run.rows_per_second:,.0f} rows/s, "
                          f"peak RSS {run.peak_rss_mb:.0f} MB")

        if args.latency_seconds > 0:
            best = max(results.runs, key=lambda r: r.rows_per_second)
            shape = best.variant.rows_per_message
            results.latency = await latency.measure(
                stack, Variant(shape), best.rows_per_second / 2, args.latency_seconds,
                partitions=args.partitions, warmup=args.latency_warmup)

        if args.profile is not None:
            index = await stack.create_index("profile")
            await run_esupdater(stack, Variant(10), topics[10], args.partitions, index=index,
                                profile=args.profile)
            await stack.drop_index(index)
            results.hotspots = {"profile": str(args.profile), **summarise(args.profile).as_dict()}
        results.notes += _notes(args)
        return results
    finally:
        await stack.close()


async def _check_documents(
    stack: Stack, index: str, census: Census, results: Results, what: str,
    run: RunResult | None = None,
) -> None:
    """Every variant must leave the same documents behind; a mismatch is noted, not hidden."""
    count = await stack.count(index)
    if run is not None:
        run.documents = count
    if count != census.live_documents:
        results.notes.append(f"{what}: {count:,} documents in the index, "
                             f"expected {census.live_documents:,}")
    await stack.drop_index(index)


def _notes(args: argparse.Namespace) -> list[str]:
    return [
        "esupdater rows/s: backlog rows / (first handler call -> group's committed offsets at "
        "the end offsets); includes up to commit_interval_ms (1 s) of commit delay; the "
        "process start and group join are reported apart (startup_seconds).",
        "A: per message shape, rows carried by the records read; B: same documents, "
        "chunk_size/max_chunk_bytes as esupdater's defaults, max_requests_in_flight streams, "
        f"best of {args.ceiling_runs} runs.",
        f"C: the first {args.baseline_rows:,} rows (or {args.baseline_seconds:g}s) of the 1-row "
        "topic, one handler call, one ES request and one commit per message.",
        "Variants marked by target are the default configuration (uvloop + orjson).",
        "All indices: refresh_interval -1, 1 shard, 0 replicas, the same strict mapping.",
    ]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000,
                        help="backlog size in rows (default 200,000; --full: 1,000,000)")
    parser.add_argument("--full", action="store_true", help="a 1,000,000-row backlog")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--matrix", choices=("default", "core", "full"), default="core",
                        help="default: uvloop+orjson only; core: default + one factor at a "
                        "time; full: all mixes")
    parser.add_argument("--ceiling-runs", type=int, default=2,
                        help="runs of ceiling B; the best counts (the stack is shared)")
    parser.add_argument("--baseline-rows", type=int, default=3_000)
    parser.add_argument("--baseline-seconds", type=float, default=20.0)
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="0 to skip")
    parser.add_argument("--latency-warmup", type=float, default=3.0)
    parser.add_argument("--profile", type=Path, default=None,
                        help="also run py-spy on the default 10-row run; speedscope output here")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.full:
        args.rows = 1_000_000
    return args


def run(argv: list[str] | None = None) -> int:
    args = parse(argv)
    results = uvloop.run(main(args))
    print_table(results, console)
    write_json(results, args.output)
    console.print(f"written {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run())

"""The benchmark's tables (rich) and `bench/results/results.json`, targets marked met or missed.

Every comparison is a ratio of figures taken in the same run. esupdater against contender D
(bench/lib/batch_loop.py) is run as `pairs` back-to-back pairs per message shape, each pair
with esupdater twice: an `async def` handler (`esupdater_vs_D`, the targets) and a mapper
doing the same writes (`esupdater_mapper_vs_D`, the same targets); each ratio is computed per
pair and the median is the figure (the stack is shared and noisy, and Elasticsearch's CPU
most of all). Freshness is one measurement per refresh_interval asked for, each with a target
of its own that names its refresh: with Elasticsearch's default of 1 s no pipeline meets a
p99 of 1 s, so the stages and the other intervals show what the pipeline and the refresh
each take.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.lib.ceilings import Rate
from bench.lib.e2e import BATCH, ESUPDATER, PAIRS, SCALE_OUT, VARIANTS, RunResult
from bench.lib.freshness import DEFAULT_REFRESH, Freshness
from bench.lib.freshness import TARGET_P99_MS as TARGET_FRESH_P99_MS
from bench.lib.latency import Latency
from bench.lib.table_commands import TableFigures

#: The issue's targets (for the benchmark, not for tests).
TARGET_CEILING_RATIO = 0.85  # a stretch goal: B is Elasticsearch alone with both cores
TARGET_BASELINE_RATIO = 10.0
TARGET_P99_MS = 250.0
TARGET_RSS_MB = 200.0
TARGET_RSS_BACKLOG = 1_000_000
#: Against contender D: at least this much faster, at most this much more CPU per row, and no
#: more of Elasticsearch's CPU per row.
TARGET_D_RATE = 1.2
TARGET_D_CPU = 1.5
TARGET_D_ES_CPU = 1.0


@dataclass(frozen=True)
class RatioSpec:
    key: str
    name: str
    figure: Callable[[RunResult], float]
    target: float
    at_least: bool  # the ratio must be >= target (else <=)

    def met(self, value: float) -> bool:
        return value >= self.target if self.at_least else value <= self.target

    @property
    def wanted(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.target:g}"


RATIOS = (
    RatioSpec("rows_per_second", "rows/s", lambda r: r.rows_per_second, TARGET_D_RATE, True),
    RatioSpec("cpu_per_row", "CPU per row", lambda r: r.cpu_per_1k_rows, TARGET_D_CPU, False),
    RatioSpec("es_cpu_per_row", "Elasticsearch CPU per row", lambda r: r.es_cpu_per_1k_rows,
              TARGET_D_ES_CPU, False),
)


#: The pairs' contenders: (name in results.json, program, with a mapper).
CONTENDERS = (("esupdater", ESUPDATER, False), ("esupdater_mapper", ESUPDATER, True),
              ("D", BATCH, False))


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


@dataclass
class Results:
    rows: int
    partitions: int
    dataset: dict[str, Any]
    machine: dict[str, Any]
    pairs: int = 0
    consume: dict[int, Rate] = field(default_factory=dict)  # A, by rows per message
    bulk: Rate | None = None  # B
    seed: Rate | None = None  # C
    runs: list[RunResult] = field(default_factory=list)
    latency: Latency | None = None
    latency_mapper: Latency | None = None  # the same, esupdater with a mapper
    #: D at the handler's rate: what Elasticsearch's own pauses cost any client at that load.
    latency_d: Latency | None = None
    freshness: list[Freshness] = field(default_factory=list)  # one per refresh_interval
    tables: TableFigures | None = None
    hotspots: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    source: dict[str, Any] = field(default_factory=dict)  # the esupdater code measured

    # -- what the runs give ---------------------------------------------------------------

    def shapes(self) -> list[int]:
        return sorted({run.variant.rows_per_message for run in self.runs if run.part == PAIRS})

    def paired(self, shape: int, program: str, mapper: bool = False) -> list[RunResult]:
        """The pairs' runs of a program (esupdater: with a handler, or with a mapper)."""
        found = [r for r in self.runs if r.part == PAIRS and r.variant.program == program
                 and r.variant.rows_per_message == shape and r.variant.mapper == mapper]
        return sorted(found, key=lambda r: r.pair or 0)

    def defaults(self, shape: int) -> list[RunResult]:
        """esupdater's default configuration in the pairs."""
        return [r for r in self.paired(shape, ESUPDATER) if r.variant.is_default]

    def default_rate(self, shape: int) -> float:
        """esupdater's rows/s with the default configuration: the median of its runs."""
        return _median([r.rows_per_second for r in self.defaults(shape)])

    def mapper_rate(self, shape: int) -> float:
        """esupdater's rows/s with a mapper in the pairs: the median of its runs."""
        return _median([r.rows_per_second for r in self.paired(shape, ESUPDATER, mapper=True)])

    def ceiling(self, rows_per_message: int) -> float:
        """min(A, B) for this message shape."""
        a = self.consume[rows_per_message].rows_per_second
        return min(a, self.bulk.rows_per_second) if self.bulk else a

    def ratios(self, shape: int, spec: RatioSpec, mapper: bool = False) -> list[float]:
        """esupdater's figure (with a handler, or with a mapper) over D's, per pair."""
        mine = {r.pair: r for r in self.paired(shape, ESUPDATER, mapper)}
        found = []
        for theirs in self.paired(shape, BATCH):
            ours = mine.get(theirs.pair)
            if ours is not None and spec.figure(theirs):
                found.append(spec.figure(ours) / spec.figure(theirs))
        return found

    def scale_out(self) -> tuple[RunResult, RunResult] | None:
        """(one process, several processes), run back to back."""
        runs = [r for r in self.runs if r.part == SCALE_OUT]
        one = [r for r in runs if r.variant.processes == 1]
        more = [r for r in runs if r.variant.processes > 1]
        return (one[0], more[0]) if one and more else None

    # -- targets --------------------------------------------------------------------------

    def targets(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for shape in self.shapes():
            for spec in RATIOS:
                ratios = self.ratios(shape, spec)
                if ratios:
                    value = _median(ratios)
                    found.append(_target(
                        f"esupdater / D, {spec.name} {spec.wanted}, {shape}-row msgs",
                        round(value, 2), spec.met(value),
                        f"median of {len(ratios)} pairs: "
                        + ", ".join(f"{r:.2f}" for r in ratios)))
        for shape in sorted(self.consume):
            rate = self.default_rate(shape)
            if math.isnan(rate):
                continue
            if self.seed:
                ratio = rate / self.seed.rows_per_second
                found.append(_target(f"esupdater >= {TARGET_BASELINE_RATIO:g} x C, {shape}-row "
                                     "msgs", round(ratio, 1), ratio >= TARGET_BASELINE_RATIO))
        beside = (f"; D at {self.latency_d.achieved_rate:,.0f} rows/s: p99 "
                  f"{self.latency_d.p99_ms:.0f} ms" if self.latency_d else "")
        for lat, path in ((self.latency, ""), (self.latency_mapper, ", mapper")):
            if lat:
                found.append(_target(f"p99 append -> ack <= {TARGET_P99_MS:g} ms at half load"
                                     + path, round(lat.p99_ms, 1), lat.p99_ms <= TARGET_P99_MS,
                                     f"{lat.run.variant.label} at {lat.achieved_rate:,.0f} rows/s, "
                                     "index refreshing each 1 s" + beside))
        for fresh in self.freshness:
            default = fresh.refresh == DEFAULT_REFRESH
            found.append(_target(
                f"freshness p99 (MariaDB commit -> searchable) <= {TARGET_FRESH_P99_MS:g} ms"
                + ("" if default else f" with refresh_interval {fresh.refresh}"),
                round(fresh.p99_ms, 1), fresh.p99_ms <= TARGET_FRESH_P99_MS,
                f"refresh_interval {'1 s (the default)' if default else fresh.refresh}; "
                f"commit -> acknowledged p99 {fresh.ack_p99_ms:.0f} ms; "
                + fresh.stages_line()))
        for shape in sorted(self.consume):
            rate = self.default_rate(shape)
            if math.isnan(rate):
                continue
            ratio = rate / self.ceiling(shape)
            found.append(_target(f"stretch: esupdater >= {TARGET_CEILING_RATIO} x min(A, B), "
                                 f"{shape}-row msgs", round(ratio, 2),
                                 ratio >= TARGET_CEILING_RATIO))
        defaults = [run for run in self.runs if run.variant.is_default]
        if defaults:
            peak = max(run.peak_rss_mb for run in defaults)
            note = "" if self.rows >= TARGET_RSS_BACKLOG else (
                f"measured with a {self.rows:,}-row backlog; the target is for "
                f"{TARGET_RSS_BACKLOG:,}: `make soak`, or run with --full")
            found.append(_target(
                f"peak RSS <= {TARGET_RSS_MB:g} MB, {TARGET_RSS_BACKLOG:,}-row backlog",
                round(peak, 1), peak <= TARGET_RSS_MB, note))
        return found

    # -- results.json ---------------------------------------------------------------------

    def contenders(self) -> dict[str, Any]:
        """Per message shape, the median figures of esupdater (default, with a handler),
        esupdater with a mapper and D over the pairs."""
        found: dict[str, Any] = {}
        for shape in self.shapes():
            for name, program, mapper in CONTENDERS:
                runs = self.paired(shape, program, mapper)
                if runs:
                    found[f"{name}_{shape}_row_msgs"] = _medians(runs)
        return found

    def ratio_figures(self, mapper: bool = False) -> dict[str, Any]:
        """esupdater (with a handler, or with a mapper) over D, per message shape."""
        found: dict[str, Any] = {}
        for shape in self.shapes():
            for spec in RATIOS:
                ratios = self.ratios(shape, spec, mapper)
                found[f"{spec.key}_{shape}_row_msgs"] = {
                    "median": round(_median(ratios), 3),
                    "per_pair": [round(r, 3) for r in ratios],
                    "target": spec.wanted,
                    "met": spec.met(_median(ratios)) if ratios else None,
                }
        return found

    def scale_out_figures(self) -> dict[str, Any] | None:
        runs = self.scale_out()
        if runs is None:
            return None
        one, two = runs
        shape = two.variant.rows_per_message
        if not two.steady_seconds:  # one process did all the work before the other joined
            return {"rows_per_message": shape, "processes": two.variant.processes,
                    "one_process": _medians([one]),
                    "rows_per_second": round(two.rows_per_second, 1), "steady": None,
                    "per_process_rows": [p.rows for p in two.processes]}
        steady = two.steady_rows or 1
        return {
            "rows_per_message": shape,
            "one_process": _medians([one]),
            "one_process_cpu_share_of_the_cores": _shares_of(one),
            "processes": two.variant.processes,
            "rows_per_second": round(two.rows_per_second, 1),
            "steady_rows_per_second": round(two.steady_rows_per_second, 1),
            "x_one_process": round(two.steady_rows_per_second / one.rows_per_second, 2),
            "steady_cpu_seconds_per_1k_rows_per_process": [
                round(1000 * c / steady, 4) for c in two.steady_cpu_seconds],
            "steady_es_cpu_seconds_per_1k_rows": round(
                1000 * two.steady_es_cpu_seconds / steady, 4),
            "steady_cpu_share_of_the_cores": _shares(two),
        }

    def as_dict(self) -> dict[str, Any]:
        b = self.bulk
        return {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(self.seconds, 1),
            "machine": self.machine,
            "esupdater_source": self.source,
            "dataset": {"rows": self.rows, "partitions": self.partitions, **self.dataset},
            "ceilings": {
                **{f"A_consume_{n}_row_msgs": _rate(r) for n, r in sorted(self.consume.items())},
                "B_bulk": {
                    **_rate(b),
                    "cpu_seconds_per_1k_rows": _round(b.per_1k_rows(b.cpu_seconds), 4),
                    "es_cpu_seconds_per_1k_rows": _round(b.per_1k_rows(b.es_cpu_seconds), 4),
                    "bulk_requests": b.bulk_requests,
                    "own_bulk_requests": b.own_bulk_requests,
                    "actions_per_request": _round(_per(b.bulk_actions, b.bulk_requests), 1),
                } if b else None,
            },
            "baseline_C": _rate(self.seed) if self.seed else None,
            "contenders": self.contenders(),
            "esupdater_vs_D": self.ratio_figures(),
            "esupdater_mapper_vs_D": self.ratio_figures(mapper=True),
            "runs": [
                {
                    **run.summary(),
                    "x_min_A_B": round(run.rows_per_second
                                       / self.ceiling(run.variant.rows_per_message), 3)
                    if run.variant.rows_per_message in self.consume else None,
                    "x_C": round(run.rows_per_second / self.seed.rows_per_second, 1)
                    if self.seed else None,
                }
                for run in self.runs
            ],
            "scale_out": self.scale_out_figures(),
            "latency": self.latency.summary() if self.latency else None,
            "latency_mapper": self.latency_mapper.summary() if self.latency_mapper else None,
            "latency_D": self.latency_d.summary() if self.latency_d else None,
            "freshness": [fresh.summary() for fresh in self.freshness],
            "backfill_verify": {
                **self.tables.summary(),
                "stream_rows_per_second": {
                    f"{shape}_row_msgs": round(self.default_rate(shape), 1)
                    for shape in self.shapes()},
            } if self.tables else None,
            "targets": self.targets(),
            "hotspots": self.hotspots,
            "notes": self.notes,
        }


def _medians(runs: list[RunResult]) -> dict[str, Any]:
    def med(figure: Callable[[RunResult], float]) -> float:
        return _median([figure(r) for r in runs])

    return {
        "runs": len(runs),
        "rows_per_second": round(med(lambda r: r.rows_per_second), 1),
        "seconds": round(med(lambda r: r.seconds), 3),
        "cpu_seconds_per_1k_rows": round(med(lambda r: r.cpu_per_1k_rows), 4),
        "es_cpu_seconds_per_1k_rows": round(med(lambda r: r.es_cpu_per_1k_rows), 4),
        "bulk_requests": round(med(lambda r: r.bulk_requests)),
        "actions_per_request": round(med(lambda r: r.actions_per_request), 1),
        "peak_rss_mb": round(max(r.peak_rss_mb for r in runs), 1),
        "kafka_cpu_seconds_per_1k_rows": round(
            med(lambda r: 1000 * r.kafka_cpu_seconds / r.rows if r.rows else 0.0), 4),
        "other_cpu_share": round(med(lambda r: r.other_cpu_share), 3),
    }


def _shares_of(run: RunResult) -> dict[str, float]:
    """The same for a one-process run over its whole window."""
    cores = (os.cpu_count() or 1) * run.seconds or 1.0
    return {"process": round(run.cpu_seconds / cores, 3),
            "elasticsearch": round(run.es_cpu_seconds / cores, 3),
            "kafka": round(run.kafka_cpu_seconds / cores, 3),
            "other": round(run.other_cpu_share, 3),
            "idle": round(max(0.0, 1 - run.machine_cpu_seconds / cores), 3)}


def _shares(run: RunResult) -> dict[str, float]:
    """Of the machine's cores over the steady window: each process's, Elasticsearch's,
    Kafka's and everything else's share (the benchmark, other work on the machine), and
    idle."""
    cores = (os.cpu_count() or 1) * run.steady_seconds or 1.0
    found = {f"process_{i}": round(c / cores, 3) for i, c in enumerate(run.steady_cpu_seconds)}
    found["elasticsearch"] = round(run.steady_es_cpu_seconds / cores, 3)
    found["kafka"] = round(run.steady_kafka_cpu_seconds / cores, 3)
    ours = sum(run.steady_cpu_seconds) + run.steady_es_cpu_seconds + run.steady_kafka_cpu_seconds
    found["other"] = round(max(0.0, run.steady_machine_cpu_seconds - ours) / cores, 3)
    found["idle"] = round(max(0.0, 1 - run.steady_machine_cpu_seconds / cores), 3)
    return found


def _target(name: str, value: float, met: bool, note: str = "") -> dict[str, Any]:
    return {"target": name, "value": value, "met": met, "note": note}


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _per(a: int | None, b: int | None) -> float | None:
    return a / b if a is not None and b else None


def _rate(rate: Rate) -> dict[str, Any]:
    return {
        "rows": rate.rows,
        "records": rate.records,
        "seconds": round(rate.seconds, 3),
        "rows_per_second": round(rate.rows_per_second, 1),
        "errors": rate.errors,
    }


def _mark(met: bool) -> str:
    return "[green]met[/green]" if met else "[red]missed[/red]"


def _num(value: float | None, fmt: str = ",.0f") -> str:
    return "" if value is None or math.isnan(value) else format(value, fmt)


def print_table(results: Results, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(
        title=f"esupdater benchmark: {results.rows:,} rows, {results.partitions} partitions "
        f"({results.machine['cores']} cores); D and esupdater: medians of {results.pairs} pairs")
    for column in ("measurement", "rows/s", "x min(A,B)", "x C", "CPU s/1k rows",
                   "ES CPU s/1k rows", "bulk reqs", "actions/req", "peak RSS MB", "seconds",
                   "other CPU"):
        table.add_column(column, justify="left" if column == "measurement" else "right")
    for n, rate in sorted(results.consume.items()):
        table.add_row(f"A  raw consume, {n}-row msgs", _num(rate.rows_per_second),
                      "", "", "", "", "", "", "", f"{rate.seconds:.2f}", "")
    if results.bulk:
        b = results.bulk
        table.add_row("B  raw bulk (async_streaming_bulk)", _num(b.rows_per_second), "", "",
                      _num(b.per_1k_rows(b.cpu_seconds), ".3f"),
                      _num(b.per_1k_rows(b.es_cpu_seconds), ".3f"), _num(b.bulk_requests),
                      _num(_per(b.bulk_actions, b.bulk_requests), ".0f"), "",
                      f"{b.seconds:.2f}", "")
    if results.seed:
        table.add_row(f"C  seed shape (per message; {results.seed.rows:,} rows)",
                      _num(results.seed.rows_per_second), "", "", "", "", "", "", "",
                      f"{results.seed.seconds:.2f}", "")
    for shape in results.shapes():
        for program, mapper in ((BATCH, False), (ESUPDATER, False), (ESUPDATER, True)):
            runs = results.paired(shape, program, mapper)
            if runs:
                _add_run_row(table, results, runs)
        for run in results.runs:
            if run.part == VARIANTS and run.variant.rows_per_message == shape:
                _add_run_row(table, results, [run])
    for run in results.scale_out() or ():
        _add_run_row(table, results, [run], " (scale-out)")
    console.print(table)
    _print_ratios(results, console)
    _print_ratios(results, console, mapper=True)
    _print_scale_out(results, console)
    for lat in filter(None, (results.latency, results.latency_mapper, results.latency_d)):
        pace = "the handler's rate" if lat is results.latency_d else "half of its best rate"
        console.print(
            f"latency ({lat.run.variant.label}) at {lat.achieved_rate:,.0f} rows/s "
            f"({pace}) for {lat.seconds:g}s, {lat.samples:,} rows: "
            f"p50 {lat.p50_ms:.1f} ms, p99 {lat.p99_ms:.1f} ms, max {lat.max_ms:.1f} ms "
            f"(other CPU {100 * lat.run.other_cpu_share:.0f} %)")
    for f in results.freshness:
        console.print(
            f"freshness through MariaDB -> Canal -> Kafka -> esupdater -> Elasticsearch "
            f"(refresh_interval {f.refresh_label}): {f.rows:,} rows at "
            f"{f.produced_rate:,.0f} rows/s, {f.found:,} searchable: p50 {f.p50_ms:.0f} ms, "
            f"p99 {f.p99_ms:.0f} ms, max {f.max_ms:.0f} ms (commit -> acknowledged: p50 "
            f"{f.ack_p50_ms:.0f} ms, p99 {f.ack_p99_ms:.0f} ms); stages {f.stages_line('p50')}; "
            f"{f.stages_line('p99')}")
    if results.tables:
        t = results.tables
        stream = ", ".join(f"{results.default_rate(s):,.0f} ({s}-row msgs)"
                           for s in results.shapes())
        console.print(
            f"backfill of {t.rows:,} rows: {t.backfill_rows_per_second:,.0f} rows/s "
            f"({t.backfill_seconds:.1f} s; {t.backfill_wall_seconds:.1f} s with start-up) "
            f"against the stream's {stream} rows/s; verify: {t.verify_wall_seconds:.1f} s, "
            f"{t.verify_seconds_per_100k:.1f} s per 100,000 rows ({t.verify_line})")
    targets = Table(title="targets")
    for column in ("target", "measured", "status", "note"):
        targets.add_column(column)
    for target in results.targets():
        targets.add_row(target["target"], str(target["value"]), _mark(target["met"]),
                        target["note"])
    console.print(targets)
    for note in results.notes:
        console.print(f"[dim]* {note}[/dim]")


def _add_run_row(
    table: Table, results: Results, runs: list[RunResult], suffix: str = ""
) -> None:
    first = runs[0]
    figures = _medians(runs)
    rate = figures["rows_per_second"]
    label = first.variant.label + (f" (median of {len(runs)})" if len(runs) > 1 else suffix)
    shape = first.variant.rows_per_message
    x_ceiling = rate / results.ceiling(shape) if shape in results.consume else None
    x_seed = rate / results.seed.rows_per_second if results.seed else None
    table.add_row(
        label, _num(rate), _num(x_ceiling, ".2f"), _num(x_seed, ".0f"),
        _num(figures["cpu_seconds_per_1k_rows"], ".3f"),
        _num(figures["es_cpu_seconds_per_1k_rows"], ".3f"), _num(figures["bulk_requests"]),
        _num(figures["actions_per_request"], ".0f"), _num(figures["peak_rss_mb"]),
        f"{figures['seconds']:.2f}", f"{100 * figures['other_cpu_share']:.0f} %")


def _print_ratios(results: Results, console: Console, mapper: bool = False) -> None:
    """esupdater (with a handler, or with a mapper) over D, per pair, against the targets."""
    if not results.shapes():
        return
    if mapper and not any(results.ratios(shape, RATIOS[0], mapper)
                          for shape in results.shapes()):
        return
    what = "esupdater with a mapper" if mapper else "esupdater"
    table = Table(title=f"{what} / D, per pair (median of {results.pairs})")
    for column in ("ratio", "msgs", "median", "each pair", "target", "status"):
        table.add_column(column, justify="left" if column in ("ratio", "each pair") else "right")
    for spec in RATIOS:
        for shape in results.shapes():
            ratios = results.ratios(shape, spec, mapper)
            if not ratios:
                continue
            value = _median(ratios)
            table.add_row(spec.name, f"{shape}-row", f"{value:.2f}",
                          ", ".join(f"{r:.2f}" for r in ratios), spec.wanted,
                          _mark(spec.met(value)))
    console.print(table)


def _print_scale_out(results: Results, console: Console) -> None:
    figures = results.scale_out_figures()
    if figures is None:
        return
    runs = results.scale_out()
    assert runs is not None
    two = runs[1]
    one = figures["one_process"] or {}
    if "steady" in figures:
        console.print(
            f"scale-out: no steady window with {figures['processes']} processes (rows per "
            f"process {figures['per_process_rows']}): the backlog is too small")
        return
    per_process = ", ".join(
        f"p{i} {p.rows:,} rows, {c:.1f} s CPU"
        for i, (p, c) in enumerate(zip(two.processes, two.steady_cpu_seconds, strict=True)))
    console.print(
        f"scale-out, {figures['rows_per_message']}-row msgs, back to back: 1 process "
        f"{one.get('rows_per_second', 0):,.0f} rows/s; {figures['processes']} processes "
        f"{figures['steady_rows_per_second']:,.0f} rows/s steady ({figures['x_one_process']}x; "
        f"{figures['rows_per_second']:,.0f} from the first row, rebalance included). Steady "
        f"window {two.steady_seconds:.1f} s: {per_process}, Elasticsearch "
        f"{two.steady_es_cpu_seconds:.1f} s CPU; shares of the cores "
        f"{figures['steady_cpu_share_of_the_cores']}")


def write_json(results: Results, path: Path) -> None:
    path.write_text(json.dumps(results.as_dict(), indent=2) + "\n")

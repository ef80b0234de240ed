"""The benchmark's table (rich) and `bench/results/results.json`, targets marked met or missed."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.lib.ceilings import Rate
from bench.lib.e2e import RunResult
from bench.lib.latency import Latency

#: The issue's targets (for the benchmark, not for tests).
TARGET_CEILING_RATIO = 0.85
TARGET_BASELINE_RATIO = 10.0
TARGET_P99_MS = 250.0
TARGET_RSS_MB = 200.0
TARGET_RSS_BACKLOG = 1_000_000


@dataclass
class Results:
    rows: int
    partitions: int
    dataset: dict[str, Any]
    machine: dict[str, Any]
    consume: dict[int, Rate] = field(default_factory=dict)  # A, by rows per message
    bulk: Rate | None = None  # B
    seed: Rate | None = None  # C
    runs: list[RunResult] = field(default_factory=list)
    latency: Latency | None = None
    hotspots: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def ceiling(self, rows_per_message: int) -> float:
        """min(A, B) for this message shape."""
        a = self.consume[rows_per_message].rows_per_second
        return min(a, self.bulk.rows_per_second) if self.bulk else a

    def targets(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for run in self.runs:
            if not run.variant.is_default:
                continue
            shape = f"{run.variant.rows_per_message}-row msgs"
            ratio = run.rows_per_second / self.ceiling(run.variant.rows_per_message)
            found.append(
                _target(
                    f"esupdater >= {TARGET_CEILING_RATIO} x min(A, B), {shape}",
                    round(ratio, 2),
                    ratio >= TARGET_CEILING_RATIO,
                )
            )
            if self.seed:
                ratio = run.rows_per_second / self.seed.rows_per_second
                found.append(
                    _target(
                        f"esupdater >= {TARGET_BASELINE_RATIO:g} x C, {shape}",
                        round(ratio, 1),
                        ratio >= TARGET_BASELINE_RATIO,
                    )
                )
        if self.latency:
            found.append(
                _target(
                    f"p99 <= {TARGET_P99_MS:g} ms at half load",
                    round(self.latency.p99_ms, 1),
                    self.latency.p99_ms <= TARGET_P99_MS,
                )
            )
        defaults = [run for run in self.runs if run.variant.is_default]
        if defaults:
            peak = max(run.peak_rss_mb for run in defaults)
            note = (
                ""
                if self.rows >= TARGET_RSS_BACKLOG
                else (
                    f"measured with a {self.rows:,}-row backlog; the target is for "
                    f"{TARGET_RSS_BACKLOG:,}: run with --full"
                )
            )
            found.append(
                _target(
                    f"peak RSS <= {TARGET_RSS_MB:g} MB, {TARGET_RSS_BACKLOG:,}-row backlog",
                    round(peak, 1),
                    peak <= TARGET_RSS_MB,
                    note,
                )
            )
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": self.machine,
            "dataset": {"rows": self.rows, "partitions": self.partitions, **self.dataset},
            "ceilings": {
                **{f"A_consume_{n}_row_msgs": _rate(r) for n, r in sorted(self.consume.items())},
                "B_bulk": _rate(self.bulk) if self.bulk else None,
            },
            "baseline_C": _rate(self.seed) if self.seed else None,
            "esupdater": [
                {
                    **run.summary(),
                    "x_min_A_B": round(
                        run.rows_per_second / self.ceiling(run.variant.rows_per_message), 3
                    ),
                    "x_C": round(run.rows_per_second / self.seed.rows_per_second, 1)
                    if self.seed
                    else None,
                }
                for run in self.runs
            ],
            "latency": self.latency.summary() if self.latency else None,
            "targets": self.targets(),
            "hotspots": self.hotspots,
            "notes": self.notes,
        }


def _target(name: str, value: float, met: bool, note: str = "") -> dict[str, Any]:
    return {"target": name, "value": value, "met": met, "note": note}


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


def print_table(results: Results, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(
        title=f"esupdater benchmark: {results.rows:,} rows, "
        f"{results.partitions} partitions ({results.machine['cores']} cores)"
    )
    for column in ("measurement", "rows/s", "x min(A,B)", "x C", "peak RSS MB", "seconds"):
        table.add_column(column, justify="left" if column == "measurement" else "right")
    for n, rate in sorted(results.consume.items()):
        table.add_row(
            f"A  raw consume, {n}-row msgs",
            f"{rate.rows_per_second:,.0f}",
            "",
            "",
            "",
            f"{rate.seconds:.2f}",
        )
    if results.bulk:
        table.add_row(
            "B  raw bulk (async_streaming_bulk)",
            f"{results.bulk.rows_per_second:,.0f}",
            "",
            "",
            "",
            f"{results.bulk.seconds:.2f}",
        )
    if results.seed:
        table.add_row(
            f"C  seed shape (per message; {results.seed.rows:,} rows)",
            f"{results.seed.rows_per_second:,.0f}",
            "",
            "",
            "",
            f"{results.seed.seconds:.2f}",
        )
    for run in results.runs:
        ratio = run.rows_per_second / results.ceiling(run.variant.rows_per_message)
        cells = [
            f"{ratio:.2f}"
            + (f" {_mark(ratio >= TARGET_CEILING_RATIO)}" if run.variant.is_default else "")
        ]
        if results.seed:
            x_c = run.rows_per_second / results.seed.rows_per_second
            cells.append(
                f"{x_c:.0f}"
                + (f" {_mark(x_c >= TARGET_BASELINE_RATIO)}" if run.variant.is_default else "")
            )
        else:
            cells.append("")
        table.add_row(
            run.variant.label,
            f"{run.rows_per_second:,.0f}",
            *cells,
            f"{run.peak_rss_mb:.0f}",
            f"{run.seconds:.2f}",
        )
    console.print(table)
    if results.latency:
        lat = results.latency
        console.print(
            f"latency ({lat.run.variant.label}) at {lat.achieved_rate:,.0f} rows/s "
            f"(half of the best rate) for {lat.seconds:g}s, {lat.samples:,} rows: "
            f"p50 {lat.p50_ms:.1f} ms, p99 {lat.p99_ms:.1f} ms, max {lat.max_ms:.1f} ms"
        )
    targets = Table(title="targets")
    for column in ("target", "measured", "status", "note"):
        targets.add_column(column)
    for target in results.targets():
        targets.add_row(
            target["target"], str(target["value"]), _mark(target["met"]), target["note"]
        )
    console.print(targets)
    for note in results.notes:
        console.print(f"[dim]* {note}[/dim]")


def write_json(results: Results, path: Path) -> None:
    path.write_text(json.dumps(results.as_dict(), indent=2) + "\n")

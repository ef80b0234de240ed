"""Latency is reported for both paths: the handler's and the mapper's, each with its target
and its figures in results.json (a mapper's run read as the handler's would hide it)."""

from __future__ import annotations

from bench.lib.e2e import BATCH, RunResult, Variant
from bench.lib.latency import Latency
from bench.lib.report import Results


def _latency(mapper: bool, p99_ms: float) -> Latency:
    run = RunResult(variant=Variant(10, mapper=mapper), rows=1000, seconds=1.0,
                    ack_seconds=1.0, startup_seconds=0.1, peak_rss_mb=90.0)
    return Latency(rate=8000.0, achieved_rate=7990.0, seconds=20.0, samples=1000,
                   p50_ms=20.0, p99_ms=p99_ms, max_ms=p99_ms + 50, run=run)


def test_each_path_has_its_own_latency_target() -> None:
    results = Results(rows=1000, partitions=1, dataset={}, machine={"cores": 2})
    results.latency = _latency(False, 186.4)
    results.latency_mapper = _latency(True, 260.0)

    found = [(t["target"], t["value"], t["met"]) for t in results.targets()
             if t["target"].startswith("p99 append")]

    assert found == [("p99 append -> ack <= 250 ms at half load", 186.4, True),
                     ("p99 append -> ack <= 250 ms at half load, mapper", 260.0, False)]


def test_results_json_carries_the_mappers_latency_beside_the_handlers() -> None:
    results = Results(rows=1000, partitions=1, dataset={}, machine={"cores": 2})
    assert results.as_dict()["latency_mapper"] is None
    results.latency = _latency(False, 186.4)
    results.latency_mapper = _latency(True, 120.0)

    figures = results.as_dict()

    assert figures["latency"]["variant"] == "esupdater 10-row msgs, uvloop, orjson"
    assert figures["latency_mapper"]["variant"] == "esupdater 10-row msgs, uvloop, orjson, mapper"
    assert figures["latency_mapper"]["p99_ms"] == 120.0


def test_d_at_the_handlers_rate_is_reported_beside_each_latency_target() -> None:
    results = Results(rows=1000, partitions=1, dataset={}, machine={"cores": 2})
    results.latency = _latency(False, 820.0)
    results.latency_d = Latency(
        rate=8000.0, achieved_rate=7995.0, seconds=20.0, samples=1000, p50_ms=60.0,
        p99_ms=140.0, max_ms=180.0,
        run=RunResult(variant=Variant(10, program=BATCH), rows=1000, seconds=1.0,
                      ack_seconds=1.0, startup_seconds=0.1, peak_rss_mb=90.0))

    target = next(t for t in results.targets() if t["target"].startswith("p99 append"))

    assert target["met"] is False
    assert "D at 7,995 rows/s: p99 140 ms" in target["note"]
    assert results.as_dict()["latency_D"]["variant"] == "D  batch loop, 10-row msgs"

"""The latency phase's input: the paced producer's messages, encoded before the clock
starts, as they are sent; and the index they go to."""

from __future__ import annotations

from typing import Any

import orjson

from bench.lib.dataset import encode, statements
from bench.lib.latency import LIVE_INDEX_SETTINGS, encoded_ahead
from bench.lib.stack import INDEX_SETTINGS


def _without_ts(value: bytes) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(value)
    del message["ts"]  # when the message was built, not part of what is compared
    return message


def test_a_message_stamped_at_send_time_is_the_one_encoded_with_that_time() -> None:
    for rows_per_message in (1, 10):
        ahead = encoded_ahead(200, partitions=4, rows_per_message=rows_per_message)
        built = [list(encode(st, rows_per_message, es_ms=1_796_000_000_123))
                 for st in statements(200, partitions=4)]
        assert len(ahead) == len(built)
        for group, expected in zip(ahead, built, strict=True):
            assert len(group) == len(expected)
            for message, (partition, value, rows) in zip(group, expected, strict=True):
                assert (message.partition, message.rows) == (partition, rows)
                assert _without_ts(message.at(1_796_000_000_123)) == _without_ts(value)


def test_each_statement_keeps_its_rows_and_the_dataset_its_size() -> None:
    ahead = encoded_ahead(1_000, partitions=4, rows_per_message=1)
    assert sum(m.rows for group in ahead for m in group) == 1_000
    assert all(len({m.partition for m in group}) == 1 for group in ahead)


def test_the_latency_index_refreshes_as_a_live_one_and_is_otherwise_the_backlogs() -> None:
    assert "refresh_interval" not in LIVE_INDEX_SETTINGS  # Elasticsearch's default, 1 s
    assert INDEX_SETTINGS["refresh_interval"] == "-1"
    assert {**LIVE_INDEX_SETTINGS, "refresh_interval": "-1"} == INDEX_SETTINGS

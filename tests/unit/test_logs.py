"""Log lines: JSON for collectors (UTC, milliseconds, every `extra=` field), text for people."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import orjson
import pytest

from esupdater.change import Position
from esupdater.logs import setup_logging


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """What setup_logging's handler writes (pytest swaps sys.stderr itself during a test)."""
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield stream
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def setup(fmt: str, stream: io.StringIO) -> None:
    setup_logging("INFO", fmt)
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)


def test_a_json_line_has_utc_milliseconds_and_every_extra_field(captured: io.StringIO) -> None:
    setup("json", captured)
    log = logging.getLogger("esupdater.test")
    log.warning("held %s", "canal/0", extra={"position": Position("canal", 0, 42),
                                              "table": "shop.users", "attempt": 3})
    entry = orjson.loads(captured.getvalue().splitlines()[-1])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry.pop("time")), entry
    assert entry == {"level": "WARNING", "logger": "esupdater.test", "message": "held canal/0",
                     "position": "canal/0@42", "table": "shop.users", "attempt": 3}


def test_a_json_line_carries_the_exception(captured: io.StringIO) -> None:
    setup("json", captured)
    try:
        raise ValueError("bad row")
    except ValueError:
        logging.getLogger("esupdater.test").exception("failed")
    entry = orjson.loads(captured.getvalue().splitlines()[-1])
    assert entry["message"] == "failed"
    assert "ValueError: bad row" in entry["exc_info"]


def test_a_text_line_reads_as_before_with_its_position(captured: io.StringIO) -> None:
    setup("text", captured)
    logging.getLogger("esupdater.test").info("applied", extra={"position": "canal/0@7"})
    line = captured.getvalue().splitlines()[-1]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO esupdater.test: applied "
                        r"\[canal/0@7\]", line), line

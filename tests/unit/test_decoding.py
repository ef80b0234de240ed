"""The decoder seam: a format named in `[source]` gives a Decoder; its errors are DecodeErrors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import get_args

import pytest

from esupdater.canal import CanalDecodeError, CanalDecoder, flat_message, protobuf_message
from esupdater.change import Position
from esupdater.decoding import FORMATS, Decoder, make_decoder
from esupdater.errors import DecodeError, EsupdaterError
from esupdater.settings import SourceSettings

POSITION = Position("canal", 3, 17)
USER = {"id": "7", "ok": "1", "balance": "12.50"}
TYPES = {"id": "bigint(20)", "ok": "tinyint(1)", "balance": "decimal(10,2)"}


def test_the_canal_format_gives_a_canal_decoder() -> None:
    decoder = make_decoder(SourceSettings(format="canal"))
    assert isinstance(decoder, CanalDecoder)
    assert isinstance(decoder, Decoder)  # the Protocol is runtime-checkable


@pytest.mark.parametrize("build", [flat_message, protobuf_message], ids=["flat", "protobuf"])
def test_the_canal_decoder_reads_both_forms_per_record(build: Callable[..., bytes]) -> None:
    decoder = make_decoder(SourceSettings())
    [change] = decoder.decode(build("shop", "users", "INSERT", [USER], mysql_types=TYPES),
                              POSITION)
    assert change.row == {"id": 7, "ok": 1, "balance": Decimal("12.50")}
    assert change.position == POSITION


def test_tinyint1_as_bool_is_a_setting_of_the_source() -> None:
    decoder = make_decoder(SourceSettings(tinyint1_as_bool=True))
    value = flat_message("shop", "users", "INSERT", [USER], mysql_types=TYPES)
    assert decoder.decode(value, POSITION)[0].row["ok"] is True


@pytest.mark.parametrize("value", [None, b"", b"not canal", b'{"database": "x"}'])
def test_a_record_that_is_not_the_format_raises_a_format_neutral_decode_error(
    value: bytes | None,
) -> None:
    with pytest.raises(DecodeError) as caught:
        make_decoder(SourceSettings()).decode(value, POSITION)
    error = caught.value
    assert error.position == POSITION
    assert error.reason
    assert str(error) == f"canal/3@17: {error.reason}"
    assert isinstance(error, CanalDecodeError)  # the class name tells which format refused it


def test_canal_decode_error_is_a_decode_error_and_keeps_its_bases() -> None:
    assert issubclass(CanalDecodeError, DecodeError)
    assert issubclass(DecodeError, EsupdaterError)
    assert issubclass(DecodeError, ValueError)


def test_every_format_the_setting_accepts_has_a_decoder() -> None:
    accepted = get_args(SourceSettings.model_fields["format"].annotation)
    assert set(accepted) == set(FORMATS)


def test_importing_esupdater_loads_neither_the_test_harness_nor_protobuf() -> None:
    """Handlers import `esupdater` in the service: it must not drag in the test harness, and
    protobuf is loaded only by the decoder that reads protobuf records."""
    code = (
        "import sys\n"
        "from esupdater import Change, Context, on\n"
        "import esupdater.decoding, esupdater.canal\n"
        "loaded = [m for m in sys.modules if m == 'esupdater.testing'\n"
        "          or m.startswith('google.protobuf') or m.endswith('canal_pb2')]\n"
        "print(sorted(loaded))\n"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert ran.stdout.strip() == "[]", ran.stdout


def test_the_harness_names_still_come_from_esupdater() -> None:
    import esupdater
    from esupdater import testing

    assert esupdater.apply is testing.apply
    assert esupdater.MemorySink is testing.MemorySink
    assert esupdater.changes_from_canal is testing.changes_from_canal
    assert esupdater.make_change is testing.make_change
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = esupdater.nothing  # type: ignore[attr-defined]

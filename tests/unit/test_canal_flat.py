"""Canal's flat JSON form (flatMessage=true), as its Kafka producer writes it."""

from __future__ import annotations

from decimal import Decimal

import orjson

from esupdater.canal import CanalDecoder, flat_message
from esupdater.change import Position

DECODER = CanalDecoder()
POSITION = Position("canal", 0, 7)

#: A record as Canal 1.1.x writes it (fastjson: keys sorted, nulls written).
CANAL_UPDATE = b"""{
"data":[{"id":"11","name":"kate","balance":"10.50","updated_at":"2024-03-01 12:30:45"}],
"database":"shop","es":1709296245000,"gtid":"","id":3,"isDdl":false,
"mysqlType":{"id":"int(11)","name":"varchar(32)","balance":"decimal(10,2)","updated_at":"datetime"},
"old":[{"balance":"3.00"}],"pkNames":["id"],"sql":"",
"sqlType":{"id":4,"name":12,"balance":3,"updated_at":93},
"table":"accounts","ts":1709296245410,"type":"UPDATE"}"""


def test_a_record_as_canal_writes_it_decodes() -> None:
    [change] = DECODER.decode(CANAL_UPDATE, POSITION)

    assert change.key == ("shop", "accounts", "11")
    assert change.row == {
        "id": 11,
        "name": "kate",
        "balance": Decimal("10.50"),
        "updated_at": "2024-03-01T12:30:45",
    }
    assert change.old == {"balance": Decimal("3.00")}


def test_leading_whitespace_is_still_json() -> None:
    assert len(DECODER.decode(b"\n  " + CANAL_UPDATE, POSITION)) == 1


def test_sqltype_types_columns_that_have_no_mysqltype() -> None:
    message = orjson.loads(CANAL_UPDATE)
    message["mysqlType"] = None

    [change] = DECODER.decode(orjson.dumps(message), POSITION)

    assert change.row["id"] == 11
    assert change.row["balance"] == Decimal("10.50")


def test_columns_without_any_type_stay_strings() -> None:
    message = orjson.loads(CANAL_UPDATE)
    message["mysqlType"] = message["sqlType"] = None

    [change] = DECODER.decode(orjson.dumps(message), POSITION)

    assert change.row["id"] == "11"


def test_a_null_es_gives_no_executed_at() -> None:
    message = orjson.loads(CANAL_UPDATE)
    message["es"] = None

    [change] = DECODER.decode(orjson.dumps(message), POSITION)

    assert change.executed_at is None


def test_an_update_without_old_has_no_changed_columns() -> None:
    message = orjson.loads(CANAL_UPDATE)
    message["old"] = None

    [change] = DECODER.decode(orjson.dumps(message), POSITION)

    assert change.old == {}
    assert change.changed == frozenset()


def test_the_builder_writes_canals_keys_in_canals_order() -> None:
    value = flat_message("shop", "t", "INSERT", [{"id": "1"}], mysql_types={"id": "int(11)"})

    assert list(orjson.loads(value)) == [
        "data", "database", "es", "gtid", "id", "isDdl", "mysqlType", "old", "pkNames", "sql",
        "sqlType", "table", "ts", "type",
    ]  # fmt: skip


def test_the_builder_writes_canals_sql_types() -> None:
    types = {"id": "bigint(20) unsigned", "at": "datetime(3)", "note": "text"}

    value = flat_message("shop", "t", "INSERT", [{"id": "1"}], mysql_types=types)

    assert orjson.loads(value)["sqlType"] == {"id": -5, "at": 93, "note": 2005}


def test_the_builder_writes_ddl_without_rows_or_keys() -> None:
    message = orjson.loads(
        flat_message("shop", "t", "CREATE", [], mysql_types={}, is_ddl=True, sql="CREATE ...")
    )

    assert message["isDdl"] is True
    assert message["data"] is message["pkNames"] is message["mysqlType"] is None

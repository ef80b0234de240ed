"""Fuzzing the decoder with real Canal records gone wrong: only CanalDecodeError may escape.

Any other exception from `CanalDecoder.decode` would not be set aside: the service would stop, and
stop again on the same record after every restart. The records start as what Canal 1.1.7
really wrote (tests/fixtures/) and are mutated in their structure (a field of another type, a
missing field, a composite key, a protobuf field set to another value) and in their bytes.
Bounded so the unit suite stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esupdater.canal import CanalDecodeError, CanalDecoder, flat_message
from esupdater.canal import canal_pb2 as pb
from esupdater.change import Change, Position

DECODER = CanalDecoder()
FIXTURES = Path(__file__).parents[1] / "fixtures"
POSITION = Position("canal_shop", 2, 41)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FLAT = [orjson.loads(path.read_bytes()) for path in sorted((FIXTURES / "canal_flat").iterdir())]
PROTOBUF = [path.read_bytes() for path in sorted((FIXTURES / "canal_protobuf").iterdir())]
#: A composite key, too: the fixtures' tables all have one key column.
FLAT.append(orjson.loads(flat_message(
    "shop", "lines", "UPDATE", [{"order": "7", "line": "3", "qty": "1", "b": "\x01"}],
    old=[{"line": "2"}], pk_names=("order", "line"),
    mysql_types={"order": "int(11)", "line": "int(11)", "qty": "int(11)", "b": "binary(4)"},
)))

#: Names and texts a mutation draws from, so it often hits what the decoder looks at.
WORDS = [
    "data", "old", "pkNames", "mysqlType", "sqlType", "type", "isDdl", "es", "database",
    "table", "sql", "id", "name", "price", "qty", "flag", "size", "order", "line", "b",
    "INSERT", "UPDATE", "DELETE", "ALTER", "QUERY", "GTID", "ERASE", "MHEARTBEAT",
    "int(11)", "decimal(10,2)", "binary(4)", "binary(0)", "binary(99999999999)", "binary(",
    "enum('s','m','l')", "set('a','b')", "enum(", "datetime(3)", "date", "json", "bit(3)",
    "tinyint(1)", "", "0", "1", "-1", "2", "3", "7", "12.50", "1E+999999", "NaN",
    "2024-02-30", "0000-00-00 00:00:00", "99999999999999999999", "\x00", "{", "[1]",
]
words = st.sampled_from(WORDS)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | words | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=3),
    max_leaves=8,
)


def decodes_or_is_set_aside(value: bytes) -> None:
    outcome: list[Change] | CanalDecodeError
    try:
        outcome = DECODER.decode(value, POSITION)
    except CanalDecodeError as exc:
        outcome = exc
    if isinstance(outcome, CanalDecodeError):
        assert outcome.position == POSITION
        assert str(outcome).startswith("canal_shop/2@41: ")
        return
    changes = outcome
    assert all(isinstance(change, Change) for change in changes)
    for change in changes:  # what handlers and the dispatcher read must not raise either
        assert isinstance(change.pk, str)
        assert change.old_pk is None or isinstance(change.old_pk, str)


def containers(node: Any) -> list[Any]:
    """Every dict and list in a JSON tree, the root first."""
    found = [node] if isinstance(node, dict | list) else []
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        found += containers(child)
    return found


@st.composite
def mutated_flat(draw: st.DrawFn) -> bytes:
    message = orjson.loads(orjson.dumps(draw(st.sampled_from(FLAT))))
    for _ in range(draw(st.integers(1, 4))):
        node = draw(st.sampled_from(containers(message)))
        if isinstance(node, dict):
            key = draw(st.sampled_from(sorted(node)) | words) if node else draw(words)
            if key in node and draw(st.booleans()):
                del node[key]
            else:
                node[key] = draw(json_values)
        elif node and draw(st.booleans()):
            node[draw(st.integers(0, len(node) - 1))] = draw(json_values)
        else:
            node.append(draw(json_values))
    value = json.dumps(message, ensure_ascii=False).encode()  # orjson: no ints past 64 bits
    if draw(st.integers(0, 4)) == 0:  # and now and then a byte too
        at = draw(st.integers(0, len(value) - 1))
        value = value[:at] + bytes([draw(st.integers(0, 255))]) + value[at + 1 :]
    return value


class Tree:
    """A Canal Packet with its nested byte fields parsed, to mutate fields, then re-encode."""

    def __init__(self, value: bytes) -> None:
        self.packet = pb.Packet.FromString(value)
        self.messages = pb.Messages.FromString(self.packet.body)
        self.entries = [pb.Entry.FromString(data) for data in self.messages.messages]
        self.changes: list[pb.RowChange | None] = []
        for entry in self.entries:
            try:
                self.changes.append(pb.RowChange.FromString(entry.storeValue))
            except Exception:  # noqa: BLE001 - transaction entries hold other messages
                self.changes.append(None)

    def nodes(self) -> list[Message]:
        found: list[Message] = [self.packet, self.messages, *self.entries]
        for change in self.changes:
            if change is not None:
                found += [change, *change.rowDatas]
                for data in change.rowDatas:
                    found += [*data.beforeColumns, *data.afterColumns]
        found += [entry.header for entry in self.entries]
        return found

    def encode(self) -> bytes:
        for entry, change in zip(self.entries, self.changes, strict=True):
            if change is not None:
                entry.storeValue = change.SerializeToString()
        del self.messages.messages[:]
        self.messages.messages.extend(entry.SerializeToString() for entry in self.entries)
        self.packet.body = self.messages.SerializeToString()
        return self.packet.SerializeToString()


_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: 31, FieldDescriptor.TYPE_ENUM: 31, FieldDescriptor.TYPE_INT64: 63,
}


def field_value(draw: st.DrawFn, field: FieldDescriptor) -> Any:
    if field.type == FieldDescriptor.TYPE_STRING:
        return draw(words | st.text(max_size=6))
    if field.type == FieldDescriptor.TYPE_BOOL:
        return draw(st.booleans())
    if field.type == FieldDescriptor.TYPE_BYTES:
        return draw(st.binary(max_size=12))
    bits = _INT_RANGES[field.type]
    return draw(st.integers(-8, 40) | st.integers(-(2**bits), 2**bits - 1))


@st.composite
def mutated_protobuf(draw: st.DrawFn) -> bytes:
    tree = Tree(draw(st.sampled_from(PROTOBUF)))
    for _ in range(draw(st.integers(1, 4))):
        node = draw(st.sampled_from(tree.nodes()))
        scalar = [field for field in node.DESCRIPTOR.fields
                  if field.type != FieldDescriptor.TYPE_MESSAGE and not _is_repeated(field)
                  and field.name not in ("body", "storeValue")]
        repeated = [field for field in node.DESCRIPTOR.fields if _is_repeated(field)
                    and field.type == FieldDescriptor.TYPE_MESSAGE]
        if repeated and draw(st.integers(0, 3)) == 0:
            items = getattr(node, draw(st.sampled_from(repeated)).name)
            if items:
                del items[draw(st.integers(0, len(items) - 1))]
        elif scalar:
            field = draw(st.sampled_from(scalar))
            setattr(node, field.name, field_value(draw, field))
    value = tree.encode()
    if draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(value) - 1))
        value = value[:at] + bytes([draw(st.integers(0, 255))]) + value[at + 1 :]
    return value


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


@FUZZ
@given(mutated_flat())
def test_a_mutated_flat_record_decodes_or_is_set_aside(value: bytes) -> None:
    decodes_or_is_set_aside(value)


@FUZZ
@given(mutated_protobuf())
def test_a_mutated_protobuf_record_decodes_or_is_set_aside(value: bytes) -> None:
    decodes_or_is_set_aside(value)


def test_a_composite_key_that_is_not_a_string_is_set_aside() -> None:
    """The record that once stopped every partition: a number in a composite key's column of
    `data`, and `old` changing the key's other column."""
    record = orjson.dumps({
        "data": [{"a": 1, "b": "2"}], "database": "shop", "table": "t", "type": "UPDATE",
        "isDdl": False, "pkNames": ["a", "b"], "old": [{"b": "3"}],
        "mysqlType": {"a": "int(11)", "b": "int(11)"},
    })

    with pytest.raises(CanalDecodeError, match="column 'a': value must be a string or null"):
        DECODER.decode(record, POSITION)

"""Test handlers without Kafka or Elasticsearch: an in-memory bulk sink, Change builders, `apply`.

Like FastStream's `TestKafkaBroker`: your handlers run unchanged, with a real `Context`; only
the sink behind it keeps documents in a dict instead of sending them to Elasticsearch::

    sink = await apply(make_change("shop", "users", "INSERT", {"id": 7, "name": "Ada"}))
    assert sink.documents["shop-users"]["7"]["name"] == "Ada"
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson

from esupdater.actions import Action
from esupdater.canal import CanalDecoder
from esupdater.change import ROW_TYPES, Change, Position, previous_pk
from esupdater.clients import ExactJsonSerializer
from esupdater.context import Context
from esupdater.errors import BulkItemError
from esupdater.routing import Registry, default_registry

__all__ = ["MemorySink", "apply", "changes_from_canal", "make_change"]

#: The serializer the service's Elasticsearch client uses (clients.make_elasticsearch), so a
#: stored document is exactly the JSON Elasticsearch would receive (Decimal -> exact number).
_SERIALIZER = ExactJsonSerializer()

Document = dict[str, Any]


#: The offsets `make_change` and `changes_from_canal` hand out when none is given.
_offsets = itertools.count()

class MemorySink:
    """A `BulkSink` that applies actions to dicts the way Elasticsearch applies them.

    `documents[index][id]` holds each document's source as Elasticsearch would store it (the
    JSON round trip of what the handler sent); `actions` records every action in order.
    Refusals raise `BulkItemError` with Elasticsearch's status and reason, as `Context` does.
    """

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Document]] = {}
        self.actions: list[Action] = []
        self._versions: dict[tuple[str, str], int] = {}
        # External versions of versioned writes; kept after a delete, like Elasticsearch's
        # tombstones (for index.gc_deletes, 60 s by default).
        self._external: dict[tuple[str, str], int] = {}

    def get(self, index: str, id: str) -> Document | None:
        """The document's source, or None when it does not exist."""
        return self.documents.get(index, {}).get(id)

    async def execute(self, action: Action) -> dict[str, Any]:
        """Apply one bulk action (helpers' format) and return its item, like Elasticsearch."""
        self.actions.append(copy.deepcopy(action))
        op_type = action.get("_op_type", "index")
        index = action.get("_index")
        if not isinstance(index, str) or not index:
            raise ValueError(f"bulk action without an _index: {action!r}")
        doc_id = action.get("_id")
        if "version_type" in action and doc_id is not None:
            stale = self._stale(op_type, index, str(doc_id), action)
            if stale is not None:
                return stale
        if op_type in ("index", "create"):
            return self._write(op_type, index, doc_id, _source_of(action))
        if doc_id is None:
            raise ValueError(f"{op_type} action without an _id: {action!r}")
        if op_type == "update":
            return self._update(index, str(doc_id), action)
        if op_type == "delete":
            return self._delete(index, str(doc_id))
        raise ValueError(f"unknown bulk _op_type {op_type!r}: index, create, update or delete")

    def _write(
        self, op_type: str, index: str, doc_id: object, source: Mapping[str, Any]
    ) -> dict[str, Any]:
        key = uuid.uuid4().hex[:20] if doc_id is None else str(doc_id)  # ES generates one
        exists = key in self.documents.get(index, {})
        if op_type == "create" and exists:
            raise BulkItemError(
                "create", index, key, 409,
                f"version_conflict_engine_exception: [{key}]: version conflict, document "
                f"already exists (current version [{self._versions[(index, key)]}])",
            )  # fmt: skip
        self._store(index, key, _as_stored(source))
        return self._item(index, key, "updated" if exists else "created")

    def _update(self, index: str, doc_id: str, action: Action) -> dict[str, Any]:
        if "script" in action:
            raise NotImplementedError(
                f"update {index}/{doc_id}: MemorySink does not run scripts; send a partial `doc`"
            )
        doc = _as_stored(action.get("doc") or {})
        current = self.get(index, doc_id)
        if current is None:
            if action.get("doc_as_upsert"):
                self._store(index, doc_id, doc)
                return self._item(index, doc_id, "created")
            if "upsert" in action:
                self._store(index, doc_id, _as_stored(action["upsert"]))
                return self._item(index, doc_id, "created")
            raise BulkItemError(
                "update", index, doc_id, 404,
                f"document_missing_exception: [{doc_id}]: document missing",
            )  # fmt: skip
        merged = _merge(current, doc)
        if merged == current:  # Elasticsearch's detect_noop, on by default
            return self._item(index, doc_id, "noop", status=200)
        self._store(index, doc_id, merged)
        return self._item(index, doc_id, "updated")

    def _delete(self, index: str, doc_id: str) -> dict[str, Any]:
        documents = self.documents.get(index, {})
        if doc_id not in documents:
            # The bulk writer hands this item back instead of raising: not an error.
            return {"_index": index, "_id": doc_id, "result": "not_found", "status": 404}
        del documents[doc_id]
        self._versions[(index, doc_id)] += 1
        return self._item(index, doc_id, "deleted", status=200)

    def _stale(
        self, op_type: str, index: str, doc_id: str, action: Action
    ) -> dict[str, Any] | None:
        """Elasticsearch's external versioning: a write not newer than the stored one is
        refused; `Context` hands it back as `"result": "stale"`, so this does too."""
        version, version_type = action.get("version"), action["version_type"]
        if op_type not in ("index", "delete") or not isinstance(version, int):
            raise ValueError(f"{op_type} {index}/{doc_id}: version_type needs an int version "
                             "and an index or delete action")
        key = (index, doc_id)
        current = self._external.get(key)
        if current is None:
            newer = True
        elif version_type == "external_gte":
            newer = version >= current
        else:
            newer = version > current
        if newer:
            self._external[key] = version
            return None
        return {"_index": index, "_id": doc_id, "result": "stale", "status": 409}

    def _store(self, index: str, doc_id: str, source: Document) -> None:
        self.documents.setdefault(index, {})[doc_id] = source
        key = (index, doc_id)
        self._versions[key] = self._versions.get(key, 0) + 1

    def _item(
        self, index: str, doc_id: str, result: str, *, status: int | None = None
    ) -> dict[str, Any]:
        if status is None:
            status = 201 if result == "created" else 200
        version = self._versions[(index, doc_id)]
        return {"_index": index, "_id": doc_id, "_version": version, "result": result,
                "status": status}  # fmt: skip


def _source_of(action: Action) -> Mapping[str, Any]:
    """The document of an index/create action: `_source`, or the non-metadata keys."""
    source = action.get("_source")
    if isinstance(source, Mapping):
        return source
    return {key: value for key, value in action.items() if not key.startswith("_")}


def _as_stored(source: Mapping[str, Any]) -> Document:
    """What Elasticsearch keeps: the JSON the client would send (fails the same way, too).

    A fraction comes back a float, as any JSON reader gives it, unless the float would not
    be the number in `_source` (123456789012345678.91): then the exact Decimal.
    """
    stored = json.loads(_SERIALIZER.dumps(source), parse_float=_json_fraction)
    if not isinstance(stored, dict):
        raise TypeError(f"a document must be a JSON object, got {type(source).__name__}")
    return stored


def _json_fraction(text: str) -> float | Decimal:
    number = float(text)
    if math.isfinite(number) and Decimal(repr(number)) == Decimal(text):
        return number
    return Decimal(text)


def _merge(current: Document, doc: Document) -> Document:
    """A partial update: objects merge key by key, recursively; anything else is replaced."""
    merged = dict(current)
    for key, value in doc.items():
        before = merged.get(key)
        if isinstance(before, dict) and isinstance(value, dict):
            merged[key] = _merge(before, value)
        else:
            merged[key] = value
    return merged


def make_change(
    database: str,
    table: str,
    type: str = "INSERT",
    row: Mapping[str, Any] | None = None,
    *,
    old: Mapping[str, Any] | None = None,
    pk_names: Sequence[str] = ("id",),
    sql: str = "",
    executed_at: datetime | None = None,
    topic: str = "test",
    partition: int = 0,
    offset: int | None = None,
    row_index: int = 0,
) -> Change:
    """One Change as the decoder would build it, from typed Python values.

    `row` is the after-image (the before-image for DELETE), `old` the previous values of the
    changed columns (UPDATE); `raw` gets Canal's strings of `row`. A type other than
    INSERT/UPDATE/DELETE makes a DDL change carrying `sql`. `executed_at` defaults to now.
    `offset` defaults to the next one: changes made later come later, as in the binlog, so
    `change.version` grows as it would in production.
    """
    kind = type.upper()
    values = dict(row or {})
    raw = {name: canal_text(value) for name, value in values.items()}
    old_raw = {name: canal_text(value) for name, value in (old or {}).items()}
    return Change(
        database=database,
        table=table,
        type=kind,
        row=values,
        old=None if old is None else dict(old),
        pk_names=tuple(pk_names),
        raw=raw,
        executed_at=datetime.now(UTC) if executed_at is None else executed_at,
        sql=sql,
        position=Position(topic, partition, next(_offsets) if offset is None else offset),
        row_index=row_index,
        is_ddl=kind not in ROW_TYPES,
        changed=frozenset(old or ()),
        old_pk=previous_pk(tuple(pk_names), raw, old_raw) if old_raw else None,
    )


def canal_text(value: Any) -> str | None:
    """A Python value as Canal sends it: a string, or None for NULL."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def changes_from_canal(
    value: bytes,
    topic: str = "test",
    partition: int = 0,
    offset: int | None = None,
    *,
    tinyint1_as_bool: bool = False,
) -> list[Change]:
    """The Changes `esupdater run` would make of one Kafka record (flat JSON or protobuf),
    with `source.format = "canal"` and the given `source.tinyint1_as_bool`.

    `offset` defaults to the next one, as for `make_change`. Bad input raises
    CanalDecodeError (an esupdater.DecodeError), as the service sets such a record aside.
    """
    position = Position(topic, partition, next(_offsets) if offset is None else offset)
    return CanalDecoder(tinyint1_as_bool=tinyint1_as_bool).decode(value, position)


async def apply(
    changes: Change | Iterable[Change],
    *,
    registry: Registry | None = None,
    sink: MemorySink | None = None,
) -> MemorySink:
    """Run every matching handler on each change, one after another, into `sink`.

    Handlers come from `registry` (default: the one `@on` registers into, so
    import your handler modules first). A handler's exception propagates as is: no retries, no
    dead-letter topic. A handler that returns with a write it did not await (`ctx.index(...)`
    without `await`) raises `UnawaitedCallError`, as the service counts it as a failure.
    Returns the sink, new or given, to read `documents` from.
    """
    routes = default_registry if registry is None else registry
    target = MemorySink() if sink is None else sink
    for change in [changes] if isinstance(changes, Change) else changes:
        for route in routes.handlers_for(change.database, change.table, change.type):
            ctx = Context(target, None, change)
            try:
                await route.handler(change, ctx)
            finally:
                unawaited = ctx.unawaited_error(route.name)
            if unawaited is not None:
                raise unawaited
    return target

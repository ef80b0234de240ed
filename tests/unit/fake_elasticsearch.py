"""Just enough of `AsyncElasticsearch` for the bulk writer, failing where a test says.

Like elasticsearch-py's own tests of the bulk helpers: a client whose `bulk` is scripted
("fail at call N") and otherwise applies index / update / delete to a dict, as Elasticsearch
does, so retry paths run without a server. Real-server behaviour is tested in
tests/integration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import orjson
from elastic_transport import (
    ApiResponseMeta,
    HttpHeaders,
    NodeConfig,
    OrjsonSerializer,
    SerializerCollection,
)
from elasticsearch import ApiError

Doc = dict[str, Any]
#: (call number from 1, the item's place in that call from 0, op_type, index, id) ->
#: (status, error type) to fail that item, or None to apply it.
ItemScript = Callable[[int, int, str, str, str], tuple[int, str] | None]


def api_error(cls: type[ApiError], status: int, error_type: str, reason: str) -> ApiError:
    """An `ApiError` as the client raises it for a whole request Elasticsearch refused."""
    meta = ApiResponseMeta(status=status, http_version="1.1", headers=HttpHeaders(),
                           duration=0.0, node=NodeConfig("http", "localhost", 9200))
    body = {"error": {"type": error_type, "reason": reason}, "status": status}
    return cls(error_type, meta, body)


@dataclass
class Call:
    """One bulk request: its actions in order, as (op_type, index, id, body)."""

    actions: list[tuple[str, str, str, Doc | None]]
    #: The fields of each item the request asked for (`filter_path`); None: all.
    filter_path: str | None = None


class FakeElasticsearch:
    """Applies bulk requests to `docs`; `fail_request` / `fail_item` script the failures."""

    def __init__(
        self,
        *,
        fail_request: Callable[[int], Exception | None] | None = None,
        fail_item: ItemScript | None = None,
    ) -> None:
        self.docs: dict[tuple[str, str], Doc] = {}
        self.calls: list[Call] = []
        self.fail_request = fail_request or (lambda n: None)
        self.fail_item = fail_item or (lambda n, place, op, index, doc_id: None)
        self.transport = SimpleNamespace(
            serializers=SerializerCollection({"application/json": OrjsonSerializer()})
        )
        self._client_meta: Any = ()
        self._called = asyncio.Condition()
        #: When set by a test: each request waits for this before it is answered.
        self.answers: asyncio.Event | None = None

    async def wait_calls(self, n: int) -> None:
        """Until `n` bulk requests have been made."""
        async with self._called:
            await self._called.wait_for(lambda: len(self.calls) >= n)

    def options(self, **_: Any) -> FakeElasticsearch:
        return self

    async def bulk(
        self, *, operations: bytes | list[bytes], filter_path: str | None = None, **_: Any
    ) -> SimpleNamespace:
        if isinstance(operations, bytes):  # one NDJSON body: every line ends with a newline
            assert operations.endswith(b"\n"), "an NDJSON body must end with a newline"
            operations = operations[:-1].split(b"\n")
        lines = [orjson.loads(line) for line in operations]
        call = Call([], filter_path)
        items: list[dict[str, Any]] = []
        n = len(self.calls) + 1
        i = 0
        while i < len(lines):
            ((op, meta),) = lines[i].items()
            body = None if op == "delete" else lines[i + 1]
            i += 1 if op == "delete" else 2
            call.actions.append((op, meta["_index"], meta["_id"], body))
        self.calls.append(call)
        async with self._called:
            self._called.notify_all()
        if self.answers is not None:
            await self.answers.wait()
        error = self.fail_request(n)
        if error is not None:
            raise error
        for place, (op, index, doc_id, body) in enumerate(call.actions):
            failure = self.fail_item(n, place, op, index, doc_id)
            if failure is not None:
                status, error_type = failure
                items.append({op: {"_index": index, "_id": doc_id, "status": status,
                                   "error": {"type": error_type, "reason": "scripted"}}})
            else:
                items.append({op: self._apply(op, index, doc_id, body)})
        if filter_path is not None:  # as Elasticsearch: only the fields asked for
            kept = {path.removeprefix("items.*.") for path in filter_path.split(",")}
            items = [{op: {name: value for name, value in item.items() if name in kept}}
                     for ((op, item),) in (answer.items() for answer in items)]
        return SimpleNamespace(body={"errors": True, "items": items})

    def _apply(self, op: str, index: str, doc_id: str, body: Doc | None) -> dict[str, Any]:
        key = (index, doc_id)
        item: dict[str, Any] = {"_index": index, "_id": doc_id}
        if op == "delete":
            found = self.docs.pop(key, None) is not None
            return {**item, "status": 200 if found else 404,
                    "result": "deleted" if found else "not_found"}
        assert body is not None
        if op == "update":
            if key not in self.docs and not body.get("doc_as_upsert"):
                return {**item, "status": 404, "error": {
                    "type": "document_missing_exception", "reason": f"[{doc_id}]: missing"}}
            created = key not in self.docs
            self.docs[key] = {**self.docs.get(key, {}), **body["doc"]}
        else:
            created = key not in self.docs
            self.docs[key] = body
        return {**item, "status": 201 if created else 200,
                "result": "created" if created else "updated"}

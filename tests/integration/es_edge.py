"""An HTTP relay to the local Elasticsearch that can answer in its place, at the network edge.

For the answers the local server cannot give on demand: the integ-test distribution has no
security (so no 401), and a 429 from a full write queue cannot be provoked at will. Every
other request, and every request once the test says so, goes to the real server unchanged.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiohttp import ClientSession, web

#: Makes the client accept an answer as Elasticsearch's (elasticsearch-py checks it).
PRODUCT = {"X-Elastic-Product": "Elasticsearch"}
#: Headers not to copy from the real server's answer (aiohttp sets its own).
HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "content-encoding"}

#: (request number from 1, the parsed bulk body as [(op_type, metadata)]) -> an answer to
#: give instead of Elasticsearch's, or None to relay the request.
Answer = Callable[[int, list[tuple[str, dict[str, Any]]]], web.Response | None]


def bulk_items(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The actions of a bulk body, in order: (op_type, its metadata)."""
    lines = [orjson.loads(line) for line in body.splitlines() if line.strip()]
    actions: list[tuple[str, dict[str, Any]]] = []
    i = 0
    while i < len(lines):
        ((op, meta),) = lines[i].items()
        actions.append((op, meta))
        i += 1 if op == "delete" else 2
    return actions


def item_errors(
    actions: list[tuple[str, dict[str, Any]]], status: int, error_type: str
) -> web.Response:
    """A bulk answer in which every item failed with `status` / `error_type`."""
    items = [{op: {"_index": meta.get("_index"), "_id": meta.get("_id"), "status": status,
                   "error": {"type": error_type, "reason": "answered by the test's edge"}}}
             for op, meta in actions]
    return web.json_response({"errors": True, "took": 0, "items": items}, headers=PRODUCT)


def request_error(status: int, error_type: str, reason: str) -> web.Response:
    """A whole request refused, as Elasticsearch answers it (e.g. 401 security_exception)."""
    body = {"error": {"type": error_type, "reason": reason}, "status": status}
    return web.json_response(body, status=status, headers=PRODUCT)


class EsEdge:
    """Relays to `target`; while `answer` returns a response for a bulk request, sends that."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.answer: Answer = lambda n, actions: None
        self.bulk_requests = 0
        self.answered = 0
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, listener).start()
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        self._session = ClientSession()

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path.endswith("/_bulk"):
            self.bulk_requests += 1
            answer = self.answer(self.bulk_requests, bulk_items(body))
            if answer is not None:
                self.answered += 1
                return answer
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("content-type", "accept", "authorization")}
        async with self._session.request(
            request.method, self.target + request.path_qs, data=body, headers=headers
        ) as upstream:
            data = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=upstream.status, body=data, headers=out)


@asynccontextmanager
async def es_edge(target: str) -> AsyncIterator[EsEdge]:
    """An `EsEdge` in front of `target` (the local Elasticsearch), relaying until told."""
    edge = EsEdge(target)
    await edge.start()
    try:
        yield edge
    finally:
        await edge.stop()

"""esupdater's errors, and the one place that decides what kind of failure an error is.

Every retry loop asks `classify` (an exception) or `classify_item` (a bulk item's answer)
and acts on the kind, as aiokafka's errors carry `retriable`:

- TRANSIENT: Elasticsearch or Kafka unavailable or busy; retried for as long as it lasts,
  never counted against the row.
- HELD: Elasticsearch refuses for a reason outside the row (credentials, a write block, an
  index that does not exist, a request it cannot take); retried, logged as an error every
  time, never set aside: the offset does not move past it until someone fixes the cause.
- REFUSED: the document itself cannot be stored (mapping, parse, illegal argument, not
  serialisable); set aside at once, retrying cannot help.
- HANDLER: the handler's own exception; retried up to `dead_letter.max_attempts`, then
  set aside.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from elasticsearch import ApiError
from elasticsearch import ConnectionError as EsConnectionError
from elasticsearch import ConnectionTimeout as EsConnectionTimeout

from esupdater.change import Position


class FailureKind(enum.Enum):
    TRANSIENT = "transient"
    HELD = "held"
    REFUSED = "refused"
    HANDLER = "handler"


#: Statuses of Elasticsearch being busy or briefly unavailable.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Statuses that say nothing about the document: who asks, or what may be written now.
HOLDING_STATUSES = frozenset({401, 403})
#: Error types of the same kind whatever their status.
HOLDING_ERRORS = frozenset({
    "cluster_block_exception", "index_not_found_exception", "index_closed_exception",
    "security_exception",
})
#: Error types that are about the document itself: the only ones set aside at once.
DOCUMENT_ERRORS = frozenset({
    "mapper_parsing_exception", "document_parsing_exception", "mapper_exception",
    "strict_dynamic_mapping_exception", "illegal_argument_exception", "parse_exception",
    "x_content_parse_exception", "json_parse_exception", "action_request_validation_exception",
    "version_conflict_engine_exception", "document_missing_exception",
    "routing_missing_exception", "invalid_index_name_exception",
})


class EsupdaterError(Exception):
    """Base of esupdater's errors a user can act on."""

    #: What a retry loop does with it (see the module docstring).
    kind = FailureKind.HANDLER


class BulkItemError(EsupdaterError):
    """Elasticsearch refused one action for good (mapping or parse error, missing document)."""

    kind = FailureKind.REFUSED

    def __init__(self, op_type: str, index: str, doc_id: str, status: int, reason: str) -> None:
        super().__init__(
            f"{op_type} {index}/{doc_id} refused by Elasticsearch ({status}): {reason}"
        )
        self.op_type = op_type
        self.index = index
        self.doc_id = doc_id
        self.status = status
        self.reason = reason


class UnawaitedCallError(EsupdaterError):
    """A handler returned while a write it started (`ctx.index(...)`, ...) had not finished.

    Its offset would be committed with nothing written; counted like the handler raising.
    """


class HandlerCancelledError(EsupdaterError):
    """A handler raised `CancelledError` while its row was not being cancelled (a library
    that uses it for its own timeouts): counted like any exception of the handler's."""


class DecodeError(EsupdaterError, ValueError):
    """A Kafka record the source format's decoder cannot make Changes of, whatever the format.

    Set aside whole at once: decoding it again gives the same answer. The message names the
    record (`topic/partition@offset`) and what was wrong, so the dead letter alone tells an
    operator where to look; `reason` is that without the position. The consume loop and
    redrive catch it themselves; its `kind` stays the default, so a handler that raises one
    (decoding something of its own) is retried like any exception of its own.
    """

    def __init__(self, position: Position, reason: str) -> None:
        super().__init__(f"{position}: {reason}")
        self.position = position
        self.reason = reason


class UnreachableError(EsupdaterError):
    """A server a one-shot command needs did not answer within its wait (exit 1)."""


class ConfigError(EsupdaterError):
    """Configuration esupdater cannot work with; the message says what and where."""


def _answer_kind(status: int | None, error_type: str | None) -> FailureKind | None:
    """The kind an Elasticsearch answer has whoever asked; None: it depends on the request."""
    if status is None or status in TRANSIENT_STATUSES:
        return FailureKind.TRANSIENT
    if status in HOLDING_STATUSES or error_type in HOLDING_ERRORS:
        return FailureKind.HELD
    return None


def classify_item(status: int | None, error: object, *, whole_request: bool) -> FailureKind:
    """A failed bulk item: `error` is Elasticsearch's error object (or text, for a request
    that failed as a whole, `whole_request`). Only document errors are REFUSED."""
    error_type = error.get("type") if isinstance(error, Mapping) else None
    kind = _answer_kind(status, error_type if isinstance(error_type, str) else None)
    if kind is not None:
        return kind
    if not whole_request and error_type in DOCUMENT_ERRORS:
        return FailureKind.REFUSED
    return FailureKind.HELD


def classify(exc: BaseException) -> FailureKind:
    """What a retry loop does with an exception a handler raised (or a write raised in it).

    The client's own connection errors and timeouts are TRANSIENT; a builtin `TimeoutError`
    or `RecursionError` is the handler's own, and counts its attempts.
    """
    if isinstance(exc, EsupdaterError):
        return exc.kind
    if isinstance(exc, EsConnectionError | EsConnectionTimeout):
        return FailureKind.TRANSIENT
    if isinstance(exc, ApiError):
        return _answer_kind(exc.status_code, _error_type(exc.body)) or FailureKind.HANDLER
    return FailureKind.HANDLER


def _error_type(body: Any) -> str | None:
    error = body.get("error") if isinstance(body, Mapping) else None
    kind = error.get("type") if isinstance(error, Mapping) else None
    return kind if isinstance(kind, str) else None

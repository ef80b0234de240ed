"""Bulk actions as values: what `Context`'s writes send, and what a `@maps` mapper returns.

Each builder returns one action in elasticsearch.helpers' format (`_op_type`, `_index`,
`_id`, ...), the dict the bulk writer serialises. `Context.index(...)` is `await`-ing the
write of `actions.index(...)`; a mapper returns the action instead of awaiting it::

    from esupdater import actions, maps

    @maps("shop.users")
    def user_document(change):
        if change.is_delete:
            return actions.delete(index="users", id=change.pk)
        return actions.index(index="users", id=change.pk, doc=change.row)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: One bulk action in elasticsearch.helpers' format.
Action = dict[str, Any]

__all__ = ["Action", "delete", "index", "update", "upsert"]


def index(
    *, index: str, id: str, doc: Mapping[str, Any], version: int | None = None, **meta: Any
) -> Action:
    """Create or replace the whole document.

    With `version` (usually `change.version`) the write is external-versioned: one older than
    the stored document is not applied, and its item says `"result": "stale"`.
    """
    if version is None and not meta:  # the usual action, built here: one call per row
        return {"_op_type": "index", "_index": index, "_id": id, "_source": doc}
    return index_action(index, id, doc, version, meta)


def upsert(*, index: str, id: str, doc: Mapping[str, Any], **meta: Any) -> Action:
    """Merge `doc` into the document, creating it when missing (doc_as_upsert)."""
    return upsert_action(index, id, doc, meta)


def update(*, index: str, id: str, doc: Mapping[str, Any], **meta: Any) -> Action:
    """Merge `doc` into an existing document; a missing one is an error."""
    return update_action(index, id, doc, meta)


def delete(*, index: str, id: str, version: int | None = None, **meta: Any) -> Action:
    """Delete the document; deleting one that is not there is not an error.

    `version` as for `index`: a delete older than the stored document is not applied.
    """
    if version is None and not meta:
        return {"_op_type": "delete", "_index": index, "_id": id}
    return delete_action(index, id, version, meta)


# The builders with positional arguments and `meta` as a dict: what `Context`'s methods call
# (one plain call per write on the hot path, no keywords gathered again).


def index_action(
    index: str, id: str, doc: Mapping[str, Any], version: int | None, meta: Mapping[str, Any]
) -> Action:
    if version is None and not meta:  # the usual write
        return {"_op_type": "index", "_index": index, "_id": id, "_source": doc}
    return _versioned(
        {"_op_type": "index", "_index": index, "_id": id, "_source": doc, **meta}, version
    )


def upsert_action(index: str, id: str, doc: Mapping[str, Any], meta: Mapping[str, Any]) -> Action:
    _refuse_version("upsert", meta)
    return {
        "_op_type": "update", "_index": index, "_id": id, "doc": doc, "doc_as_upsert": True,
        **meta,
    }


def update_action(index: str, id: str, doc: Mapping[str, Any], meta: Mapping[str, Any]) -> Action:
    _refuse_version("update", meta)
    return {"_op_type": "update", "_index": index, "_id": id, "doc": doc, **meta}


def delete_action(
    index: str, id: str, version: int | None, meta: Mapping[str, Any]
) -> Action:
    return _versioned({"_op_type": "delete", "_index": index, "_id": id, **meta}, version)


def _versioned(action: Action, version: int | None) -> Action:
    if version is not None:  # the usual write has none: one comparison
        action["version"] = version
        action.setdefault("version_type", "external")
    return action


def _refuse_version(what: str, meta: Mapping[str, Any]) -> None:
    if "version" in meta or "version_type" in meta:
        raise TypeError(
            f"{what} cannot be versioned (Elasticsearch's update API refuses external "
            "versions): send the whole row with ctx.index(..., version=change.version), "
            "or actions.index(..., version=change.version) from a mapper"
        )

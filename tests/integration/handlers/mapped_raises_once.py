"""shop.users rows mapped as they are, each after the mapper raised once for it (a connection
reset in an enrichment lookup, say): retried, then fine."""

from __future__ import annotations

from esupdater import Change, actions, maps

from .params import INDEX

failed_once: set[str] = set()


@maps("shop.users")
def user_document(change: Change) -> actions.Action:
    if change.pk not in failed_once:
        failed_once.add(change.pk)
        raise ConnectionResetError("the enrichment service hung up")
    return actions.index(index=INDEX, id=change.pk, doc=change.row)

"""shop.users rows mapped to {"v": the row's name}: a name that is not a number is a document
an index mapping `v` as a long refuses."""

from __future__ import annotations

from esupdater import Change, actions, maps

from .params import INDEX


@maps("shop.users")
def name_as_v(change: Change) -> actions.Action:
    return actions.index(index=INDEX, id=change.pk, doc={"v": change.raw["name"]})

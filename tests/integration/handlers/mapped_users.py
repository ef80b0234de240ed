"""shop.users rows mapped with `@maps`, no `async def`: an INSERT indexes the row and a
name-lookup document, an UPDATE upserts the changed columns, a DELETE deletes the row's
document. Each call appends "pk v" to `mapped.log` in the working directory (the order the
mapper saw each row's changes in).

The name lookup goes to the index `<INDEX>-by-name`, id the row's name, {"id": pk}.
"""

from __future__ import annotations

from esupdater import Change, actions, maps

from .params import INDEX, WORKDIR

NAMES = f"{INDEX}-by-name"

_log = (WORKDIR / "mapped.log").open("a", buffering=1)


@maps("shop.users")
def user_document(change: Change) -> actions.Action | list[actions.Action]:
    _log.write(f"{change.pk} {change.row['v']}\n")
    if change.is_delete:
        return actions.delete(index=INDEX, id=change.pk)
    if change.is_update:
        doc = {column: change.row[column] for column in change.changed}
        return actions.upsert(index=INDEX, id=change.pk, doc=doc)
    return [
        actions.index(index=INDEX, id=change.pk, doc=change.row),
        actions.index(index=NAMES, id=str(change.row["name"]), doc={"id": change.pk}),
    ]

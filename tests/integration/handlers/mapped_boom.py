"""shop.users rows mapped as they are, except: a row named "boom" makes the mapper raise, and
one named "text" makes it return a string instead of actions. Every call appends the row's pk
to `calls.log` in the working directory."""

from __future__ import annotations

from esupdater import Change, actions, maps

from .params import INDEX, WORKDIR

_log = (WORKDIR / "calls.log").open("a", buffering=1)


@maps("shop.users")
def user_document(change: Change) -> actions.Action:
    _log.write(f"{change.pk}\n")
    name = change.row["name"]
    if name == "boom":
        raise ValueError(f"cannot map row {change.pk}: no rule for {name}")
    if name == "text":
        return f"{change.pk} as text"  # type: ignore[return-value]  # the mistake under test
    return actions.index(index=INDEX, id=change.pk, doc=change.row)

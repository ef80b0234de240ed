"""Which handlers a change reaches: `@on("db.table")` registrations and their lookup.

The decorator returns the function unchanged, so a handler stays a plain coroutine a test can
await. Lookups are memoised per (database, table, type) because they run once per row.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import inspect
import os
import pkgutil
import re
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from esupdater.change import DDL_TYPES, ROW_TYPES, Change
from esupdater.driven import awaits_every_write, only_awaits_writes, reads_write_results
from esupdater.errors import ConfigError
from esupdater.mapping import Mapper, as_handler

#: A handler: `async def handler(change, ctx)`; ctx is the Context (kept `Any` to avoid a cycle).
Handler = Callable[[Change, Any], Awaitable[None]]
H = TypeVar("H", bound=Handler)
M = TypeVar("M", bound=Mapper)

#: Shorthand in `types=` for every DDL type.
DDL_WILDCARD = "DDL"
DEFAULT_TYPES = ROW_TYPES
KNOWN_TYPES = ROW_TYPES | DDL_TYPES


class RouteError(ConfigError):
    """A registration is wrong (pattern, types or handler); raised at import time."""


class HandlerImportError(ConfigError):
    """A handler module could not be imported; names the module and carries the cause."""

    def __init__(self, message: str, module: str) -> None:
        super().__init__(message)
        self.module = module


def handler_name(fn: object) -> str:
    """`module:qualname`, how errors and `esupdater check` name a handler."""
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or repr(fn)
    return f"{module}:{qualname}"


@dataclass(frozen=True, slots=True)
class Route:
    """One registration: a `database.table` glob, the event types it wants, and the handler."""

    pattern: str
    types: frozenset[str]
    handler: Handler
    _database: re.Pattern[str]
    _table: re.Pattern[str]
    #: The `@maps` function behind `handler` (its `as_handler`), else None.
    mapper: Mapper | None = None
    #: Whether the handler awaits nothing but its ctx writes (esupdater.driven): then its
    #: rows are stepped by their batch rather than run in a task each.
    steppable: bool = False
    #: Whether such a handler may read what its awaited writes return (each item); when
    #: not, its writes' answers carry only each item's status and error.
    reads_items: bool = True
    #: Whether such a handler awaits each ctx write right where it calls it: then none can
    #: be left unawaited, and its stepped rows keep no list of their writes.
    awaits_every_write: bool = False

    @property
    def name(self) -> str:
        return handler_name(self.handler)

    def matches(self, database: str, table: str, type: str) -> bool:
        return (
            type in self.types
            and self._database.match(database) is not None
            and self._table.match(table) is not None
        )


def _compile(glob: str) -> re.Pattern[str]:
    # fnmatch.translate anchors the end; re.match anchors the start. Case-sensitive on purpose:
    # MySQL table names are case-sensitive on Linux.
    return re.compile(fnmatch.translate(glob))


def _check_types(types: Iterable[str] | None, where: str) -> frozenset[str]:
    if types is None:
        return DEFAULT_TYPES
    if isinstance(types, str):
        raise RouteError(f"{where}: types must be a set of names, e.g. types={{{types!r}}}")
    wanted: set[str] = set()
    for name in types:
        upper = name.upper()
        if upper == DDL_WILDCARD:
            wanted |= DDL_TYPES
        elif upper in KNOWN_TYPES:
            wanted.add(upper)
        else:
            known = ", ".join(sorted(KNOWN_TYPES | {DDL_WILDCARD}))
            raise RouteError(f"{where}: unknown change type {name!r}; known: {known}")
    if not wanted:
        raise RouteError(f"{where}: types is empty, so the handler would never run")
    return frozenset(wanted)


def make_route(pattern: str, handler: Handler, types: Iterable[str] | None = None) -> Route:
    """Validate one registration; every error names the pattern and the handler."""
    where = f"@on({pattern!r}) on {handler_name(handler)}"
    if not inspect.iscoroutinefunction(handler):
        raise RouteError(f"{where}: a handler must be an `async def` function")
    _check_signature(handler, where, "two arguments, (change, ctx)", 2)
    route = _route(pattern, handler, types, where)
    return dataclasses.replace(route, steppable=only_awaits_writes(handler),
                               reads_items=reads_write_results(handler),
                               awaits_every_write=awaits_every_write(handler))


def make_mapper_route(
    pattern: str, mapper: Mapper, types: Iterable[str] | None = None
) -> Route:
    """Validate one `@maps` registration: a plain function of the change."""
    name = handler_name(mapper)
    where = f"@maps({pattern!r}) on {name}"
    if inspect.iscoroutinefunction(mapper) or not callable(mapper):
        raise RouteError(
            f"{where}: a mapper is a plain `def` returning actions; register an `async def` "
            "with @on instead"
        )
    _check_signature(mapper, where, "one argument, (change)", 1)
    route = _route(pattern, as_handler(mapper), types, where)
    return dataclasses.replace(route, mapper=mapper)


def _route(pattern: str, handler: Handler, types: Iterable[str] | None, where: str) -> Route:
    parts = pattern.split(".") if isinstance(pattern, str) else []
    if len(parts) != 2 or not all(parts):
        raise RouteError(
            f"{where}: pattern must be 'database.table' with exactly one '.', "
            "globs allowed (e.g. 'shop.order_*')"
        )
    return Route(
        pattern, _check_types(types, where), handler, _compile(parts[0]), _compile(parts[1])
    )


def _check_signature(function: Callable[..., Any], where: str, wanted: str, count: int) -> None:
    """Refused at registration, not at the first row: a handler is called as (change, ctx),
    a mapper as (change)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check
        return
    try:
        signature.bind(*[None] * count)
    except TypeError:
        what = "handler" if count == 2 else "mapper"
        raise RouteError(
            f"{where}: a {what} takes {wanted}; this one takes "
            f"({', '.join(signature.parameters)})"
        ) from None


class Registry:
    """Routes in registration order, with a memoised lookup per (database, table, type)."""

    def __init__(self) -> None:
        self._routes: list[Route] = []
        self._cache: dict[tuple[str, str, str], tuple[Route, ...]] = {}

    @property
    def routes(self) -> list[Route]:
        return list(self._routes)

    def add(self, pattern: str, handler: Handler, *, types: Iterable[str] | None = None) -> Route:
        route = make_route(pattern, handler, types)
        self._routes.append(route)
        self._cache.clear()
        return route

    def add_mapper(
        self, pattern: str, mapper: Mapper, *, types: Iterable[str] | None = None
    ) -> Route:
        route = make_mapper_route(pattern, mapper, types)
        self._routes.append(route)
        self._cache.clear()
        return route

    def maps(self, pattern: str, *, types: Iterable[str] | None = None) -> Callable[[M], M]:
        """Decorator registering a mapper into this registry; returns it unchanged."""

        def register(mapper: M) -> M:
            self.add_mapper(pattern, mapper, types=types)
            return mapper

        return register

    def on(self, pattern: str, *, types: Iterable[str] | None = None) -> Callable[[H], H]:
        """Decorator registering into this registry; returns the function unchanged."""

        def register(handler: H) -> H:
            self.add(pattern, handler, types=types)
            return handler

        return register

    def handlers_for(self, database: str, table: str, type: str) -> tuple[Route, ...]:
        """Matching routes in registration order; empty if none (the caller counts those)."""
        key = (database, table, type)
        found = self._cache.get(key)
        if found is None:
            found = tuple(r for r in self._routes if r.matches(database, table, type))
            self._cache[key] = found
        return found

    def clear(self) -> None:
        self._routes.clear()
        self._cache.clear()

    @contextmanager
    def active(self) -> Iterator[Registry]:
        """Make module-level `on` register into this registry for the block."""
        global _active
        previous, _active = _active, self
        try:
            yield self
        finally:
            _active = previous

    @classmethod
    @contextmanager
    def scoped(cls) -> Iterator[Registry]:
        """A fresh registry that module-level `on` uses for the block (for tests)."""
        with cls().active() as registry:
            yield registry


#: Where `@on` registers unless a `Registry.active()` block says otherwise.
default_registry = Registry()
_active = default_registry


def on(pattern: str, *, types: Iterable[str] | None = None) -> Callable[[H], H]:
    """Register an `async def handler(change, ctx)` for `database.table` (globs allowed)."""
    return _active.on(pattern, types=types)


def maps(pattern: str, *, types: Iterable[str] | None = None) -> Callable[[M], M]:
    """Register a mapper, `def mapper(change) -> action(s) | None`, for `database.table`
    (globs allowed): the fast way to write rows as they are (esupdater.mapping)."""
    return _active.maps(pattern, types=types)


def load_handlers(
    package: str, registry: Registry | None = None, folder: Path | None = None
) -> list[str]:
    """Import `package` from `folder` (the settings file's; default: the working directory)
    and every module under it, so their `@on` decorators register.

    Modules already imported are not executed again (Python caches them).
    """
    cwd = str(folder) if folder is not None else os.getcwd()
    if cwd not in sys.path and (folder is not None or "" not in sys.path):
        sys.path.insert(0, cwd)  # the handlers live next to settings.toml, not site-packages
    importlib.invalidate_caches()
    target = default_registry if registry is None else registry
    loaded: list[str] = []
    with target.active():
        root = _import(package, package, cwd)
        loaded.append(package)
        paths = getattr(root, "__path__", None)
        if paths is not None:
            _import_tree(list(paths), package + ".", loaded, package, cwd)
    return loaded


def _import_tree(paths: list[str], prefix: str, loaded: list[str], root: str, cwd: str) -> None:
    # Own recursion rather than pkgutil.walk_packages: walk_packages imports subpackages itself
    # and reports only ImportError to onerror, so other errors would escape unwrapped.
    for info in pkgutil.iter_modules(paths, prefix):
        module = _import(info.name, root, cwd)
        loaded.append(info.name)
        sub = getattr(module, "__path__", None)
        if info.ispkg and sub is not None:
            _import_tree(list(sub), info.name + ".", loaded, root, cwd)


def _import(name: str, root: str, cwd: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if name == root and exc.name is not None and (root + ".").startswith(exc.name + "."):
            raise HandlerImportError(
                f"handler package {root!r} not found from {cwd}: create {root}/__init__.py "
                "there, or point [handlers] package (ESUPDATER_HANDLERS__PACKAGE) at the "
                "package holding your @on handlers",
                root,
            ) from exc
        raise HandlerImportError(_import_message(name, exc, cwd), name) from exc
    except Exception as exc:
        raise HandlerImportError(_import_message(name, exc, cwd), name) from exc


def _import_message(name: str, exc: BaseException, folder: str) -> str:
    where = _where_raised(exc, folder)
    at = f" ({where})" if where else ""
    return f"cannot import handler module {name!r}{at}: {type(exc).__name__}: {exc}"


def _where_raised(exc: BaseException, folder: str) -> str | None:
    """`handlers/users.py, line 3`: the last line of the user's own code (under `folder`) in
    the traceback, or the line a SyntaxError points at; paths relative to `folder`."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_shown_path(exc.filename, folder)}, line {exc.lineno}"
    found = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        filename = frame.f_code.co_filename
        if filename.startswith(folder + os.sep) and not filename.startswith(sys.prefix):
            found = f"{_shown_path(filename, folder)}, line {line}"
    return found


def _shown_path(filename: str, folder: str) -> str:
    try:
        return str(Path(filename).relative_to(folder))
    except ValueError:
        return filename

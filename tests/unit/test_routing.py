"""Routing: which handlers a change reaches, and loading the handler package."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from esupdater.change import Change
from esupdater.routing import (
    DDL_TYPES,
    HandlerImportError,
    Registry,
    RouteError,
    default_registry,
    load_handlers,
    on,
)


async def first(change: Change, ctx: Any) -> None:
    """A handler for the tests."""


async def second(change: Change, ctx: Any) -> None:
    """Another handler for the tests."""


def names(registry: Registry, database: str, table: str, type: str = "INSERT") -> list[str]:
    return [route.handler.__name__ for route in registry.handlers_for(database, table, type)]


def test_exact_pattern_matches_only_that_table() -> None:
    registry = Registry()
    registry.add("shop.users", first)
    assert names(registry, "shop", "users") == ["first"]
    assert names(registry, "shop", "users2") == []
    assert names(registry, "shop2", "users") == []


def test_star_glob_matches_sharded_tables() -> None:
    registry = Registry()
    registry.add("shop.order_*", first)
    assert names(registry, "shop", "order_0") == ["first"]
    assert names(registry, "shop", "order_1023") == ["first"]
    assert names(registry, "shop", "orders") == []


def test_question_mark_matches_one_character_and_database_globs() -> None:
    registry = Registry()
    registry.add("db_?.t", first)
    assert names(registry, "db_1", "t") == ["first"]
    assert names(registry, "db_12", "t") == []


def test_patterns_are_case_sensitive() -> None:
    registry = Registry()
    registry.add("shop.Users", first)
    assert names(registry, "shop", "users") == []


def test_default_types_are_row_changes() -> None:
    registry = Registry()
    registry.add("shop.users", first)
    for type in ("INSERT", "UPDATE", "DELETE"):
        assert names(registry, "shop", "users", type) == ["first"]


def test_types_filter_limits_the_handler() -> None:
    registry = Registry()
    registry.add("shop.users", first, types={"INSERT"})
    assert names(registry, "shop", "users", "INSERT") == ["first"]
    assert names(registry, "shop", "users", "UPDATE") == []


def test_ddl_reaches_only_handlers_that_ask_for_it() -> None:
    registry = Registry()
    registry.add("shop.users", first)
    registry.add("shop.users", second, types={"ALTER"})
    assert names(registry, "shop", "users", "ALTER") == ["second"]
    assert names(registry, "shop", "users", "TRUNCATE") == []


def test_ddl_wildcard_means_every_ddl_type() -> None:
    registry = Registry()
    registry.add("shop.*", first, types={"DDL", "INSERT"})
    for type in DDL_TYPES | {"INSERT"}:
        assert names(registry, "shop", "users", type) == ["first"]
    assert names(registry, "shop", "users", "DELETE") == []


def test_several_handlers_run_in_registration_order() -> None:
    registry = Registry()
    registry.add("shop.*", second)
    registry.add("shop.users", first)
    registry.add("*.users", second)
    assert names(registry, "shop", "users") == ["second", "first", "second"]


def test_unrouted_change_gets_an_empty_tuple() -> None:
    assert Registry().handlers_for("shop", "users", "INSERT") == ()


def test_lookup_is_memoised_and_refreshed_by_add() -> None:
    registry = Registry()
    registry.add("shop.users", first)
    found = registry.handlers_for("shop", "users", "INSERT")
    assert registry.handlers_for("shop", "users", "INSERT") is found
    registry.add("shop.users", second)
    assert names(registry, "shop", "users") == ["first", "second"]


def test_decorator_returns_the_function_unchanged() -> None:
    registry = Registry()
    assert registry.on("shop.users")(first) is first


async def test_decorated_handler_stays_directly_awaitable() -> None:
    registry = Registry()
    seen: list[str] = []

    @registry.on("shop.users")
    async def handler(change: Change, ctx: Any) -> None:
        seen.append(ctx)

    await handler(None, "ctx")  # type: ignore[arg-type]
    assert seen == ["ctx"]


def test_routes_describe_pattern_types_and_handler_name() -> None:
    registry = Registry()
    registry.add("shop.users", first, types={"insert"})
    [route] = registry.routes
    assert (route.pattern, route.types) == ("shop.users", frozenset({"INSERT"}))
    assert route.name == f"{__name__}:first"


def test_clear_forgets_routes_and_memo() -> None:
    registry = Registry()
    registry.add("shop.users", first)
    registry.handlers_for("shop", "users", "INSERT")
    registry.clear()
    assert registry.routes == []
    assert registry.handlers_for("shop", "users", "INSERT") == ()


def test_module_level_on_registers_into_a_scoped_registry() -> None:
    before = len(default_registry.routes)
    with Registry.scoped() as registry:
        on("shop.users")(first)
    assert [route.handler for route in registry.routes] == [first]
    assert len(default_registry.routes) == before


@pytest.mark.parametrize("pattern", ["shop", "shop.users.extra", ".users", "shop."])
def test_bad_pattern_error_names_pattern_and_function(pattern: str) -> None:
    with pytest.raises(RouteError) as raised:
        Registry().add(pattern, first)
    assert repr(pattern) in str(raised.value)
    assert f"{__name__}:first" in str(raised.value)


def test_unknown_type_is_an_error_naming_the_function() -> None:
    with pytest.raises(RouteError, match="unknown change type 'UPSERT'") as raised:
        Registry().add("shop.users", first, types={"UPSERT"})
    assert f"{__name__}:first" in str(raised.value)


def test_types_given_as_a_string_is_an_error() -> None:
    with pytest.raises(RouteError, match="set of names"):
        Registry().add("shop.users", first, types="INSERT")


def test_empty_types_is_an_error() -> None:
    with pytest.raises(RouteError, match="never run"):
        Registry().add("shop.users", first, types=set())


def test_non_async_handler_is_an_error_naming_the_function() -> None:
    def plain(change: Change, ctx: Any) -> None:
        pass

    with pytest.raises(RouteError, match="async def") as raised:
        Registry().add("shop.users", plain)  # type: ignore[arg-type]
    assert "test_non_async_handler_is_an_error_naming_the_function.<locals>.plain" in str(
        raised.value
    )


# -- load_handlers ---------------------------------------------------------------------------


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A unique package name in a temp working directory; imports are undone afterwards."""
    name = f"handlers_{uuid.uuid4().hex[:8]}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield name
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def write(path: Path, source: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))


HANDLER = """
    from esupdater.routing import on

    @on("shop.{table}")
    async def handle(change, ctx):
        pass
"""


def test_load_handlers_imports_every_module_recursively(tmp_path: Path, package: str) -> None:
    write(tmp_path / package / "__init__.py", "")
    write(tmp_path / package / "users.py", HANDLER.format(table="users"))
    write(tmp_path / package / "orders" / "__init__.py", "")
    write(tmp_path / package / "orders" / "items.py", HANDLER.format(table="items"))
    with Registry.scoped() as unused:
        registry = Registry()
        loaded = load_handlers(package, registry)
    assert sorted(loaded) == sorted(
        [package, f"{package}.users", f"{package}.orders", f"{package}.orders.items"]
    )
    assert sorted(route.pattern for route in registry.routes) == ["shop.items", "shop.users"]
    assert unused.routes == []
    assert str(tmp_path) in sys.path


def test_load_handlers_wraps_an_import_error_naming_the_module(
    tmp_path: Path, package: str
) -> None:
    write(tmp_path / package / "__init__.py", "")
    write(tmp_path / package / "broken.py", "raise RuntimeError('boom')\n")
    with pytest.raises(HandlerImportError) as raised:
        load_handlers(package, Registry())
    assert raised.value.module == f"{package}.broken"
    assert f"{package}.broken" in str(raised.value)
    assert "RuntimeError: boom" in str(raised.value)
    assert isinstance(raised.value.__cause__, RuntimeError)


def test_load_handlers_reports_a_missing_dependency_as_an_import_error(
    tmp_path: Path, package: str
) -> None:
    write(tmp_path / package / "__init__.py", "import no_such_dependency_xyz\n")
    with pytest.raises(HandlerImportError, match="no_such_dependency_xyz") as raised:
        load_handlers(package, Registry())
    assert "not found" not in str(raised.value)


def test_load_handlers_surfaces_bad_registrations(tmp_path: Path, package: str) -> None:
    write(tmp_path / package / "__init__.py", HANDLER.format(table="a.b"))
    with pytest.raises(HandlerImportError, match=r"'shop\.a\.b'.*:handle"):
        load_handlers(package, Registry())


def test_load_handlers_says_when_the_package_does_not_exist(package: str) -> None:
    with pytest.raises(HandlerImportError, match=r"not found.*\[handlers\] package"):
        load_handlers(package, Registry())

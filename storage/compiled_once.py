"""The job path's statements, run as SQL compiled once (SQLite and PostgreSQL).

A statement built once (`built_once`, `cached_statement`) is the same object for the life of the
process, so what SQLAlchemy works out for it at every execution (its cache key, the execution
context, the parameters' order and processing, the result's metadata) can be worked out once.
Measured here on SQLite, SQLAlchemy's execution path cost 0.06-0.1 ms of CPU per statement on top
of what sqlite3 spends, about 30 statements per command. `CompiledOnce` keeps, per statement and
set of parameter names, the SQL SQLAlchemy compiled, the order of its parameters, the type
processors SQLAlchemy itself would apply to each value and each returned column (chosen, as
SQLAlchemy does, from the types the database reports), and runs it on the connection's DBAPI
cursor, inside the transaction SQLAlchemy began: sqlite3's (storage.sqlite_direct), or the
asyncpg adapter's in the greenlet of `AsyncConnection.run_sync` (storage.compiled_connection;
0.39 -> 0.29 ms of client CPU for a read by id, measured here).

What stays the same: the SQL (compiled by SQLAlchemy), the values as stored (its bind
processors: datetimes, JSON), the rows as read (its result processors), errors (wrapped as
SQLAlchemy wraps them, so `IntegrityError` is still `sqlalchemy.exc.IntegrityError`; a dropped
connection is invalidated for the pool to replace), and the `before_cursor_execute` event for
whoever listens. A statement that needs more than that (a Python-side column default,
parameters expanded at execution) is not compiled once and goes through SQLAlchemy as before.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import exc
from sqlalchemy.engine import Connection, Dialect

P = ParamSpec("P")
S = TypeVar("S")

# Statements that live as long as the process, by id (the statement is kept, so the id is never
# reused for another object).
_BUILT_ONCE: dict[int, Any] = {}


def built_once(statement: S) -> S:
    """Mark a statement built once for the life of the process (a module constant)."""
    _BUILT_ONCE[id(statement)] = statement
    return statement


def cached_statement(build: Callable[P, S]) -> Callable[P, S]:
    """`functools.cache` for a function that builds a statement, marking each one it builds."""

    @functools.cache
    def cached(*args: Any, **kwargs: Any) -> Any:
        return built_once(build(*args, **kwargs))

    functools.update_wrapper(cached, build)
    return cached  # type: ignore[return-value]


class Row:
    """A returned row: by position, by iteration, and `_mapping` by column name, as SQLAlchemy's
    rows are used in storage/."""

    __slots__ = ("_mapping", "_values")

    def __init__(self, keys: Sequence[str], values: tuple[Any, ...]) -> None:
        self._values = values
        self._mapping = dict(zip(keys, values, strict=True))

    def __getitem__(self, index: int) -> Any:
        return self._values[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


class Result:
    """The part of SQLAlchemy's `Result` that storage/ uses, over rows already fetched."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Row], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def first(self) -> Row | None:
        return self._rows[0] if self._rows else None

    def all(self) -> list[Row]:
        return list(self._rows)

    def one(self) -> Row:
        if len(self._rows) != 1:
            raise exc.NoResultFound() if not self._rows else exc.MultipleResultsFound()
        return self._rows[0]

    def one_or_none(self) -> Row | None:
        if len(self._rows) > 1:
            raise exc.MultipleResultsFound()
        return self.first()

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]


Processor = Callable[[Any], Any] | None


class CompiledOnce:
    """One statement compiled for one dialect and one set of parameter names."""

    __slots__ = ("binds", "columns", "dialect", "fixed", "keys", "returns", "row_processors", "sql")

    def __init__(self, compiled: Any, dialect: Dialect, names: Sequence[str]) -> None:
        self.sql: str = compiled.string
        processors = compiled._bind_processors
        self.fixed: dict[str, Any] = {}
        self.binds: list[tuple[str, Processor]] = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            if not bind.required and name not in names:
                self.fixed[name] = bind.value
            self.binds.append((name, processors.get(name)))
        self.columns = compiled._result_columns
        self.dialect = dialect
        self.returns = bool(self.columns)
        self.keys = [column.keyname for column in self.columns]
        # Chosen at the first execution, from the types the database says it returned (as
        # SQLAlchemy chooses them: PostgreSQL's numeric processors depend on it).
        self.row_processors: list[Processor] | None = None

    @staticmethod
    def eligible(compiled: Any, names: Sequence[str]) -> bool:
        """Whether running the compiled SQL does all that SQLAlchemy would: no Python-side
        defaults to compute, no parameters expanded at execution, qmark parameters."""
        return (
            compiled.positional
            and not compiled.insert_prefetch
            and not compiled.update_prefetch
            and not compiled.literal_execute_params
            and not compiled.post_compile_params
            and all(bind.callable is None for bind in compiled.binds.values())
            and all(not bind.required or name in names for name, bind in compiled.binds.items())
        )

    def run(self, connection: Connection, params: Mapping[str, Any]) -> Result:
        """Execute on `connection`'s DBAPI connection, in its current transaction (SQLite's
        sqlite3, or the asyncpg adapter SQLAlchemy runs in this greenlet). A connection found
        dropped is invalidated, with every older one of its pool, as SQLAlchemy's own execution
        does: after a server restart, the next operation gets a new connection, not the next
        dead one (storage.idle_ping)."""
        values = []
        for name, process in self.binds:
            value = params[name] if name in params else self.fixed[name]
            values.append(value if process is None else process(value))
        dialect = connection.dialect
        dbapi_connection = connection.connection.dbapi_connection
        cursor = dbapi_connection.cursor()  # type: ignore[union-attr]
        errors = dialect.loaded_dbapi.Error
        try:
            if connection.dispatch.before_cursor_execute:
                connection.dispatch.before_cursor_execute(
                    connection, cursor, self.sql, values, None, False
                )
            cursor.execute(self.sql, values)
            rows = cursor.fetchall() if self.returns else []
            rowcount = len(rows) if self.returns else cursor.rowcount
            if self.row_processors is None and self.returns:
                self.row_processors = self._processors(cursor.description)
        except errors as error:
            dropped = dialect.is_disconnect(error, dbapi_connection, cursor)
            if dropped:
                connection.engine.pool._invalidate(connection.connection, error)
                connection.invalidate(error)
            raise exc.DBAPIError.instance(
                self.sql, values, error, errors, connection_invalidated=dropped, dialect=dialect
            ) from error
        finally:
            cursor.close()
        return Result([self._row(row) for row in rows], rowcount)

    def _processors(self, description: Sequence[Sequence[Any]] | None) -> list[Processor]:
        types = [entry[1] for entry in description or ()] or [None] * len(self.columns)
        return [
            column.type._cached_result_processor(self.dialect, coltype)
            for column, coltype in zip(self.columns, types, strict=True)
        ]

    def _row(self, raw: tuple[Any, ...]) -> Row:
        processors = self.row_processors or ()
        values = tuple(
            value if process is None else process(value)
            for value, process in zip(raw, processors, strict=True)
        )
        return Row(self.keys, values)


_Compiled = dict[tuple[int, tuple[str, ...]], CompiledOnce | None]
_BY_DIALECT: weakref.WeakKeyDictionary[Dialect, _Compiled] = weakref.WeakKeyDictionary()
_BY_SETTINGS: dict[tuple[Any, ...], _Compiled] = {}
_PLAIN = (str, int, float, bool, type(None), tuple)


def _settings(dialect: Dialect) -> tuple[Any, ...]:
    """What a dialect compiles by: its class and its settings (server version, paramstyle, JSON
    serializer...), its helper objects by class. Two engines on the same kind of database with
    the same options compile every statement alike: a process that opens many (the tests, which
    open one a test) compiles each statement once, not once an engine."""
    settings = tuple(
        (name, value if isinstance(value, _PLAIN) or callable(value) else type(value))
        for name, value in sorted(vars(dialect).items())
        if not _memoized(value)
    )
    return (type(dialect), settings)


def _memoized(value: Any) -> bool:
    """A method SQLAlchemy memoized on this dialect when it first ran (setting an isolation level
    runs one): the dialect's own function, derived from its settings, not one of them."""
    return "memoized_instancemethod" in getattr(value, "__qualname__", "")


def _cache_of(dialect: Dialect) -> _Compiled:
    cache = _BY_DIALECT.get(dialect)
    if cache is None:
        try:
            key = _settings(dialect)
            hash(key)
        except TypeError:  # a setting that cannot be compared: this dialect's own cache
            cache = {}
        else:
            cache = _BY_SETTINGS.setdefault(key, {})
        _BY_DIALECT[dialect] = cache
    return cache


def compiled_once(statement: Any, dialect: Dialect, params: Any) -> CompiledOnce | None:
    """`statement` compiled once for `dialect` and these parameter names; None for a statement
    not built once, or one that needs SQLAlchemy's execution path."""
    if id(statement) not in _BUILT_ONCE or not isinstance(params, Mapping):
        return None
    names = tuple(params)
    cache = _cache_of(dialect)
    key = (id(statement), names)
    if key not in cache:
        compiled = statement.compile(dialect=dialect, column_keys=list(names))
        eligible = CompiledOnce.eligible(compiled, names)
        cache[key] = CompiledOnce(compiled, dialect, names) if eligible else None
    return cache[key]

"""One small storage interface over ClickHouse: embedded chdb or a server.

Foresight runs the same DDL and SQL on both. By default it is chdb, ClickHouse in process on a
data folder, so a laptop needs no server; with ``CLICKHOUSE_URL`` set the statements go to a
ClickHouse server through clickhouse-connect.

Only one process at a time can open a chdb folder (a second one fails with "Error
initializing EmbeddedServer"), so callers open a store for a unit of work and close it, and
long-lived owners (the ClickHouse sink) serve the others. Within that process a store opens
further sessions on the same data (:meth:`ClickHouseStore.session`): each has its own settings
and its own turn, so a slow query in one never holds up an insert in another.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlencode, urlparse

import pyarrow as pa

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


@dataclass(frozen=True)
class QueryResult:
    """Rows of a query with their column names."""

    columns: list[str]
    rows: list[tuple[Any, ...]]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class ClickHouseStore(Protocol):
    """What Foresight needs of ClickHouse, whichever engine runs it."""

    def command(self, sql: str) -> None:
        """Run a statement that returns nothing (DDL, INSERT ... SELECT)."""
        ...

    def query(self, sql: str) -> QueryResult:
        """Run a query and return its rows."""
        ...

    def query_arrow(self, sql: str) -> pa.Table:
        """Run a query and return an Arrow table (training and backfills)."""
        ...

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        """Insert an Arrow table whose column names match the target table's."""
        ...

    def session(self, settings: Mapping[str, str]) -> ClickHouseStore:
        """A new session on the same data whose every query runs with ``settings``.

        It runs beside this one (queries in one do not wait for the other); close it after use.
        """
        ...

    def close(self) -> None: ...


def sql_string(value: str) -> str:
    """``value`` as a ClickHouse string literal, quoted and escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


IN_LIST_CHARS = 100_000
"""Most characters of one ``IN (...)`` list: ClickHouse refuses a query over
``max_query_size`` (262,144 bytes by default), so a long list goes in several queries."""


def sql_string_lists(values: Iterable[str], max_chars: int = IN_LIST_CHARS) -> Iterator[str]:
    """``values`` as comma-separated string literals, in lists of at most ``max_chars``
    (a longer single value makes a list of its own).

    >>> list(sql_string_lists(["a", "b", "c"], max_chars=8))
    ["'a', 'b'", "'c'"]
    """
    chunk: list[str] = []
    size = 0
    for value in values:
        literal = sql_string(value)
        joined = size + 2 + len(literal)  # the list with ", " and this literal added
        if chunk and joined > max_chars:
            yield ", ".join(chunk)
            chunk = []
        size = joined if chunk else len(literal)
        chunk.append(literal)
    if chunk:
        yield ", ".join(chunk)


def _check_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain table or column name: {name!r}")
    return name


def _column_list(data: pa.Table) -> str:
    return ", ".join(f"`{_check_identifier(c)}`" for c in data.column_names)


class ChdbStore:
    """ClickHouse embedded in this process (chdb) on the data folder ``path``.

    Every store on one folder is a chdb connection to the same engine, with its own session:
    ``settings`` are applied to it as if by ``SET`` right after connecting.
    """

    def __init__(self, path: str, settings: Mapping[str, str] | None = None) -> None:
        import chdb

        connect: Callable[[str], Any] = chdb.connect
        self.path = path
        self._conn = connect(f"{path}?{urlencode(settings)}" if settings else path)

    def command(self, sql: str) -> None:
        self._conn.query(sql)

    def query_arrow(self, sql: str) -> pa.Table:
        result: pa.Table = self._conn.query(sql, "ArrowTable")
        return result

    def query(self, sql: str) -> QueryResult:
        table = self.query_arrow(sql)
        columns = table.column_names
        return QueryResult(columns, [tuple(r.values()) for r in table.to_pylist()])

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        # chdb's Python() table function reads the local variable named in the SQL in place.
        rows = data  # noqa: F841 - read by name through Python(rows)
        columns = _column_list(data)
        self._conn.query(
            f"INSERT INTO {_check_identifier(table)} ({columns}) SELECT {columns} FROM Python(rows)"
        )

    def session(self, settings: Mapping[str, str]) -> ChdbStore:
        return ChdbStore(self.path, settings)

    def close(self) -> None:
        self._conn.close()


class ServerUnreachableError(ConnectionError):
    """No ClickHouse server answers at ``CLICKHOUSE_URL``; the message says where (without
    the URL's credentials) and why."""


class ServerStore:
    """A ClickHouse server through clickhouse-connect (``http[s]://user:pass@host:port/db``).

    With ``settings`` the client sends them with every query, and keeps no server session, so
    threads may share it.
    """

    def __init__(self, url: str, settings: Mapping[str, str] | None = None) -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import OperationalError

        parts = urlparse(url)
        self.url = url
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (8443 if parts.scheme == "https" else 8123)
        database = parts.path.strip("/") or "default"
        try:
            self._client = clickhouse_connect.get_client(
                host=host,
                port=port,
                username=unquote(parts.username or "default"),
                password=unquote(parts.password or ""),
                database=database,
                secure=parts.scheme == "https",
                settings=dict(settings or {}),
                autogenerate_session_id=settings is None,
            )
        except OperationalError as error:  # the client asks the server's version at once
            raise ServerUnreachableError(
                f"nothing answers as ClickHouse at {parts.scheme}://{host}:{port}/{database} "
                f"({_root_cause(error)}); check CLICKHOUSE_URL"
            ) from error

    def command(self, sql: str) -> None:
        self._client.command(sql)

    def query_arrow(self, sql: str) -> pa.Table:
        result: pa.Table = self._client.query_arrow(sql)
        return result

    def query(self, sql: str) -> QueryResult:
        result = self._client.query(sql)
        return QueryResult(list(result.column_names), [tuple(r) for r in result.result_rows])

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        self._client.insert_arrow(_check_identifier(table), data)

    def session(self, settings: Mapping[str, str]) -> ServerStore:
        return ServerStore(self.url, settings)

    def close(self) -> None:
        self._client.close()


def _root_cause(error: BaseException) -> str:
    """The innermost operating-system error under ``error`` (``[Errno 111] Connection
    refused``), or ``error`` itself: clickhouse-connect wraps urllib3's wrapper of it."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return f"[Errno {seen.errno}] {seen.strerror}" if seen.errno else seen.strerror
        seen = seen.__cause__ or seen.__context__
    return str(error)


@contextmanager
def open_store(clickhouse_url: str, chdb_path: str) -> Iterator[ClickHouseStore]:
    """The server at ``clickhouse_url`` when set, else chdb on ``chdb_path``; closed after."""
    store: ClickHouseStore = ServerStore(clickhouse_url) if clickhouse_url else ChdbStore(chdb_path)
    try:
        yield store
    finally:
        store.close()

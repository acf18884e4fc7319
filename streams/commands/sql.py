"""``foresight sql "SELECT ..."``: query Foresight's ClickHouse tables.

With ``CLICKHOUSE_URL`` set the statement goes to that server. Otherwise it goes to the
ClickHouse sink's SQL endpoint when a sink runs (it owns the chdb folder, which only one
process can open), and to the chdb folder itself when none does. Wherever it goes, it is
judged and run read-only within the same limits (:class:`connectors.user_sql.UserSql`).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow as pa

from connectors.clickhouse import QueryResult, open_store
from connectors.clickhouse_schema import create_tables
from connectors.clickhouse_sink import SinkUnavailableError, ask_sink, jsonable
from connectors.json_text import dumps
from connectors.user_sql import SqlError, UserSql
from streams.access import local_client_key
from streams.settings import Settings

MAX_CELL = 60
ANSWER_SECONDS = 30.0  # a sink's time to send an answer, beyond the statement's own limit
T = TypeVar("T")


def _where_the_tables_are(
    sql: str,
    settings: Settings,
    on_store: Callable[[UserSql], T],
    from_sink: Callable[[QueryResult], T],
) -> T:
    """Run ``sql`` on the sink's endpoint when one answers, else on chdb or the server."""
    if not settings.clickhouse_url:
        try:
            return from_sink(
                ask_sink(
                    settings.sink_sql_port,
                    sql,
                    local_client_key(settings),
                    settings.sql_timeout_s + ANSWER_SECONDS,
                    settings.tls(),
                )
            )
        except SinkUnavailableError:
            pass
    try:
        with open_store(settings.clickhouse_url, settings.chdb_path) as store:
            create_tables(store, settings.clickhouse_ttl_days)
            return on_store(UserSql(store.session, settings.sql_limits()))
    except SqlError:
        raise
    except Exception as error:  # chdb and clickhouse-connect raise many types
        message = str(error).strip()
        if "EmbeddedServer" in message:
            message += (
                f" (the chdb folder {settings.chdb_path} is held by another process, and no "
                f"sink answers SQL on port {settings.sink_sql_port}: is a sink starting, or "
                "running with another FORESIGHT_SINK_SQL_PORT?)"
            )
        raise SqlError(message) from error


def run_sql(sql: str, settings: Settings) -> QueryResult:
    """Run ``sql`` where Foresight's tables are; ``SqlError`` says why it did not run."""
    return _where_the_tables_are(sql, settings, lambda user_sql: user_sql.query(sql), lambda r: r)


def query_table(sql: str, settings: Settings) -> pa.Table:
    """Run ``sql`` where Foresight's tables are and return the rows as an Arrow table."""
    return _where_the_tables_are(
        sql,
        settings,
        lambda user_sql: user_sql.query_arrow(sql),
        lambda r: pa.table({c: [row[i] for row in r.rows] for i, c in enumerate(r.columns)}),
    )


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def format_table(result: QueryResult) -> str:
    """Rows as an aligned text table, numbers right-aligned, long cells cut."""
    rows = [[jsonable(v) for v in row] for row in result.rows]
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(c) for c in result.columns]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    numeric = [
        all(isinstance(r[i], int | float) or r[i] is None for r in rows) and bool(rows)
        for i in range(len(result.columns))
    ]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(list(result.columns)), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def _print(result: QueryResult, form: str) -> None:
    if form == "json":
        rows = [dict(zip(result.columns, map(jsonable, row), strict=True)) for row in result.rows]
        # NaN and infinities as null, as the sink's SQL endpoint and ClickHouse's JSON write them.
        print(dumps(rows, indent=True).decode())
    elif form == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(result.columns)
        for row in result.rows:
            cells = [jsonable(v) for v in row]
            writer.writerow(
                [
                    c if c is None or isinstance(c, str | int | float) else json.dumps(c)
                    for c in cells
                ]
            )
    else:
        print(format_table(result))


def _sql(args: argparse.Namespace, settings: Settings) -> int:
    try:
        result = run_sql(args.statement, settings)
    except SqlError as error:
        print(f"foresight sql: {error}", file=sys.stderr)
        return 1
    _print(result, args.format)
    return 0


def register(subparsers: Any) -> None:
    sql = subparsers.add_parser(
        "sql", help="run SQL on Foresight's ClickHouse tables (through the sink when it runs)"
    )
    sql.add_argument("statement", help='the SQL statement, e.g. "SELECT count() FROM alerts"')
    sql.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        default="table",
        help="output: aligned table (default), JSON objects or CSV",
    )
    sql.set_defaults(func=_sql)

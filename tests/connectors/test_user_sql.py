"""People's SQL on real chdb: writes and reaches outside the store are refused, reads run.

Every attack here was tried on the sink's endpoint before it had a guard (issue 16, finding 7)
or is a way around a guard: table functions in subqueries, joins and CTEs, a second statement
behind a comment, FORMAT, INTO OUTFILE and SETTINGS, a name whose line break could confuse the
checker. Each must be refused with its reason, and leave no file and no change behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.clickhouse import ChdbStore
from connectors.clickhouse_schema import create_tables
from connectors.user_sql import SqlError, SqlLimits, SqlRefusedError, UserSql
from deploy.local.processes import free_port
from streams.cli import main
from streams.commands.sql import query_table, run_sql
from streams.settings import Settings

CONNECT = "http://127.0.0.1:8083/connectors"
HEAVY = (
    "SELECT count() FROM (SELECT number % 1000003 AS k, count() FROM numbers(1000000000000) "
    "GROUP BY k)"
)

NOT_A_READ = r"not a read \({}\)"
TABLE_FUNCTION = r"table function {}\(\) is not accepted"
REFUSED = {
    "file() reads /etc/shadow": (
        "SELECT * FROM file('/etc/shadow', 'LineAsString')",
        r"function file\(\) is not accepted: it reads files",
    ),
    "file() as a scalar": ("SELECT file('/etc/passwd')", r"function file\(\)"),
    "FILE() in capitals": ("SELECT * FROM FILE('/etc/passwd', 'LineAsString')", r"file\(\)"),
    "INSERT INTO FUNCTION file()": (
        "INSERT INTO FUNCTION file('{written}', 'CSV') SELECT 1",
        NOT_A_READ.format("InsertQuery"),
    ),
    "url() to Kafka Connect": (
        f"SELECT * FROM url('{CONNECT}', 'LineAsString')",
        TABLE_FUNCTION.format("url"),
    ),
    "DESCRIBE url() fetches to infer its schema": (
        f"DESCRIBE TABLE url('{CONNECT}', 'LineAsString')",
        TABLE_FUNCTION.format("url"),
    ),
    "EXPLAIN url()": (f"EXPLAIN SELECT * FROM url('{CONNECT}')", TABLE_FUNCTION.format("url")),
    "DROP TABLE": ("DROP TABLE alerts", NOT_A_READ.format("DropQuery")),
    "ALTER DELETE": ("ALTER TABLE metric_samples DELETE WHERE 1", NOT_A_READ.format("AlterQuery")),
    "TRUNCATE": ("TRUNCATE TABLE alerts", NOT_A_READ.format("TruncateQuery")),
    "INSERT": ("INSERT INTO labels SELECT * FROM labels", NOT_A_READ.format("InsertQuery")),
    "a system.* write": ("INSERT INTO system.one VALUES (1)", NOT_A_READ.format("InsertQuery")),
    "CREATE TABLE ENGINE = File": (
        "CREATE TABLE leak (line String) ENGINE = File(LineAsString, '/etc/passwd')",
        NOT_A_READ.format("CreateQuery"),
    ),
    "SYSTEM": ("SYSTEM DROP MARK CACHE", NOT_A_READ.format("SYSTEM")),
    "KILL QUERY": ("KILL QUERY WHERE 1", NOT_A_READ.format("KillQueryQuery")),
    "SET": ("SET readonly = 0", NOT_A_READ.format("Set")),
    "two statements": ("SELECT 1; DROP TABLE alerts", "one statement at a time"),
    "a second statement behind a comment": (
        "SELECT 1 /* ; */ ; -- just a comment\nDROP TABLE alerts",
        "one statement at a time",
    ),
    "INTO OUTFILE": ("SELECT 1 INTO OUTFILE '{written}'", "INTO OUTFILE is not accepted"),
    "SHOW ... INTO OUTFILE": ("SHOW TABLES INTO OUTFILE '{written}'", "INTO OUTFILE"),
    "DESCRIBE ... INTO OUTFILE": ("DESCRIBE alerts INTO OUTFILE '{written}'", "INTO OUTFILE"),
    "EXPLAIN ... INTO OUTFILE": ("EXPLAIN SELECT 1 INTO OUTFILE '{written}'", "INTO OUTFILE"),
    "FORMAT": ("SELECT * FROM alerts FORMAT JSONEachRow", "FORMAT is not accepted"),
    "SHOW CREATE ... FORMAT": ("SHOW CREATE TABLE alerts FORMAT TSVRaw", "FORMAT is not accepted"),
    "SHOW TABLES FROM or FORMAT": ("SHOW TABLES FORMAT JSON", r"SHOW \.\.\. FROM"),
    "SETTINGS lifting readonly": ("SELECT 1 SETTINGS readonly = 0", "SETTINGS are not accepted"),
    "SETTINGS lifting the time limit": (
        "SELECT count() FROM alerts SETTINGS max_execution_time = 0",
        "SETTINGS are not accepted",
    ),
    "file() in an IN subquery": (
        "SELECT * FROM alerts WHERE entity IN "
        "(SELECT line FROM file('/etc/passwd', 'LineAsString'))",
        r"function file\(\)",
    ),
    "url() in a CTE": (
        f"WITH leaked AS (SELECT * FROM url('{CONNECT}', 'LineAsString')) SELECT * FROM leaked",
        TABLE_FUNCTION.format("url"),
    ),
    "url() in a scalar subquery": (
        f"SELECT (SELECT count() FROM url('{CONNECT}', 'LineAsString')) AS n",
        TABLE_FUNCTION.format("url"),
    ),
    "s3() in a JOIN": (
        "SELECT * FROM alerts AS a INNER JOIN s3('http://127.0.0.1:9000/b/k.csv') AS b ON 1",
        TABLE_FUNCTION.format("s3"),
    ),
    "file() after UNION ALL": (
        "SELECT 'x' UNION ALL SELECT * FROM file('/etc/passwd', 'LineAsString')",
        r"function file\(\)",
    ),
    "remote()": ("SELECT * FROM remote('127.0.0.1:9000', system.one)", "remote"),
    "remoteSecure()": ("SELECT * FROM remoteSecure('127.0.0.1:9440', system.one)", "remotesecure"),
    "cluster()": ("SELECT * FROM cluster('default', system.one)", "cluster"),
    "mysql()": ("SELECT * FROM mysql('127.0.0.1:3306', 'd', 't', 'u', 'p')", "mysql"),
    "postgresql()": (
        "SELECT * FROM postgresql('127.0.0.1:5432', 'd', 't', 'u', 'p')",
        "postgresql",
    ),
    "hdfs()": ("SELECT * FROM hdfs('hdfs://127.0.0.1:9000/f', 'TSV', 'a String')", "hdfs"),
    "jdbc()": ("SELECT * FROM jdbc('jdbc:x', 'd', 't')", "jdbc"),
    "odbc()": ("SELECT * FROM odbc('DSN=x', 'd', 't')", "odbc"),
    "executable()": ("SELECT * FROM executable('id', 'TSV', 'a String')", "executable"),
    "input()": ("SELECT * FROM input('a String')", "input"),
    "Python() reads the caller's variables": ("SELECT * FROM Python(store)", "python"),
    "view() wrapping file()": (
        "SELECT * FROM view(SELECT * FROM file('/etc/passwd', 'LineAsString'))",
        TABLE_FUNCTION.format("view"),
    ),
    "hasColumnInTable() reaches another server": (
        "SELECT hasColumnInTable('127.0.0.1', 'default', 'alerts', 'entity')",
        r"function hascolumnintable\(\)",
    ),
    "a line break in an alias, to fake the checker's input": (
        "SELECT * FROM file('/etc/passwd', 'LineAsString') AS `x\n      Function numbers`",
        "structure could not be read",
    ),
}
READS = [
    "SELECT count() FROM alerts",
    "WITH 2 AS x SELECT x * x",
    "SELECT 1 -- ; DROP TABLE alerts",
    "SHOW TABLES",
    "DESCRIBE alerts",
    "SHOW CREATE TABLE alerts",
    "EXISTS TABLE alerts",
    "EXPLAIN SELECT count() FROM alerts",
    "EXPLAIN PLAN actions = 1 SELECT count() FROM alerts",
    "SELECT count() FROM numbers(10)",
    "SELECT format('{}-{}', 'a', 'b')",
    "SELECT count() FROM system.tables WHERE database = 'default'",
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChdbStore]:
    store = ChdbStore(str(tmp_path / "chdb"))
    try:
        create_tables(store, ttl_days=30)
        yield store
    finally:
        store.close()


def _tables(store: ChdbStore) -> list[tuple[object, ...]]:
    return store.query("SELECT name FROM system.tables WHERE database = currentDatabase()").rows


@pytest.mark.parametrize(("sql", "reason"), REFUSED.values(), ids=REFUSED.keys())
def test_writes_and_reaches_outside_the_store_are_refused_with_a_reason(
    store: ChdbStore, tmp_path: Path, sql: str, reason: str
) -> None:
    written = tmp_path / "written"
    tables = _tables(store)
    user_sql = UserSql(store.session, SqlLimits(timeout_s=10.0, max_rows=1000))
    with pytest.raises(SqlRefusedError, match=reason):
        user_sql.query(sql.replace("{written}", str(written)))
    assert not written.exists()
    assert _tables(store) == tables


@pytest.mark.parametrize("sql", READS)
def test_reads_run(store: ChdbStore, sql: str) -> None:
    user_sql = UserSql(store.session, SqlLimits(timeout_s=10.0, max_rows=1000))
    assert user_sql.query(sql).rows


def test_a_statement_past_the_time_limit_is_stopped_with_the_setting_named(
    store: ChdbStore,
) -> None:
    user_sql = UserSql(store.session, SqlLimits(timeout_s=0.5, max_rows=1000))
    with pytest.raises(SqlError, match=r"stopped at the 0\.5 s limit \(FORESIGHT_SQL_TIMEOUT_S\)"):
        user_sql.query(HEAVY)


def test_answers_are_limited_in_rows_but_subqueries_are_not(store: ChdbStore) -> None:
    user_sql = UserSql(store.session, SqlLimits(timeout_s=10.0, max_rows=10))
    assert user_sql.query("SELECT number FROM numbers(10)").rows[-1] == (9,)
    assert user_sql.query("SELECT count() FROM (SELECT number FROM numbers(100))").rows == [(100,)]
    with pytest.raises(SqlError, match=r"more than 10 rows \(FORESIGHT_SQL_MAX_ROWS\)"):
        user_sql.query("SELECT number FROM numbers(11)")


def test_clickhouse_errors_come_back_in_its_words(store: ChdbStore) -> None:
    user_sql = UserSql(store.session, SqlLimits(timeout_s=10.0, max_rows=10))
    with pytest.raises(SqlError, match="UNKNOWN_TABLE") as unknown:
        user_sql.query("SELECT * FROM no_such_table")
    assert not isinstance(unknown.value, SqlRefusedError)
    with pytest.raises(SqlError, match="SYNTAX_ERROR"):
        user_sql.query("SELEC 1")


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="FORESIGHT_SQL_TIMEOUT_S"):
        SqlLimits(timeout_s=0.0, max_rows=10)


def test_foresight_sql_on_the_folder_is_held_to_the_same_guard(tmp_path: Path) -> None:
    """No sink runs: ``foresight sql`` and training open the folder, and are still guarded."""
    settings = Settings(chdb_path=str(tmp_path / "chdb"), sink_sql_port=free_port())
    with pytest.raises(SqlRefusedError, match=r"function file\(\)"):
        run_sql("SELECT * FROM file('/etc/passwd', 'LineAsString')", settings)
    with pytest.raises(SqlRefusedError, match="not a read"):
        query_table("DROP TABLE alerts", settings)
    assert run_sql("SELECT count() FROM alerts", settings).rows == [(0,)]
    assert query_table("SELECT count() AS n FROM alerts", settings).to_pylist() == [{"n": 0}]


def test_foresight_sql_json_is_strict_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """NaN and infinities come out null, as through the sink's endpoint: jq reads it."""
    monkeypatch.setenv("FORESIGHT_CHDB_PATH", str(tmp_path / "chdb"))
    monkeypatch.setenv("FORESIGHT_SINK_SQL_PORT", str(free_port()))
    sql = "SELECT 1 AS x, nan AS y, -inf AS z, 'é' AS w"
    assert main(["sql", sql, "--format", "json"]) == 0

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    assert json.loads(capsys.readouterr().out, parse_constant=refuse) == [
        {"x": 1, "y": None, "z": None, "w": "é"}
    ]

"""The SQL guard on real chdb: no statement outside the guard's reads runs, and the guard never
raises anything but its refusal (SqlRefusedError) or ClickHouse's error (SqlError).

Statements are built from the ways out of a read-only store (table functions that reach files,
hosts and processes; writes, DDL, SETTINGS, FORMAT, INTO OUTFILE, a second statement) placed
wherever a query may hide them (FROM, a JOIN, a subquery, a CTE, IN, after UNION ALL, behind a
comment), in any letter case, plus plain text. A statement holding one of them must not run;
after every statement the store holds the same tables and rows, and no file was written.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import event, example, given
from hypothesis import strategies as st

from connectors.clickhouse import ChdbStore
from connectors.user_sql import SqlError, SqlLimits, SqlRefusedError, UserSql, judge
from connectors.user_sql import parse_explain_ast as parse_ast
from tests.fuzz.budget import fuzz
from tests.fuzz.strategies import ODD

WRITTEN = "/tmp/foresight-fuzz-sql-{}"  # a file no statement may create
OUTSIDE = [
    "file('/etc/passwd', 'LineAsString')",
    "url('http://127.0.0.1:9/', 'LineAsString')",
    "remote('127.0.0.1:9', system.one)",
    "remoteSecure('127.0.0.1:9', system.one)",
    "cluster('default', system.one)",
    "s3('http://127.0.0.1:9/b/k.csv')",
    "executable('id', 'TSV', 'a String')",
    "mysql('127.0.0.1:9', 'd', 't', 'u', 'p')",
    "input('a String')",
    "Python(store)",
    "view(SELECT * FROM file('/etc/passwd', 'LineAsString'))",
    "merge(system, '.*')",
]
WRITES = [
    "DROP TABLE alerts",
    "TRUNCATE TABLE alerts",
    "INSERT INTO labels SELECT * FROM labels",
    "ALTER TABLE metric_samples DELETE WHERE 1",
    "CREATE TABLE leak (a String) ENGINE = Memory",
    "RENAME TABLE alerts TO gone",
    "OPTIMIZE TABLE alerts FINAL",
    "DETACH TABLE alerts",
    "SET readonly = 0",
    "SYSTEM DROP MARK CACHE",
    "KILL QUERY WHERE 1",
    "INSERT INTO FUNCTION file('{written}', 'CSV') SELECT 1",
    "BACKUP TABLE alerts TO File('{written}')",
]
READS = ["SELECT 1", "SELECT count() FROM alerts", "SHOW TABLES", "DESCRIBE alerts"]
HIDING = [
    "SELECT * FROM {x}",
    "SELECT (SELECT count() FROM {x}) AS n",
    "WITH t AS (SELECT * FROM {x}) SELECT * FROM t",
    "SELECT * FROM alerts WHERE entity IN (SELECT * FROM {x})",
    "SELECT * FROM alerts AS a INNER JOIN {x} AS b ON 1",
    "SELECT 1 UNION ALL SELECT * FROM {x}",
    "EXPLAIN SELECT * FROM {x}",
    "DESCRIBE TABLE {x}",
    "SELECT 1 FROM numbers(1) WHERE 1 IN (SELECT 1 FROM {x})",
]
TAILS = [
    "; {write}",
    " /* ; */ ; -- a comment\n{write}",
    " INTO OUTFILE '{written}'",
    " FORMAT JSONEachRow",
    " SETTINGS readonly = 0",
    " SETTINGS max_execution_time = 0",
]


def _cased(text: str, flips: list[bool]) -> str:
    """``text`` with some letters' case changed (SQL keywords and functions ignore case)."""
    return "".join(
        c.swapcase() if flips and flips[i % len(flips)] else c for i, c in enumerate(text)
    )


harmful = st.one_of(
    st.builds(lambda h, x: h.format(x=x), st.sampled_from(HIDING), st.sampled_from(OUTSIDE)),
    st.sampled_from(WRITES),
    st.builds(
        lambda r, t, w: r + t.format(write=w, written="{written}"),
        st.sampled_from(READS),
        st.sampled_from(TAILS),
        st.sampled_from(WRITES),
    ),
)
harmful_cased = st.builds(_cased, harmful, st.lists(st.booleans(), max_size=7))
harmless = st.one_of(
    st.sampled_from(READS), st.sampled_from(ODD), st.text(max_size=80), st.binary(max_size=40)
)


def _state(store: ChdbStore) -> list[tuple[object, ...]]:
    return store.query(
        "SELECT name, total_rows FROM system.tables WHERE database = currentDatabase() "
        "ORDER BY name"
    ).rows


@fuzz(120)
@given(st.one_of(harmful_cased.map(lambda s: (s, True)), harmless.map(lambda s: (s, False))))
@example(("SELECT * FROM file('/etc/passwd', 'LineAsString') AS `x\n Function numbers`", True))
@example(("SELECT '\ud800'", False))
def test_no_statement_outside_the_guards_reads_runs(
    store: ChdbStore, case: tuple[str | bytes, bool]
) -> None:
    statement, is_harmful = case
    written = Path(WRITTEN.format(id(case)))
    sql = statement if isinstance(statement, str) else statement.decode("latin-1")
    sql = sql.replace("{written}", str(written))
    before = _state(store)
    try:
        UserSql(store.session, SqlLimits(timeout_s=5.0, max_rows=100)).query(sql)
    except SqlRefusedError:
        event("refused")
    except SqlError:
        event("ClickHouse's error")
    else:
        event("ran")
        assert not is_harmful, f"ran: {sql!r}"
    assert not written.exists()
    assert _state(store) == before


AST_KINDS = ["SelectWithUnionQuery", "ExpressionList", "Function", "Identifier", "Literal", "Set"]
AST_KINDS += ["TableExpression", "Explain", "InsertQuery", "ShowTables", "DescribeQuery", ""]
ast_lines = st.lists(
    st.builds(
        lambda depth, kind, rest, count: (
            " " * depth + kind + rest + ("" if count is None else f" (children {count})")
        ),
        st.integers(0, 4),
        st.sampled_from(AST_KINDS),
        st.one_of(st.sampled_from([" file", " url", " numbers", " x y"]), st.text(max_size=12)),
        st.one_of(st.none(), st.integers(0, 3)),
    ),
    max_size=12,
)


@fuzz(1000)
@given(ast_lines, st.sets(st.sampled_from(["url", "file", "s3", "numbers"])))
@example([], set())
@example(["Explain", " Set"], {"url"})
def test_the_checker_reads_any_tree_and_refuses_or_accepts(
    lines: list[str], table_functions: set[str]
) -> None:
    """``EXPLAIN AST`` lines of any shape: the judge accepts or refuses, never fails."""
    try:
        judge(parse_ast(lines), frozenset(table_functions))
    except SqlRefusedError as refused:
        reason = str(refused)
    else:
        reason = ""
    event("refused" if reason else "accepted")

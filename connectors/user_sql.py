"""SQL that people send: judged by ClickHouse's own parser, then run read-only within limits.

``foresight sql``, training and the ClickHouse sink's SQL endpoint all run statements they did
not write, so none of them is handed to the store as it comes. :class:`UserSql` runs each one
in a session of its own (:meth:`ClickHouseStore.session`): a slow query never holds up the
sink's inserts, and the session's settings are what ClickHouse enforces whatever the
statement says: ``readonly=1`` (no writes, no DDL, no ``SYSTEM``, no settings changes),
``max_execution_time`` and ``max_result_rows``.

``readonly=1`` is not enough on its own: measured on chdb, it still lets the scalar ``file()``
read any file and ``INTO OUTFILE`` write one. So before a statement runs, ClickHouse formats it
(``formatQuerySingleLine``: one statement, comments gone) and parses it (``EXPLAIN AST``), and
:func:`judge` walks that tree. It accepts only reads (SELECT, WITH ... SELECT, SHOW, DESCRIBE,
EXISTS, EXPLAIN), only the table functions in :data:`LOCAL_TABLE_FUNCTIONS`, no function that
reaches outside the store, no ``SETTINGS``, ``FORMAT`` or ``INTO OUTFILE``. The formatted
statement is the one that runs, so what was judged is what runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import TypeVar

import pyarrow as pa

from connectors.clickhouse import ClickHouseStore, QueryResult, sql_string

T = TypeVar("T")

LOCAL_TABLE_FUNCTIONS = (
    "numbers",
    "numbers_mt",
    "zeros",
    "zeros_mt",
    "generate_series",
    "generateSeries",
    "primes",
    "generateRandom",
    "values",
    "format",  # also the scalar format('{} {}', ...)
    "null",
)
"""Table functions a query may use: they make rows in place and reach nothing outside. Every
other table function ClickHouse knows is refused wherever it appears."""

OUTSIDE_FUNCTIONS = ("file", "hasColumnInTable", "catboostEvaluate")
"""Scalar functions that read files or reach other hosts; ``readonly=1`` lets ``file`` through."""

_LOCAL = frozenset(name.lower() for name in LOCAL_TABLE_FUNCTIONS)
_OUTSIDE = frozenset(name.lower() for name in OUTSIDE_FUNCTIONS)

READS = ("SELECT", "WITH ... SELECT", "SHOW", "DESCRIBE", "EXISTS", "EXPLAIN")

_NAMED_READS = frozenset(
    {
        "ShowCreateTableQuery",
        "ShowCreateViewQuery",
        "ShowCreateDatabaseQuery",
        "ShowCreateDictionaryQuery",
        "ExistsTableQuery",
        "ExistsViewQuery",
        "ExistsDatabaseQuery",
        "ExistsDictionaryQuery",
    }
)
# The children each read statement has in EXPLAIN AST before its output clause (INTO OUTFILE
# is a Literal, FORMAT an Identifier, SETTINGS a Set); named reads have one Identifier per
# name in their header ("ShowCreateTableQuery db t").
_READ_CHILDREN: dict[str, tuple[str, ...]] = {
    "SelectWithUnionQuery": ("ExpressionList",),
    "DescribeQuery": ("TableExpression",),
    "ShowTables": (),
    "ShowColumns": (),
}
_OUTPUT_CLAUSES = {
    "Literal": "INTO OUTFILE is not accepted: it writes a file where the store runs",
    "Identifier": "FORMAT is not accepted: the caller chooses the answer's format "
    "(foresight sql --format)",
    "Set": "SETTINGS are not accepted: every statement runs read-only with fixed limits "
    "(FORESIGHT_SQL_TIMEOUT_S, FORESIGHT_SQL_MAX_ROWS)",
}
# SHOW TABLES FROM db and SHOW TABLES FORMAT f both add one Identifier: refuse both.
_SHOW_FROM = (
    "SHOW ... FROM another database and FORMAT are not accepted; "
    "SELECT name FROM system.tables WHERE database = '...' lists another database's tables"
)
_LINE = re.compile(r"^(?P<indent> *)(?P<kind>\S+)(?P<rest>.*?)(?: \(children (?P<count>\d+)\))?$")


class SqlError(ValueError):
    """A statement failed: ClickHouse rejected it (its own message), or it was refused."""


class SqlRefusedError(SqlError):
    """A statement was refused before it ran; the message says why."""


@dataclass(frozen=True)
class SqlLimits:
    """What every statement a person sends is held to; ClickHouse enforces them.

    Parameters
    ----------
    timeout_s
        Longest a statement runs before ClickHouse stops it (``FORESIGHT_SQL_TIMEOUT_S``).
    max_rows
        Most rows an answer may have (``FORESIGHT_SQL_MAX_ROWS``); subqueries may hold more.
    """

    timeout_s: float
    max_rows: int

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.max_rows < 1:
            raise ValueError(
                f"SQL limits need a timeout > 0 and max rows >= 1, got {self.timeout_s} and "
                f"{self.max_rows}; check FORESIGHT_SQL_TIMEOUT_S and FORESIGHT_SQL_MAX_ROWS"
            )

    def settings(self, *, answer: bool = True) -> dict[str, str]:
        """The session settings that enforce these limits (``readonly=1`` pins them).

        Without ``answer``, the rows are not limited: the checker's own queries return a
        statement's syntax tree, a line per node, not the statement's answer.
        """
        settings = {
            "readonly": "1",
            "max_execution_time": str(self.timeout_s),
            "timeout_overflow_mode": "throw",
        }
        if answer:
            settings |= {"max_result_rows": str(self.max_rows), "result_overflow_mode": "throw"}
        return settings


@dataclass
class AstNode:
    """A node of ClickHouse's ``EXPLAIN AST``: its kind, the rest of its line, its children."""

    kind: str
    rest: str
    children: list[AstNode] = field(default_factory=list)

    @property
    def name(self) -> str:
        """A function's name (the first word after the kind), lower case."""
        words = self.rest.split()
        return words[0].lower() if words else ""

    def walk(self, parent: AstNode | None = None) -> Iterator[tuple[AstNode, AstNode | None]]:
        """Every node below and including this one, with its parent."""
        yield self, parent
        for child in self.children:
            yield from child.walk(self)


def parse_explain_ast(lines: Sequence[str]) -> AstNode:
    """The tree of ``EXPLAIN AST`` output, or :class:`SqlRefusedError` if it does not add up.

    ClickHouse prints names as they are, so a name with a line break adds lines. Such lines can
    only add nodes, never hide one, as long as there is one root and every node has as many
    children as its ``(children N)`` says; a tree that fails either check is refused.
    """
    unreadable = SqlRefusedError(
        "the statement's structure could not be read (a name or alias with a line break?); "
        "rename it"
    )
    root: AstNode | None = None
    stack: list[tuple[int, AstNode]] = []
    declared: list[tuple[AstNode, int]] = []
    for line in lines:
        match = _LINE.match(line)
        if match is None:
            raise unreadable
        depth = len(match["indent"])
        node = AstNode(match["kind"], match["rest"])
        if root is None:
            if depth:
                raise unreadable
            root = node
        else:
            if depth == 0 or depth > stack[-1][0] + 1:
                raise unreadable
            while stack[-1][0] >= depth:
                stack.pop()
            stack[-1][1].children.append(node)
        stack.append((depth, node))
        declared.append((node, int(match["count"] or 0)))
    if root is None or any(len(node.children) != count for node, count in declared):
        raise unreadable
    return root


def _judge_statement(node: AstNode) -> None:
    """Refuse ``node`` unless it is a read, and with no output clause."""
    children = node.children
    if node.kind == "Explain":
        if children and children[0].kind == "Set":  # EXPLAIN's own options (actions=1)
            children = children[1:]
        if not children:
            raise SqlRefusedError("EXPLAIN needs a statement to explain")
        _judge_statement(children[0])
        expected: tuple[str, ...] = (children[0].kind,)
    elif node.kind in _NAMED_READS:
        expected = ("Identifier",) * len(node.rest.split())
    elif node.kind in _READ_CHILDREN:
        expected = _READ_CHILDREN[node.kind]
    else:
        raise SqlRefusedError(
            f"not a read ({node.kind}): only {', '.join(READS)} statements are accepted"
        )
    kinds = tuple(child.kind for child in children)
    if kinds[: len(expected)] != expected:
        raise SqlRefusedError(f"this {node.kind} has a shape the checker does not know: {kinds}")
    if len(kinds) > len(expected):
        extra = kinds[len(expected)]
        if extra == "Identifier" and not expected and node.kind.startswith("Show"):
            raise SqlRefusedError(_SHOW_FROM)
        raise SqlRefusedError(_OUTPUT_CLAUSES.get(extra, f"unexpected {extra} in a {node.kind}"))


def judge(tree: AstNode, table_functions: frozenset[str]) -> None:
    """Refuse ``tree`` unless it is one read that stays inside the store.

    ``table_functions`` are the lower-case names of every table function the store knows
    (``system.table_functions``): outside :data:`LOCAL_TABLE_FUNCTIONS` each is refused
    wherever it appears, in FROM, a JOIN, a subquery, a CTE or an ``IN``.
    """
    _judge_statement(tree)
    for node, parent in tree.walk():
        if node.kind == "Set" and not (parent and parent.kind == "Explain"):
            raise SqlRefusedError(_OUTPUT_CLAUSES["Set"])
        if node.kind != "Function" or node.name in _LOCAL:
            continue
        if node.name in _OUTSIDE:
            raise SqlRefusedError(
                f"function {node.name}() is not accepted: it reads files or reaches other hosts"
            )
        if node.name in table_functions or (parent and parent.kind == "TableExpression"):
            raise SqlRefusedError(
                f"table function {node.name}() is not accepted: files, URLs, other servers and "
                f"databases stay out of reach; only {', '.join(LOCAL_TABLE_FUNCTIONS)} are"
            )


class UserSql:
    """Runs people's statements on a store: one read at a time, in a session of its own.

    Parameters
    ----------
    open_session
        Opens a session on the store with the given settings (:meth:`ClickHouseStore.session`);
        each statement gets new ones (one to check it, one to run it), closed after it, so
        statements run side by side.
    limits
        What every statement is held to.
    """

    def __init__(
        self, open_session: Callable[[Mapping[str, str]], ClickHouseStore], limits: SqlLimits
    ) -> None:
        self.limits = limits
        self._open_session = open_session
        self._table_functions: frozenset[str] | None = None

    def query(self, sql: str) -> QueryResult:
        """Rows of ``sql``; :class:`SqlRefusedError` or :class:`SqlError` says why if none."""
        return self._run(sql, lambda session, statement: session.query(statement))

    def query_arrow(self, sql: str) -> pa.Table:
        """``sql``'s answer as an Arrow table, under the same checks as :meth:`query`."""
        return self._run(sql, lambda session, statement: session.query_arrow(statement))

    def _run(self, sql: str, run: Callable[[ClickHouseStore, str], T]) -> T:
        try:
            with closing(self._open_session(self.limits.settings(answer=False))) as checker:
                statement = self._checked(checker, sql)
            with closing(self._open_session(self.limits.settings())) as session:
                return run(session, statement)
        except SqlError:
            raise
        except Exception as error:  # chdb and clickhouse-connect raise many types
            raise self._explained(error) from error

    def _checked(self, session: ClickHouseStore, sql: str) -> str:
        """The statement as ClickHouse formats it, once :func:`judge` accepts it."""
        try:
            rows = session.query(f"SELECT formatQuerySingleLine({sql_string(sql)})").rows
        except Exception as error:  # a syntax error, in ClickHouse's words
            if "Multi-statements are not allowed" in str(error):
                raise SqlRefusedError(
                    "one statement at a time: send each separately (no ';' between statements)"
                ) from error
            raise
        statement = str(rows[0][0])
        lines = [str(row[0]) for row in session.query(f"EXPLAIN AST {statement}").rows]
        judge(parse_explain_ast(lines), self._known_table_functions(session))
        return statement

    def _known_table_functions(self, session: ClickHouseStore) -> frozenset[str]:
        if self._table_functions is None:
            names = session.query("SELECT groupArray(name) FROM system.table_functions").rows
            self._table_functions = frozenset(str(name).lower() for name in names[0][0])
        return self._table_functions

    def _explained(self, error: Exception) -> SqlError:
        """ClickHouse's error, with what to do when one of the limits stopped the statement."""
        message = str(error).strip()
        if "TIMEOUT_EXCEEDED" in message:
            return SqlError(
                f"stopped at the {self.limits.timeout_s:g} s limit (FORESIGHT_SQL_TIMEOUT_S): "
                f"narrow the time range or aggregate more. ClickHouse said: {message}"
            )
        if "TOO_MANY_ROWS_OR_BYTES" in message:
            return SqlError(
                f"the answer has more than {self.limits.max_rows:,} rows "
                f"(FORESIGHT_SQL_MAX_ROWS): add a LIMIT or aggregate. ClickHouse said: {message}"
            )
        if "(READONLY)" in message and "Cannot modify" in message:
            # EXPLAIN AST applies a statement's SETTINGS, and readonly=1 refuses them first.
            return SqlRefusedError(f"{_OUTPUT_CLAUSES['Set']}. ClickHouse said: {message}")
        if "(READONLY)" in message:
            return SqlRefusedError(f"statements run read-only here. ClickHouse said: {message}")
        return SqlError(message)

"""History from ClickHouse: predictions, alerts, metric samples, features at a point in time,
routing decisions and agent statistics.

Every statement is built here from validated parameters: strings only as quoted, escaped
literals (:func:`~connectors.clickhouse.sql_string`), numbers only as the integers the routes
validated, entity globs only as anchored regular expressions (:func:`glob_regex`). And every
statement still goes through the guard that people's SQL goes through
(:class:`~connectors.user_sql.UserSql`: one read, read-only, within the time and row limits),
on the sink's SQL endpoint or on the ClickHouse server at ``CLICKHOUSE_URL``
(:class:`Tables`).

A page of ``limit`` rows is read as ``limit + 1``: the extra row says whether there is a next
page. Floats that are not finite (a time to exhaustion that never comes) come back ``None``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.clickhouse import QueryResult, ServerStore, sql_string
from connectors.clickhouse_sink import SinkUnavailableError, ask_sink
from connectors.http.errors import ApiError
from connectors.user_sql import SqlError, SqlRefusedError, UserSql
from streams.access import local_client_key
from streams.api import schema
from streams.api.schema import Long
from streams.settings import Settings

_ANSWER_S = 30.0  # the sink's time to send an answer, beyond the statement's own limit
_GLOB_CHARS = frozenset("*?[")


def glob_regex(glob: str) -> str:
    """An ``fnmatch`` glob as an anchored regular expression for ClickHouse's ``match()``
    (RE2), matching the same names as :func:`fnmatch.fnmatchcase`.

    >>> glob_regex("web-*"), glob_regex("db-?.eu"), glob_regex("[!a-c]x")
    ('^web\\\\-.*$', '^db\\\\-.\\\\.eu$', '^[^a-c]x$')
    >>> glob_regex("[oops")
    '^\\\\[oops$'

    Only ASCII punctuation is escaped: RE2 refuses a backslash before any other character,
    and takes every other character literally.

    >>> glob_regex("é¥-*")
    '^é¥\\\\-.*$'
    """
    out = ["^"]
    i = 0
    while i < len(glob):
        char = glob[i]
        i += 1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            j = i + (glob[i : i + 1] == "!")
            j += glob[j : j + 1] == "]"  # a ']' first in a class is one of its characters
            end = glob.find("]", j)
            if end < 0:
                out.append("\\[")
                continue
            body = glob[i:end]
            negated = body.startswith("!")
            body = body[1:] if negated else body
            escaped = "".join("\\" + c if c in "\\[]^" else c for c in body)
            out.append(f"[{'^' if negated else ''}{escaped}]")
            i = end + 1
        else:
            special = char.isascii() and not (char.isalnum() or char == "_")
            out.append("\\" + char if special else char)
    out.append("$")
    return "".join(out)


def _entity_filter(column: str, glob: str) -> str:
    """``column`` equal to the name, or matching the glob (the equality uses the index)."""
    if _GLOB_CHARS.isdisjoint(glob):
        return f"{column} = {sql_string(glob)}"
    if glob == "*":
        return "1"
    return f"match({column}, {sql_string(glob_regex(glob))})"


def _in(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(sql_string(v) for v in values)})"


def _ms(column: str) -> str:
    return f"toUnixTimestamp64Milli({column})"


def _finite(column: str) -> str:
    return f"if(isFinite({column}), {column}, NULL)"


@dataclass(frozen=True)
class TimeRange:
    """From ``since`` (included) to ``until`` (excluded), epoch ms."""

    since: int
    until: int

    def where(self, column: str = "ts") -> str:
        return (
            f"{column} >= fromUnixTimestamp64Milli(toInt64({self.since}), 'UTC') AND "
            f"{column} < fromUnixTimestamp64Milli(toInt64({self.until}), 'UTC')"
        )


@dataclass(frozen=True)
class Paging:
    limit: int
    offset: int

    def clause(self) -> str:
        return f"LIMIT {self.limit + 1} OFFSET {self.offset}"

    def page(self, rows: list[Any]) -> tuple[list[Any], schema.Page]:
        more = len(rows) > self.limit
        return rows[: self.limit], schema.Page(
            limit=self.limit,
            offset=self.offset,
            next_offset=self.offset + self.limit if more else None,
        )


class Tables:
    """Where a server reads Foresight's tables: the ClickHouse server at ``CLICKHOUSE_URL``
    (one client, kept), or the ClickHouse sink's SQL endpoint with the local client key;
    never the chdb folder, which the sink must stay free to open."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._server: ServerStore | None = None
        self._sql: UserSql | None = None

    def _query(self, sql: str) -> QueryResult:
        settings = self.settings
        if settings.clickhouse_url:
            if self._sql is None:
                self._server = ServerStore(settings.clickhouse_url)
                self._sql = UserSql(self._server.session, settings.sql_limits())
            return self._sql.query(sql)
        key = local_client_key(settings)
        return ask_sink(settings.sink_sql_port, sql, key, settings.sql_timeout_s + _ANSWER_S)

    async def query(self, sql: str) -> list[dict[str, Any]]:
        """The rows of ``sql``, as dicts; :class:`ApiError` 503 when no store answers, 500
        when a statement built here is refused or fails (a bug, logged)."""
        try:
            result = await asyncio.to_thread(self._query, sql)
        except SinkUnavailableError as error:
            raise ApiError(
                503,
                f"history needs ClickHouse, and none answers: {error}. Start the sink "
                "(`foresight sink clickhouse`), or set CLICKHOUSE_URL to a ClickHouse server",
            ) from error
        except (SqlRefusedError, SqlError) as error:
            raise RuntimeError(f"a history statement failed: {error}\n{sql}") from error
        return result.as_dicts()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _labels(value: Any) -> dict[str, str]:
    """A ClickHouse Map as a dict, whichever way the store handed it over."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    return {str(k): str(v) for k, v in value or ()}


class History:
    """The history routes' reads (see the module docstring)."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    async def predictions(
        self,
        entity: str,
        window: TimeRange,
        paging: Paging,
        kinds: Sequence[str] = (),
        metric: str | None = None,
    ) -> schema.PredictionHistory:
        where = [window.where(), _entity_filter("entity", entity)]
        if kinds:
            where.append(_in("kind", kinds))
        if metric is not None:
            where.append(f"metric = {sql_string(metric)}")
        rows = await self.tables.query(
            f"SELECT entity, {_ms('ts')} AS event_time, metric, kind, model, model_version, "
            f"horizon_s, {_finite('value')} AS value, {_finite('score')} AS score, "
            f"{_finite('lower')} AS lower, {_finite('upper')} AS upper FROM predictions "
            f"WHERE {' AND '.join(where)} "
            f"ORDER BY ts DESC, entity, metric, kind, model, horizon_s {paging.clause()}"
        )
        kept, page = paging.page(rows)
        return schema.PredictionHistory(
            rows=[
                schema.PredictionRow(
                    entity=r["entity"],
                    event_time=Long(r["event_time"]),
                    metric=r["metric"],
                    kind=r["kind"],
                    model=schema.ModelRef(name=r["model"], version=r["model_version"]),
                    horizon_s=int(r["horizon_s"]),
                    value=_number(r["value"]),
                    score=_number(r["score"]),
                    lower=_number(r["lower"]),
                    upper=_number(r["upper"]),
                )
                for r in kept
            ],
            page=page,
        )

    async def alerts(
        self,
        entity: str,
        window: TimeRange,
        paging: Paging,
        statuses: Sequence[str] = (),
        severities: Sequence[str] = (),
        rule: str | None = None,
    ) -> schema.AlertHistory:
        where = [window.where(), _entity_filter("entity", entity)]
        if statuses:
            where.append(_in("status", statuses))
        if severities:
            where.append(_in("severity", severities))
        if rule is not None:
            where.append(f"rule = {sql_string(rule)}")
        rows = await self.tables.query(
            f"SELECT dedup_key, alert_id, status, severity, rule, entity, summary, "
            f"{_finite('value')} AS value, labels, {_ms('starts_at')} AS starts_at, "
            f"{_ms('ends_at')} AS ends_at, {_ms('ts')} AS event_time FROM alerts "
            f"WHERE {' AND '.join(where)} ORDER BY ts DESC, alert_id, status {paging.clause()}"
        )
        kept, page = paging.page(rows)
        return schema.AlertHistory(
            rows=[
                schema.AlertRow(
                    **{k: r[k] for k in ("dedup_key", "alert_id", "status", "severity", "rule")},
                    entity=r["entity"],
                    summary=r["summary"],
                    value=_number(r["value"]),
                    labels=_labels(r["labels"]),
                    starts_at=Long(r["starts_at"]),
                    ends_at=None if r["ends_at"] is None else Long(r["ends_at"]),
                    event_time=Long(r["event_time"]),
                )
                for r in kept
            ],
            page=page,
        )

    async def samples(
        self, entity: str, window: TimeRange, paging: Paging, metric: str | None = None
    ) -> schema.SampleHistory:
        where = [window.where(), _entity_filter("entity", entity)]
        if metric is not None:
            where.append(f"metric = {sql_string(metric)}")
        rows = await self.tables.query(
            f"SELECT entity, {_ms('ts')} AS event_time, metric, {_finite('value')} AS value "
            f"FROM metric_samples WHERE {' AND '.join(where)} "
            f"ORDER BY ts DESC, entity, metric {paging.clause()}"
        )
        kept, page = paging.page(rows)
        return schema.SampleHistory(
            rows=[
                schema.SampleRow(
                    entity=r["entity"],
                    event_time=Long(r["event_time"]),
                    metric=r["metric"],
                    value=_number(r["value"]),
                )
                for r in kept
            ],
            page=page,
        )

    async def features_as_of(
        self, rows: Sequence[schema.AsOfRow], only: Sequence[str] | None = None
    ) -> schema.AsOfResponse:
        """Each row's entity's newest FeatureVector stamped at or before its ``as_of``: one
        ASOF JOIN, so a training set is fetched without looking into its own future."""
        asked = ", ".join(
            f"({i}, {sql_string(r.entity)}, toInt64({r.as_of}))" for i, r in enumerate(rows)
        )
        found = await self.tables.query(
            "SELECT q.i AS i, f.entity AS found, "
            f"{_ms('f.ts')} AS event_time, f.feature_set AS feature_set, f.names AS names, "
            "arrayMap(v -> if(isFinite(v), v, NULL), f.values) AS values "
            "FROM (SELECT i, entity, fromUnixTimestamp64Milli(t, 'UTC') AS at FROM "
            f"values('i UInt32, entity String, t Int64', {asked})) AS q "
            "ASOF LEFT JOIN features AS f ON f.entity = q.entity AND f.ts <= q.at ORDER BY i"
        )
        by_row = {int(r["i"]): r for r in found}
        wanted = None if only is None else set(only)
        answers = []
        for i, asked_row in enumerate(rows):
            hit = by_row.get(i)
            vector = None
            if hit is not None and hit["found"]:
                vector = schema.FeatureVector(
                    entity=asked_row.entity,
                    event_time=Long(hit["event_time"]),
                    feature_set=hit["feature_set"],
                    features={
                        name: _number(value)
                        for name, value in zip(hit["names"], hit["values"], strict=True)
                        if wanted is None or name in wanted
                    },
                )
            answers.append(
                schema.AsOfAnswer(
                    entity=asked_row.entity, as_of=Long(asked_row.as_of), vector=vector
                )
            )
        return schema.AsOfResponse(rows=answers)

    async def routing_decisions(
        self, task_type: str, window: TimeRange, paging: Paging, latest: bool
    ) -> schema.RoutingDecisions:
        order = "task_type, ts DESC LIMIT 1 BY task_type" if latest else "ts DESC, task_type"
        finite = "arrayMap(v -> if(isFinite(v), v, NULL), {})".format
        rows = await self.tables.query(
            f"SELECT task_type, task_id, agent, {_finite('expected_duration_ms')} AS duration, "
            f"{_finite('success_probability')} AS success, model, model_version, "
            f"{_ms('ts')} AS event_time, alternative_agents, "
            f"{finite('alternative_durations_ms')} AS durations, "
            f"{finite('alternative_success_probabilities')} AS successes FROM routing_decisions "
            f"WHERE {window.where()} AND {_entity_filter('task_type', task_type)} "
            f"ORDER BY {order} {paging.clause()}"
        )
        kept, page = paging.page(rows)
        return schema.RoutingDecisions(
            rows=[
                schema.RoutingDecision(
                    task_type=r["task_type"],
                    task_id=r["task_id"],
                    agent=r["agent"],
                    expected_duration_ms=_number(r["duration"]),
                    success_probability=_number(r["success"]),
                    model=schema.ModelRef(name=r["model"], version=r["model_version"]),
                    event_time=Long(r["event_time"]),
                    alternatives=[
                        schema.AgentOption(
                            agent=agent,
                            expected_duration_ms=_number(duration),
                            success_probability=_number(success),
                        )
                        for agent, duration, success in zip(
                            r["alternative_agents"],
                            r["durations"],
                            r["successes"],
                            strict=True,
                        )
                    ],
                )
                for r in kept
            ],
            page=page,
        )

    async def agent_stats(
        self, agent: str, window: TimeRange, paging: Paging, task_type: str | None = None
    ) -> schema.AgentStatsResponse:
        where = [window.where(), _entity_filter("agent", agent)]
        if task_type is not None:
            where.append(f"task_type = {sql_string(task_type)}")
        rows = await self.tables.query(
            "SELECT agent, task_type, countIf(phase = 'SUCCEEDED') AS succeeded, "
            "countIf(phase = 'FAILED') AS failed, "
            "succeeded / nullIf(succeeded + failed, 0) AS success_rate, "
            "quantileIf(0.5)(duration_ms, phase = 'SUCCEEDED') AS p50, "
            "quantileIf(0.95)(duration_ms, phase = 'SUCCEEDED') AS p95, "
            f"sum(cost) AS total_cost, {_ms('max(ts)')} AS last_event_time FROM agent_events "
            f"WHERE {' AND '.join(where)} GROUP BY agent, task_type "
            f"ORDER BY agent, task_type {paging.clause()}"
        )
        kept, page = paging.page(rows)
        return schema.AgentStatsResponse(
            rows=[
                schema.AgentStats(
                    agent=r["agent"],
                    task_type=r["task_type"],
                    succeeded=int(r["succeeded"]),
                    failed=int(r["failed"]),
                    success_rate=_number(r["success_rate"]),
                    p50_duration_ms=_number(r["p50"]),
                    p95_duration_ms=_number(r["p95"]),
                    total_cost=_number(r["total_cost"]),
                    last_event_time=Long(r["last_event_time"]),
                )
                for r in kept
            ],
            page=page,
        )

"""Schemathesis hooks (``SCHEMATHESIS_HOOKS``): how to write the intelligence API's own GraphQL
scalars, in and out of their bounds, so the fuzzing also checks that a value out of bounds is
refused when the query is validated."""

from __future__ import annotations

import schemathesis
from graphql import IntValueNode, StringValueNode
from hypothesis import strategies as st


def _integers(low: int, high: int) -> st.SearchStrategy[IntValueNode]:
    return st.integers(low - 2, high + 2).map(lambda n: IntValueNode(value=str(n)))


schemathesis.graphql.scalar(
    "Name", st.text(max_size=300).map(lambda text: StringValueNode(value=text))
)
schemathesis.graphql.scalar("Limit", _integers(1, 1000))
schemathesis.graphql.scalar("Offset", _integers(0, 1_000_000))
schemathesis.graphql.scalar("Top", _integers(0, 50))
schemathesis.graphql.scalar("Long", _integers(0, 32_503_680_000_000))
schemathesis.graphql.scalar(
    "ModelName",
    st.one_of(st.just("failure_risk"), st.text(max_size=140)).map(
        lambda text: StringValueNode(value=text)
    ),
)

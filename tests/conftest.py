"""Shared fixtures: the real local stack for integration tests.

Integration tests (marked ``integration``) get the stack from ``stack_settings``: it runs
``foresight stack up`` once per session (idempotent: a stack already up is reused) and creates
the topics. Nothing is mocked; if a service cannot start the tests fail, they do not skip.
"""

from __future__ import annotations

import uuid

import pytest

from deploy.local.stack import LocalStack
from streams.commands.stack import create_topics, local_stack
from streams.settings import Settings, load_settings


@pytest.fixture(scope="session")
def stack_settings() -> Settings:
    settings = load_settings()
    stack: LocalStack = local_stack(settings)
    stack.up(timeout=180)
    create_topics(settings)
    return settings


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and key names, so tests never collide."""
    return uuid.uuid4().hex[:10]

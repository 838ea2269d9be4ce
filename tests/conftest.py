"""Shared fixtures: the default configuration and a parser over it."""

from __future__ import annotations

import pytest

from streams.config import load_config
from streams.config.settings import SCHEMAS_DIR
from streams.core.events import EventParser


@pytest.fixture(scope="session")
def config():
    return load_config(SCHEMAS_DIR / "journeys.yaml")


@pytest.fixture(scope="session")
def parser(config) -> EventParser:
    return EventParser(config.touchpoint_types, max_age_seconds=90 * 86400)

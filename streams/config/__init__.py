"""journeys.yaml: its rule dataclasses, loading and validation; runtime settings."""

from streams.config.durations import duration_ms
from streams.config.load import ConfigError, load_config
from streams.config.rules import Config, Journey, LeakRule, TouchpointType

__all__ = [
    "Config",
    "ConfigError",
    "Journey",
    "LeakRule",
    "TouchpointType",
    "duration_ms",
    "load_config",
]

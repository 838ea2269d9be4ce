"""Runtime settings: one frozen dataclass, filled from environment variables.

The CLI overrides fields with its flags; everything else (the worker, the sink,
the tests) reads a `Settings` instance and never the environment directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

# The repository's root in a checkout (the benchmark's worktrees, the tests' README checks).
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# journeys.yaml, the JSON Schemas and the ClickHouse DDL: the repository's schemas/,
# installed with the package as `parcours_schemas` (so `pip install parcours` works
# outside the repository), unless PARCOURS_SCHEMAS_DIR names another copy.
SCHEMAS_DIR = Path(os.environ.get("PARCOURS_SCHEMAS_DIR") or str(files("parcours_schemas")))

# Topic names, fixed by the design; a deployment may prefix them (PARCOURS_TOPIC_PREFIX).
TOUCHPOINTS = "touchpoints"
TOUCHPOINTS_RESOLVED = "touchpoints-resolved"
TOUCHPOINTS_DLQ = "touchpoints-dlq"
# Outputs the dispatcher takes (the other outputs go to ClickHouse only).
SURVEY_INVITATIONS = "survey-invitations"
FOLLOW_UPS = "follow-ups"
# Invitations `parcours dispatcher` gave up on (see streams.edge.dispatcher).
DISPATCH_DLQ = "dispatch-dlq"
N = TypeVar("N", int, float)


def _env_number(name: str, default: N) -> N:
    """The number in environment variable `name`, of the type of `default`."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    kind = type(default)
    try:
        return kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise SystemExit(f"{name}={raw!r} is not {what}; set it to e.g. {default}") from None


@dataclass(frozen=True)
class Settings:
    broker: str = field(default_factory=lambda: os.environ.get("KAFKA_BROKER", ""))
    # How long a starting worker waits for the broker to answer (it may be starting too).
    broker_wait_seconds: float = field(
        default_factory=lambda: _env_number("PARCOURS_BROKER_WAIT_SECONDS", 30.0)
    )
    clickhouse_url: str = field(default_factory=lambda: os.environ.get("CLICKHOUSE_URL", ""))
    app_id: str = field(default_factory=lambda: os.environ.get("PARCOURS_APP_ID", "parcours"))
    topic_prefix: str = field(default_factory=lambda: os.environ.get("PARCOURS_TOPIC_PREFIX", ""))
    # Must equal the partition count of the input topic (tansu auto-creates 4).
    partitions: int = field(default_factory=lambda: _env_number("PARCOURS_PARTITIONS", 4))
    config_path: Path = field(
        default_factory=lambda: Path(
            os.environ.get("PARCOURS_CONFIG", SCHEMAS_DIR / "journeys.yaml")
        )
    )
    data_dir: Path = field(
        default_factory=lambda: Path(os.environ.get("PARCOURS_DATA_DIR", ".parcours"))
    )
    # A file `parcours simulate` touches at each progress line: a container's health
    # check reads its age. None: no heartbeat.
    heartbeat_file: Path | None = field(
        default_factory=lambda: (
            Path(p) if (p := os.environ.get("PARCOURS_HEARTBEAT_FILE")) else None
        )
    )
    # Faust table store: memory:// (state rebuilt from changelogs) or rocksdb://.
    store: str = field(default_factory=lambda: os.environ.get("PARCOURS_STORE", "memory://"))
    # A port, or a range ("9108-9117") from which each process takes the first free one.
    metrics_port: str = field(
        default_factory=lambda: os.environ.get("PARCOURS_METRICS_PORT", "9108")
    )
    # How often workers count their state (journeys open, keys, retained touchpoints).
    state_scan_seconds: float = field(
        default_factory=lambda: _env_number("PARCOURS_STATE_SCAN_SECONDS", 30.0)
    )
    # Ingest limits.
    max_message_bytes: int = field(
        default_factory=lambda: _env_number("PARCOURS_MAX_MESSAGE_BYTES", 1_048_576)
    )
    max_future_seconds: float = field(
        default_factory=lambda: _env_number("PARCOURS_MAX_FUTURE_SECONDS", 3600.0)
    )
    # Older events are dead-lettered as too_old; 0 turns the check off (historical replays).
    max_age_seconds: float = field(
        default_factory=lambda: _env_number("PARCOURS_MAX_AGE_SECONDS", 90 * 86400.0)
    )
    # What becomes of `context.ip` in events: keep, truncate (to its /24 or /48) or drop.
    context_ip: str = field(
        default_factory=lambda: os.environ.get("PARCOURS_CONTEXT_IP", "truncate")
    )
    dedupe_window_seconds: float = field(
        default_factory=lambda: _env_number("PARCOURS_DEDUPE_WINDOW_SECONDS", 7 * 86400.0)
    )
    dedupe_max_ids_per_key: int = field(
        default_factory=lambda: _env_number("PARCOURS_DEDUPE_MAX_IDS_PER_KEY", 1000)
    )
    # Customers whose folded journeys stay in memory between steps (see
    # streams.core.stitching.Folds); the others fold again from their touchpoints.
    fold_cache_keys: int = field(
        default_factory=lambda: _env_number("PARCOURS_FOLD_CACHE_KEYS", 10_000)
    )
    # Batching of the agents: up to N messages, or whatever arrived within S seconds.
    batch_max: int = field(default_factory=lambda: _env_number("PARCOURS_BATCH_MAX", 2000))
    batch_seconds: float = field(default_factory=lambda: _env_number("PARCOURS_BATCH_SECONDS", 0.5))
    # Producer batch size in bytes, 0 for Faust's default. 1 sends a record per batch,
    # which the local broker's readers that stop at its end offset once needed; workers
    # no longer do (their marks close every changelog batch: see LocalBroker).
    producer_max_batch_bytes: int = field(
        default_factory=lambda: _env_number("PARCOURS_PRODUCER_MAX_BATCH_BYTES", 0)
    )
    # Idempotent producers (the collector's): a retried send is written once. 0 turns it
    # off for brokers without InitProducerId (the local broker).
    producer_idempotent: bool = field(
        default_factory=lambda: bool(_env_number("PARCOURS_PRODUCER_IDEMPOTENT", 1))
    )
    # Faust's standby copies of each table partition on other workers: 0 on one host;
    # 1 on a cluster for fast failover (each worker then replays the others' changelogs).
    standby_replicas: int = field(
        default_factory=lambda: _env_number("PARCOURS_STANDBY_REPLICAS", 0)
    )
    # How often workers send the wall clock to each partition (idle watermarks).
    tick_seconds: float = field(default_factory=lambda: _env_number("PARCOURS_TICK_SECONDS", 5.0))
    sink_batch_max: int = field(
        default_factory=lambda: _env_number("PARCOURS_SINK_BATCH_MAX", 5000)
    )
    sink_batch_seconds: float = field(
        default_factory=lambda: _env_number("PARCOURS_SINK_BATCH_SECONDS", 1.0)
    )
    sink_max_backoff_seconds: float = field(
        default_factory=lambda: _env_number("PARCOURS_SINK_MAX_BACKOFF_SECONDS", 30.0)
    )
    # A fault drill: while this file exists, every insert fails as if ClickHouse were down.
    sink_fault_file: str = field(
        default_factory=lambda: os.environ.get("PARCOURS_SINK_FAULT_FILE", "")
    )

    # The HTTP collector (see streams.edge.collector).
    write_keys: str = field(default_factory=lambda: os.environ.get("PARCOURS_WRITE_KEYS", ""))
    cors_origins: str = field(default_factory=lambda: os.environ.get("PARCOURS_CORS_ORIGINS", ""))
    collector_port: int = field(
        default_factory=lambda: _env_number("PARCOURS_COLLECTOR_PORT", 8080)
    )
    collector_max_in_flight: int = field(
        default_factory=lambda: _env_number("PARCOURS_COLLECTOR_MAX_IN_FLIGHT", 64)
    )
    collector_max_per_client: int = field(
        default_factory=lambda: _env_number("PARCOURS_COLLECTOR_MAX_PER_CLIENT", 16)
    )
    collector_max_per_key: int = field(
        default_factory=lambda: _env_number("PARCOURS_COLLECTOR_MAX_PER_KEY", 512)
    )
    collector_header_timeout_seconds: float = field(
        default_factory=lambda: _env_number("PARCOURS_COLLECTOR_HEADER_TIMEOUT_SECONDS", 10.0)
    )
    collector_body_timeout_seconds: float = field(
        default_factory=lambda: _env_number("PARCOURS_COLLECTOR_BODY_TIMEOUT_SECONDS", 10.0)
    )

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with the given fields replaced; None values are ignored."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

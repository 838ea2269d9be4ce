"""ClickHouse access: one URL form for the server and the embedded engine, and migrations.

`http(s)://user:pass@host:8123/db` talks to a ClickHouse server;
`chdb://path/to/dir` opens the embedded chDB engine on a local folder
(one process may hold a given folder at a time). Same DDL, same queries.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from streams.config.settings import SCHEMAS_DIR

MIGRATIONS_DIR = SCHEMAS_DIR / "clickhouse"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class ClickHouseUrlError(ValueError):
    pass


class StoreNotFound(ClickHouseUrlError):
    """A reader was pointed at an embedded store that does not exist."""


def masked(url: str) -> str:
    """`url` fit for logs and messages: a password in it becomes ***."""
    parsed = urlparse(url)
    if not parsed.password:
        return url
    user = f"{parsed.username}:***@" if parsed.username else ":***@"
    return parsed._replace(netloc=user + parsed.netloc.rpartition("@")[2]).geturl()


def client_args(url: str) -> dict:
    """clickhouse-connect `get_client` arguments for `url`; ClickHouseUrlError if unusable."""
    if url.startswith("chdb://"):
        path = Path(url.removeprefix("chdb://") or ".parcours/clickhouse").expanduser().resolve()
        return {"dsn": f"chdb://{path}"}
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ClickHouseUrlError(
            f"ClickHouse URL {masked(url)!r} is not understood; use http://user:pass@host:8123/db "
            "for a server or chdb://path/to/dir for the embedded engine"
        )
    return {
        "host": parsed.hostname,
        "port": parsed.port or (8443 if parsed.scheme == "https" else 8123),
        "username": unquote(parsed.username or "default"),
        "password": unquote(parsed.password or ""),
        "database": parsed.path.strip("/") or "default",
        "secure": parsed.scheme == "https",
    }


def connect(url: str, create: bool = True) -> Client:
    """A clickhouse-connect client for `url` (see module docstring). An embedded store's
    folder is made if missing, unless `create` is False (readers): then StoreNotFound."""
    args = client_args(url)
    if "dsn" in args:
        folder = Path(args["dsn"].removeprefix("chdb://"))
        if not create and not folder.is_dir():
            raise StoreNotFound(
                f"no embedded ClickHouse store at {folder}; a worker makes one when it starts "
                f"with CLICKHOUSE_URL=chdb://{folder} (or `parcours demo` fills "
                ".parcours/demo/clickhouse)"
            )
        folder.mkdir(parents=True, exist_ok=True)
    return clickhouse_connect.get_client(**args)


def migrate(client: Client, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the numbered .sql files not applied yet, in order; return their names.

    Each file's statements use IF NOT EXISTS, so two workers starting at once
    (or a crash between a statement and the bookkeeping row) are harmless.
    """
    client.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version UInt32, name String, applied_at DateTime DEFAULT now()) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    applied = []
    for path in sorted(migrations_dir.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"{path}: migration files are named NNNN_description.sql")
        version = int(match.group(1))
        if version in done:
            continue
        for statement in split_statements(path.read_text(encoding="utf-8")):
            client.command(statement)
        client.insert("schema_migrations", [[version, path.name]], column_names=["version", "name"])
        applied.append(path.name)
    return applied


def split_statements(sql: str) -> list[str]:
    """Split a migration file on ';' at line ends, dropping comment-only chunks."""
    statements = []
    for chunk in re.split(r";\s*(?:\n|$)", sql):
        code = "\n".join(line for line in chunk.splitlines() if not line.strip().startswith("--"))
        if code.strip():
            statements.append(code.strip())
    return statements


def write_stage_order(client: Client, journeys: dict[str, list[str]]) -> None:
    """Record each journey's configured stages, in order (the funnel views read them).

    Rows of stages a journey no longer has are deleted, so the funnel follows the config.
    """
    now = datetime.now(UTC)
    rows = [
        [journey, stage, index, stages[index - 1] if index else "", now]
        for journey, stages in journeys.items()
        for index, stage in enumerate(stages)
    ]
    client.insert(
        "journey_stage_order",
        rows,
        column_names=["journey", "stage", "stage_index", "previous_stage", "updated_at"],
    )
    for journey, stages in journeys.items():
        client.command(
            "DELETE FROM journey_stage_order WHERE journey = {journey:String} "
            "AND stage_index >= {count:UInt8}",
            parameters={"journey": journey, "count": len(stages)},
        )
    client.command(
        "DELETE FROM journey_stage_order WHERE journey NOT IN {journeys:Array(String)}",
        parameters={"journeys": list(journeys)},
    )

#!/bin/bash
# Runs once, when the ClickHouse volume is new: creates the parcours tables and views from
# the DDL the workers also apply at start (every statement is IF NOT EXISTS, so the two
# agree; the workers then record the migrations as applied).
set -euo pipefail
for ddl in /parcours/ddl/*.sql; do
  echo "parcours: applying ${ddl}"
  clickhouse client --user "${CLICKHOUSE_USER}" --password "${CLICKHOUSE_PASSWORD}" \
    --database "${CLICKHOUSE_DB}" --multiquery < "${ddl}"
done

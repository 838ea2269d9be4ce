"""Pure core and in-process tests: no broker, no ClickHouse engine; seconds."""

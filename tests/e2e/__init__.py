"""End to end: the real local broker, worker processes, embedded ClickHouse."""

"""ClickHouse: client and migrations, rows, the sink, the journey-map report."""

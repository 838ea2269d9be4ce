"""parcours: customer touchpoints to journeys, leaks and surveys, on Kafka and ClickHouse."""

__version__ = "0.1.0"

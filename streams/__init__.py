"""parcours: customer touchpoints to journeys, leaks and surveys, on Kafka and ClickHouse.

What other teams' code imports: the producer helper (see streams/edge/README.md).

    from streams import TouchpointProducer, SyncTouchpointProducer, InvalidEvent

The names load on first use, so that `python -m streams` and the worker do not pay for
the producer's imports.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["InvalidEvent", "SyncTouchpointProducer", "TouchpointProducer", "__version__"]
_PRODUCER_NAMES = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> object:
    if name in _PRODUCER_NAMES:
        from streams.edge import producer

        return getattr(producer, name)
    raise AttributeError(f"module 'streams' has no attribute {name!r}")

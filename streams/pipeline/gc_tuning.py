"""Garbage collection tuned for a process that holds every customer's state in memory.

CPython's default (a young collection every 700 allocations, a full one each time the
heap grows by a quarter) re-scans the long-lived customer states over and over: on the
in-process core that was about a third of the time (`parcours bench --core-only`, see
deploy/README.md#performance). Our states hold no reference cycles that matter, so
collections can be rarer: what startup allocated (the config, compiled schemas, modules)
is frozen out of every collection, and young collections wait for many more allocations.
"""

from __future__ import annotations

import gc

# (young, middle, old): allocations before a young collection; young collections before a
# middle one; middle ones before an old one (which also waits for the heap to grow 25 %).
THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> None:
    """Freeze what exists now out of collections and make collections rarer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)

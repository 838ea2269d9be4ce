"""Watermark tells wait in one place: only the newest of each pair of partitions."""

from __future__ import annotations

from streams.pipeline.tells import Tells


def test_a_newer_tell_replaces_the_one_waiting_and_goes_to_the_back():
    tells = Tells("touchpoints-resolved", ["localhost:9092"])
    tells.put([(0, 1, b"a"), (0, 2, b"b")])
    tells.put([(0, 1, b"c"), (3, 1, b"d")])
    assert list(tells.pending.items()) == [((0, 2), b"b"), ((0, 1), b"c"), ((3, 1), b"d")]
    assert tells.ready.is_set()

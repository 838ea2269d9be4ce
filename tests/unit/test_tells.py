"""Watermark tells wait in one place: only the newest of each pair of partitions."""

from __future__ import annotations

from streams.pipeline.tells import Tells


def test_a_newer_tell_replaces_the_one_waiting_and_goes_to_the_back():
    tells = Tells("touchpoints-resolved", ["localhost:9092"])
    tells.put([(0, 1, b"a"), (0, 2, b"b")])
    tells.put([(0, 1, b"c"), (3, 1, b"d")])
    assert list(tells.pending.items()) == [((0, 2), b"b"), ((0, 1), b"c"), ((3, 1), b"d")]
    assert tells.ready.is_set()


def test_a_tell_skips_the_broker_only_once_what_it_covers_was_computed_there():
    from streams.pipeline.tells import Shortcuts

    shortcuts = Shortcuts()
    assert not shortcuts.direct(0, 1, end=None)  # the partition's end not known yet
    assert not shortcuts.direct(0, 1, end=5)  # offsets 0..4 may hold forwards from before
    shortcuts.computed(1, 4)
    assert shortcuts.direct(0, 1, end=9)  # its floor stays what was there first
    shortcuts.sending(0)  # 0 sends to the topic: nothing in memory until acknowledged
    assert not shortcuts.direct(0, 1, end=9)
    shortcuts.acked(0, 1, offset=7)
    shortcuts.all_acked()
    assert not shortcuts.direct(0, 1, end=9)  # offset 7 not computed at 1 yet
    assert shortcuts.direct(2, 1, end=9)  # another partition sent it nothing since
    shortcuts.computed(1, 7)
    assert shortcuts.direct(0, 1, end=9)

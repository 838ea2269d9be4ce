"""The bench's profile summary: the functions holding the most samples themselves."""

from __future__ import annotations

from streams.dev.bench_profile import top_functions

COLLAPSED = """\
run (worker.py:99);step (runner.py:120);advance (customer.py:120) 60
run (worker.py:99);step (runner.py:120);advance (customer.py:120);_fold (customer.py:109) 20
run (worker.py:99);step (runner.py:120) 15
run (worker.py:99);insert (sink.py:190) 5
"""


def test_each_stack_counts_for_its_last_frame_as_a_share_of_all_samples():
    assert top_functions(COLLAPSED, n=3) == [
        ("advance (customer.py:120)", 0.60),
        ("_fold (customer.py:109)", 0.20),
        ("step (runner.py:120)", 0.15),
    ]


def test_nothing_sampled_has_no_top():
    assert top_functions("") == []

"""Text tables: every column is as wide as its longest value or header."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.core.text import table

WORDS = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=30)


@given(
    st.lists(st.tuples(WORDS, WORDS, st.integers(0, 10**7)), min_size=1, max_size=8),
    WORDS,
)
def test_each_value_sits_in_its_column_whatever_its_length(rows, title):
    lines = table(title, ["kind", "n"], rows).splitlines()
    assert lines[0].startswith(title)
    texts = [(a, b, f"{n:,}") for a, b, n in rows]
    widths = [max(len(row[i]) for row in texts) for i in range(3)]
    widths[0] = max(widths[0], len(title) - 2)
    widths[1] = max(widths[1], len("kind"))
    widths[2] = max(widths[2], len("n"))
    starts = [2, 2 + widths[0] + 2, 2 + widths[0] + 2 + widths[1] + 2]
    for line, row in zip(lines[1:], texts, strict=True):
        for value, start, width in zip(row, starts, widths, strict=True):
            assert line[start : start + width].strip() == value
        assert line[starts[2] : starts[2] + widths[2]].endswith(row[2])  # numbers: right
    assert lines[0][starts[1] :].split() == ["kind", "n"]


def test_the_demo_follow_up_table_that_used_to_overflow():
    text = table(
        "Follow-up tasks for a person",
        ["leak", "priority", "open", "closed"],
        [
            ("call_back_detractor", "detractor_feedback", "high", 9, 0),
            ("resolve_repeated_contact", "repeated_support_contact", "high", 10, 0),
        ],
    )
    assert text.splitlines() == [
        "Follow-up tasks for a person  leak                      priority  open  closed",
        "  call_back_detractor         detractor_feedback        high         9       0",
        "  resolve_repeated_contact    repeated_support_contact  high        10       0",
    ]

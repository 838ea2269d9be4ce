"""The output registry: every kind the journey step emits is declared once, and matches."""

from __future__ import annotations

import re

from streams.config.settings import SCHEMAS_DIR
from streams.core.customer import Outcome
from streams.outputs import OUTPUTS, TABLES, WORKER_TOPICS

MIGRATIONS = "\n".join(p.read_text() for p in sorted((SCHEMAS_DIR / "clickhouse").glob("*.sql")))


def test_the_registry_names_every_kind_the_core_emits_once():
    kinds = [o.kind for o in OUTPUTS]
    assert sorted(kinds) == sorted(Outcome({}, []).rows())
    assert len(set(kinds)) == len(kinds)
    published = [o.topic for o in OUTPUTS if o.topic]
    assert len(set(published)) == len(published)
    assert set(TABLES) >= {o.table for o in OUTPUTS}
    assert set(WORKER_TOPICS) >= set(published)


def test_only_what_the_dispatcher_delivers_is_published_to_a_topic():
    from streams.edge.destinations import SAMPLE_ITEMS

    assert {o.kind for o in OUTPUTS if o.topic} == set(SAMPLE_ITEMS)


def test_every_output_table_and_column_is_created_by_a_migration():
    for output in OUTPUTS:
        assert re.search(rf"CREATE TABLE IF NOT EXISTS {output.table}\b", MIGRATIONS), output.table
        for column in output.columns:
            assert re.search(rf"\b{column}\b", MIGRATIONS), f"{output.table}.{column}"


def test_a_counted_output_labels_its_counter_with_fields_of_its_rows():
    for output in OUTPUTS:
        if output.counter is not None:
            assert len(output.labels) == len(output.counter._labelnames), output.kind

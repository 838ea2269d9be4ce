"""The Helpdesk sample CSV and its mapping."""

from __future__ import annotations

import csv

from streams.config.settings import PROJECT_ROOT

HELPDESK_MAPPING = PROJECT_ROOT / "schemas" / "mappings" / "helpdesk.yaml"
HELPDESK_CONFIG = PROJECT_ROOT / "schemas" / "examples" / "helpdesk.yaml"


SAMPLE = PROJECT_ROOT / "tests" / "data" / "helpdesk_sample.csv"


def sample_rows() -> list[dict]:
    with SAMPLE.open(newline="") as handle:
        return list(csv.DictReader(handle))

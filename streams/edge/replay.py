"""`parcours replay FILE`: load a JSONL or CSV export into the `touchpoints` topic.

JSONL lines are touchpoint events as they are. CSV rows become events through a column
mapping (YAML, see `schemas/mappings/helpdesk.yaml`): each touchpoint field is a
constant, a template over the row ("{Case ID}", with {row} the data row number), or a
column with a value map; `ts` takes a strptime format and a time zone. Rows are checked
with the worker's own parser, sorted by event time and sent as fast as possible or at N
times real time. Event ids come from the row, so a second run of the same file is
recognised downstream (deduplication, ReplacingMergeTree) instead of doubling anything.
"""

from __future__ import annotations

import asyncio
import csv
import string
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import yaml

from streams.config.yaml_files import load_yaml
from streams.core.events import SCHEMA_VIOLATION, EventParser
from streams.core.eventtime import epoch_ms
from streams.core.text import printable
from streams.edge.produce import as_messages, send_messages

REQUIRED = ("event_id", "type", "ts", "channel", "source")
OPTIONAL = ("customer_id", "anonymous_id", "session_id", "segment", "properties")


class MappingError(ValueError):
    """The mapping file cannot describe this input; the message says how to fix it."""


class InputError(ValueError):
    """The input file cannot be read; the message names the row, the line and the fix."""


class RowError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass
class Mapping:
    path: Path
    spec: dict

    def columns(self) -> set[str]:
        """The CSV columns the mapping reads."""
        used: set[str] = set()
        for value in self.spec.values():
            for part in value.values() if _is_map_of_fields(value) else [value]:
                if isinstance(part, dict):
                    used.add(part["column"])
                elif isinstance(part, str):
                    used |= _template_fields(part)
        return used - {"row"}

    def event(self, row: dict[str, str], number: int) -> dict:
        values: Cells = {**row, "row": number}
        event: dict = {}
        for name, spec in self.spec.items():
            if name == "properties":
                props = {k: _render(v, values, f"properties.{k}") for k, v in spec.items()}
                event["properties"] = {k: v for k, v in props.items() if v != ""}
            elif name == "ts":
                event["ts"] = _timestamp(spec, values)
            else:
                value = _render(spec, values, name)
                if value != "":
                    event[name] = value
        return event


def load_mapping(path: Path) -> Mapping:
    try:
        spec, _ = load_yaml(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingError(f"{path}: no such mapping file") from None
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise MappingError(f"{path}: expected a mapping of touchpoint fields to columns")
    missing = [name for name in REQUIRED if name not in spec]
    if missing:
        raise MappingError(f"{path}: map the required field(s) {', '.join(missing)}")
    unknown = sorted(set(spec) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise MappingError(
            f"{path}: unknown field(s) {', '.join(unknown)}; touchpoint fields are "
            f"{', '.join(REQUIRED + OPTIONAL)}"
        )
    if "customer_id" not in spec and "anonymous_id" not in spec:
        raise MappingError(f"{path}: map customer_id or anonymous_id (or both)")
    for name, value in spec.items():
        if isinstance(value, dict) and name != "properties" and "column" not in value:
            raise MappingError(f"{path}: {name}: a column spec needs `column:`")
    return Mapping(Path(path), spec)


def _is_map_of_fields(value: object) -> bool:
    return isinstance(value, dict) and "column" not in value


# A row's cells by column, and "row": its number, an int for templates ({row:06d}).
Cells = dict[str, Any]


def _template_fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def _render(spec: object, values: Cells, where: str) -> str:
    if isinstance(spec, dict):
        raw = values[spec["column"]]
        mapped = spec.get("values")
        if mapped is None:
            return raw
        if raw in mapped:
            return mapped[raw]
        if "default" in spec:
            return spec["default"]
        raise RowError(
            "unmapped_value",
            f"{where}: column {spec['column']!r} has {raw!r}, which the mapping does not "
            f"map; add it under {where}.values (or set {where}.default)",
        )
    return str(spec).format_map(values) if "{" in str(spec) else str(spec)


def _timestamp(spec: object, values: Cells) -> str:
    if not isinstance(spec, dict):
        return _render(spec, values, "ts")
    raw = values[spec["column"]]
    try:
        moment = (
            datetime.strptime(raw, spec["format"])
            if "format" in spec
            else datetime.fromisoformat(raw)
        )
    except ValueError as exc:
        raise RowError("bad_timestamp", f"ts: {raw!r} does not parse: {exc}") from None
    if moment.tzinfo is None:
        if "timezone" not in spec:
            raise RowError("bad_timestamp", f"ts: {raw!r} has no offset; set ts.timezone")
        moment = moment.replace(tzinfo=ZoneInfo(spec["timezone"]))
    return moment.isoformat(timespec="milliseconds")


@dataclass
class Summary:
    rows: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # the first rejected rows, explained
    messages: int = 0
    seconds: float = 0.0

    def reject(self, number: int, reason: str, detail: str) -> None:
        self.rejected[reason] += 1
        if len(self.examples) < 10:
            self.examples.append(f"row {number}: {reason}: {printable(detail, 300)}")


def read_events(
    path: Path, mapping: Mapping | None, parser: EventParser, summary: Summary
) -> list[tuple[int, dict]]:
    """(ts_ms, event) of every usable row; the others are counted in `summary`."""
    now_ms = int(time.time() * 1000)
    out = []
    for number, event in _rows(path, mapping, summary):
        summary.rows += 1
        try:
            raw = orjson.dumps(event)
        except TypeError:  # nested deeper than orjson writes: the schema allows no nesting
            summary.reject(number, SCHEMA_VIOLATION, "$: nested too deeply")
            continue
        valid, rejected = parser.parse(raw, now_ms)
        for rejection in rejected:
            summary.reject(number, rejection.reason, f"{rejection.path}: {rejection.detail}")
        for item in valid:
            out.append((item.ts_ms, item.event))
    summary.accepted = len(out)
    out.sort(key=lambda pair: pair[0])  # stable: rows of equal time keep file order
    return out


def _rows(path: Path, mapping: Mapping | None, summary: Summary) -> Iterator[tuple[int, dict]]:
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        with path.open("rb") as lines:
            for number, text in enumerate(lines, start=1):
                if text.strip():
                    try:
                        yield number, orjson.loads(text)
                    except orjson.JSONDecodeError as exc:
                        summary.rows += 1
                        summary.reject(number, "invalid_json", str(exc))
        return
    if mapping is None:
        raise MappingError(f"{path}: a CSV needs a column mapping: --mapping FILE.yaml")
    # A field longer than a message could never make an event: read it, and let the
    # parser reject its row as oversize, rather than stop the file.
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    # Bytes that are not UTF-8 are kept as surrogates so that their row, not the whole
    # file, is rejected (see _shape_problem).
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle, strict=True)
        header = _header(reader, path)
        missing = sorted(mapping.columns() - set(header))
        if missing:
            raise MappingError(
                f"{mapping.path}: reads column(s) {', '.join(missing)} that {path} lacks; "
                f"its columns are: {printable(', '.join(header))}"
            )
        number, line = 0, reader.line_num
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise InputError(
                    f"{path}: row {number + 1} (from line {line + 1}): {exc}; a quote is "
                    "probably not closed, or a field is over "
                    f"{CSV_FIELD_LIMIT // 1_048_576} MB: fix the file there"
                ) from None
            number, line = number + 1, reader.line_num
            problem = _shape_problem(row, header)
            try:
                if problem:
                    raise RowError(*problem)
                yield number, mapping.event(row, number)
            except RowError as exc:
                summary.rows += 1
                summary.reject(number, exc.reason, str(exc))
            except ZoneInfoNotFoundError as exc:
                raise MappingError(f"{mapping.path}: ts.timezone: {exc}") from None


CSV_FIELD_LIMIT = 16 * 1_048_576


def _header(reader: csv.DictReader, path: Path) -> list[str]:
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        raise InputError(f"{path}: the header line: {exc}; fix the file there") from None
    if not header:
        raise InputError(f"{path}: empty file; a CSV export starts with its header line")
    return list(header)


def _shape_problem(row: dict, header: list[str]) -> tuple[str, str] | None:
    """Why a CSV row cannot be read as the header says, or None."""
    if None in row:  # more fields than the header: DictReader files them under None
        return "long_row", f"{len(header) + len(row[None])} fields; the header has {len(header)}"
    if None in row.values():
        present = sum(v is not None for v in row.values())
        return "short_row", f"{present} fields; the header has {len(header)}"
    if not _is_utf8("".join(row.values())):  # one check for the row; the column if it fails
        column = next(k for k, v in row.items() if not _is_utf8(v))
        return "invalid_utf8", (
            f"column {printable(column)!r} has bytes that are not UTF-8; save the file as UTF-8"
        )
    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def send(
    bootstrap: str,
    topic: str,
    events: list[tuple[int, dict]],
    speed: float | None,
    envelope: int,
    progress: bool,
) -> int:
    """Send in event-time order; with `speed`, N times faster than the events happened."""
    messages = as_messages([e for _, e in events], envelope_size=envelope, window_ms=30_000)
    due = None
    if speed and messages:
        first_ts = events[0][0]
        due = [(_first_ts(value) - first_ts) / 1000 / speed for _, value in messages]

    def show(sent: int, total: int) -> None:
        print(f"  sent {sent:,}/{total:,} messages", file=sys.stderr, flush=True)

    await send_messages(bootstrap, topic, messages, due, show if progress else None)
    return len(messages)


def _first_ts(value: bytes) -> int:
    doc = orjson.loads(value)
    event = doc["events"][0] if "events" in doc else doc
    return epoch_ms(datetime.fromisoformat(event["ts"]))


def replay(
    path: Path,
    mapping_path: Path | None,
    bootstrap: str,
    topic: str,
    parser: EventParser,
    speed: float | None,
    envelope: int,
    progress: bool = True,
) -> Summary:
    summary = Summary()
    mapping = load_mapping(mapping_path) if mapping_path else None
    started = time.monotonic()
    events = read_events(path, mapping, parser, summary)
    summary.messages = asyncio.run(send(bootstrap, topic, events, speed, envelope, progress))
    summary.seconds = time.monotonic() - started
    return summary


def print_summary(summary: Summary, topic: str) -> None:
    print(
        f"{summary.rows:,} rows: {summary.accepted:,} accepted, "
        f"{sum(summary.rejected.values()):,} rejected; {summary.messages:,} messages sent to "
        f"'{topic}' in {summary.seconds:.1f}s"
    )
    for reason, count in summary.rejected.most_common():
        print(f"  rejected {reason}: {count:,}")
    for example in summary.examples:
        print(f"    {example}")

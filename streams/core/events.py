"""Parse and validate raw Kafka message values into touchpoint events.

A message value is one event object or a batch envelope ``{"events": [...]}``.
Every event either comes out valid (with its event time in epoch milliseconds)
or as a Rejection that names the reason, the JSON path and the bytes to keep.
Validation runs jsonschema-rs (a compiled validator, about ten times faster than
fastjsonschema here) on the hot path; only a failing event pays for jsonschema, which
finds the most relevant error and path.
"""

from __future__ import annotations

import copy
import ipaddress
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jsonschema
import jsonschema_rs
import orjson

from streams.config.settings import SCHEMAS_DIR, Settings
from streams.core.eventtime import epoch_ms

TOUCHPOINT_SCHEMA_PATH = SCHEMAS_DIR / "touchpoint.schema.json"

# Dead-letter reasons: a closed set, so metrics labels stay bounded.
INVALID_JSON = "invalid_json"
INVALID_ENVELOPE = "invalid_envelope"
SCHEMA_VIOLATION = "schema_violation"
UNKNOWN_TYPE = "unknown_type"
TS_IN_FUTURE = "ts_in_future"
TS_TOO_OLD = "ts_too_old"
OVERSIZE = "oversize"
LATE = "late"  # behind the watermark: stored as a touchpoint, kept out of journeys
PROCESSING_ERROR = "processing_error"  # the step raised on it: isolated, the rest goes on
SINK_REJECTED = "sink_rejected"  # ClickHouse refused its row for good
TS_OUT_OF_RANGE = "ts_out_of_range"  # before 2000: no sane event time, whatever max-age says
SOURCE_NOT_ALLOWED = "source_not_allowed"  # claims a source its collector write key is not for
REASONS = (
    INVALID_JSON,
    INVALID_ENVELOPE,
    SCHEMA_VIOLATION,
    UNKNOWN_TYPE,
    TS_IN_FUTURE,
    TS_TOO_OLD,
    TS_OUT_OF_RANGE,
    OVERSIZE,
    LATE,
    PROCESSING_ERROR,
    SINK_REJECTED,
    SOURCE_NOT_ALLOWED,
)
EARLIEST_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z

WHOLE_MESSAGE = -1  # Rejection.index when the message itself, not one event, is bad
_DETAIL_LIMIT = 300  # error texts quote the bad value; a 1 MB string must not follow it around


@dataclass(frozen=True, slots=True)
class ValidEvent:
    event: dict[str, Any]
    ts_ms: int
    index: int  # position in the envelope, 0 for a single-event message


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str
    path: str  # JSON path of the offending value; "$" for the whole message or event
    index: int
    payload: bytes  # the original message bytes, or the one bad event re-encoded


def load_touchpoint_schema() -> dict[str, Any]:
    return orjson.loads(TOUCHPOINT_SCHEMA_PATH.read_bytes())


def schema_version(schema: dict[str, Any]) -> tuple[int, int]:
    """(major, minor) of a touchpoint schema, read from its `$id` (…/touchpoint/1.1.json)."""
    found = re.search(r"/(\d+)\.(\d+)\.json$", schema.get("$id", ""))
    if not found:
        raise ValueError(f"touchpoint schema $id {schema.get('$id')!r} carries no MAJOR.MINOR")
    return int(found[1]), int(found[2])


def lenient_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema for events of a newer minor version: a later minor may add channels and
    top-level fields (additive changes only), so neither is a reason to dead-letter."""
    lenient = copy.deepcopy(schema)
    lenient["properties"]["channel"] = {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"}
    lenient["additionalProperties"] = True
    return lenient


_VERSION = re.compile(r"(\d{1,3})\.(\d{1,3})")  # an event's schema_version, MAJOR.MINOR

# What `context.ip` becomes (PARCOURS_CONTEXT_IP): kept, cut to its network, or dropped.
CONTEXT_IP_POLICIES = ("keep", "truncate", "drop")


def private_ip(ip: str, policy: str) -> str | None:
    """`ip` as the privacy policy allows: `truncate` keeps the /24 of IPv4 and the /48 of
    IPv6 (enough for a country, not a household); None means drop it."""
    if policy == "keep":
        return ip
    if policy == "drop":
        return None
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None  # not an address: nothing to keep of it
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


class EventParser:
    """Turns message bytes into valid events and rejections; holds no state between calls."""

    def __init__(
        self,
        known_types: Iterable[str] | None,
        *,
        max_message_bytes: int = 1_048_576,
        max_future_seconds: float = 3600.0,
        max_age_seconds: float = 0.0,
        context_ip: str = "keep",
        schema: dict[str, Any] | None = None,
    ) -> None:
        """`known_types` None accepts any well-formed type (a producer without the server's
        configuration); `context_ip` is one of CONTEXT_IP_POLICIES."""
        schema = schema or load_touchpoint_schema()
        if context_ip not in CONTEXT_IP_POLICIES:
            raise ValueError(f"context_ip {context_ip!r}: use one of {CONTEXT_IP_POLICIES}")
        self._schema = schema
        self._fast_check = jsonschema_rs.validator_for(schema)
        self._explainer = jsonschema.Draft202012Validator(schema)
        self._lenient: tuple[Any, jsonschema.Draft202012Validator] | None = None  # on demand
        self.version = schema_version(schema)
        self._fields = frozenset(schema["properties"])
        self._known_types = None if known_types is None else frozenset(known_types)
        self._context_ip = context_ip
        self._max_bytes = max_message_bytes
        self._max_future_ms = int(max_future_seconds * 1000)
        self._max_age_ms = int(max_age_seconds * 1000)

    def parse(self, raw: bytes | None, now_ms: int) -> tuple[list[ValidEvent], list[Rejection]]:
        """Split one message into its valid events and its rejections, in envelope order."""
        raw = raw or b""
        if len(raw) > self._max_bytes:
            return [], [whole_message(OVERSIZE, f"{len(raw)} bytes > limit {self._max_bytes}", raw)]
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:  # also empty input, bad UTF-8, nesting > 1024
            return [], [whole_message(INVALID_JSON, _clip(str(exc)), raw)]

        if isinstance(doc, dict) and set(doc) == {"events"}:
            items = doc["events"]
            if not isinstance(items, list):
                return [], [
                    whole_message(INVALID_ENVELOPE, "'events' must be an array of events", raw)
                ]
            single = False
        elif isinstance(doc, dict):
            items, single = [doc], True
        else:
            kind = type(doc).__name__
            detail = f'a message is one event object or {{"events": [...]}}, not a JSON {kind}'
            return [], [whole_message(INVALID_ENVELOPE, detail, raw)]

        # A single-event message keeps its exact bytes; an envelope member is re-encoded.
        return self.check_items(items, now_ms, raw if single else None, whole_raw=raw)

    def check_items(
        self,
        items: list[Any],
        now_ms: int,
        single_raw: bytes | None = None,
        whole_raw: bytes | None = None,
    ) -> tuple[list[ValidEvent], list[Rejection]]:
        """Validate decoded events one by one (an envelope's, or an HTTP batch's).

        Never raises: an event the checks themselves fail on (nesting deeper than the
        encoder or the explainer go) is a `processing_error` letter, and the others go on.
        `whole_raw` (the message or body) is kept for a member that cannot be re-encoded.
        """
        valid: list[ValidEvent] = []
        rejected: list[Rejection] = []
        for index, item in enumerate(items):
            try:
                outcome = self._check_event(item, index, now_ms)
            except Exception as exc:  # a bug or a limit: isolate this event, keep the rest
                outcome = PROCESSING_ERROR, describe(exc), "$"
            if isinstance(outcome, ValidEvent):
                valid.append(outcome)
            else:
                reason, detail, path = outcome
                payload = single_raw if single_raw is not None else _encoded(item, whole_raw)
                rejected.append(Rejection(reason, detail, path, index, payload))
        return valid, rejected

    def _check_event(self, item: Any, index: int, now_ms: int) -> ValidEvent | tuple[str, str, str]:
        fast_check, explainer = self._fast_check, self._explainer
        if type(item) is dict and "schema_version" in item:
            versioned = self._versioned(item)
            if isinstance(versioned, tuple):
                return versioned
            if versioned is not item:  # a newer minor version: the additive-change rules
                item = versioned
                fast_check, explainer = self._lenient_checks()
        if not fast_check.is_valid(item):
            return self._explain(item, explainer, fast_check)
        if self._known_types is not None and item["type"] not in self._known_types:
            return (
                UNKNOWN_TYPE,
                _clip(f"type {item['type']!r} is not declared in touchpoint_types"),
                "$.type",
            )
        try:
            ts_ms = epoch_ms(datetime.fromisoformat(item["ts"]))
        except ValueError as exc:
            return SCHEMA_VIOLATION, _clip(f"ts {item['ts']!r}: {exc}"), "$.ts"
        if ts_ms < EARLIEST_TS_MS:
            return TS_OUT_OF_RANGE, f"ts {item['ts']} is before 2000: not a real event time", "$.ts"
        if ts_ms > now_ms + self._max_future_ms:
            return (
                TS_IN_FUTURE,
                f"ts {item['ts']} is more than {self._max_future_ms // 1000}s ahead of now",
                "$.ts",
            )
        if self._max_age_ms and ts_ms < now_ms - self._max_age_ms:
            return TS_TOO_OLD, f"ts {item['ts']} is older than {self._max_age_ms // 1000}s", "$.ts"
        props = item.get("properties")
        if props and "score" in props and type(props["score"]) not in (int, float):
            score = numeric_score(props["score"])
            if score is None:
                detail = f'score {props["score"]!r} is not a number; send 3 or "3", not words'
                return SCHEMA_VIOLATION, _clip(detail), "$.properties.score"
            item = {**item, "properties": {**props, "score": score}}
        context = item.get("context")
        if context and "ip" in context and self._context_ip != "keep":
            ip = private_ip(context["ip"], self._context_ip)
            context = {k: v for k, v in context.items() if k != "ip"}
            item = {**item, "context": context if ip is None else {**context, "ip": ip}}
        return ValidEvent(item, ts_ms, index)

    def _versioned(self, item: dict) -> dict | tuple[str, str, str]:
        """An event that names its schema version: itself (this version or older, or a
        malformed version the schema will name), the same with its unknown top-level fields
        moved under `extensions` (a newer minor), or a rejection (another major)."""
        found = _VERSION.fullmatch(str(item["schema_version"]))
        if not found:
            return item
        major, minor = int(found[1]), int(found[2])
        ours = f"{self.version[0]}.{self.version[1]}"
        if major != self.version[0]:
            detail = (
                f"schema_version {item['schema_version']} is of another major version than "
                f"this worker reads ({ours}); send {self.version[0]}.x events or upgrade"
            )
            return SCHEMA_VIOLATION, detail, "$.schema_version"
        if minor <= self.version[1]:
            return item
        unknown = {k: v for k, v in item.items() if k not in self._fields}
        kept = {k: v for k, v in item.items() if k in self._fields}
        if unknown:
            kept["extensions"] = {**(item.get("extensions") or {}), **unknown}
        return kept

    def _lenient_checks(self) -> tuple[Any, jsonschema.Draft202012Validator]:
        if self._lenient is None:
            lenient = lenient_schema(self._schema)
            explainer = jsonschema.Draft202012Validator(lenient)
            self._lenient = jsonschema_rs.validator_for(lenient), explainer
        return self._lenient

    def _explain(
        self, item: Any, explainer: jsonschema.Draft202012Validator, fast_check: Any
    ) -> tuple[str, str, str]:
        try:
            error = jsonschema.exceptions.best_match(explainer.iter_errors(item))
        except RecursionError:  # the schema allows no nesting: say so without the details
            return SCHEMA_VIOLATION, "nested too deeply (properties are a flat map)", "$"
        if error is None:
            # jsonschema matches `pattern` with Python's `re`, whose `$` also matches before
            # a final newline; the spec's (ECMA) `$` does not, nor does jsonschema-rs.
            return self._compiled_error(item, fast_check)
        alternatives = [s.get("required") for s in error.schema.get("anyOf", [])]
        if error.validator == "anyOf" and all(alternatives):  # "customer_id or anonymous_id"
            fields = " or ".join(name for names in alternatives for name in names)
            return SCHEMA_VIOLATION, f"an event needs {fields}", error.json_path
        return SCHEMA_VIOLATION, _clip(error.message), error.json_path

    @staticmethod
    def _compiled_error(item: Any, fast_check: Any) -> tuple[str, str, str]:
        """The hot-path validator's own first error, when jsonschema finds none: a pattern
        field ending in a newline, or a number JSON cannot carry (infinity, NaN: only a
        Python producer can hand those over; jsonschema-rs reads them as no number)."""
        found = _non_finite(item)
        if found is not None:
            value, steps = found
            detail = f"{value} is not a JSON number; send a finite one"
            return SCHEMA_VIOLATION, detail, _json_path(steps)
        error = next(iter(fast_check.iter_errors(item)), None)
        if error is None:  # cannot happen while the validator is deterministic
            return SCHEMA_VIOLATION, "rejected by the compiled schema", "$"
        return SCHEMA_VIOLATION, _clip(error.message), _json_path(error.instance_path)


def _json_path(steps: Iterable[str | int]) -> str:
    return "$" + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps)


def _non_finite(item: Any) -> tuple[float, list[str | int]] | None:
    """The first infinity or NaN in `item` and the steps to it, if any (walked without
    recursion: a producer's dict may nest deeper than the stack)."""
    pending: list[tuple[Any, list[str | int]]] = [(item, [])]
    while pending:
        value, steps = pending.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return value, steps
        if isinstance(value, dict):
            pending += [(v, [*steps, k]) for k, v in reversed(value.items())]
        elif isinstance(value, list):
            pending += [(v, [*steps, i]) for i, v in reversed(list(enumerate(value)))]
    return None


def numeric_score(value: object) -> int | float | None:
    """A survey score as a number: one rule for the engine and the views alike. A number
    stays; a numeric string ("3", " 4.5 ") becomes one; anything else is None (rejected)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    return int(number) if number.is_integer() and "." not in value else number


def _encoded(item: Any, whole_raw: bytes | None) -> bytes:
    """One event's bytes for its dead letter; the whole message if it cannot be encoded
    alone (nested deeper than orjson writes), so nothing is lost."""
    try:
        return orjson.dumps(item)
    except TypeError:
        return whole_raw if whole_raw is not None else _clip(repr(item)).encode()


def whole_message(reason: str, detail: str, raw: bytes) -> Rejection:
    """A rejection of the message itself, not one of its events."""
    return Rejection(reason, detail, "$", WHOLE_MESSAGE, raw)


def describe(exc: BaseException) -> str:
    """An exception as a dead letter's detail: its type and message, clipped."""
    return _clip(f"{type(exc).__name__}: {exc}")


def _clip(text: str) -> str:
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"


def parser_for(known_types: Iterable[str] | None, settings: Settings) -> EventParser:
    """The parser the worker and the collector share: same schema, same limits."""
    if settings.context_ip not in CONTEXT_IP_POLICIES:
        raise SystemExit(f"PARCOURS_CONTEXT_IP={settings.context_ip!r}: use keep, truncate or drop")
    return EventParser(
        known_types,
        max_message_bytes=settings.max_message_bytes,
        max_future_seconds=settings.max_future_seconds,
        max_age_seconds=settings.max_age_seconds,
        context_ip=settings.context_ip,
    )

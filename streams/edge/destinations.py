"""Where `parcours dispatcher` delivers invitations (and follow-up tasks): destinations,
templates, signatures.

A destinations file (YAML) names each destination's webhook, what it takes, its
secret, limits and the template that turns an item into the body the tool expects:

    destinations:
      survey_tool:
        url: https://surveys.example.com/hooks/parcours
        deliver: [invitations]                 # default; or follow_ups, or both
        secret_env: PARCOURS_WEBHOOK_SECRET   # HMAC-SHA256 key, read from the environment
        timeout: 5s
        rate_limit: 20                         # requests per second
        max_attempts: 8                        # then the dead-letter topic
        template:                              # default: the invitation as it is
          email: "{customer_key}"
          survey: "{metric}"
          send_at: "{send_at_ms}"
          properties: {rule: "{rule}", journey: "{journey}"}

A template value that is exactly "{field}" takes the field with its type; other
strings are formatted with the invitation's fields; lists and mappings recurse. Each
template is rendered at load with a sample item of each kind it takes, so a template
that cannot render (`{send_at_ms:%Y-%m-%d}`: a number has no date format) is refused
then, not at send time. A destination without a secret is refused unless it says
`unsigned: true`: a receiver cannot tell an unsigned request from a forged one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import string
import time
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import orjson
import yaml

from streams.config.durations import duration_ms
from streams.config.yaml_files import load_yaml

DURATION = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?[smhd]$"}
SCHEMA = {
    "type": "object",
    "required": ["destinations"],
    "additionalProperties": False,
    "properties": {
        "destinations": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "type": "object",
                "required": ["url"],
                "additionalProperties": False,
                "properties": {
                    "url": {"type": "string", "pattern": "^https?://"},
                    "deliver": {
                        "type": "array",
                        "items": {"enum": ["invitations", "follow_ups"]},
                        "minItems": 1,
                        "uniqueItems": True,
                    },
                    "secret_env": {"type": "string", "pattern": "^[A-Z_][A-Z0-9_]*$"},
                    "timeout": DURATION,
                    "rate_limit": {"type": "number", "exclusiveMinimum": 0},
                    "concurrency": {"type": "integer", "minimum": 1, "maximum": 256},
                    "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
                    "backoff": DURATION,
                    "max_backoff": DURATION,
                    "template": {"type": ["object", "array"]},
                    "unsigned": {"type": "boolean"},
                },
            },
        }
    },
}


INVITATIONS, FOLLOW_UPS = "invitations", "follow_ups"  # what a destination may take

# The HMAC key of destinations without `secret_env`; unset, their requests go unsigned.
DEFAULT_SECRET_ENV = "PARCOURS_WEBHOOK_SECRET"


class DestinationsError(ValueError):
    """A destinations file that cannot be used; the message names the field and the fix."""


@dataclass(frozen=True)
class Destination:
    name: str
    url: str
    secret: bytes = b""
    deliver: tuple[str, ...] = (INVITATIONS,)  # what it takes: invitations, follow_ups
    timeout_seconds: float = 5.0
    rate_limit: float = 50.0  # requests per second
    concurrency: int = 8
    max_attempts: int = 8
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    template: object = None  # None: the invitation as it is
    unsigned: bool = False  # says `unsigned: true`: no secret, requests go unsigned

    def body(self, item: dict) -> object:
        return item if self.template is None else render(self.template, item)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1, 2, ...)."""
        return min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))


def load_destinations(path: Path, env: dict[str, str] | None = None) -> list[Destination]:
    env = os.environ if env is None else env
    try:
        doc, _ = load_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DestinationsError(f"{path}: no such file; pass --destinations FILE") from None
    except yaml.YAMLError as exc:
        raise DestinationsError(f"{path}: not valid YAML: {exc}") from None
    try:
        jsonschema.validate(doc, SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise DestinationsError(f"{path}: {where}: {exc.message}") from None
    destinations = []
    for name, spec in doc["destinations"].items():
        where = f"{path}: destinations/{name}"
        secret = env.get(DEFAULT_SECRET_ENV, "").encode()
        if "secret_env" in spec:
            value = env.get(spec["secret_env"], "")
            if not value:
                raise DestinationsError(
                    f"{where}/secret_env: {spec['secret_env']} is not set; "
                    "export it with the webhook's shared secret"
                )
            secret = value.encode()
        unsigned = spec.get("unsigned", False)
        if not secret and not unsigned:
            raise DestinationsError(
                f"{where}: no secret to sign requests with; export {DEFAULT_SECRET_ENV} "
                "(or name a variable in secret_env), or write `unsigned: true` to send "
                "unsigned requests"
            )
        deliver = tuple(spec.get("deliver", [INVITATIONS]))
        if "template" in spec:
            check_template(spec["template"], deliver, where)
        seconds = {
            k: duration_ms(spec[k]) / 1000
            for k in ("timeout", "backoff", "max_backoff")
            if k in spec
        }
        destinations.append(
            Destination(
                name,
                spec["url"],
                secret,
                deliver=deliver,
                timeout_seconds=seconds.get("timeout", 5.0),
                rate_limit=float(spec.get("rate_limit", 50.0)),
                concurrency=spec.get("concurrency", 8),
                max_attempts=spec.get("max_attempts", 8),
                backoff_seconds=seconds.get("backoff", 0.5),
                max_backoff_seconds=seconds.get("max_backoff", 30.0),
                template=spec.get("template"),
                unsigned=unsigned,
            )
        )
    return destinations


# An item of each kind with every field and its type (see streams.core.surveys'
# invitation_row and streams.core.follow_ups), to render templates with at load.
SAMPLE_ITEMS = {
    INVITATIONS: {
        **dict.fromkeys(
            (
                "invitation_id",
                "rule",
                "trigger",
                "metric",
                "customer_key",
                "journey_id",
                "journey",
                "stage",
                "touchpoint",
                "anchor_event_id",
                "channel",
                "segment",
                "held_for",
            ),
            "x",
        ),
        **dict.fromkeys(("priority", "trigger_ms", "send_at_ms", "decided_ms"), 1_700_000_000_000),
    },
    FOLLOW_UPS: {
        **dict.fromkeys(
            (
                "task_id",
                "rule",
                "customer_key",
                "reason",
                "category",
                "severity",
                "journey_id",
                "journey",
                "stage",
                "anchor_event_id",
                "status",
                "closed_by",
            ),
            "x",
        ),
        "recent_touchpoints": ["x"],
        **dict.fromkeys(
            ("priority", "created_ms", "due_ms", "closed_ms", "version", "decided_ms"),
            1_700_000_000_000,
        ),
    },
}


def check_template(template: object, kinds: tuple[str, ...], where: str) -> None:
    """Refuse a template that cannot render an item of a kind it will be sent."""
    for kind in kinds:
        try:
            orjson.dumps(render(template, SAMPLE_ITEMS[kind]))
        except Exception as exc:  # str.format raises Value, Key, Index, AttributeError
            raise DestinationsError(
                f"{where}/template: cannot render a {kind} item: {type(exc).__name__}: "
                f'{exc}; use "{{field}}" for the value or a format spec valid for its type '
                "(numbers: {send_at_ms:d}; dates are not formatted, *_ms are epoch ms)"
            ) from None


def render(template: object, item: dict) -> object:
    """`template` with "{field}" placeholders filled from `item` (see module docstring)."""
    if isinstance(template, dict):
        return {k: render(v, item) for k, v in template.items()}
    if isinstance(template, list):
        return [render(v, item) for v in template]
    if not isinstance(template, str):
        return template
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    if template.startswith("{") and template.endswith("}") and fields == [template[1:-1]]:
        return item.get(fields[0])  # the value itself, with its type
    return template.format_map(_Missing(item))


class _Missing(dict):
    """Unknown fields render empty rather than fail a delivery."""

    def __missing__(self, key: str) -> str:
        return ""


# The webhook contract: every request carries these headers.
SIGNATURE_HEADER = "X-Parcours-Signature"
TIMESTAMP_HEADER = "X-Parcours-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
KIND_HEADER = "X-Parcours-Kind"  # invitations or follow_ups


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over "<timestamp>.<body>" (the timestamp is signed so a
    captured request cannot be replayed later)."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    tolerance_seconds: float = 300.0,
    now: float | None = None,
) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent."""
    try:
        stamp = int(timestamp)
    except ValueError:
        return False
    now = time.time() if now is None else now
    if abs(now - stamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, stamp, body), signature)


@dataclass
class TokenBucket:
    """At most `rate` requests per second on average, bursts up to `rate`."""

    rate: float
    tokens: float = field(default=-1.0)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.rate

    def wait_seconds(self, now: float | None = None) -> float:
        """Take a token; return how long to wait before using it (0: go now)."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

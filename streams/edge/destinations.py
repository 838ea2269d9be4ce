"""Where `parcours dispatcher` delivers invitations (and follow-up tasks): destinations,
templates, signatures.

A destinations file (YAML) names each destination's webhook, what it takes, its
secret, limits and the template that turns an item into the body the tool expects:

    destinations:
      survey_tool:
        url: https://surveys.example.com/hooks/parcours
        deliver: [invitations]                 # default; or follow_ups, or both
        secret_env: PARCOURS_WEBHOOK_SECRET   # whsec_... key(s), read from the environment
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

Requests are signed as Standard Webhooks (standardwebhooks.com) prescribes, so a
receiver verifies them with that project's library in its own language: headers
`webhook-id` (the item id, the same on every retry), `webhook-timestamp` and
`webhook-signature` (`v1,` + base64 HMAC-SHA256 of "<id>.<timestamp>.<body>"). A secret
is `whsec_` + base64 of the key; several, separated by spaces, sign each request once
each, so a receiver can move to a new secret without a gap (rotation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import random
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import jsonschema
import orjson
import yaml
from standardwebhooks.webhooks import Webhook

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
                    "max_retry_after": DURATION,
                    "template": {"type": ["object", "array"]},
                    "unsigned": {"type": "boolean"},
                    "legacy_headers": {"type": "boolean"},
                },
            },
        }
    },
}


INVITATIONS, FOLLOW_UPS = "invitations", "follow_ups"  # what a destination may take

# The signing secret(s) of destinations without `secret_env`.
DEFAULT_SECRET_ENV = "PARCOURS_WEBHOOK_SECRET"


class DestinationsError(ValueError):
    """A destinations file that cannot be used; the message names the field and the fix."""


@dataclass(frozen=True)
class Destination:
    name: str
    url: str
    secrets: tuple[bytes, ...] = ()  # signing keys (decoded); the first signs legacy headers
    deliver: tuple[str, ...] = (INVITATIONS,)  # what it takes: invitations, follow_ups
    timeout_seconds: float = 5.0
    rate_limit: float = 50.0  # requests per second
    concurrency: int = 8
    max_attempts: int = 8
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    # The longest a 429 or 503 answer's Retry-After is waited for before the next attempt.
    max_retry_after_seconds: float = 600.0
    template: object = None  # None: the invitation as it is
    unsigned: bool = False  # says `unsigned: true`: no secret, requests go unsigned
    # Also send the X-Parcours-* signature headers of parcours 0.1 (deprecated: the next
    # version drops them), for receivers not yet moved to Standard Webhooks.
    legacy_headers: bool = False

    def body(self, item: dict) -> object:
        return item if self.template is None else render(self.template, item)

    def backoff(self, attempt: int) -> float:
        """The longest wait after failed attempt number `attempt` (1, 2, ...)."""
        return min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))

    def retry_wait(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before the next attempt: the backoff with jitter (between half
        and all of it, so receivers recovering from an outage are not hit in waves), or
        the receiver's Retry-After if longer, up to `max_retry_after_seconds`."""
        ceiling = self.backoff(attempt)
        wait = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after_seconds))
        return wait


def load_destinations(path: Path, env: Mapping[str, str] | None = None) -> list[Destination]:
    env = os.environ if env is None else env
    try:
        loaded, _ = load_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DestinationsError(f"{path}: no such file; pass --destinations FILE") from None
    except yaml.YAMLError as exc:
        raise DestinationsError(f"{path}: not valid YAML: {exc}") from None
    try:
        jsonschema.validate(loaded, SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise DestinationsError(f"{path}: {where}: {exc.message}") from None
    doc = cast(dict[str, Any], loaded)  # the schema made sure
    destinations = []
    for name, spec in doc["destinations"].items():
        where = f"{path}: destinations/{name}"
        secret_env = spec.get("secret_env", DEFAULT_SECRET_ENV)
        value = env.get(secret_env, "")
        if "secret_env" in spec and not value:
            raise DestinationsError(
                f"{where}/secret_env: {secret_env} is not set; "
                "export it with the webhook's shared secret (whsec_...)"
            )
        try:
            secrets = parse_secrets(value)
        except ValueError as exc:
            raise DestinationsError(f"{where}: {secret_env}: {exc}") from None
        unsigned = spec.get("unsigned", False)
        if not secrets and not unsigned:
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
            for k in ("timeout", "backoff", "max_backoff", "max_retry_after")
            if k in spec
        }
        destinations.append(
            Destination(
                name,
                spec["url"],
                secrets,
                deliver=deliver,
                timeout_seconds=seconds.get("timeout", 5.0),
                rate_limit=float(spec.get("rate_limit", 50.0)),
                concurrency=spec.get("concurrency", 8),
                max_attempts=spec.get("max_attempts", 8),
                backoff_seconds=seconds.get("backoff", 0.5),
                max_backoff_seconds=seconds.get("max_backoff", 30.0),
                max_retry_after_seconds=seconds.get("max_retry_after", 600.0),
                template=spec.get("template"),
                unsigned=unsigned,
                legacy_headers=spec.get("legacy_headers", False),
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


# The webhook contract: Standard Webhooks' three headers, and two of parcours' own.
ID_HEADER = "webhook-id"  # the item id (see streams.edge.dispatcher.item_id_of)
TIMESTAMP_HEADER = "webhook-timestamp"  # Unix seconds when the request was signed
SIGNATURE_HEADER = "webhook-signature"  # "v1,<base64>" per secret, space-separated
IDEMPOTENCY_HEADER = "Idempotency-Key"  # the same item id, for receivers that read this one
KIND_HEADER = "X-Parcours-Kind"  # invitations or follow_ups
# parcours 0.1's own signature, sent too with `legacy_headers: true` (deprecated).
LEGACY_SIGNATURE_HEADER = "X-Parcours-Signature"
LEGACY_TIMESTAMP_HEADER = "X-Parcours-Timestamp"
SECRET_PREFIX = "whsec_"


def parse_secrets(value: str) -> tuple[bytes, ...]:
    """The signing keys in a secret setting: `whsec_<base64>` each, separated by spaces or
    commas (several while rotating). A value without the prefix is an older plain
    secret and is taken as its bytes, as the standardwebhooks libraries do with bytes."""
    keys = []
    for secret in value.replace(",", " ").split():
        if not secret.startswith(SECRET_PREFIX):
            keys.append(secret.encode())
            continue
        try:
            keys.append(base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True))
        except binascii.Error:
            raise ValueError(
                f"{secret[:10]}... is not whsec_ followed by base64; "
                "make one with `parcours new-secret`"
            ) from None
    return tuple(keys)


def new_secret() -> str:
    """A fresh signing secret, as Standard Webhooks writes them: whsec_ + 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


def signed_headers(
    secrets: tuple[bytes, ...], item_id: str, timestamp: int, body: bytes, legacy: bool = False
) -> dict[str, str]:
    """The signature headers of one request: one `v1` signature per secret."""
    when = datetime.fromtimestamp(timestamp, UTC)
    text = body.decode()
    headers = {
        ID_HEADER: item_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: " ".join(Webhook(key).sign(item_id, when, text) for key in secrets),
    }
    if legacy and secrets:
        headers[LEGACY_TIMESTAMP_HEADER] = str(timestamp)
        headers[LEGACY_SIGNATURE_HEADER] = legacy_signature(secrets[0], timestamp, body)
    return headers


def legacy_signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """parcours 0.1's `sha256=<hex>` of HMAC-SHA256 over "<timestamp>.<body>" (deprecated)."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


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

"""A seeded synthetic population of customers and their touchpoints.

Each customer walks part of a purchase journey (ad click → visit → product
view → cart → checkout → purchase → delivery), many stop on the way, some call
support or open emails, a few unsubscribe. Some start anonymous and log in at
checkout; some have a CRM profile (time zone, preferred channel). Customers answer
the surveys parcours invites them to (CSAT after delivery, CES after a support call,
naming the invitation id) and some answer an NPS about delivery from another tool.
Events of one customer are in event-time order, within the last day.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.core.guardrails import invitation_id

FUNNEL = [
    "ad_click",
    "site_visit",
    "product_view",
    "add_to_cart",
    "checkout_started",
    "purchase",
    "delivery",
]
# Chance to go on to the next funnel step, from each step.
CONTINUE = (0.9, 0.85, 0.6, 0.7, 0.75, 0.9, 1.0)
CHECKOUT = FUNNEL.index("checkout_started")
CHANNEL = {
    "ad_click": "ads",
    "delivery": "delivery",
    "support_call": "phone",
    "email_open": "email",
    "unsubscribe": "email",
    "ticket_updated": "email",
    "ticket_resolved": "email",
    "first_use": "app",
    "activated": "app",
}
SEGMENTS = ["silver"] * 6 + ["gold"] * 3 + ["platinum"]
NPS_SCORES = [0, 2, 4, 5, 6, 6, 7, 7, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10]
CSAT_SCORES = [1, 2, 3, 3, 4, 4, 4, 5, 5, 5]
CES_SCORES = [1, 2, 2, 3, 3, 4, 5, 6, 7]
TIME_ZONES = ["Europe/Paris", "Europe/London", "America/New_York", "Asia/Tokyo"]
# Survey rules of the default configuration the synthetic customers answer.
CSAT_RULE, CES_RULE = "csat_after_delivery", "ces_after_support_call"


@dataclass(frozen=True)
class Mix:
    """How the population behaves: the chance of each kind of behaviour per customer."""

    anonymous_rate: float = 0.3  # browse anonymously first, log in at checkout
    funnel_continue: tuple[float, ...] = CONTINUE  # go on to the next funnel step
    answer_rate: float = 0.5  # answer a survey after a delivery
    support_rate: float = 0.15  # call support 1 to 3 times
    onboarding_rate: float = 0.2  # sign up, use, activate (part of it)
    email_rate: float = 0.4  # open an email
    unsubscribe_rate: float = 0.05
    profile_rate: float = 0.2  # have a CRM profile (time zone, preferred channel)

    @property
    def checkout_abandonment(self) -> float:
        return 1 - self.funnel_continue[CHECKOUT]

    def with_checkout_abandonment(self, rate: float) -> Mix:
        chances = list(self.funnel_continue)
        chances[CHECKOUT] = 1 - rate
        return replace(self, funnel_continue=tuple(chances))


DEFAULT_MIX = Mix()


@dataclass(frozen=True)
class Customer:
    customer_id: str
    anonymous_id: str | None  # set when the customer browses anonymously before logging in
    segment: str


def new_customer(customer_id: str, rng: random.Random, mix: Mix = DEFAULT_MIX) -> Customer:
    anonymous = rng.random() < mix.anonymous_rate
    return Customer(
        customer_id=customer_id,
        anonymous_id=f"anon-{rng.getrandbits(48):012x}" if anonymous else None,
        segment=rng.choice(SEGMENTS),
    )


def population(n: int, rng: random.Random) -> list[Customer]:
    return [new_customer(f"c{i:05d}", rng) for i in range(n)]


def journey_events(
    customer: Customer,
    start: datetime,
    rng: random.Random,
    max_gap_seconds: int = 900,
    mix: Mix = DEFAULT_MIX,
) -> list[dict]:
    """The touchpoints of one customer, in event-time order."""
    types: list[str] = []
    for step, chance in zip(FUNNEL, mix.funnel_continue, strict=True):
        types.append(step)
        if rng.random() > chance:
            break
    if types[-1] == "delivery" and rng.random() < mix.answer_rate:
        types.append("csat_answer" if rng.random() < 0.6 else "nps_answer")
    if rng.random() < mix.support_rate:
        types += ["support_call"] * rng.randint(1, 3)
        if rng.random() < 0.4:
            types.append("ces_answer")
        if rng.random() < 0.5:
            types.append("ticket_updated")
        if rng.random() < 0.6:
            types.append("ticket_resolved")
    if rng.random() < mix.onboarding_rate:
        types += ["signup", "first_use", "activated"][: rng.randint(1, 3)]
    if rng.random() < mix.email_rate:
        types.append("email_open")
    if rng.random() < mix.unsubscribe_rate:
        types.append("unsubscribe")

    if rng.random() < mix.profile_rate:  # a CRM profile, before anything else
        types.insert(0, "profile_updated")

    events, ts = [], start
    logged_in = customer.anonymous_id is None
    anchors: dict[str, str] = {}  # touchpoint type -> id of its first event (surveys' anchor)
    for n, step in enumerate(types):
        ts += timedelta(seconds=rng.randint(5, max(5, max_gap_seconds)))
        kind = "survey_response" if step.endswith("_answer") else step
        if kind == "checkout_started":
            logged_in = True  # customers identify themselves at checkout
        anchors.setdefault(kind, f"{customer.customer_id}-{n}")
        event: dict[str, Any] = {
            "event_id": f"{customer.customer_id}-{n}",
            "type": kind,
            "ts": ts.isoformat(timespec="milliseconds"),
            "channel": CHANNEL.get(kind, "web"),
            "source": "crm"
            if kind in ("support_call", "delivery", "ticket_updated", "ticket_resolved")
            else "site",
            "segment": customer.segment,
            "properties": {"step": n},
        }
        if logged_in:
            event["customer_id"] = customer.customer_id
        if customer.anonymous_id:
            event["anonymous_id"] = customer.anonymous_id
        if kind == "purchase":
            event["properties"]["amount"] = round(rng.uniform(10, 400), 2)
        if kind == "profile_updated":
            logged_in = True  # the CRM knows the customer
            event["customer_id"] = customer.customer_id
            event["source"] = "crm"
            event["properties"].update(
                time_zone=rng.choice(TIME_ZONES),
                preferred_channel=rng.choice(["email", "sms", "in_app"]),
            )
        event["properties"].update(_answer(step, anchors, rng))
        events.append(event)
    return events


def _answer(step: str, anchors: dict[str, str], rng: random.Random) -> dict:
    """The properties of a survey answer (scores lean positive, as real answers do)."""
    if step == "csat_answer":
        invitation = invitation_id(CSAT_RULE, anchors["delivery"])
        return {"metric": "csat", "score": rng.choice(CSAT_SCORES), "invitation_id": invitation}
    if step == "ces_answer":
        invitation = invitation_id(CES_RULE, anchors["support_call"])
        return {"metric": "ces", "score": rng.choice(CES_SCORES), "invitation_id": invitation}
    if step == "nps_answer":
        return {"metric": "nps", "score": rng.choice(NPS_SCORES), "about": "delivery"}
    return {}


def generate(
    customers: int,
    seed: int = 7,
    now: datetime | None = None,
    arrivals_seconds: int = 12 * 3600,
    max_gap_seconds: int = 900,
) -> list[dict]:
    """Events of `customers` customers, sorted by time, all before `now`.

    Customers arrive over `arrivals_seconds`, starting a day before `now`; a customer's
    touchpoints are 5 s to `max_gap_seconds` apart.
    """
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    day_start = now - timedelta(days=1)
    events = []
    for customer in population(customers, rng):
        start = day_start + timedelta(seconds=rng.randint(0, arrivals_seconds))
        events.extend(journey_events(customer, start, rng, max_gap_seconds))
    events.sort(key=lambda e: e["ts"])
    return events

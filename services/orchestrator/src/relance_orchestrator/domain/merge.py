"""`contact.aliased`: an anonymous contact's facts and plans follow the known contact.

Rules (the known contact wins where both know something):
- Orders, coupons used, survey answers and carts are unions; first/last order are the
  earliest/latest of both; totals add up over orders only one side knew.
- Identity traits (name, email, timezone...) come from the known contact, else the anonymous.
- Consent: per channel and purpose, an objection on either side wins (never assume consent).
- Sends: both histories, ordered by time, so caps and attribution see every message.
- Plans: each anonymous instance moves over unless the known contact already has an instance
  with that key, or the plan is single-active and the known contact has one running
  (carts follow: cart instances are keyed by cart id). Histories are unions, so re-entry
  rules (once per key, minimum interval) hold across the merge.
The anonymous contact is left empty, pointing at the known one (`merged_into`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from relance_orchestrator.domain.facts import ContactFacts, Order
from relance_orchestrator.domain.plan import Plan
from relance_orchestrator.domain.state import ContactState, PlanState

_TRAITS = (
    "birthday",
    "signup_at",
    "first_name",
    "last_name",
    "email",
    "phone",
    "loyalty_tier",
    "timezone",
    "locale",
    "country",
)


def _earliest(a: Order | None, b: Order | None) -> Order | None:
    if a is None or b is None:
        return a or b
    return a if a.at <= b.at else b


def _latest(a: Order | None, b: Order | None) -> Order | None:
    if a is None or b is None:
        return a or b
    return a if a.at >= b.at else b


def merge_facts(known: ContactFacts, anon: ContactFacts) -> ContactFacts:
    only_anon = anon.order_ids - known.order_ids
    # orders only the anonymous side knew move over with its spend; an order seen under both
    # keys is counted once (a partly shared history adds the anonymous spend whole: rare)
    extra_spent = anon.total_spent if only_anon else Decimal(0)
    update: dict[str, Any] = {
        "orders_count": known.orders_count + len(only_anon),
        "order_ids": known.order_ids | anon.order_ids,
        "first_order": _earliest(known.first_order, anon.first_order),
        "last_order": _latest(known.last_order, anon.last_order),
        "total_spent": known.total_spent + extra_spent,
        "coupons_used": known.coupons_used | anon.coupons_used,
        "carts": {**anon.carts, **known.carts},
        "survey_answers": {**anon.survey_answers, **known.survey_answers},
    }
    for name in _TRAITS:
        if getattr(known, name) is None and getattr(anon, name) is not None:
            update[name] = getattr(anon, name)
    consent = dict(anon.consent)
    for key, status in known.consent.items():
        consent[key] = "denied" if consent.get(key) == "denied" else status
    update["consent"] = consent
    seen = {s.message_id for s in known.sends}
    sends = [*known.sends, *(s for s in anon.sends if s.message_id not in seen)]
    update["sends"] = tuple(sorted(sends, key=lambda s: (s.at, s.message_id)))
    return known.evolve(update)


def _merge_plan(plan: Plan | None, known: PlanState | None, anon: PlanState) -> PlanState:
    if known is None:
        return anon
    instances = dict(known.instances)
    single = plan.reentry.single_active if plan is not None else True
    for key, instance in anon.instances.items():
        if key in instances or (single and instances):
            continue
        instances[key] = instance
    unique = {(h.key, h.started_at): h for h in (*known.history, *anon.history)}
    history = tuple(sorted(unique.values(), key=lambda h: (h.started_at, h.key)))
    return known.evolve({"instances": instances, "history": history})


def merge_states(
    known: ContactState, anon: ContactState, plans: dict[str, Plan]
) -> tuple[ContactState, ContactState]:
    """(the known contact with the anonymous one folded in, the emptied anonymous one)."""
    merged_plans = dict(known.plans)
    for name, anon_plan in anon.plans.items():
        merged_plans[name] = _merge_plan(plans.get(name), known.plans.get(name), anon_plan)
    merged = known.evolve(
        update={"facts": merge_facts(known.facts, anon.facts), "plans": merged_plans}
    )
    emptied = ContactState.new(anon.shop_id, anon.contact_key).evolve(
        update={"merged_into": known.contact_key}
    )
    return merged, emptied

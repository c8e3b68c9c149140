"""Every row of the plan table, with its edges, through the real engine on a virtual clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from relance_events.payloads import CustomTracked, MessageSent
from relance_orchestrator.domain.commands import OrderAttributed
from relance_orchestrator.domain.plan import Delay, Not, Plan, SentWithin
from relance_orchestrator.plans.loader import load_plans

T0 = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)  # a Monday
D = timedelta(days=1)
H = timedelta(hours=1)
M = timedelta(minutes=1)


# --- welcome_pack -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "welcome", "second"),
    [("80", "vip", "star"), ("50", "standard", "standard"), ("20", "standard", "standard")],
)
def test_welcome_variants_follow_the_average_basket(
    harness: Any, total: str, welcome: str, second: str
) -> None:
    h = harness()
    h.order(T0, "o1", total)
    h.until(T0 + 10 * D)
    assert h.steps("welcome_pack") == [
        ("welcome", welcome, T0),
        ("second_purchase", second, T0 + 4 * D),
    ]


@pytest.mark.parametrize(
    ("reorder_after", "expected"),
    [
        (3 * D + 23 * H, ["welcome"]),  # bought again inside the 4 days: plan left
        (4 * D + 1 * H, ["welcome", "second_purchase"]),  # too late: incentive already sent
    ],
)
def test_welcome_exit_on_repurchase_within_four_days(
    harness: Any, reorder_after: timedelta, expected: list[str]
) -> None:
    h = harness()
    h.order(T0, "o1")
    h.order(T0 + reorder_after, "o2")
    h.until(T0 + 10 * D)
    assert [s for s, _, _ in h.steps("welcome_pack")] == expected


def test_welcome_for_a_prospect_needs_email_consent(harness: Any) -> None:
    h = harness()
    h.identify(T0)
    h.until(T0 + 10 * D)
    assert h.sends("welcome_pack") == []
    h.consent(T0 + 10 * D)
    h.until(T0 + 30 * D)  # no second-purchase push: a prospect has no first order
    assert [s for s, _, _ in h.steps("welcome_pack")] == ["welcome"]
    assert h.steps("welcome_pack")[0][2] == T0 + 10 * D


def test_a_prospect_welcomed_at_signup_gets_the_first_order_welcome_too(harness: Any) -> None:
    h = harness()
    h.consent(T0)
    h.order(T0 + M, "o1", "80")
    h.until(T0 + 30 * D)
    assert h.steps("welcome_pack") == [
        ("welcome", "standard", T0),  # the signup: no order to compare yet
        ("welcome", "vip", T0 + M),
        ("second_purchase", "star", T0 + M + 4 * D),
    ]


def _one_welcome_plans() -> list[Plan]:
    """The README's opt-in: no first-order welcome within 7 days of a signup welcome."""
    plans = []
    for plan in load_plans():
        if plan.name == "welcome_pack":
            once = Not(
                kind="not",
                condition=SentWithin(
                    kind="sent_within", plan="welcome_pack", step="welcome", within=Delay(days=7)
                ),
            )
            steps = [
                s.model_copy(update={"when": (once,)}) if s.name == "welcome" else s
                for s in plan.steps
            ]
            plan = plan.model_copy(update={"steps": tuple(steps)})
        plans.append(plan)
    return plans


@pytest.mark.parametrize(
    ("order_after", "expected"),
    [
        (0 * D, ["welcome", "second_purchase"]),  # consent and order together at checkout
        # the signup's second step is skipped (no order); the order's runs from the order
        (6 * D, ["welcome", "second_purchase"]),
        (8 * D, ["welcome", "welcome", "second_purchase"]),
    ],
)
def test_sent_within_lets_a_merchant_send_one_welcome(
    harness: Any, order_after: timedelta, expected: list[str]
) -> None:
    h = harness(plans=_one_welcome_plans())
    h.consent(T0)
    h.order(T0 + order_after + M, "o1")
    h.until(T0 + 30 * D)
    assert [s for s, _, _ in h.steps("welcome_pack")] == expected
    second = [at for s, _, at in h.steps("welcome_pack") if s == "second_purchase"][-1]
    assert second == T0 + order_after + M + 4 * D  # from the first order, not the signup


def test_welcome_runs_once_per_contact(harness: Any) -> None:
    h = harness()
    h.order(T0, "o1")
    h.until(T0 + 5 * D)
    h.order(T0 + 400 * D, "o2")
    h.until(T0 + 410 * D)
    assert [s for s, _, _ in h.steps("welcome_pack")] == ["welcome", "second_purchase"]


# --- anti_churn ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order_at", "reminder_1_at"),
    [
        (datetime(2025, 1, 31, 9, 30, tzinfo=UTC), datetime(2025, 7, 31, 9, 30, tzinfo=UTC)),
        (datetime(2025, 8, 31, 9, 30, tzinfo=UTC), datetime(2026, 2, 28, 9, 30, tzinfo=UTC)),
        (datetime(2023, 8, 31, 9, 30, tzinfo=UTC), datetime(2024, 2, 29, 9, 30, tzinfo=UTC)),
    ],
)
def test_anti_churn_after_six_calendar_months(
    harness: Any, order_at: datetime, reminder_1_at: datetime
) -> None:
    h = harness()
    h.order(order_at, "o1")
    h.until(reminder_1_at + 30 * D)
    assert h.steps("anti_churn") == [
        ("reminder_1", None, reminder_1_at),
        ("reminder_2", None, reminder_1_at + 8 * D),
    ]


@pytest.mark.parametrize(
    ("open_offset", "third"),
    [
        (None, False),
        (1 * D, True),  # opened reminder_1 before reminder_3 was due
        (12 * D + 1 * H, False),  # opened only after reminder_3 was due: too late
    ],
)
def test_anti_churn_third_reminder_only_for_openers(
    harness: Any, open_offset: timedelta | None, third: bool
) -> None:
    h = harness()
    h.order(T0, "o1")
    r1 = datetime(2025, 9, 3, 12, 0, tzinfo=UTC)
    h.until(r1)
    if open_offset is not None:
        h.until(r1 + open_offset)
        h.opened(r1 + open_offset, "anti_churn", "reminder_1")
    h.until(r1 + 30 * D)
    expected = [("reminder_1", None, r1), ("reminder_2", None, r1 + 8 * D)]
    if third:
        expected.append(("reminder_3", None, r1 + 12 * D))
    assert h.steps("anti_churn") == expected


def test_anti_churn_order_after_reminder_1_ends_it_and_restarts_the_clock(harness: Any) -> None:
    h = harness()
    h.order(T0, "o1")
    r1 = datetime(2025, 9, 3, 12, 0, tzinfo=UTC)
    h.until(r1 + 2 * D)
    h.order(r1 + 2 * D, "o2")
    h.until(r1 + 40 * D)
    assert h.steps("anti_churn") == [("reminder_1", None, r1)]
    assert h.sim.pending_timers()[("c1", "anti_churn/contact")] == datetime(
        2026, 3, 5, 12, 0, tzinfo=UTC
    )


def test_anti_churn_code_runs_from_reminder_1_and_reminder_3_makes_another_offer(
    harness: Any,
) -> None:
    h = harness()
    h.order(T0, "o1")
    r1 = datetime(2025, 9, 3, 12, 0, tzinfo=UTC)
    h.until(r1 + D)
    h.opened(r1 + D, "anti_churn", "reminder_1")
    h.until(r1 + 30 * D)
    offers = {s.step: s.context["coupon"] for s in h.sends("anti_churn")}
    assert list(offers) == ["reminder_1", "reminder_2", "reminder_3"]
    assert offers["reminder_1"] == offers["reminder_2"]  # the same code, reminded
    assert offers["reminder_1"]["code"].startswith("MISSYOU-")
    assert offers["reminder_1"]["discount"] == "15%"
    assert offers["reminder_1"]["expires_at"] == (r1 + 20 * D).isoformat()
    last = offers["reminder_3"]
    assert last["code"].startswith("LASTCALL-") and last["discount"] == "20%"
    assert last["expires_at"] == (r1 + 12 * D + 7 * D).isoformat()


def test_a_code_stays_valid_for_its_days_after_a_longer_first_delay(harness: Any) -> None:
    """`valid_days` counts from the first message that carries the code, so a merchant who
    waits 9 months instead of 6 does not send a code that has already expired."""
    plans = [
        p.model_copy(
            update={
                "steps": (
                    p.steps[0].model_copy(update={"delay": Delay(months=9)}),
                    *p.steps[1:],
                )
            }
        )
        if p.name == "anti_churn"
        else p
        for p in load_plans()
    ]
    h = harness(plans=plans)
    h.order(T0, "o1")
    r1 = datetime(2025, 12, 3, 12, 0, tzinfo=UTC)
    h.until(r1)
    (sent,) = h.sends("anti_churn")
    assert sent.at == r1
    assert sent.context["coupon"]["expires_at"] == (r1 + 20 * D).isoformat()


def test_an_older_order_arriving_late_moves_no_plan(harness: Any) -> None:
    """A backfilled order dated before the last known one counts in the facts only: the
    plans keep following the latest purchase."""
    h = harness()
    h.order(T0, "o1")
    h.until(T0 + D)
    before = dict(h.sim.pending_timers())
    h.order(T0 - 60 * D, "o0")
    assert h.sim.pending_timers() == before
    h.until(T0 + 200 * D)
    assert h.steps("cross_sell")[0] == ("recommendation", "up_sell", T0 + 30 * D)
    assert h.steps("anti_churn")[0] == ("reminder_1", None, datetime(2025, 9, 3, 12, tzinfo=UTC))
    surveys = [s.context["order_id"] for s in h.sends("satisfaction_survey")]
    assert surveys == ["o1"]
    assert h.sim.states["c1"].facts.orders_count == 2
    assert h.sim.states["c1"].facts.first_order is not None
    assert h.sim.states["c1"].facts.first_order.order_id == "o0"


# --- birthday -----------------------------------------------------------------------------


def test_birthday_wishes_on_first_of_month_at_send_hour_in_contact_timezone(harness: Any) -> None:
    h = harness()
    h.order(T0, "o1")
    h.identify(T0, birthday=date(1990, 6, 15), timezone="Europe/Paris")
    h.until(datetime(2025, 8, 1, tzinfo=UTC))
    wishes = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)  # 10:00 in Paris (CEST)
    assert h.steps("birthday") == [
        ("wishes", None, wishes),
        ("reminder_1", None, wishes + 15 * D),
    ]
    context = h.sends("birthday")[0].context
    assert context["coupon"]["code"].startswith("BDAY-")


@pytest.mark.parametrize(
    ("coupon_used", "opened", "expected"),
    [
        (False, False, ["wishes", "reminder_1"]),
        (False, True, ["wishes", "reminder_1", "reminder_2"]),
        (True, True, ["wishes"]),
    ],
)
def test_birthday_reminders(
    harness: Any, coupon_used: bool, opened: bool, expected: list[str]
) -> None:
    h = harness()
    h.order(T0, "o1")
    h.identify(T0, birthday=date(1990, 6, 15))
    wishes = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
    h.until(wishes + 1 * D)
    if opened:
        h.opened(wishes + 1 * D, "birthday", "wishes")
    if coupon_used:
        code = h.sends("birthday")[0].context["coupon"]["code"]
        h.order(wishes + 2 * D, "o2", coupon=code)
    h.until(wishes + 30 * D)
    assert [s for s, _, _ in h.steps("birthday")] == expected


def test_birthday_once_a_year_and_again_next_year(harness: Any) -> None:
    h = harness()
    h.order(T0, "o1")
    h.identify(T0, birthday=date(1990, 6, 15))
    h.identify(T0 + 100 * D, birthday=date(1990, 6, 15))  # re-identify: no second instance
    h.until(datetime(2026, 7, 1, tzinfo=UTC))
    wishes = [at for step, _, at in h.steps("birthday") if step == "wishes"]
    assert wishes == [
        datetime(2025, 6, 1, 10, tzinfo=UTC),
        datetime(2026, 6, 1, 10, tzinfo=UTC),
    ]


def test_birthday_without_a_date_uses_the_first_order_anniversary(harness: Any) -> None:
    h = harness()
    h.order(T0, "o1")
    h.until(T0 + 366 * D)
    assert h.steps("birthday")[0] == ("wishes", None, datetime(2026, 3, 3, 10, tzinfo=UTC))


# --- abandoned_cart -----------------------------------------------------------------------


def _cart_customer(h: Any) -> None:
    h.consent(T0 - 10 * D)


@pytest.mark.parametrize(
    ("opened_step", "expected"),
    [
        (None, [("reminder_1", 3 * H), ("reminder_2", 24 * H)]),
        ("reminder_1", [("reminder_1", 3 * H), ("reminder_2", 24 * H), ("reminder_3", 72 * H)]),
        ("reminder_2", [("reminder_1", 3 * H), ("reminder_2", 24 * H), ("reminder_3", 72 * H)]),
    ],
)
def test_abandoned_cart_reminders(harness: Any, opened_step: str | None, expected: Any) -> None:
    h = harness()
    _cart_customer(h)
    h.cart(T0, "k1", 2)
    h.until(T0 + 30 * H)
    if opened_step is not None:
        h.opened(T0 + 30 * H, "abandoned_cart", opened_step)
    h.until(T0 + 5 * D)
    assert [(s, at - T0) for s, _, at in h.steps("abandoned_cart")] == expected
    assert len(h.sends("abandoned_cart")[0].context["cart"]["items"]) == 2


def test_cart_changed_at_2h59_restarts_from_reminder_1(harness: Any) -> None:
    h = harness()
    _cart_customer(h)
    h.cart(T0, "k1", 1)
    h.cart(T0 + 2 * H + 59 * M, "k1", 2)
    h.until(T0 + 2 * H + 59 * M + 3 * H - M)
    assert h.sends("abandoned_cart") == []
    h.until(T0 + 5 * D)
    restart = T0 + 2 * H + 59 * M
    assert [(s, at) for s, _, at in h.steps("abandoned_cart")] == [
        ("reminder_1", restart + 3 * H),
        ("reminder_2", restart + 24 * H),
    ]


def test_emptied_or_paid_cart_ends_its_plan(harness: Any) -> None:
    h = harness()
    _cart_customer(h)
    h.cart(T0, "k1", 1)
    h.cart(T0, "k2", 1)
    h.cart(T0 + 1 * H, "k1", 0)
    h.order(T0 + 2 * H, "o1", cart_id="k2")
    h.until(T0 + 5 * D)
    assert h.sends("abandoned_cart") == []
    assert not any(k[1].startswith("abandoned_cart") for k in h.sim.pending_timers())


def test_cart_viewed_without_change_does_not_restart(harness: Any) -> None:
    h = harness()
    _cart_customer(h)
    h.cart(T0, "k1", 1)
    h.cart(T0 + 2 * H, "k1", 1)  # same items again
    h.until(T0 + 4 * H)
    assert [at for _, _, at in h.steps("abandoned_cart")] == [T0 + 3 * H]


# --- cross_sell ---------------------------------------------------------------------------


@pytest.mark.parametrize(("total", "variant"), [("90", "cross_sell"), ("30", "up_sell")])
def test_cross_sell_after_30_and_45_days(harness: Any, total: str, variant: str) -> None:
    h = harness()
    h.order(T0, "o1", total)
    h.until(T0 + 60 * D)
    assert h.steps("cross_sell") == [
        ("recommendation", variant, T0 + 30 * D),
        ("reminder", variant, T0 + 45 * D),
    ]


def test_cross_sell_reminder_not_after_a_purchase(harness: Any) -> None:
    h = harness()
    h.order(T0, "o1")
    h.until(T0 + 40 * D)
    h.order(T0 + 40 * D, "o2")
    h.until(T0 + 50 * D)
    assert [s for s, _, _ in h.steps("cross_sell")] == ["recommendation"]


# --- satisfaction_survey ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("very_satisfied", [("survey", 7 * D), ("thank_you", 8 * D + 2 * H)]),
        ("satisfied", [("survey", 7 * D), ("thank_you", 8 * D + 2 * H)]),
        ("not_satisfied", [("survey", 7 * D), ("reassurance", 7 * D + 2 * H)]),
        (None, [("survey", 7 * D)]),
    ],
)
def test_survey_and_follow_up(harness: Any, answer: Any, expected: Any) -> None:
    h = harness()
    h.order(T0, "o1")
    h.until(T0 + 7 * D + 2 * H)
    if answer is not None:
        h.answer(T0 + 7 * D + 2 * H, "o1", answer)
    h.until(T0 + 60 * D)
    assert [(s, at - T0) for s, _, at in h.steps("satisfaction_survey")] == expected
    assert all(s.purpose == "transactional" for s in h.sends("satisfaction_survey"))


def test_survey_once_per_order_and_once_per_30_days(harness: Any) -> None:
    h = harness()
    h.order(T0, "o1")
    h.order(T0 + 10 * D, "o2")  # inside 30 days of the first survey instance: none
    h.order(T0 + 31 * D, "o3")
    h.until(T0 + 60 * D)
    assert [s.context["order_id"] for s in h.sends("satisfaction_survey")] == ["o1", "o3"]


# --- attribution --------------------------------------------------------------------------


def test_a_purchase_is_attributed_to_the_last_of_several_messages(harness: Any) -> None:
    h = harness()
    h.order(T0, "o1")
    h.until(T0 + 7 * D)  # the survey, transactional, at +7 d
    h.cart(T0 + 7 * D + H, "k1", 1)
    h.until(T0 + 7 * D + 5 * H)  # the cart's reminder_1, 3 h after the change
    assert [(s.plan, s.step) for s in h.sends()][-2:] == [
        ("satisfaction_survey", "survey"),
        ("abandoned_cart", "reminder_1"),
    ]
    commands = h.order(T0 + 8 * D, "o2", "60")
    found = [c for c in commands if isinstance(c, OrderAttributed)]
    assert [(c.plan, c.step, str(c.revenue)) for c in found] == [
        ("abandoned_cart", "reminder_1", "60")
    ]


@pytest.mark.parametrize(("after", "attributed"), [(5 * D - M, True), (5 * D + M, False)])
def test_purchase_attributed_to_last_message_inside_window(
    harness: Any, after: timedelta, attributed: bool
) -> None:
    h = harness()
    h.order(T0, "o1")
    h.until(T0 + 30 * D)  # cross_sell recommendation sent at +30 d
    commands = h.order(T0 + 30 * D + after, "o2", "75")
    found = [c for c in commands if isinstance(c, OrderAttributed)]
    if attributed:
        assert [(c.plan, c.step, str(c.revenue)) for c in found] == [
            ("cross_sell", "recommendation", "75")
        ]
    else:
        assert found == []


# --- example plans (no engine code) -------------------------------------------------------


def _examples(harness: Any) -> Any:
    return harness(plans=load_plans(examples=["re_engagement", "replenishment", "back_in_stock"]))


def _deliver_until(h: Any, end: datetime, opened: set[str]) -> None:
    """Run to `end` in 6-hour hops, the sender reporting each email sent a minute after it
    was requested, and the contact opening those whose step is in `opened`."""
    at = T0
    while at < end:
        at += 6 * H
        h.until(at)
        for send in h.sends():
            if at - 6 * H < send.at <= at and send.channel == "email":
                h.emit(
                    MessageSent(
                        message_id=send.message_id, channel="email", plan=send.plan, step=send.step
                    ),
                    send.at + M,
                )
                if send.step in opened:
                    h.opened(send.at + 2 * M, send.plan, send.step)


def test_replenishment_reminds_a_consumables_buyer_30_days_later_at_10(harness: Any) -> None:
    h = _examples(harness)
    h.order(T0, "o1", category="consumables")
    h.until(T0 + 40 * D)
    (restock,) = h.sends("replenishment")
    assert (restock.step, restock.at) == ("restock", datetime(2025, 4, 2, 10, tzinfo=UTC))
    assert restock.context["last_order"]["order_id"] == "o1"


def test_replenishment_restarts_from_a_new_consumables_order(harness: Any) -> None:
    h = _examples(harness)
    h.order(T0, "o1", category="consumables")
    h.order(T0 + 10 * D, "o2", category="consumables")
    h.until(T0 + 45 * D)
    assert [s.at for s in h.sends("replenishment")] == [datetime(2025, 4, 12, 10, tzinfo=UTC)]


def test_replenishment_not_after_an_order_of_anything_else(harness: Any) -> None:
    h = _examples(harness)
    h.order(T0, "o1", category="consumables")
    h.order(T0 + 10 * D, "o2", category="shoes")
    h.until(T0 + 45 * D)
    assert h.sends("replenishment") == []


def test_replenishment_ignores_orders_without_consumables(harness: Any) -> None:
    h = _examples(harness)
    h.order(T0, "o1", category="shoes")
    h.until(T0 + 60 * D)
    assert h.sends("replenishment") == []


@pytest.mark.parametrize(("opened", "asked"), [(set(), True), ({"second_purchase"}, False)])
def test_re_engagement_after_three_unopened_emails_once_a_quarter(
    harness: Any, opened: set[str], asked: bool
) -> None:
    h = _examples(harness)
    h.order(T0, "o1")
    _deliver_until(h, T0 + 80 * D, opened)
    # welcome, second purchase, survey, then the cross-sell recommendation at +30 d: the
    # question comes 7 days after the latest unopened email, and not again at +45 d
    expected = [("still_interested", None, T0 + 37 * D + M)] if asked else []
    assert h.steps("re_engagement") == expected


def test_back_in_stock_alerts_at_once_then_once_more_unless_they_buy(harness: Any) -> None:
    h = _examples(harness)
    h.order(T0 - 60 * D, "o0")  # a customer (soft opt-in)
    h.emit(CustomTracked(name="Back In Stock", properties={"product_id": "p1"}), T0)
    h.until(T0 + 3 * D)
    assert h.steps("back_in_stock") == [("alert", None, T0), ("last_chance", None, T0 + 2 * D)]
    h.emit(CustomTracked(name="Back In Stock", properties={"product_id": "p2"}), T0 + 10 * D)
    h.order(T0 + 11 * D, "o1")
    h.until(T0 + 20 * D)
    assert [s for s, _, _ in h.steps("back_in_stock")] == ["alert", "last_chance", "alert"]

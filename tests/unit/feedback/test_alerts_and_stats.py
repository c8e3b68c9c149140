from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from relance_feedback.domain.alerts import ContactCard, OrderCard, OrderLine, alert_body
from relance_feedback.domain.answers import Submission, record
from relance_feedback.domain.stats import (
    AnswerCounts,
    csat,
    nps,
    nps_bucket,
    parse_windows,
    windows_ending_at,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ANSWER = record(
    None,
    Submission("shop-1", "o-42", "user/7", "not_satisfied", None, "Arrived broken", "email", "m1"),
    T0,
).answer
CONTACT = ContactCard("Ada", "Lovelace", "ada@example.com", "+33612345678")
ORDER = OrderCard(
    "o-42",
    T0 - timedelta(days=7),
    Decimal("59.9000"),
    "EUR",
    (OrderLine("p1", "Teapot", 1, Decimal("49.90")), OrderLine("p2", None, 2, Decimal("5"))),
)


def body(mode: str, contact=CONTACT, order=ORDER) -> dict:
    raw = alert_body(
        mode,  # type: ignore[arg-type]
        answer=ANSWER,
        contact=contact,
        order=order,
        public_url="https://relance.example/",
        created_at=T0,
    )
    return json.loads(raw)


def test_full_payload_carries_what_support_needs() -> None:
    data = body("full")["data"]
    assert body("full")["type"] == "survey.not_satisfied"
    assert data["answer"] == "not_satisfied"
    assert data["comment"] == "Arrived broken"
    assert data["contact"] == {
        "user_id": "user/7",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "phone": "+33612345678",
        "url": "https://relance.example/v1/contacts/user%2F7",
    }
    assert data["order"]["id"] == "o-42"
    assert data["order"]["date"] == "2025-02-22T12:00:00Z"
    assert data["order"]["total"] == "59.9000"
    assert [i["product_id"] for i in data["order"]["items"]] == ["p1", "p2"]


def test_full_payload_without_known_contact_or_order_keeps_the_ids() -> None:
    data = body("full", contact=None, order=None)["data"]
    assert data["contact"]["email"] is None
    assert data["order"] == {
        "id": "o-42", "date": None, "total": None, "currency": None, "items": [],
    }  # fmt: skip


def test_minimal_payload_has_ids_only() -> None:
    data = body("minimal")["data"]
    assert set(data) == {"shop_id", "answer_id", "user_id", "order_id"}
    assert "ada@example.com" not in json.dumps(body("minimal"))


def test_slack_payload_has_text_and_blocks() -> None:
    doc = body("slack")
    assert set(doc) == {"text", "blocks"}
    assert "Ada Lovelace" in doc["text"] and "o-42" in doc["text"]
    kinds = [b["type"] for b in doc["blocks"]]
    assert kinds == ["header", "section", "section", "actions"]
    assert doc["blocks"][3]["elements"][0]["url"].endswith("/v1/contacts/user%2F7")
    assert "Teapot" in doc["blocks"][1]["text"]["text"]


def test_the_body_is_stable_bytes() -> None:
    one = alert_body("full", answer=ANSWER, contact=CONTACT, order=ORDER,
                     public_url="https://r.example", created_at=T0)  # fmt: skip
    two = alert_body("full", answer=ANSWER, contact=CONTACT, order=ORDER,
                     public_url="https://r.example", created_at=T0)  # fmt: skip
    assert one == two


def test_csat_and_nps() -> None:
    counts = AnswerCounts(very_satisfied=3, satisfied=1, not_satisfied=1,
                          promoters=5, passives=3, detractors=2)  # fmt: skip
    assert csat(counts) == 80.0
    assert nps(counts) == 30.0
    assert csat(AnswerCounts()) is None and nps(AnswerCounts()) is None
    assert [nps_bucket(s) for s in (0, 6, 7, 8, 9, 10)] == [
        "detractor", "detractor", "passive", "passive", "promoter", "promoter",
    ]  # fmt: skip


def test_windows() -> None:
    assert parse_windows(None) == (7, 30, 90)
    assert parse_windows("1d, 365d") == (1, 365)
    (w,) = windows_ending_at(T0, (7,))
    assert (w.label, w.start, w.end) == ("7d", T0 - timedelta(days=7), T0)


@pytest.mark.parametrize("text", ["0d", "abc", "7d," * 11, "99999d"])
def test_bad_windows_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"window|days"):
        parse_windows(text)

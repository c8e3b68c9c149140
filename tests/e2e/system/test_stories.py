"""One story per plan, driven only through public interfaces: the Segment SDK against
ingest, the links found in delivered emails, and the HTTP APIs. Oracles: the SMTP mailbox,
the webhook receiver's log, the HTTP APIs and the span file."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from segment.analytics import Client

from relance_events import deterministic_id

from .harness import SHOP, WRITE_KEY, Mail, System

pytestmark = pytest.mark.timeout(240)


def sdk(system: System) -> Client:
    errors: list[Any] = []
    client = Client(
        write_key=WRITE_KEY,
        host=system.ingest_url,
        sync_mode=True,
        max_retries=1,
        on_error=lambda error, batch: errors.append(error),
    )
    client.errors = errors  # type: ignore[attr-defined]
    return client


async def identify_and_order(
    system: System, user: str, address: str, order_id: str, total: float = 80.0
) -> None:
    client = sdk(system)
    now = system.now()
    await asyncio.to_thread(
        client.identify,
        user,
        {"email": address, "first_name": "Ada", "locale": "en"},
        timestamp=now,
    )
    await asyncio.to_thread(
        client.track,
        user,
        "Order Completed",
        {
            "order_id": order_id,
            "total": total,
            "currency": "EUR",
            "products": [{"product_id": "p-1", "name": "Tea", "price": total, "quantity": 1}],
        },
        timestamp=now,
    )
    assert client.errors == []  # type: ignore[attr-defined]


def plan_of(mail: Mail) -> str:
    return str(mail.message.get("Feedback-ID", "")).split(":")[0]


async def plan_stats(system: System) -> dict[tuple[str, str], dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        orchestrator = system.of("orchestrator")[0]
        response = await client.get(f"{orchestrator.url}/v1/plans/stats", auth=system.admin_auth())
    assert response.status_code == 200, response.text
    return {
        (step["plan"], step["step"]): step
        for plan in response.json()["plans"]
        for step in plan["steps"]
    }


async def test_first_order_gets_a_welcome_email_whose_links_work(
    system: System, fresh: str
) -> None:
    """First order -> welcome email over SMTP; its pixel, click and RFC 8058 one-click
    unsubscribe links work, and the open and click reach `GET /v1/plans/stats`."""
    address = f"{fresh}@example.com"
    await identify_and_order(system, f"u-{fresh}", address, f"o-{fresh}")

    (welcome,) = await system.wait_mail(address, 1, timeout_s=60)
    assert plan_of(welcome) == "welcome_pack"
    assert welcome.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    links = welcome.links()
    pixel = next(u for u in links if "/t/o/" in u)
    click = next(u for u in links if "/t/c/" in u)
    unsubscribe = welcome.unsubscribe_url()
    assert unsubscribe is not None and "/u/" in unsubscribe
    for url in (pixel, click, unsubscribe):
        assert url.startswith(system.ingest_url), url

    async with httpx.AsyncClient(timeout=10) as client:
        opened = await client.get(pixel)
        assert opened.status_code == 200 and opened.headers["content-type"] == "image/gif"
        clicked = await client.get(click, follow_redirects=False)
        assert clicked.status_code == 302
        assert urlsplit(clicked.headers["location"]).scheme in ("http", "https")
        assert "/t/c/" not in clicked.headers["location"]
        page = await client.get(unsubscribe)
        assert page.status_code == 200
        done = await client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200, done.text

    contact = f"u-{fresh}"
    await system.wait_until(
        "SELECT status FROM sender_consents WHERE shop_id = $1 AND contact_key = $2"
        " AND channel = 'email' AND purpose = 'marketing'",
        SHOP,
        contact,
        expect="denied",
        what="the unsubscribe reached the sender's consent table",
    )
    message_id = welcome.message_id
    await system.wait_until(
        "SELECT array_agg(DISTINCT kind ORDER BY kind) FROM orchestrator_journal"
        " WHERE shop_id = $1 AND message_id = $2",
        SHOP,
        message_id,
        expect=lambda kinds: kinds is not None and {"opened", "clicked"} <= set(kinds),
        what="open and click journaled for the welcome message",
    )
    stats = await plan_stats(system)
    step = stats[("welcome_pack", "welcome")]
    assert step["requested"] >= 1 and step["sent"] >= 1
    assert step["opened"] >= 1 and step["clicked"] >= 1


async def test_an_open_cart_gets_a_reminder_three_hours_later(system: System, fresh: str) -> None:
    """A cart left open -> `abandoned_cart/reminder_1` once the shared clock moved 3 h,
    never before."""
    address = f"{fresh}@example.com"
    user = f"u-{fresh}"
    client = sdk(system)
    now = system.now()
    await asyncio.to_thread(
        client.identify,
        user,
        {"email": address, "locale": "en", "email_consent": "granted"},
        timestamp=now,
    )
    await asyncio.to_thread(
        client.track,
        user,
        "Product Added",
        {
            "cart_id": f"c-{fresh}",
            "product_id": "p-9",
            "name": "Kettle",
            "price": 45.0,
            "quantity": 1,
            "currency": "EUR",
        },
        timestamp=now,
    )
    assert client.errors == []  # type: ignore[attr-defined]
    await system.wait_until(
        "SELECT count(*) FROM orchestrator_timers WHERE shop_id = $1 AND contact_key = $2",
        SHOP,
        user,
        expect=lambda n: n >= 1,
        what="the reminder timer armed",
    )
    assert [m for m in system.mailbox.to(address) if plan_of(m) == "abandoned_cart"] == []

    system.advance(timedelta(hours=3, minutes=1))
    mails = await system.wait_mail(
        address, 1, timeout_s=60, where=lambda m: plan_of(m) == "abandoned_cart"
    )
    assert len(mails) == 1
    assert ":reminder_1:" in str(mails[0].message["Feedback-ID"])
    assert "Kettle" in mails[0].body("html") + mails[0].body("plain")


async def test_an_unhappy_survey_answer_alerts_support_and_reassures(
    system: System, fresh: str
) -> None:
    """Order -> survey email 7 days later (shared clock) -> the `not_satisfied` link,
    confirmed on the feedback service -> a signed alert at the support webhook receiver
    and a reassurance email."""
    address = f"{fresh}@example.com"
    user = f"u-{fresh}"
    order_id = f"o-{fresh}"
    await identify_and_order(system, user, address, order_id, total=42.0)
    await system.wait_mail(address, 1, timeout_s=60)
    await system.wait_until(
        "SELECT count(*) FROM orchestrator_timers WHERE shop_id = $1 AND contact_key = $2"
        " AND timer_key LIKE 'satisfaction_survey/%'",
        SHOP,
        user,
        expect=1,
        what="the survey timer armed",
    )

    system.advance(timedelta(days=7, minutes=5))
    (survey,) = await system.wait_mail(
        address, 1, timeout_s=60, where=lambda m: plan_of(m) == "satisfaction_survey"
    )
    answers = [u for u in survey.links() if "/s/" in u]
    assert len(answers) >= 3, survey.links()
    async with httpx.AsyncClient(timeout=10) as client:
        unhappy = None
        for link in answers:
            page = await client.get(system.survey_url(link))
            assert page.status_code == 200, page.text
            if re.search(r"not satisfied|pas satisfait", page.text, re.IGNORECASE):
                unhappy = link
        assert unhappy is not None, "no not_satisfied link in the survey email"
        confirmed = await client.post(
            system.survey_url(unhappy), data={"comment": "The tea arrived cold."}
        )
        assert confirmed.status_code == 200, confirmed.text

    deadline = asyncio.get_running_loop().time() + 60
    while not [a for a in system.webhook.log() if a.verified]:
        assert asyncio.get_running_loop().time() < deadline, system.webhook.log()
        await asyncio.sleep(0.2)
    alerts = system.webhook.log()
    assert all(a.verified for a in alerts), "an alert with a bad signature"
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= set(alerts[0].headers)
    assert order_id in alerts[0].raw.decode()

    (reassurance,) = await system.wait_mail(
        address,
        1,
        timeout_s=60,
        where=lambda m: ":reassurance:" in str(m.message.get("Feedback-ID", "")),
    )
    assert plan_of(reassurance) == "satisfaction_survey"


async def test_one_trace_runs_from_the_ingest_request_to_the_smtp_send(
    system: System, fresh: str
) -> None:
    """The welcome email's `sender.send` span shares its trace id with a span of the ingest
    process (the request that accepted the order), through segmentation/orchestrator."""
    address = f"{fresh}@example.com"
    await identify_and_order(system, f"u-{fresh}", address, f"o-{fresh}")
    (welcome,) = await system.wait_mail(address, 1, timeout_s=60)
    await asyncio.sleep(1.0)  # the sender's span ends after the 250
    spans = system.spans()
    requested = str(deterministic_id("message.requested", welcome.message_id))
    sends = [
        s
        for s in spans
        if s["name"] == "sender.send"
        and s.get("attributes", {}).get("relance.event_id") == requested
    ]
    assert sends, "no sender.send span exported"
    trace_ids = {s["trace_id"] for s in sends}
    services_by_trace = {
        t: {str(s["service"]) for s in spans if s["trace_id"] == t} for t in trace_ids
    }
    joined = [t for t, svcs in services_by_trace.items() if "relance-ingest" in svcs]
    assert joined, (
        "no trace joins ingest to the SMTP send; services per sender trace: "
        f"{services_by_trace}; span names seen: {sorted({s['name'] for s in spans})}"
    )
    chain = {str(s["service"]) for s in spans if s["trace_id"] == joined[0]}
    assert {"relance-ingest", "relance-orchestrator", "relance-sender"} <= chain

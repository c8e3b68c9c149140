"""Fault injection on the whole system (issue 8's must-holds 1, 2, 3 and 5; the broker
outage, 4, is in test_broker_outage.py on a broker of its own).

The messages counted are abandoned-cart reminders (`abandoned_cart/reminder_1`): a contact
identifies with email consent and adds a product; moving the shared clock 3 h makes every
reminder due at once. Oracles: `runtime_inbox` (event ids each consumer applied; product
views are consumed but applied by neither, so consumer-group lag covers them),
`orchestrator_journal` (one `requested` per message), `sender_ledger` (one row per message
id) and the SMTP mailbox (Message-IDs). Tests run in file order on one shared system.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from relance_events import new_event
from relance_events.payloads import MessageRequested
from relance_runtime.bus.kafka import KafkaBus
from relance_runtime.bus.messages import TopicNames

from .harness import SHOP, Mail, System, event_ids, identify, post_batch, track

pytestmark = pytest.mark.timeout(420)
VIEWS_PER_CONTACT = 8  # messages per contact: identify + Product Added + 8 views = 10


def cart_story(system: System, user: str, views: int = VIEWS_PER_CONTACT) -> list[dict[str, Any]]:
    now = system.now()
    messages = [
        identify(user, {"email": f"{user}@example.com", "email_consent": "granted"}, now),
        track(
            user,
            "Product Added",
            {
                "cart_id": f"c-{user}",
                "product_id": "p-1",
                "name": "Teapot",
                "price": 30.0,
                "quantity": 1,
                "currency": "EUR",
            },
            now,
        ),
    ]
    messages += [
        track(user, "Product Viewed", {"product_id": f"p-{i}", "name": f"Cup {i}"}, now)
        for i in range(views)
    ]
    return messages


async def ingest_all(system: System, messages: Sequence[dict[str, Any]], batch: int = 100) -> None:
    """Every batch answered 2xx (retried on 503/429, as an SDK would)."""
    limits = asyncio.Semaphore(4)

    async def one(client: httpx.AsyncClient, chunk: Sequence[dict[str, Any]]) -> None:
        async with limits:
            for _ in range(60):
                try:
                    response = await post_batch(client, system.ingest_url, chunk)
                except httpx.HTTPError:
                    await asyncio.sleep(0.5)
                    continue
                if response.status_code == 200:
                    return
                assert response.status_code in (429, 503), response.text
                await asyncio.sleep(0.5)
            raise AssertionError("ingest never accepted a batch")

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(
            *(one(client, messages[i : i + batch]) for i in range(0, len(messages), batch))
        )


def expected_ids(messages: Sequence[dict[str, Any]]) -> list[uuid.UUID]:
    return [i for ids in event_ids(messages).values() for i in ids]


def applied_ids(messages: Sequence[dict[str, Any]]) -> list[uuid.UUID]:
    """The event ids both consumers apply, so find in their inbox: identifies (with their
    consent change) and cart changes. Product views are consumed by both but applied by
    neither (no plan or aggregate reads them); `System.wait_drained` covers those."""
    return expected_ids([m for m in messages if m.get("event") != "Product Viewed"])


async def wait_inbox(
    system: System, consumer: str, ids: Sequence[uuid.UUID], timeout_s: float
) -> None:
    await system.wait_until(
        "SELECT count(*) FROM runtime_inbox WHERE consumer = $1 AND event_id = ANY($2::uuid[])",
        consumer,
        list(ids),
        expect=len(ids),
        timeout_s=timeout_s,
        what=f"{consumer} applied every event",
    )


def reminders(mails: Sequence[Mail], users: set[str]) -> list[Mail]:
    return [
        m
        for m in mails
        if ":reminder_1:" in str(m.message.get("Feedback-ID", ""))
        and any(r.split("@")[0] in users for r in m.rcpt_tos)
    ]


async def assert_one_reminder_each(system: System, users: Sequence[str], timeout_s: float) -> None:
    """Exactly one reminder per contact: one `requested` in the journal, one settled ledger
    row, and as many emails in the mailbox as `sent` rows, one per Message-ID. (Whether
    a reminder renders is the stories' concern; here a render failure settles `failed`.)"""
    wanted = set(users)
    await system.wait_until(
        "SELECT count(*) FROM sender_ledger WHERE plan = 'abandoned_cart'"
        " AND step = 'reminder_1' AND contact_key = ANY($1::text[])"
        " AND state IN ('sent', 'failed')",
        list(wanted),
        expect=lambda n: n >= len(wanted),
        timeout_s=timeout_s,
        what="every reminder settled in the ledger",
    )
    await asyncio.sleep(2.0)  # a duplicate would arrive after the originals
    journal = await system.fetch(
        "SELECT contact_key, count(*) AS n, count(DISTINCT message_id) AS ids"
        " FROM orchestrator_journal WHERE shop_id = $1 AND kind = 'requested'"
        " AND plan = 'abandoned_cart' AND step = 'reminder_1'"
        " AND contact_key = ANY($2::text[]) GROUP BY contact_key",
        SHOP,
        list(wanted),
    )
    assert len(journal) == len(wanted)
    assert all(r["n"] == 1 and r["ids"] == 1 for r in journal), "a reminder requested twice"
    ledger = await system.fetch(
        "SELECT contact_key, message_id, state, last_error FROM sender_ledger"
        " WHERE plan = 'abandoned_cart' AND step = 'reminder_1'"
        " AND contact_key = ANY($1::text[])",
        list(wanted),
    )
    assert len(ledger) == len(wanted), "a reminder with two ledger rows (two message ids)"
    assert len({r["contact_key"] for r in ledger}) == len(wanted)
    mails = reminders(system.mailbox.all(), wanted)
    by_id = Counter(m.message_id for m in mails)
    assert not by_id or max(by_id.values()) == 1, by_id.most_common(3)
    sent = {r["message_id"] for r in ledger if r["state"] == "sent"}
    assert set(by_id) == sent, "mailbox and ledger disagree"
    assert {r["state"] for r in ledger} <= {"sent", "failed"}


async def assert_applied_once(system: System, users: Sequence[str]) -> None:
    """Each contact's cart and consent were applied once: one open cart of one item."""
    rows = await system.fetch(
        "SELECT contact_key, open_carts FROM segmentation_contacts"
        " WHERE shop_id = $1 AND contact_key = ANY($2::text[])",
        SHOP,
        list(users),
    )
    assert len(rows) == len(users)
    for row in rows:
        carts = row["open_carts"]
        carts = json.loads(carts) if isinstance(carts, str) else carts
        assert list(carts) == [f"c-{row['contact_key']}"], carts
        (cart,) = carts.values()
        assert cart["items"] == 1 and Decimal(cart["total"]) == Decimal(30), cart


# --------------------------------------------------------------------------- 1


async def test_segmentation_and_orchestrator_killed_five_times_while_10000_events_flow(
    system: System, fresh: str
) -> None:
    """Killed: one random segmentation and one random orchestrator instance (SIGKILL: no
    drain, no commit), five times at random points (0.5-3 s apart) while 10,000 Segment
    messages (1,000 contacts x identify + Product Added + 8 views) flow; each is restarted
    at once (without waiting for readiness, so a later kill may hit a starting process).
    Oracle: every identify and cart event id is in `runtime_inbox` for both consumers,
    and both groups consumed every record (the views, which neither applies); each contact has
    exactly one `abandoned_cart/reminder_1` in the journal, in the ledger and in the SMTP
    mailbox (by Message-ID) after the clock moves 3 h; segmentation holds one open cart
    per contact."""
    rng = random.Random(fresh)
    users = [f"u-{fresh}-{i}" for i in range(1000)]
    messages = [m for u in users for m in cart_story(system, u)]
    assert len(messages) == 10_000
    rng.shuffle(messages)  # contacts' messages interleave; per-contact order is the batch order
    messages.sort(key=lambda m: m["type"] != "identify")  # identifies first, like a real shop
    ids = applied_ids(messages)
    applied = set(ids)
    views = [i for i in expected_ids(messages) if i not in applied]
    assert len(views) == 8_000

    flow = asyncio.create_task(ingest_all(system, messages))
    for _ in range(5):
        await asyncio.sleep(rng.uniform(0.5, 3.0))
        for service in ("segmentation", "orchestrator"):
            victim = rng.choice([p for p in system.procs if p.service == service and p.alive])
            system.kill(victim)
            assert victim.popen.returncode == -signal.SIGKILL
            system.procs.remove(victim)
            system.spawn(service, name=victim.name, wait=False)
    await flow
    await asyncio.to_thread(system.wait_ready, [p for p in system.procs if p.alive], 180.0)
    await wait_inbox(system, "segmentation", ids, timeout_s=240)
    await wait_inbox(system, "orchestrator", ids, timeout_s=240)
    await system.wait_drained(["segmentation", "orchestrator"])
    assert (
        await system.fetchval(
            "SELECT count(*) FROM runtime_inbox WHERE event_id = ANY($1::uuid[])", views
        )
        == 0
    )
    await system.wait_until(
        "SELECT count(*) FROM orchestrator_timers WHERE shop_id = $1"
        " AND contact_key = ANY($2::text[]) AND timer_key LIKE 'abandoned_cart/%'",
        SHOP,
        users,
        expect=len(users),
        timeout_s=60,
        what="one reminder timer per contact",
    )
    await assert_applied_once(system, users)

    system.advance(timedelta(hours=3, minutes=1))
    await assert_one_reminder_each(system, users, timeout_s=180)


# --------------------------------------------------------------------------- 3


async def test_adding_and_removing_instances_mid_batch_loses_and_duplicates_nothing(
    system: System, fresh: str
) -> None:
    """Added: a third segmentation, orchestrator and sender instance while 2,000 messages
    flow (rebalance of every group); removed (SIGTERM: drain, commit, leave) one original
    instance of each a few seconds later; during the reminder sends, a fourth sender is
    added and the third removed. Oracle: no process exited other than the removed ones
    (exit 0, no crash loop) and all are ready; every identify and cart event id is in both
    inboxes and both groups consumed every record; exactly
    one reminder per contact in journal, ledger and mailbox."""
    users = [f"u-{fresh}-{i}" for i in range(200)]
    messages = [m for u in users for m in cart_story(system, u)]
    ids = applied_ids(messages)
    flow = asyncio.create_task(ingest_all(system, messages, batch=50))
    added = [system.spawn(s, wait=False) for s in ("segmentation", "orchestrator", "sender")]
    await asyncio.to_thread(system.wait_ready, added, 120.0)
    removed = [system.of(s)[0] for s in ("segmentation", "orchestrator", "sender")]
    codes = [await asyncio.to_thread(system.terminate, p) for p in removed]
    assert codes == [0, 0, 0], [p.log_tail() for p in removed]
    await flow
    await wait_inbox(system, "segmentation", ids, timeout_s=180)
    await wait_inbox(system, "orchestrator", ids, timeout_s=180)
    await system.wait_drained(["segmentation", "orchestrator"])
    await system.wait_until(
        "SELECT count(*) FROM orchestrator_timers WHERE shop_id = $1"
        " AND contact_key = ANY($2::text[]) AND timer_key LIKE 'abandoned_cart/%'",
        SHOP,
        users,
        expect=len(users),
        timeout_s=60,
        what="one reminder timer per contact",
    )

    system.advance(timedelta(hours=3, minutes=1))
    extra = system.spawn("sender", wait=False)
    await asyncio.sleep(1.0)
    third = added[2]
    assert await asyncio.to_thread(system.terminate, third) == 0, third.log_tail()
    await asyncio.to_thread(system.wait_ready, [extra], 120.0)
    await assert_one_reminder_each(system, users, timeout_s=180)
    gone = {id(p) for p in removed} | {id(third)}
    crashed = [p.name for p in system.procs if id(p) not in gone and not p.alive]
    assert crashed == [], [p.log_tail() for p in system.procs if p.name in crashed]
    for proc in system.procs:
        if proc.alive:
            assert system.ready(proc), proc.name


# --------------------------------------------------------------------------- 2


async def test_sender_killed_after_the_smtp_250_and_ledger_commit_sends_once(
    system: System, fresh: str
) -> None:
    """Killed: the only sender instance, by its own failpoint
    (`RELANCE_SENDER_FAILPOINT=after_ledger_commit`), right after the SMTP server answered
    250 and the ledger committed `sent`, before the status event and the Kafka offset
    commit. Then a sender with the same instance name restarts and is redelivered the
    request. Oracle: the mailbox holds exactly one email with that Message-ID; the ledger
    row stays `sent`; the orchestrator journals `sent` once (the restarted sender
    republished the status it never published)."""
    for proc in system.of("sender"):
        assert system.terminate(proc) == 0
    armed = system.spawn(
        "sender", name="sender-fp", env={"RELANCE_SENDER_FAILPOINT": "after_ledger_commit"}
    )
    user = f"u-{fresh}"
    await ingest_all(system, cart_story(system, user, views=0))
    await system.wait_until(
        "SELECT count(*) FROM orchestrator_timers WHERE shop_id = $1 AND contact_key = $2"
        " AND timer_key LIKE 'abandoned_cart/%'",
        SHOP,
        user,
        expect=1,
        what="the reminder timer armed",
    )
    system.advance(timedelta(hours=3, minutes=1))
    deadline = time.monotonic() + 60
    while armed.alive:
        assert time.monotonic() < deadline, "the failpoint was never reached"
        await asyncio.sleep(0.1)
    assert armed.popen.returncode == -signal.SIGKILL
    # Settling a row clears its lease owner; the contact names the row.
    killed = await system.fetch(
        "SELECT message_id, contact_key FROM sender_ledger WHERE contact_key = $1"
        " AND state = 'sent'",
        user,
    )
    assert len(killed) == 1, killed
    message_id = killed[0]["message_id"]
    assert len([m for m in system.mailbox.all() if m.message_id == message_id]) == 1

    system.restart(armed, env={"RELANCE_SENDER_FAILPOINT": ""})
    system.spawn("sender")
    await system.wait_until(
        "SELECT count(*) FROM orchestrator_journal WHERE message_id = $1 AND kind = 'sent'",
        message_id,
        expect=1,
        timeout_s=60,
        what="the status of the killed send republished after the restart",
    )
    await asyncio.sleep(2.0)
    assert len([m for m in system.mailbox.all() if m.message_id == message_id]) == 1
    state = await system.fetchval(
        "SELECT state FROM sender_ledger WHERE message_id = $1", message_id
    )
    assert state == "sent"


# --------------------------------------------------------------------------- 5


async def test_unsubscribe_while_1000_marketing_messages_are_queued(
    system: System, fresh: str
) -> None:
    """Queued: 1,000 marketing `message.requested` for one contact, published straight to
    the requests topic while both senders are frozen (SIGSTOP), copies of that contact's
    real reminder with new message ids. Senders restarted with 100 emails/s and batches of
    50 so the queue drains over seconds, then the contact POSTs the one-click unsubscribe
    of its real reminder once ~20 copies arrived. Oracle: from the moment the objection is
    visible in `sender_consents` (polled every 20 ms), no ledger row of the copies starts
    a send (`first_attempt_at`, sender clock minus the test's offset) and no copy reaches
    the mailbox later than 1 s after it; the copies not sent are `failed`; the mailbox
    count equals the `sent` rows, one per Message-ID."""
    user = f"u-{fresh}"
    address = f"{user}@example.com"
    for proc in system.of("sender"):
        await asyncio.to_thread(system.terminate, proc)
    slow = {"RELANCE_SENDER_RATE_LIMITS": '{"email": 100}', "RELANCE_CONSUMER_BATCH_SIZE": "50"}
    senders = [system.spawn("sender", env=slow, wait=False) for _ in range(2)]
    await asyncio.to_thread(system.wait_ready, senders, 120.0)
    await ingest_all(system, cart_story(system, user, views=0))
    await system.wait_until(
        "SELECT count(*) FROM orchestrator_timers WHERE contact_key = $1"
        " AND timer_key LIKE 'abandoned_cart/%'",
        user,
        expect=1,
        what="the reminder timer armed",
    )
    system.advance(timedelta(hours=3, minutes=1))
    (real,) = await system.wait_mail(
        address, 1, where=lambda m: ":reminder_1:" in str(m.message.get("Feedback-ID", ""))
    )
    unsubscribe = real.unsubscribe_url()
    assert unsubscribe is not None
    template = await system.fetchval(
        "SELECT request FROM sender_ledger WHERE message_id = $1", real.message_id
    )
    assert template is not None
    request = template if isinstance(template, dict) else json.loads(template)

    copies = []
    for _ in range(1000):
        payload = MessageRequested(
            message_id=str(uuid.uuid4()),
            plan=request["plan"],
            step=request["step"],
            plan_instance=str(uuid.uuid4()),
            variant=request.get("variant"),
            channel="email",
            purpose="marketing",
            locale=request.get("locale"),
            context=request["context"],
        )
        copies.append(
            new_event(
                payload,
                shop_id=SHOP,
                contact_key=user,
                source="orchestrator",
                occurred_at=system.now(),
            )
        )
    copy_ids = {c.payload.message_id for c in copies}
    for proc in senders:
        os.kill(proc.popen.pid, signal.SIGSTOP)
    bus = KafkaBus(system.kafka_bootstrap, names=TopicNames(system.topic_prefix))
    await bus.start()
    try:
        await bus.publish(copies)
    finally:
        await bus.stop()
    for proc in senders:
        os.kill(proc.popen.pid, signal.SIGCONT)

    def delivered() -> list[Mail]:
        return [m for m in system.mailbox.to(address) if m.message_id in copy_ids]

    deadline = time.monotonic() + 60
    while len(delivered()) < 20:
        assert time.monotonic() < deadline, "the queued copies never started"
        await asyncio.sleep(0.02)
    async with httpx.AsyncClient(timeout=10) as client:
        done = await client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200, done.text
    conn = await system.db()
    try:
        while True:
            status = await conn.fetchval(
                "SELECT status FROM sender_consents WHERE shop_id = $1 AND contact_key = $2"
                " AND channel = 'email' AND purpose = 'marketing'",
                SHOP,
                user,
            )
            if status == "denied":
                committed_wall = time.time()
                break
            assert time.monotonic() < deadline + 60, "the objection never reached the sender"
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    offset = (system.now() - datetime.now(UTC)).total_seconds()

    await system.wait_until(
        "SELECT count(*) FROM sender_ledger WHERE message_id = ANY($1::text[])"
        " AND state IN ('sent', 'failed')",
        list(copy_ids),
        expect=len(copy_ids),
        timeout_s=120,
        what="every queued copy settled",
    )
    rows = await system.fetch(
        "SELECT message_id, state, extract(epoch FROM first_attempt_at) AS started"
        " FROM sender_ledger WHERE message_id = ANY($1::text[])",
        list(copy_ids),
    )
    sent = [r for r in rows if r["state"] == "sent"]
    late = [r for r in sent if float(r["started"]) - offset > committed_wall]
    assert late == [], f"{len(late)} sends started after the unsubscribe commit"
    mails = delivered()
    assert all(m.received_at <= committed_wall + 1.0 for m in mails)
    assert len(mails) == len(sent) == len({m.message_id for m in mails})
    assert 20 <= len(sent) < 1000, f"{len(sent)} sent: the unsubscribe did not land mid-queue"

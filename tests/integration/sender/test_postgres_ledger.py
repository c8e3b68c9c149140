from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from relance_runtime.clock import FixedClock
from relance_runtime.tokens import TokenSigner
from relance_sender.adapters.memory_store import MemorySenderStore
from relance_sender.adapters.outbox import OutboxEmailTransport
from relance_sender.adapters.postgres_ledger import PostgresSenderStore, PostgresSenderTx
from relance_sender.adapters.smtp import SmtpConfig, SmtpTransport
from relance_sender.domain import ledger
from relance_sender.domain.outcome import Accepted, RetryPolicy
from relance_sender.domain.policy import ConsentRecord, Suppression
from relance_sender.domain.request import SendRequest
from relance_sender.email_message import EmailBuilder, SenderIdentity
from relance_sender.ports import EmailTransport, SendCheck
from relance_sender.rendering.renderer import Renderer, ShopProfile
from relance_sender.services import SendMessage

from .conftest import ScriptedSmtpHandler

NOW = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


class Bus:
    def __init__(self) -> None:
        self.events: list[object] = []

    async def publish(self, events: list[object]) -> None:
        self.events.extend(events)

    async def publish_raw(self, messages: list[object]) -> None:
        raise NotImplementedError


def request(
    to: str = "ok@example.org", purpose: str = "marketing", message_id: str = "m-1"
) -> SendRequest:
    return SendRequest.from_json(
        {
            "message_id": message_id,
            "shop_id": "shop-1",
            "contact_key": "u-1",
            "plan": "birthday",
            "step": "wishes",
            "variant": None,
            "channel": "email",
            "purpose": purpose,
            "locale": "en",
            "context": {
                "contact": {"email": to, "first_name": "Lea"},
                "coupon": {"code": "LEA10", "discount": "10%", "expires_at": "2025-03-31"},
            },
        }
    )


def sender(
    pool: asyncpg.Pool, transport: EmailTransport, clock: FixedClock, owner: str = "w1"
) -> SendMessage:
    renderer = Renderer(
        shop=ShopProfile(
            name="Maison Dupont",
            url="https://shop.example",
            support_url="https://shop.example/aide",
            review_url="https://shop.example/avis",
        )
    )
    return SendMessage(
        store=PostgresSenderStore(pool),
        emails=EmailBuilder(
            renderer=renderer,
            signer=TokenSigner({"k1": b"0123456789abcdef0123"}, "k1"),
            public_url="https://relance.example",
            identity=SenderIdentity(
                marketing_from="news@shop.example",
                transactional_from="orders@shop.example",
                message_id_domain="mail.shop.example",
            ),
        ),
        renderer=renderer,
        email_transport=transport,
        sms_transport=None,
        publisher=Bus(),  # type: ignore[arg-type]
        clock=clock,
        owner=owner,
        retry=RetryPolicy(initial=timedelta(minutes=30)),
    )


async def test_row_round_trips_and_insert_is_idempotent(sender_pool: asyncpg.Pool) -> None:
    row = ledger.new_row(
        message_id="m-1",
        shop_id="s",
        contact_key="c",
        channel="email",
        purpose="marketing",
        plan="birthday",
        step="wishes",
        now=NOW,
        request={"a": [1, "é"]},
    )
    async with sender_pool.acquire() as conn, conn.transaction():
        tx = PostgresSenderTx(conn)
        assert await tx.insert(row)
        assert not await tx.insert(row)
        claimed = ledger.claim(row, now=NOW, owner="w1", address="x@example.org")
        await tx.save(claimed)
        assert await tx.lock("m-1") == claimed
        assert await tx.find_contacts("s", "email", "x@example.org") == ["c"]


async def test_suppression_consent_and_bounce_counts(sender_pool: asyncpg.Pool) -> None:
    store = PostgresSenderStore(sender_pool)
    async with store.transaction() as tx:
        await tx.suppress(Suppression("s", "email", "x@example.org", "hard_bounce", NOW))
        await tx.suppress(Suppression("s", "email", "x@example.org", "repeated_bounces", NOW))
        entry = await tx.suppression("s", "email", "x@example.org")
        assert entry is not None and entry.reason == "hard_bounce"
        assert [await tx.count_soft_bounce("s", "email", "y@example.org", NOW) for _ in "abc"] == [
            1,
            2,
            3,
        ]
        denied = ConsentRecord("s", "c", "email", "marketing", "denied", NOW)
        assert await tx.record_consent(denied)
        stale = ConsentRecord("s", "c", "email", "marketing", "granted", NOW - timedelta(1))
        assert not await tx.record_consent(stale)
        assert await tx.consent("s", "c", "email", "marketing") == denied
        await tx.unsuppress("s", "email", "x@example.org")
        assert await tx.suppression("s", "email", "x@example.org") is None


@pytest.mark.parametrize("kind", ["postgres", "memory"])
async def test_send_checks_read_suppression_and_consent_together(
    sender_pool: asyncpg.Pool, kind: str
) -> None:
    store = PostgresSenderStore(sender_pool) if kind == "postgres" else MemorySenderStore()
    async with store.transaction() as tx:
        assert await tx.send_checks("s", "c", "email", "marketing", "x@example.org") == (None, None)
        suppression = Suppression("s", "email", "x@example.org", "hard_bounce", NOW)
        await tx.suppress(suppression)
        assert await tx.send_checks("s", "c", "email", "marketing", "x@example.org") == (
            suppression,
            None,
        )
        denied = ConsentRecord("s", "c", "email", "marketing", "denied", NOW)
        await tx.record_consent(denied)
        await tx.record_consent(ConsentRecord("s", "c", "sms", "marketing", "granted", NOW))
        assert await tx.send_checks("s", "c", "email", "marketing", "x@example.org") == (
            suppression,
            denied,
        )
        assert await tx.send_checks("s", "c", "email", "marketing", "y@example.org") == (
            None,
            denied,
        )
        assert await tx.send_checks("s", "c2", "email", "marketing", "y@example.org") == (
            None,
            None,
        )


@pytest.mark.parametrize("kind", ["postgres", "memory"])
async def test_save_claimed_only_while_the_claim_holds(
    sender_pool: asyncpg.Pool, kind: str
) -> None:
    store = PostgresSenderStore(sender_pool) if kind == "postgres" else MemorySenderStore()
    row = ledger.new_row(
        message_id="m-c",
        shop_id="s",
        contact_key="c",
        channel="email",
        purpose="transactional",
        plan="birthday",
        step="wishes",
        now=NOW,
    )
    claimed = ledger.claim(row, now=NOW, owner="w1", address="x@example.org")
    async with store.transaction() as tx:
        await tx.insert(claimed)
    sent = ledger.settle(claimed, Accepted("q1"), now=NOW, retry=RetryPolicy())
    assert await store.save_claimed(sent, claimed=claimed)
    async with store.transaction() as tx:
        assert await tx.lock("m-c") == sent
    # Settled already (or recovered): a second settle of the same claim changes nothing.
    assert not await store.save_claimed(sent, claimed=claimed)
    # Recovered (transactional: back to pending), claimed again by the same instance: the
    # older claim no longer holds.
    async with store.transaction() as tx:
        await tx.save(
            ledger.claim(
                ledger.recover(claimed, now=NOW), now=NOW, owner="w1", address="x@example.org"
            )
        )
    async with store.transaction() as tx:
        again = await tx.lock("m-c")
    assert again is not None and again.attempts == 2
    assert not await store.save_claimed(sent, claimed=claimed)
    assert await store.save_claimed(
        ledger.settle(again, Accepted("q2"), now=NOW, retry=RetryPolicy()), claimed=again
    )


async def test_claim_due_skips_rows_locked_elsewhere(sender_pool: asyncpg.Pool) -> None:
    store = PostgresSenderStore(sender_pool)
    async with store.transaction() as tx:
        for n in range(3):
            await tx.insert(
                ledger.new_row(
                    message_id=f"m-{n}",
                    shop_id="s",
                    contact_key="c",
                    channel="email",
                    purpose="marketing",
                    plan=None,
                    step=None,
                    now=NOW,
                )
            )
    async with sender_pool.acquire() as a, a.transaction():
        first = await PostgresSenderTx(a).claim_due(NOW, 2)
        async with sender_pool.acquire() as b, b.transaction():
            second = await PostgresSenderTx(b).claim_due(NOW, 10)
    assert [r.message_id for r in first] == ["m-0", "m-1"]
    assert [r.message_id for r in second] == ["m-2"]


async def test_pipeline_sends_once_through_smtp(
    sender_pool: asyncpg.Pool, smtp_server: tuple[ScriptedSmtpHandler, int]
) -> None:
    handler, port = smtp_server
    smtp = SmtpTransport(SmtpConfig.from_url(f"smtp://127.0.0.1:{port}"))
    clock = FixedClock(NOW)
    use_case = sender(sender_pool, smtp, clock)
    results = await asyncio.gather(*(use_case.handle(request()) for _ in range(5)))
    await smtp.close()
    assert sorted(r.kind for r in results).count("sent") == 1
    assert len(handler.received) == 1


async def test_reset_after_data_leaves_at_most_one_marketing_email(
    sender_pool: asyncpg.Pool, smtp_server: tuple[ScriptedSmtpHandler, int]
) -> None:
    handler, port = smtp_server
    smtp = SmtpTransport(SmtpConfig.from_url(f"smtp://127.0.0.1:{port}"))
    clock = FixedClock(NOW)
    use_case = sender(sender_pool, smtp, clock)
    result = await use_case.handle(request("reset@example.org"))
    assert result.kind == "ambiguous"
    clock.advance(timedelta(days=1))
    assert await use_case.run_due() == []
    assert (await use_case.handle(request("reset@example.org"))).kind == "duplicate"
    await smtp.close()
    assert len(handler.received) == 1


async def test_crash_after_250_before_ledger_commit(
    sender_pool: asyncpg.Pool, smtp_server: tuple[ScriptedSmtpHandler, int]
) -> None:
    """The claim is committed, the server accepted, the process dies before settling."""
    handler, port = smtp_server
    clock = FixedClock(NOW)
    for purpose, message_id in (("marketing", "m-mkt"), ("transactional", "m-trx")):
        req = request(purpose=purpose, message_id=message_id)
        async with PostgresSenderStore(sender_pool).transaction() as tx:
            row = ledger.new_row(
                message_id=message_id,
                shop_id="shop-1",
                contact_key="u-1",
                channel="email",
                purpose=req.purpose,
                plan="birthday",
                step="wishes",
                now=NOW,
                request=req.to_json(),
            )
            await tx.insert(ledger.claim(row, now=NOW, owner="w1", address="ok@example.org"))
        smtp = SmtpTransport(SmtpConfig.from_url(f"smtp://127.0.0.1:{port}"))
        dying = sender(sender_pool, smtp, clock)
        built = dying._emails.build(req, to="ok@example.org", now=NOW)
        assert isinstance(await smtp.send(built), Accepted)
        await smtp.close()
    smtp = SmtpTransport(SmtpConfig.from_url(f"smtp://127.0.0.1:{port}"))
    restarted = sender(sender_pool, smtp, clock)
    report = await restarted.recover_interrupted()
    assert (report.ambiguous, report.resend) == (1, 1)
    resent = await restarted.run_due()
    await smtp.close()
    assert [r.kind for r in resent] == ["sent"]
    ids = [c.split(b"Message-ID: ")[1].split(b"\r\n")[0] for _, _, c in handler.received]
    assert ids.count(b"<m-mkt@mail.shop.example>") == 1
    assert ids.count(b"<m-trx@mail.shop.example>") == 2
    async with PostgresSenderStore(sender_pool).transaction() as tx:
        mkt = await tx.lock("m-mkt")
        assert mkt is not None and mkt.state == "ambiguous"


async def test_outbox_goes_through_the_same_pipeline(
    sender_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    clock = FixedClock(NOW)
    use_case = sender(sender_pool, OutboxEmailTransport(tmp_path / "outbox"), clock)
    assert (await use_case.handle(request())).kind == "sent"
    assert (await use_case.handle(request())).kind == "duplicate"
    eml = (tmp_path / "outbox" / "m-1.eml").read_bytes()
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in eml
    lines = (tmp_path / "outbox" / "emails.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"to":"ok@example.org"' in lines[0]


@pytest.mark.parametrize("status", ["denied"])
async def test_objection_in_postgres_blocks_the_send(
    sender_pool: asyncpg.Pool, tmp_path: Path, status: str
) -> None:
    async with PostgresSenderStore(sender_pool).transaction() as tx:
        await tx.record_consent(ConsentRecord("shop-1", "u-1", "email", "marketing", "denied", NOW))
    use_case = sender(sender_pool, OutboxEmailTransport(tmp_path), FixedClock(NOW))
    result = await use_case.handle(request())
    assert result.kind == "failed" and not (tmp_path / "m-1.eml").exists()


def _row(message_id: str, *, contact: str = "c") -> ledger.LedgerRow:
    return ledger.new_row(
        message_id=message_id,
        shop_id="s",
        contact_key=contact,
        channel="email",
        purpose="marketing",
        plan="birthday",
        step="wishes",
        now=NOW,
        request={"n": message_id},
    )


@pytest.mark.parametrize("kind", ["postgres", "memory"])
async def test_batch_statements_match_the_single_ones(sender_pool: asyncpg.Pool, kind: str) -> None:
    store = PostgresSenderStore(sender_pool) if kind == "postgres" else MemorySenderStore()
    async with store.transaction() as tx:
        assert await tx.insert(_row("m-0"))
        assert await tx.insert_many([_row("m-2"), _row("m-0"), _row("m-1")]) == {"m-1", "m-2"}
        assert await tx.insert_many([]) == set()
        locked = await tx.lock_many(["m-0", "m-2", "m-9"])
        assert locked == {"m-0": _row("m-0"), "m-2": _row("m-2")}
        claimed = [
            ledger.claim(_row(m), now=NOW, owner="w1", address=f"{m}@example.org")
            for m in ("m-1", "m-2")
        ]
        await tx.save_many(claimed)
        await tx.save_many([])
        assert await tx.lock_many(["m-1", "m-2"]) == {r.message_id: r for r in claimed}
        assert await tx.lock("m-1") == claimed[0]
        suppression = Suppression("s", "email", "x@example.org", "hard_bounce", NOW)
        await tx.suppress(suppression)
        denied = ConsentRecord("s", "c2", "email", "marketing", "denied", NOW)
        await tx.record_consent(denied)
        checks = [
            SendCheck("s", "c1", "email", "marketing", "y@example.org"),
            SendCheck("s", "c2", "email", "marketing", "x@example.org"),
            SendCheck("s", "c2", "email", "transactional", "y@example.org"),
            SendCheck("s", "c2", "email", "marketing", "y@example.org"),
            SendCheck("other", "c2", "email", "marketing", "x@example.org"),
        ]
        many = await tx.send_checks_many(checks)
        single = [
            await tx.send_checks(c.shop_id, c.contact_key, c.channel, c.purpose, c.address)
            for c in checks
        ]
        assert (
            many
            == single
            == [
                (None, None),
                (suppression, denied),
                (None, None),
                (None, denied),
                (None, None),
            ]
        )
        assert await tx.send_checks_many([]) == []


@pytest.mark.parametrize("kind", ["postgres", "memory"])
async def test_concurrent_settles_each_get_their_own_answer(
    sender_pool: asyncpg.Pool, kind: str
) -> None:
    """Settles arriving together (group-committed in PostgreSQL) answer per message: True
    where the claim held, False where recovery took the row over, and a second settle of
    the same claim in the same group is refused."""
    store = PostgresSenderStore(sender_pool) if kind == "postgres" else MemorySenderStore()
    claims = [
        ledger.claim(_row(f"m-{n:02}"), now=NOW, owner="w1", address="x@example.org")
        for n in range(40)
    ]
    async with store.transaction() as tx:
        await tx.insert_many(claims)
        # Recovery took every fifth row over (its lease ran out): those claims no longer hold.
        await tx.save_many([ledger.recover(c, now=NOW) for c in claims[::5]])
    settles = [
        (ledger.settle(c, Accepted(f"q-{c.message_id}"), now=NOW, retry=RetryPolicy()), c)
        for c in claims
    ]
    answers = await asyncio.gather(
        *(store.save_claimed(row, claimed=c) for row, c in settles),
        store.save_claimed(settles[1][0], claimed=settles[1][1]),
    )
    expected = [n % 5 != 0 for n in range(40)]
    assert answers[:40] == expected
    assert answers[40] is False  # m-01 again: the first settle already moved it on
    async with store.transaction() as tx:
        rows = await tx.lock_many([c.message_id for c in claims])
    for n, claim in enumerate(claims):
        row = rows[claim.message_id]
        if expected[n]:
            assert (row.state, row.provider_message_id) == ("sent", f"q-{claim.message_id}")
        else:
            assert row.state == "ambiguous"


async def test_overlapping_batches_send_each_message_once(
    sender_pool: asyncpg.Pool, smtp_server: tuple[ScriptedSmtpHandler, int]
) -> None:
    """Redeliveries racing: two instances get the same 30 requests in opposite orders and
    in different batch splits; no deadlock, and each message reaches SMTP once."""
    handler, port = smtp_server
    clock = FixedClock(NOW)
    smtp = SmtpTransport(SmtpConfig.from_url(f"smtp://127.0.0.1:{port}"))
    a, b = sender(sender_pool, smtp, clock, "w1"), sender(sender_pool, smtp, clock, "w2")
    requests = [request(f"r{n}@example.org", message_id=f"m-{n:02}") for n in range(30)]
    backwards = requests[::-1]
    results = await asyncio.wait_for(
        asyncio.gather(
            a.handle_many(requests[:16]),
            b.handle_many(backwards[:10]),
            a.handle_many(requests[16:]),
            b.handle_many(backwards[10:]),
        ),
        timeout=30,
    )
    await smtp.close()
    kinds = [r.kind for batch in results for r in batch]
    assert kinds.count("sent") == 30 and len(kinds) == 60
    assert set(kinds) <= {"sent", "busy", "duplicate"}
    assert len(handler.received) == 30
    ids = {c.split(b"Message-ID: ")[1].split(b"\r\n")[0] for _, _, c in handler.received}
    assert len(ids) == 30

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from relance_events import Event, new_event
from relance_events.payloads import ConsentChanged, MessageRequested
from relance_runtime.clock import FixedClock
from relance_runtime.errors import BusUnavailable
from relance_sender.adapters.memory_metrics import CountingMetrics
from relance_sender.adapters.memory_store import MemorySenderStore
from relance_sender.domain import ledger
from relance_sender.domain.outcome import (
    Accepted,
    Ambiguous,
    Deferred,
    DeliveryOutcome,
    Rejected,
    RetryPolicy,
)
from relance_sender.domain.policy import ConsentRecord, Suppression
from relance_sender.email_message import BuiltEmail, EmailBuilder
from relance_sender.ports import OutgoingSms
from relance_sender.rendering.renderer import Renderer
from relance_sender.services import HandleInboundSms, RecordConsent, SendMessage

from .conftest import NOW, full_context, make_request


class ScriptedEmail:
    name = "scripted"

    def __init__(self, *outcomes: DeliveryOutcome) -> None:
        self.outcomes = list(outcomes)
        self.sent: list[BuiltEmail] = []

    async def send(self, email: BuiltEmail) -> DeliveryOutcome:
        self.sent.append(email)
        return self.outcomes.pop(0) if self.outcomes else Accepted("q")

    async def close(self) -> None:
        return None


class ScriptedSms:
    name = "scripted"

    def __init__(self) -> None:
        self.sent: list[OutgoingSms] = []

    async def send(self, sms: OutgoingSms) -> DeliveryOutcome:
        self.sent.append(sms)
        return Accepted("SM1")

    async def close(self) -> None:
        return None


class Bus:
    def __init__(self) -> None:
        self.events: list[Event[Any]] = []
        self.down = False

    async def publish(self, events: Sequence[Event[Any]]) -> None:
        if self.down:
            raise BusUnavailable("down")
        self.events.extend(events)

    async def publish_raw(self, messages: Sequence[object]) -> None:
        raise NotImplementedError

    def types(self) -> list[str]:
        return [e.type for e in self.events]


class World:
    def __init__(self, builder: EmailBuilder, renderer: Renderer, *outcomes: DeliveryOutcome):
        self.store = MemorySenderStore()
        self.email = ScriptedEmail(*outcomes)
        self.sms = ScriptedSms()
        self.bus = Bus()
        self.clock = FixedClock(NOW)
        self.builder = builder
        self.renderer = renderer
        self.metrics = CountingMetrics()
        self.send = self.sender("worker-a")

    def sender(self, owner: str) -> SendMessage:
        return SendMessage(
            store=self.store,
            emails=self.builder,
            renderer=self.renderer,
            email_transport=self.email,
            sms_transport=self.sms,
            publisher=self.bus,  # type: ignore[arg-type]
            clock=self.clock,
            owner=owner,
            retry=RetryPolicy(initial=timedelta(minutes=30), horizon=timedelta(days=4)),
            metrics=self.metrics,
        )


@pytest.fixture
def world(builder: EmailBuilder, renderer: Renderer) -> World:
    return World(builder, renderer)


async def test_sends_once_and_a_redelivery_does_nothing_but_republish(world: World) -> None:
    request = make_request("birthday", "wishes")
    first = await world.send.handle(request)
    again = await world.send.handle(request)
    assert (first.kind, again.kind) == ("sent", "duplicate")
    assert len(world.email.sent) == 1
    assert world.bus.types() == ["message.sent", "message.sent"]
    assert world.bus.events[0].event_id == world.bus.events[1].event_id


async def test_handles_the_orchestrator_event(world: World) -> None:
    event = new_event(
        MessageRequested(
            message_id="m-9",
            plan="birthday",
            step="wishes",
            plan_instance="pi-1",
            channel="email",
            purpose="marketing",
            locale="en",
            context=full_context(),
        ),
        shop_id="shop-1",
        contact_key="u-1",
        source="orchestrator",
        occurred_at=NOW,
    )
    result = await world.send.handle_event(event)
    assert result.kind == "sent"
    assert world.email.sent[0].subject == "Happy birthday! A gift is waiting for you"


async def test_an_unsubscribe_committed_before_the_send_wins(world: World) -> None:
    consent = RecordConsent(world.store)
    objection = new_event(
        ConsentChanged(
            channel="email", purpose="marketing", status="denied", origin="unsubscribe_link"
        ),
        shop_id="shop-1",
        contact_key="u-1",
        source="ingest",
        occurred_at=NOW - timedelta(minutes=1),
    )
    assert await consent.handle(objection)
    result = await world.send.handle(make_request("birthday", "wishes"))
    assert result.kind == "failed" and result.reason == "email marketing consent withdrawn"
    assert world.email.sent == []
    assert world.bus.types() == ["message.failed"]
    # A transactional message to the same contact still goes.
    ok = await world.send.handle(
        make_request("satisfaction_survey", "reassurance", purpose="transactional", message_id="t")
    )
    assert ok.kind == "sent"


async def test_an_older_consent_event_cannot_undo_a_newer_objection(world: World) -> None:
    async with world.store.transaction() as tx:
        assert await tx.record_consent(
            ConsentRecord("shop-1", "u-1", "email", "marketing", "denied", NOW)
        )
        assert not await tx.record_consent(
            ConsentRecord("shop-1", "u-1", "email", "marketing", "granted", NOW - timedelta(1))
        )
    result = await world.send.handle(make_request("birthday", "wishes"))
    assert result.kind == "failed"


async def test_missing_variable_fails_visibly(world: World) -> None:
    context = full_context()
    del context["cart"]
    result = await world.send.handle(make_request(context=context))
    assert result.kind == "failed" and result.reason and "render error" in result.reason
    assert world.email.sent == []
    failed = world.bus.events[0]
    assert failed.type == "message.failed" and failed.payload.permanent
    assert world.store.row("m-1").state == "failed"  # type: ignore[union-attr]


async def test_temporary_refusal_is_retried_by_run_due_with_the_same_message_id(
    builder: EmailBuilder, renderer: Renderer
) -> None:
    world = World(builder, renderer, Deferred("451 4.3.0 later", "451"))
    result = await world.send.handle(make_request("birthday", "wishes"))
    assert result.kind == "retry_scheduled"
    assert await world.send.run_due() == []  # not due yet
    world.clock.advance(timedelta(minutes=31))
    retried = await world.send.run_due()
    assert [r.kind for r in retried] == ["sent"]
    assert [e.message_id_header for e in world.email.sent] == ["<m-1@mail.shop.example>"] * 2
    assert world.store.row("m-1").attempts == 2  # type: ignore[union-attr]


async def test_redelivery_while_a_retry_is_scheduled_does_not_send(
    builder: EmailBuilder, renderer: Renderer
) -> None:
    world = World(builder, renderer, Deferred("421 busy"))
    await world.send.handle(make_request("birthday", "wishes"))
    again = await world.send.handle(make_request("birthday", "wishes"))
    assert again.kind == "busy" and len(world.email.sent) == 1


async def test_missing_mailbox_suppresses_the_address(
    builder: EmailBuilder, renderer: Renderer
) -> None:
    world = World(builder, renderer, Rejected("550 5.1.1 no such user", "550 5.1.1", "hard", True))
    result = await world.send.handle(make_request("birthday", "wishes"))
    assert result.kind == "failed"
    assert world.bus.types() == ["message.failed", "message.bounced"]
    second = await world.send.handle(make_request("birthday", "reminder_1", message_id="m-2"))
    assert second.reason == "suppressed: hard_bounce"
    assert len(world.email.sent) == 1


async def test_three_soft_bounces_suppress(builder: EmailBuilder, renderer: Renderer) -> None:
    bounce = Rejected("552 5.2.2 mailbox full", "552 5.2.2", "soft", False)
    world = World(builder, renderer, bounce, bounce, bounce)
    for n in range(3):
        await world.send.handle(make_request("birthday", "wishes", message_id=f"m-{n}"))
    blocked = await world.send.handle(make_request("birthday", "wishes", message_id="m-4"))
    assert blocked.reason == "suppressed: repeated_bounces"


async def test_ambiguous_delivery_is_not_resent(builder: EmailBuilder, renderer: Renderer) -> None:
    world = World(builder, renderer, Ambiguous("connection reset after DATA"))
    result = await world.send.handle(make_request("birthday", "wishes"))
    assert result.kind == "ambiguous"
    world.clock.advance(timedelta(days=1))
    assert await world.send.run_due() == []
    assert (await world.send.handle(make_request("birthday", "wishes"))).kind == "duplicate"
    assert len(world.email.sent) == 1


async def _crash_after_claim(world: World, purpose: str) -> None:
    """What a SIGKILL after the claim commit (and maybe after the 250) leaves behind."""
    request = make_request("birthday", "wishes", purpose=purpose)
    async with world.store.transaction() as tx:
        row = ledger.new_row(
            message_id=request.message_id,
            shop_id=request.shop_id,
            contact_key=request.contact_key,
            channel="email",
            purpose=request.purpose,
            plan=request.plan,
            step=request.step,
            now=NOW,
            request=request.to_json(),
        )
        await tx.insert(ledger.claim(row, now=NOW, owner="worker-a", address="zoe@example.org"))


async def test_restart_marks_marketing_left_sending_ambiguous(world: World) -> None:
    await _crash_after_claim(world, "marketing")
    restarted = world.sender("worker-a")
    report = await restarted.recover_interrupted()
    assert (report.ambiguous, report.resend) == (1, 0)
    assert world.metrics.total("ambiguous", channel="email", during="recovery") == 1
    assert await restarted.run_due() == []
    assert (await restarted.handle(make_request("birthday", "wishes"))).kind == "duplicate"
    assert world.email.sent == []


async def test_restart_resends_transactional_with_the_same_message_id(world: World) -> None:
    await _crash_after_claim(world, "transactional")
    restarted = world.sender("worker-a")
    assert (await restarted.recover_interrupted()).resend == 1
    results = await restarted.run_due()
    assert [r.kind for r in results] == ["sent"]
    assert world.email.sent[0].message_id_header == "<m-1@mail.shop.example>"


async def test_another_instance_leaves_a_live_claim_alone_until_its_lease_ends(
    world: World,
) -> None:
    await _crash_after_claim(world, "marketing")
    other = world.sender("worker-b")
    assert (await other.recover_interrupted()).ambiguous == 0
    world.clock.advance(timedelta(minutes=16))
    assert (await other.recover_interrupted()).ambiguous == 1


async def test_bus_down_after_the_send_republishes_on_redelivery(world: World) -> None:
    world.bus.down = True
    with pytest.raises(BusUnavailable):
        await world.send.handle(make_request("birthday", "wishes"))
    world.bus.down = False
    again = await world.send.handle(make_request("birthday", "wishes"))
    assert again.kind == "duplicate" and world.bus.types() == ["message.sent"]
    assert len(world.email.sent) == 1


async def test_expired_request_is_not_sent(world: World) -> None:
    request = make_request("birthday", "wishes", not_after=NOW - timedelta(seconds=1))
    result = await world.send.handle(request)
    assert result.kind == "failed" and world.email.sent == []


async def test_sms_marketing_needs_consent_and_names_the_sender(world: World) -> None:
    request = make_request("birthday", "wishes", channel="sms")
    assert (await world.send.handle(request)).reason == "no sms marketing consent"
    async with world.store.transaction() as tx:
        await tx.record_consent(ConsentRecord("shop-1", "u-1", "sms", "marketing", "granted", NOW))
    result = await world.send.handle(make_request("birthday", "wishes", channel="sms",
                                                  message_id="m-2"))  # fmt: skip
    assert result.kind == "sent"
    sms = world.sms.sent[0]
    assert sms.to == "+33612345678"
    assert sms.body.startswith("Maison Dupont: ") and sms.body.endswith("STOP SMS")


async def test_inbound_stop_suppresses_the_number_and_records_the_objection(
    world: World,
) -> None:
    async with world.store.transaction() as tx:
        await tx.record_consent(ConsentRecord("shop-1", "u-1", "sms", "marketing", "granted", NOW))
    await world.send.handle(make_request("birthday", "wishes", channel="sms"))
    inbound = HandleInboundSms(store=world.store, publisher=world.bus, clock=world.clock)  # type: ignore[arg-type]
    world.clock.advance(timedelta(minutes=5))
    action = await inbound.handle(
        shop_id="shop-1", from_number="+33612345678", body=" Arrêt ", provider_message_id="SM9"
    )
    assert action == "objection"
    consent_events = [e for e in world.bus.events if e.type == "contact.consent_changed"]
    assert [(e.contact_key, e.payload.status) for e in consent_events] == [("u-1", "denied")]
    blocked = await world.send.handle(
        make_request("birthday", "reminder_1", channel="sms", message_id="m-2")
    )
    assert blocked.reason == "suppressed: sms_keyword"
    assert (
        await inbound.handle(
            shop_id="shop-1", from_number="+33612345678", body="START", provider_message_id="SM10"
        )
        == "resubscription"
    )
    async with world.store.transaction() as tx:
        assert await tx.suppression("shop-1", "sms", "+33612345678") is None
        consent = await tx.consent("shop-1", "u-1", "sms", "marketing")
        assert consent is not None and consent.status == "granted"


async def test_suppression_entry_blocks_only_its_shop(world: World) -> None:
    async with world.store.transaction() as tx:
        await tx.suppress(Suppression("other-shop", "email", "zoe@example.org", "hard_bounce", NOW))
    assert (await world.send.handle(make_request("birthday", "wishes"))).kind == "sent"


async def test_a_claim_recovered_during_the_send_keeps_the_recoverys_verdict(
    builder: EmailBuilder, renderer: Renderer
) -> None:
    world = World(builder, renderer)
    other = world.sender("worker-b")

    class SlowSmtp(ScriptedEmail):
        async def send(self, email: BuiltEmail) -> DeliveryOutcome:
            world.clock.advance(timedelta(minutes=16))  # past the lease: worker-b recovers
            assert (await other.recover_interrupted(own=False)).ambiguous == 1
            return await super().send(email)

    world.email = SlowSmtp()
    world.send = world.sender("worker-a")
    result = await world.send.handle(make_request("birthday", "wishes"))
    assert (result.kind, result.state) == ("busy", "ambiguous")
    assert world.store.row("m-1").state == "ambiguous"  # type: ignore[union-attr]
    assert world.metrics.total("lost_claim") == 1 and world.metrics.total("sent") == 0
    assert "message.sent" not in world.bus.types()


async def test_a_batch_gives_each_request_the_verdict_it_would_get_alone(world: World) -> None:
    """One claiming transaction for a mixed batch: results in order, one send per message,
    a message twice in the batch sent once, the failures failed visibly."""
    await world.send.handle(make_request(message_id="m-done"))
    async with world.store.transaction() as tx:
        await tx.suppress(Suppression("shop-1", "email", "gone@example.org", "hard_bounce", NOW))
    no_cart = full_context()
    del no_cart["cart"]
    suppressed = full_context()
    suppressed["contact"] = {**suppressed["contact"], "email": "gone@example.org"}
    no_email = full_context()
    no_email["contact"] = {k: v for k, v in no_email["contact"].items() if k != "email"}
    batch = [
        make_request(message_id="m-a", contact_key="u-a"),
        make_request(message_id="m-done"),
        make_request(message_id="m-b", context=no_cart),
        make_request(message_id="m-a", contact_key="u-a"),
        make_request(message_id="m-c", context=suppressed),
        make_request(message_id="m-d", context=no_email),
        make_request(message_id="m-e", not_after=NOW - timedelta(seconds=1)),
        make_request(message_id="m-f", contact_key="u-f"),
    ]
    world.email.sent.clear()
    world.bus.events.clear()
    results = await world.send.handle_many(batch)
    assert [(r.message_id, r.kind) for r in results] == [
        ("m-a", "sent"),
        ("m-done", "duplicate"),
        ("m-b", "failed"),
        ("m-a", "busy"),
        ("m-c", "failed"),
        ("m-d", "failed"),
        ("m-e", "failed"),
        ("m-f", "sent"),
    ]
    assert sorted(e.message_id for e in world.email.sent) == ["m-a", "m-f"]
    reasons = {r.message_id: r.reason or "" for r in results if r.kind == "failed"}
    assert "render error" in reasons["m-b"]
    assert reasons["m-d"].startswith("invalid recipient")
    assert reasons["m-e"].startswith("expired")
    assert world.metrics.total("suppressed", reason="hard_bounce") == 1
    assert sorted(world.bus.types()) == sorted(
        ["message.sent"] * 3 + ["message.failed"] * 4  # m-done republished
    )
    rows = {m: world.store.row(m) for m in ("m-a", "m-b", "m-c", "m-d", "m-e", "m-f")}
    assert {m: row.state if row else None for m, row in rows.items()} == {
        "m-a": "sent",
        "m-b": "failed",
        "m-c": "failed",
        "m-d": "failed",
        "m-e": "failed",
        "m-f": "sent",
    }


async def test_each_result_is_heard_once_as_soon_as_it_is_known(world: World) -> None:
    heard: list[tuple[int, str]] = []
    batch = [
        make_request(message_id="m-a", contact_key="u-a"),
        make_request(message_id="m-a", contact_key="u-a"),
        make_request(message_id="m-x", not_after=NOW - timedelta(seconds=1)),
        make_request(message_id="m-b", contact_key="u-b"),
    ]
    results = await world.send.handle_many(
        batch, on_result=lambda n, result: heard.append((n, result.kind))
    )
    # The failure is known at the claim, before any delivery; the copy last.
    assert heard[0] == (2, "failed")
    assert sorted(heard) == [(0, "sent"), (1, "busy"), (2, "failed"), (3, "sent")]
    assert [r.kind for r in results] == ["sent", "busy", "failed", "sent"]


async def test_a_bus_failure_in_a_batch_strands_no_claim(world: World) -> None:
    """A batch whose redelivered message must republish its status while the bus is down:
    the new messages claimed in the same transaction are still delivered and settled, and
    the failure is raised after (the consumer retries; the ledger makes that a no-op)."""
    await world.send.handle(make_request(message_id="m-done"))
    world.bus.down = True
    batch = [
        make_request(message_id="m-done"),
        make_request(message_id="m-new", contact_key="u-new"),
    ]
    with pytest.raises(BusUnavailable):
        await world.send.handle_many(batch)
    new_row = world.store.row("m-new")
    assert new_row is not None and new_row.state == "sent"
    assert [e.message_id for e in world.email.sent] == ["m-done", "m-new"]
    world.bus.down = False
    again = await world.send.handle_many(batch)
    assert [r.kind for r in again] == ["duplicate", "duplicate"]
    assert len(world.email.sent) == 2

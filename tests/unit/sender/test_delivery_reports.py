"""Delivery reports (Twilio's StatusCallback): `message.delivered`, or a bounce after the
provider had accepted the message."""

from __future__ import annotations

from datetime import timedelta

import pytest

from relance_sender.domain.outcome import (
    Delivered,
    Undelivered,
    classify_twilio_status,
)
from relance_sender.domain.policy import ConsentRecord
from relance_sender.email_message import EmailBuilder
from relance_sender.rendering.renderer import Renderer
from relance_sender.services import RecordDeliveryReport

from .conftest import NOW, make_request
from .test_send_message import World


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        ("delivered", None, Delivered()),
        ("read", None, Delivered()),
        ("queued", None, None),
        ("sent", None, None),
        ("undelivered", 30005, Undelivered("undelivered: 30005", "30005", "hard", True)),
        ("failed", 21610, Undelivered("failed: 21610", "21610", "hard", True)),
        ("undelivered", 30003, Undelivered("undelivered: 30003", "30003", "soft")),
        ("failed", None, Undelivered("failed: no error code", None, "soft")),
    ],
)
def test_twilio_statuses(status: str, code: int | None, expected: object) -> None:
    assert classify_twilio_status(status, code) == expected


async def sms_world(
    builder: EmailBuilder, renderer: Renderer
) -> tuple[World, RecordDeliveryReport]:
    world = World(builder, renderer)
    async with world.store.transaction() as tx:
        await tx.record_consent(ConsentRecord("shop-1", "u-1", "sms", "marketing", "granted", NOW))
    assert (
        await world.send.handle(make_request("birthday", "wishes", channel="sms"))
    ).kind == "sent"
    reports = RecordDeliveryReport(
        store=world.store,
        publisher=world.bus,
        clock=world.clock,
        metrics=world.metrics,  # type: ignore[arg-type]
    )
    return world, reports


async def test_delivered_publishes_message_delivered_once_per_message(
    builder: EmailBuilder, renderer: Renderer
) -> None:
    world, reports = await sms_world(builder, renderer)
    assert await reports.handle(message_id="m-1", report=Delivered()) == "delivered"
    assert await reports.handle(message_id="m-1", report=Delivered()) == "delivered"  # a retry
    delivered = [e for e in world.bus.events if e.type == "message.delivered"]
    assert len({e.event_id for e in delivered}) == 1  # same id: consumers keep one
    assert delivered[0].payload.channel == "sms" and delivered[0].contact_key == "u-1"
    assert world.metrics.total("delivered", channel="sms") == 2
    assert world.store.row("m-1").state == "sent"  # type: ignore[union-attr]


async def test_a_dead_number_bounces_hard_and_is_suppressed(
    builder: EmailBuilder, renderer: Renderer
) -> None:
    world, reports = await sms_world(builder, renderer)
    report = classify_twilio_status("undelivered", 30005)
    assert report is not None
    assert await reports.handle(message_id="m-1", report=report) == "bounced"
    assert await reports.handle(message_id="m-1", report=report) == "bounced"  # a retry
    bounced = [e for e in world.bus.events if e.type == "message.bounced"]
    assert len({e.event_id for e in bounced}) == 1
    assert (bounced[0].payload.kind, bounced[0].payload.code) == ("hard", "30005")
    assert world.metrics.total("bounced", channel="sms", kind="hard") == 1
    async with world.store.transaction() as tx:
        suppression = await tx.suppression("shop-1", "sms", "+33612345678")
    assert suppression is not None and suppression.reason == "hard_bounce"
    blocked = await world.send.handle(
        make_request("birthday", "reminder_1", channel="sms", message_id="m-2")
    )
    assert blocked.reason == "suppressed: hard_bounce"


async def test_soft_reports_count_towards_repeated_bounces(
    builder: EmailBuilder, renderer: Renderer
) -> None:
    world, reports = await sms_world(builder, renderer)
    for n in (2, 3):
        world.clock.advance(timedelta(days=1))
        request = make_request("birthday", "wishes", channel="sms", message_id=f"m-{n}")
        assert (await world.send.handle(request)).kind == "sent"
    soft = Undelivered("undelivered: 30003", "30003", "soft")
    for n in (1, 2, 3):
        await reports.handle(message_id=f"m-{n}", report=soft)
    async with world.store.transaction() as tx:
        suppression = await tx.suppression("shop-1", "sms", "+33612345678")
    assert suppression is not None and suppression.reason == "repeated_bounces"


async def test_reports_on_unknown_or_unsent_messages_are_ignored(
    builder: EmailBuilder, renderer: Renderer
) -> None:
    world, reports = await sms_world(builder, renderer)
    assert await reports.handle(message_id="m-unknown", report=Delivered()) == "ignored"
    blocked = await world.send.handle(
        make_request(
            "birthday", "wishes", message_id="m-blank", context={"contact": {"email": "a@b.org"}}
        )
    )
    assert blocked.kind == "failed"
    assert await reports.handle(message_id="m-blank", report=Delivered()) == "ignored"
    assert not [e for e in world.bus.events if e.type == "message.delivered"]

"""Build the sender's use cases from settings; the composition root (bootstrap) calls this."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from relance_runtime.bus.ports import Publisher
from relance_runtime.clock import Clock
from relance_runtime.errors import ConfigError
from relance_runtime.tokens import TokenSigner
from relance_sender.adapters.outbox import OutboxEmailTransport, OutboxSmsTransport
from relance_sender.adapters.rate_limited import (
    RateLimitedEmailTransport,
    RateLimitedSmsTransport,
    RateLimiter,
)
from relance_sender.adapters.sms_http import (
    JsonSmsConfig,
    JsonSmsTransport,
    TwilioConfig,
    TwilioSmsTransport,
)
from relance_sender.adapters.smtp import SmtpConfig, SmtpTransport
from relance_sender.domain.outcome import RetryPolicy
from relance_sender.email_message import DkimKey, EmailBuilder, SenderIdentity
from relance_sender.ports import EmailTransport, SenderMetrics, SenderStore, SmsTransport
from relance_sender.rendering.renderer import Renderer, ShopProfile, SocialProfile
from relance_sender.services import (
    FailpointHook,
    HandleInboundSms,
    RecordConsent,
    RecordDeliveryReport,
    SendMessage,
)
from relance_sender.settings import SenderSettings

# Where Twilio posts delivery reports (the route is in `http.py`).
TWILIO_STATUS_PATH: Final = "/v1/sms/status/twilio"


@dataclass(frozen=True, slots=True)
class Sender:
    send: SendMessage
    consent: RecordConsent
    inbound_sms: HandleInboundSms
    delivery_reports: RecordDeliveryReport
    email_transport: EmailTransport
    sms_transport: SmsTransport

    async def close(self) -> None:
        await self.email_transport.close()
        await self.sms_transport.close()


def _limiters(settings: SenderSettings, names: tuple[str, ...], clock: Clock) -> list[RateLimiter]:
    return [
        RateLimiter(name=n, rate_per_s=rate, burst=max(rate, 1.0), clock=clock)
        for n in names
        if (rate := settings.rate_limits.get(n)) is not None
    ]


def shop_profile(settings: SenderSettings) -> ShopProfile:
    social = []
    for item in settings.shop_social.split(","):
        if "=" in item:
            name, url = item.split("=", 1)
            social.append(SocialProfile(name.strip(), url.strip()))
    return ShopProfile(
        name=settings.shop_name,
        url=settings.shop_url,
        support_url=settings.shop_support_url,
        review_url=settings.shop_review_url,
        postal_address=settings.shop_postal_address,
        social=tuple(social),
        cart_url=settings.shop_cart_url,
        cart_retention_days=settings.shop_cart_retention_days,
    )


def email_transport(settings: SenderSettings, clock: Clock) -> EmailTransport:
    inner: EmailTransport
    if settings.smtp_url:
        inner = SmtpTransport(SmtpConfig.from_url(settings.smtp_url))
    else:
        inner = OutboxEmailTransport(settings.outbox_dir)
    return RateLimitedEmailTransport(inner, _limiters(settings, ("email", inner.name), clock))


def sms_transport(settings: SenderSettings, clock: Clock) -> SmsTransport:
    inner: SmsTransport
    match settings.sms_provider:
        case "twilio":
            if not (settings.sms_account_sid and settings.sms_auth_token):
                raise ConfigError("Twilio needs RELANCE_SENDER_SMS_ACCOUNT_SID and _AUTH_TOKEN")
            inner = TwilioSmsTransport(
                TwilioConfig(
                    account_sid=settings.sms_account_sid,
                    auth_token=settings.sms_auth_token,
                    sender=settings.sms_from,
                    base_url=settings.sms_url or "https://api.twilio.com",
                    status_callback=f"{settings.public_url.rstrip('/')}{TWILIO_STATUS_PATH}",
                )
            )
        case "json":
            if not settings.sms_url:
                raise ConfigError("the JSON SMS provider needs RELANCE_SENDER_SMS_URL")
            inner = JsonSmsTransport(
                JsonSmsConfig(
                    url=settings.sms_url, token=settings.sms_auth_token, sender=settings.sms_from
                )
            )
        case None:
            inner = OutboxSmsTransport(settings.outbox_dir)
    return RateLimitedSmsTransport(inner, _limiters(settings, ("sms", inner.name), clock))


def dkim_key(settings: SenderSettings) -> DkimKey | None:
    configured = (settings.dkim_selector, settings.dkim_domain, settings.dkim_private_key_file)
    if not any(configured):
        return None
    if not all(configured) or settings.dkim_private_key_file is None:
        raise ConfigError("DKIM needs a selector, a domain and a private key file")
    return DkimKey(
        selector=settings.dkim_selector or "",
        domain=settings.dkim_domain or "",
        private_key_pem=settings.dkim_private_key_file.read_bytes(),
        implementation=settings.dkim_signer,
    )


def build_sender(
    settings: SenderSettings,
    *,
    store: SenderStore,
    publisher: Publisher,
    clock: Clock,
    signer: TokenSigner | None = None,
    metrics: SenderMetrics | None = None,
    failpoint: FailpointHook | None = None,
) -> Sender:
    """`signer` defaults to one built from `RELANCE_TOKEN_KEYS` (pass the platform's),
    `metrics` to counters in memory; `failpoint` is the kill tests' hook (see
    `relance_sender.failpoints`)."""
    renderer = Renderer(shop=shop_profile(settings), default_locale=settings.default_locale)
    emails = EmailBuilder(
        renderer=renderer,
        signer=signer or TokenSigner.from_setting(settings.token_keys),
        public_url=settings.public_url,
        identity=SenderIdentity(
            marketing_from=settings.marketing_from,
            transactional_from=settings.transactional_from,
            message_id_domain=settings.message_id_domain,
            feedback_sender_id=settings.feedback_sender_id,
            reply_to=settings.reply_to,
        ),
        dkim_key=dkim_key(settings),
    )
    mail = email_transport(settings, clock)
    sms = sms_transport(settings, clock)
    send = SendMessage(
        store=store,
        emails=emails,
        renderer=renderer,
        email_transport=mail,
        sms_transport=sms,
        publisher=publisher,
        clock=clock,
        owner=settings.instance,
        retry=RetryPolicy(
            initial=timedelta(seconds=settings.retry_initial_s),
            maximum=timedelta(seconds=settings.retry_max_s),
            horizon=timedelta(seconds=settings.retry_horizon_s),
        ),
        sending_lease=timedelta(seconds=settings.sending_lease_s),
        metrics=metrics,
        failpoint=failpoint,
    )
    return Sender(
        send=send,
        consent=RecordConsent(store),
        inbound_sms=HandleInboundSms(store=store, publisher=publisher, clock=clock),
        delivery_reports=RecordDeliveryReport(
            store=store, publisher=publisher, clock=clock, metrics=send.metrics
        ),
        email_transport=mail,
        sms_transport=sms,
    )

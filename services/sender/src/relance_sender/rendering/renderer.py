"""Render a send request into email parts or an SMS text, in a sandboxed Jinja environment.

Autoescape is on for HTML and StrictUndefined everywhere: a variable the template needs and
the context lacks raises `RenderError`, so the message fails visibly instead of going out
with blanks. Templates are compiled once and cached.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.runtime import new_context
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from relance_events.payloads import LEAVE_REASONS
from relance_sender.domain.request import SendRequest
from relance_sender.errors import RenderError
from relance_sender.rendering import copy_en, copy_fr, layout
from relance_sender.rendering.copy import CopyKey, StepCopy
from relance_sender.rendering.formatting import format_date, format_money

BUILTIN_COPY: dict[str, Mapping[CopyKey, StepCopy]] = {"fr": copy_fr.COPY, "en": copy_en.COPY}
BUILTIN_LABELS: dict[str, Mapping[str, str]] = {"fr": copy_fr.LABELS, "en": copy_en.LABELS}


class Links(Protocol):
    """Tracked URLs for one message (signed tokens, minted by the message builder)."""

    def click(self, url: str) -> str: ...

    def survey(self, answer: str) -> str: ...

    def reason(self, reason: str) -> str: ...


@dataclass(frozen=True, slots=True)
class SocialProfile:
    name: str
    url: str


@dataclass(frozen=True, slots=True)
class ShopProfile:
    """What messages say about the shop; a request's `context.shop` overrides fields."""

    name: str
    url: str
    support_url: str
    review_url: str
    postal_address: str | None = None
    social: tuple[SocialProfile, ...] = field(default_factory=tuple)
    cart_url: str | None = None
    cart_retention_days: int = 7

    def cart_context(self, cart: Mapping[str, Any]) -> dict[str, Any]:
        """The plan's cart plus what only the shop knows: where the cart is, when it clears
        (`cart_retention_days` after its last change)."""
        data = dict(cart)
        data.setdefault("url", self.cart_url or f"{self.url.rstrip('/')}/cart")
        data.setdefault("currency", "EUR")
        changed = data.get("changed_at")
        if "clear_at" not in data and isinstance(changed, str):
            data["clear_at"] = datetime.fromisoformat(changed) + timedelta(
                days=self.cart_retention_days
            )
        return data

    def as_context(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "url": self.url,
            "support_url": self.support_url,
            "review_url": self.review_url,
            "postal_address": self.postal_address,
            "social": [{"name": s.name, "url": s.url} for s in self.social],
        }
        data.update(overrides)
        return data


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    locale: str
    subject: str
    preheader: str
    html: str
    text: str


@dataclass(frozen=True, slots=True)
class RenderedSms:
    locale: str
    text: str


_DICT_ATTRIBUTES: Final = frozenset(dir(dict))


class Sandbox(SandboxedEnvironment):
    """Jinja's sandbox, with `mapping.key` on a plain dict going straight to the item when
    `key` names no dict attribute: what the sandbox returns anyway, after raising and
    catching an AttributeError (dozens per email, and the context is all dicts)."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


def _environment(locale: str, *, html: bool) -> SandboxedEnvironment:
    env = Sandbox(autoescape=html, undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["money"] = lambda value, currency="EUR": format_money(value, currency, locale)
    env.filters["date"] = lambda value: format_date(value, locale)
    return env


def is_plain_text(source: str) -> bool:
    """Whether Jinja would render `source` to itself: no delimiter can start (they all open
    with a brace) and no carriage return (Jinja normalises newlines)."""
    return "{" not in source and "\r" not in source


def _run(template: Template, variables: dict[str, Any]) -> str:
    """`template.render` without copying the variables and the globals on every call
    (templates here use no globals; they get filters and the variables only). Without
    globals, the context also skips collecting their names, which only `{% import %}`
    reads (and strings have no loader to import from)."""
    context = new_context(template.environment, template.name, template.blocks, variables, True)
    return template.environment.concat(template.root_render_func(context))


class Renderer:
    def __init__(
        self,
        *,
        shop: ShopProfile,
        default_locale: str = "fr",
        copy: Mapping[str, Mapping[CopyKey, StepCopy]] | None = None,
        labels: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self._shop = shop
        self._copy = dict(copy if copy is not None else BUILTIN_COPY)
        self._labels = dict(labels if labels is not None else BUILTIN_LABELS)
        if default_locale not in self._copy:
            raise ValueError(f"no copy for the default locale {default_locale!r}")
        self._default_locale = default_locale
        self._html = {loc: _environment(loc, html=True) for loc in self._copy}
        self._text = {loc: _environment(loc, html=False) for loc in self._copy}
        self._compiled: dict[tuple[str, bool, str], Template | str] = {}

    def locales(self) -> tuple[str, ...]:
        return tuple(self._copy)

    def keys(self, locale: str) -> tuple[CopyKey, ...]:
        return tuple(self._copy[locale])

    def _locale_for(self, requested: str | None) -> str:
        if requested:
            base = requested.replace("_", "-").split("-")[0].lower()
            if base in self._copy:
                return base
        return self._default_locale

    def _step(self, request: SendRequest, locale: str) -> StepCopy:
        """The copy for the step's variant, else the step's variant-free copy (a plan may
        name variants the copy does not tell apart), in the locale, else the default one."""
        keys: list[CopyKey] = [(request.plan, request.step, request.variant)]
        if request.variant is not None:
            keys.append((request.plan, request.step, None))
        for key in keys:
            for loc in (locale, self._default_locale):
                found = self._copy[loc].get(key)
                if found is not None:
                    return found
        raise RenderError(
            f"no template for plan={request.plan} step={request.step} "
            f"variant={request.variant} locale={locale}",
            template=f"{locale}/{request.plan}/{request.step}/{request.variant}",
        )

    def _piece(self, locale: str, html: bool, source: str) -> Template | str:
        """The compiled template, or the source itself when it has no Jinja syntax: such
        copy renders to itself, and most paragraphs and labels are plain text."""
        cache_key = (locale, html, source)
        piece = self._compiled.get(cache_key)
        if piece is None:
            if is_plain_text(source):
                piece = source
            else:
                env = self._html[locale] if html else self._text[locale]
                piece = env.from_string(source)
            self._compiled[cache_key] = piece
        return piece

    def _render(self, locale: str, html: bool, source: str, variables: dict[str, Any]) -> str:
        piece = self._piece(locale, html, source)
        return piece if isinstance(piece, str) else _run(piece, variables)

    def _variables(self, request: SendRequest, locale: str) -> dict[str, Any]:
        labels = self._labels[locale]
        contact = request.contact
        first_name = contact.get("first_name")
        shop_overrides = request.context.get("shop")
        variables: dict[str, Any] = {
            key: value for key, value in request.context.items() if key not in ("shop",)
        }
        variables.update(
            locale=locale,
            labels=labels,
            contact=contact,
            first_name=first_name,
            shop=self._shop.as_context(
                shop_overrides if isinstance(shop_overrides, Mapping) else {}
            ),
            greeting=labels["greeting_named"].format(name=first_name)
            if first_name
            else labels["greeting"],
            plan=request.plan,
            step=request.step,
            variant=request.variant,
        )
        if contact.get("loyalty_tier") and "loyalty_tier" not in variables:
            variables["loyalty_tier"] = contact["loyalty_tier"]
        cart = variables.get("cart")
        if isinstance(cart, Mapping):
            variables["cart"] = self._shop.cart_context(cart)
        return variables

    def _guard(self, request: SendRequest, locale: str, render: Callable[[], str]) -> str:
        try:
            return render()
        except TemplateError as exc:
            raise RenderError(
                f"{request.plan}/{request.step}/{request.variant} ({locale}): {exc}",
                template=f"{locale}/{request.plan}/{request.step}/{request.variant}",
            ) from exc
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise RenderError(
                f"{request.plan}/{request.step}/{request.variant} ({locale}): bad value: {exc}",
                template=f"{locale}/{request.plan}/{request.step}/{request.variant}",
            ) from exc

    def render_email(
        self,
        request: SendRequest,
        links: Links,
        *,
        unsubscribe_url: str | None,
        pixel_url: str | None,
    ) -> RenderedEmail:
        locale = self._locale_for(request.locale)
        step = self._step(request, locale)
        variables = self._variables(request, locale)
        variables.update(links=links, unsubscribe_url=unsubscribe_url, pixel_url=pixel_url)

        def guarded(html: bool, source: str) -> str:
            return self._guard(
                request, locale, lambda: self._render(locale, html, source, variables)
            ).strip()

        # The text part shows the same subject and preheader: render them once.
        subject = guarded(False, step.subject)
        preheader = guarded(False, step.preheader)
        html = self._guard(request, locale, lambda: self._part(locale, step, variables, None))
        text = self._guard(
            request, locale, lambda: self._part(locale, step, variables, (subject, preheader))
        )
        return RenderedEmail(
            locale=locale,
            subject=" ".join(subject.split()),
            preheader=preheader,
            html=html,
            text=text,
        )

    def _part(
        self,
        locale: str,
        step: StepCopy,
        variables: dict[str, Any],
        text_heads: tuple[str, str] | None,
    ) -> str:
        """The HTML part, or with `text_heads` (subject, preheader) the plain-text one."""
        html = text_heads is None

        def one(source: str | None) -> str:
            return "" if source is None else self._render(locale, html, source, variables).strip()

        subject, preheader = text_heads or (one(step.subject), one(step.preheader))
        parts: dict[str, Any] = {
            "subject": subject,
            "preheader": preheader,
            "heading": one(step.heading),
            "paragraphs": [one(p) for p in step.paragraphs],
            "cta_label": one(step.cta_label) or None,
            # A URL, not markup: rendered unescaped even for the HTML part.
            "cta_url": self._render(locale, False, step.cta_url, variables).strip()
            if step.cta_url
            else None,
            "signature": self._labels[locale]["signature"].format(shop=variables["shop"]["name"]),
            "blocks": step.blocks,
            "leave_reasons": LEAVE_REASONS,
        }
        if html:
            for key in ("subject", "preheader", "heading", "cta_label"):
                if parts[key] is not None:
                    parts[key] = Markup(parts[key])
            parts["paragraphs"] = [Markup(p) for p in parts["paragraphs"]]
        source = layout.layout_source("html" if html else "txt")
        return self._render(locale, html, source, {**variables, **parts})

    def render_sms(self, request: SendRequest, *, french_number: bool) -> RenderedSms:
        """`Shop: text` + an opt-out mention; "STOP SMS" for French numbers (CNIL)."""
        locale = self._locale_for(request.locale)
        step = self._step(request, locale)
        variables = self._variables(request, locale)
        body = self._guard(
            request, locale, lambda: self._render(locale, False, step.sms, variables)
        )
        opt_out = "STOP SMS" if french_number else self._labels[locale]["sms_opt_out"]
        text = f"{variables['shop']['name']}: {' '.join(body.split())}"
        if request.purpose == "marketing":
            text = f"{text} {opt_out}"
        return RenderedSms(locale=locale, text=text)

"""HTTP: the survey and leave-reason confirm pages, the answers API and the stats APIs.

A bare GET on a survey link (`/s/`) or a leave-reason link (`/r/`) registers nothing: mail
scanners and link previewers fetch every link in a message. The GET shows the chosen answer
with one confirm button (and an optional comment); only the POST records it. Pages are HTML
(people read them); the `/v1` API answers JSON with `{"errors": [{"field", "reason"}]}` on
bad input.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from relance_events.payloads import LeaveReason, SurveyAnswer
from relance_feedback.domain.answers import COMMENT_MAX_CHARS, Submission
from relance_feedback.domain.leave_reasons import ReasonSubmission
from relance_feedback.domain.stats import Window, parse_windows
from relance_feedback.errors import InvalidAnswer, InvalidLeaveReason
from relance_feedback.services import FeedbackService
from relance_runtime.clock import Clock
from relance_runtime.tokens import InvalidToken, TokenSigner

ApiKeyKind = Literal["write", "admin"]
Authenticate = Callable[[Request, ApiKeyKind], "str | Awaitable[str]"]
MAX_BODY_BYTES = 32 * 1024
_CHOICES: dict[str, str] = {
    "very_satisfied": "Very satisfied",
    "satisfied": "Satisfied",
    "not_satisfied": "Not satisfied",
}
# One per LEAVE_REASONS entry (a unit test holds them together).
REASON_LABELS: dict[LeaveReason, str] = {
    "too_expensive": "Too expensive",
    "found_elsewhere": "I found what I need elsewhere",
    "no_longer_needed": "I no longer need it",
    "bad_experience": "I had a bad experience",
    "too_many_emails": "Too many emails",
    "other": "Another reason",
}
_PAGE_HEADERS = {
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-robots-tag": "noindex",
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


@dataclass(frozen=True, slots=True)
class FeedbackDeps:
    service: FeedbackService
    tokens: TokenSigner
    authenticate: Authenticate
    clock: Clock


class AnswerIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: Annotated[str, Field(min_length=1, max_length=128)]
    order_id: Annotated[str, Field(min_length=1, max_length=128)]
    answer: SurveyAnswer | None = None
    nps: Annotated[int, Field(ge=0, le=10, strict=True)] | None = None
    comment: Annotated[str, Field(max_length=COMMENT_MAX_CHARS)] | None = None
    message_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None


def _errors(status: int, *items: tuple[str, str]) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"field": f, "reason": r} for f, r in items]}, status_code=status
    )


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        '<meta name=robots content="noindex">'
        f"<title>{escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;"
        "padding:0 1rem}textarea{width:100%;min-height:6rem}button{font-size:1.1rem;"
        "padding:.6rem 1.4rem}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(html, status_code=status, headers=_PAGE_HEADERS)


def _invalid_link() -> HTMLResponse:
    return _page("This link is not valid", "<p>It may be incomplete or out of date.</p>", 400)


def _survey_submission(claims: dict[str, Any], comment: str | None) -> Submission | None:
    choice = claims.get("a")
    keys = ("s", "c", "o")
    if choice not in _CHOICES or not all(isinstance(claims.get(k), str) for k in keys):
        return None
    message_id = claims.get("m")
    try:
        return Submission(
            shop_id=claims["s"],
            order_id=claims["o"],
            contact_key=claims["c"],
            choice=choice,
            nps=None,
            comment=comment,
            origin="email",
            message_id=message_id if isinstance(message_id, str) else None,
        )
    except InvalidAnswer:
        return None


def _reason_submission(claims: dict[str, Any], comment: str | None) -> ReasonSubmission | None:
    """The submission a reason token stands for; None when a claim is missing or unknown."""
    reason = claims.get("r")
    keys = ("s", "c", "m", "pl", "st")
    if reason not in REASON_LABELS or not all(isinstance(claims.get(k), str) for k in keys):
        return None
    try:
        return ReasonSubmission(
            shop_id=claims["s"],
            contact_key=claims["c"],
            message_id=claims["m"],
            plan=claims["pl"],
            step=claims["st"],
            reason=reason,
            comment=comment,
        )
    except InvalidLeaveReason:
        return None


async def _form_comment(request: Request) -> tuple[str | None, bool]:
    """The optional `comment` of a confirm form, and whether the body was within bounds."""
    raw = await _bounded_body(request)
    if raw is None:
        return None, False
    form = parse_qs(raw.decode("utf-8", errors="replace"), max_num_fields=10)
    comments = form.get("comment")
    comment = comments[0] if comments else None
    return comment, comment is None or len(comment) <= COMMENT_MAX_CHARS


def _too_long() -> HTMLResponse:
    return _page("Your comment is too long", "<p>Please shorten it.</p>", 413)


def _confirm_form(intro: str, button: str) -> str:
    return (
        f"<p>{intro}</p>"
        '<form method="post">'
        f'<p><label for="comment">Anything to add? (optional)</label><br>'
        f'<textarea id="comment" name="comment" maxlength="{COMMENT_MAX_CHARS}">'
        "</textarea></p>"
        f'<p><button type="submit">{escape(button)}</button></p></form>'
    )


S = TypeVar("S")


async def _confirm(
    deps: FeedbackDeps,
    kind: str,
    token: str,
    request: Request,
    submission_of: Callable[[dict[str, Any], str | None], S | None],
    record: Callable[[S, datetime], Awaitable[object]],
    what: str,
) -> Response:
    """The POST of a confirm page: a valid link of `kind`, a comment within bounds, then
    `record` the submission the link stands for."""
    try:
        claims = deps.tokens.verify(kind, token)
    except InvalidToken:
        return _invalid_link()
    comment, within_bounds = await _form_comment(request)
    if not within_bounds:
        return _too_long()
    submission = submission_of(claims, comment)
    if submission is None:
        return _invalid_link()
    await record(submission, deps.clock.now())
    return _page("Thank you!", f"<p>Your {what} has been recorded.</p>")


async def _stats_scope(
    deps: FeedbackDeps, request: Request, windows: str | None
) -> tuple[str, tuple[int, ...], datetime] | Response:
    """The admin's shop, the `windows` asked for and now; or the error answer."""
    shop_id = await _shop(deps, request, "admin")
    try:
        days = parse_windows(windows)
    except ValueError as exc:
        return _errors(400, ("windows", str(exc)))
    return shop_id, days, deps.clock.now()


def _window_json(window: Window) -> dict[str, str]:
    return {
        "window": window.label,
        "from": window.start.isoformat(),
        "to": window.end.isoformat(),
    }


async def _shop(deps: FeedbackDeps, request: Request, kind: ApiKeyKind) -> str:
    shop = deps.authenticate(request, kind)
    if inspect.isawaitable(shop):
        return str(await shop)
    return str(shop)


async def _bounded_body(request: Request) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def build_router(deps: FeedbackDeps) -> APIRouter:
    router = APIRouter()

    @router.get("/s/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def survey_page(token: str) -> Response:
        try:
            submission = _survey_submission(deps.tokens.verify("survey", token), None)
        except InvalidToken:
            return _invalid_link()
        if submission is None or submission.choice is None:
            return _invalid_link()
        label = _CHOICES[submission.choice]
        return _page(
            "Thank you for your feedback",
            _confirm_form(f"Your answer: <strong>{escape(label)}</strong>", "Confirm my answer"),
        )

    @router.post("/s/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def survey_confirm(token: str, request: Request) -> Response:
        return await _confirm(
            deps, "survey", token, request, _survey_submission, deps.service.submit, "answer"
        )

    @router.get("/r/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def reason_page(token: str) -> Response:
        try:
            submission = _reason_submission(deps.tokens.verify("reason", token), None)
        except InvalidToken:
            return _invalid_link()
        if submission is None:
            return _invalid_link()
        label = REASON_LABELS[submission.reason]
        return _page(
            "Thank you for telling us",
            _confirm_form(f"Your reason: <strong>{escape(label)}</strong>", "Confirm my reason"),
        )

    @router.post("/r/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def reason_confirm(token: str, request: Request) -> Response:
        return await _confirm(
            deps, "reason", token, request, _reason_submission, deps.service.give_reason, "reason"
        )

    @router.post("/v1/surveys/answers")
    async def post_answer(request: Request) -> Response:
        shop_id = await _shop(deps, request, "write")
        raw = await _bounded_body(request)
        if raw is None:
            return _errors(413, ("body", f"at most {MAX_BODY_BYTES} bytes"))
        try:
            payload = AnswerIn.model_validate_json(raw)
        except ValidationError as exc:
            return _errors(
                400,
                *(
                    (".".join(str(p) for p in err["loc"]) or "body", err["msg"])
                    for err in exc.errors(include_url=False)
                ),
            )
        try:
            submission = Submission(
                shop_id=shop_id,
                order_id=payload.order_id,
                contact_key=payload.user_id,
                choice=payload.answer,
                nps=payload.nps,
                comment=payload.comment,
                origin="api",
                message_id=payload.message_id,
            )
        except InvalidAnswer as exc:
            return _errors(400, ("answer", str(exc)))
        outcome = await deps.service.submit(submission, deps.clock.now())
        return JSONResponse(
            {
                "answer_id": str(outcome.answer.answer_id),
                "changed": outcome.changed,
                "alert": outcome.alert,
            }
        )

    @router.get("/v1/surveys/stats")
    async def get_stats(request: Request, windows: str | None = None) -> Response:
        scope = await _stats_scope(deps, request, windows)
        if isinstance(scope, Response):
            return scope
        shop_id, days, now = scope
        stats = await deps.service.stats(shop_id, days, now)
        return JSONResponse(
            {
                "as_of": now.isoformat(),
                "windows": [
                    {
                        **_window_json(s.window),
                        "answers": {
                            "very_satisfied": s.answers.very_satisfied,
                            "satisfied": s.answers.satisfied,
                            "not_satisfied": s.answers.not_satisfied,
                            "total": s.answers.csat_answers,
                        },
                        "csat": s.csat,
                        "nps": {
                            "score": s.nps,
                            "promoters": s.answers.promoters,
                            "passives": s.answers.passives,
                            "detractors": s.answers.detractors,
                            "total": s.answers.nps_answers,
                        },
                        "alerts": {
                            "pending": s.alerts.pending,
                            "sent": s.alerts.sent,
                            "failed": s.alerts.failed,
                        },
                    }
                    for s in stats
                ],
            }
        )

    @router.get("/v1/leave-reasons/stats")
    async def get_reason_stats(request: Request, windows: str | None = None) -> Response:
        scope = await _stats_scope(deps, request, windows)
        if isinstance(scope, Response):
            return scope
        shop_id, days, now = scope
        stats = await deps.service.reason_stats(shop_id, days, now)
        return JSONResponse(
            {
                "as_of": now.isoformat(),
                "windows": [
                    {
                        **_window_json(s.window),
                        "reasons": {**s.reasons.reasons, "total": s.reasons.total},
                        "by_step": [
                            {
                                "plan": step.plan,
                                "step": step.step,
                                "reasons": {**step.reasons, "total": step.total},
                            }
                            for step in s.reasons.by_step
                        ],
                    }
                    for s in stats
                ],
            }
        )

    return router

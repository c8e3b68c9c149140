"""Merchant-set pressure policy: caps and send windows from the environment and from
`relance simulate --config`, down to what the engine holds and drops."""

from __future__ import annotations

import io
import itertools
import os
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from relance_events.payloads import CustomTracked
from relance_orchestrator.cli import simulate
from relance_orchestrator.domain.errors import PlanDefinitionError
from relance_orchestrator.domain.policy import FrequencyCap, Policy
from relance_orchestrator.domain.timing import SMS_DEFAULT_WINDOW, SendWindow
from relance_orchestrator.plans.loader import load_plans
from relance_orchestrator.settings import OrchestratorSettings, parse_send_window

from .test_alias_context_cli import _events
from .test_pressure import _alert

T0 = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)  # a Monday
D = timedelta(days=1)
H = timedelta(hours=1)
PREFIX = "RELANCE_ORCHESTRATOR_"


@pytest.fixture(autouse=True)
def _no_orchestrator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> OrchestratorSettings:
    for name, value in env.items():
        monkeypatch.setenv(PREFIX + name.upper(), value)
    return OrchestratorSettings()


def test_defaults_are_the_policy_defaults() -> None:
    settings = OrchestratorSettings()
    assert settings.policy() == Policy()
    assert settings.policy().sms_window == SMS_DEFAULT_WINDOW
    assert settings.policy().email_window is None


def test_environment_configures_caps_and_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = _settings(
        monkeypatch,
        email_cap_max_messages="1",
        email_cap_window_days="2",
        sms_cap_max_messages="4",
        sms_cap_window_days="14",
        email_send_window="mon-fri 08:30-21:00",
        sms_send_window="sat-mon 09:00-24:00",
        attribution_window_days="3",
    ).policy()
    assert policy == Policy(
        email_cap=FrequencyCap(max_messages=1, window=2 * D),
        sms_cap=FrequencyCap(max_messages=4, window=14 * D),
        email_window=SendWindow(weekdays=frozenset(range(5)), start=time(8, 30), end=time(21)),
        sms_window=SendWindow(weekdays=frozenset({5, 6, 0}), start=time(9), end=None),
        attribution_window=3 * D,
    )


@pytest.mark.parametrize(
    ("text", "window"),
    [
        ("daily", SendWindow()),
        ("10:00-19:00", SendWindow(start=time(10), end=time(19))),
        ("Mon,Wed-Thu", SendWindow(weekdays=frozenset({0, 2, 3}))),
        ("mon-sat 10:00-19:00", SMS_DEFAULT_WINDOW),
    ],
)
def test_send_window_format(text: str, window: SendWindow) -> None:
    assert parse_send_window(text) == window


@pytest.mark.parametrize("value", ["", "any", "ANY"])
def test_an_empty_email_window_means_any_time(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    assert _settings(monkeypatch, email_send_window=value).policy().email_window is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sms_send_window", "mon-sat 19:00-10:00"),
        ("sms_send_window", "any"),
        ("sms_send_window", "mon-sat 10-19"),
        ("email_send_window", "weekdays 09:00-17:00"),
        ("email_send_window", "mon- 09:00-17:00"),
        ("email_send_window", "mon 09:00-25:00"),
        ("email_cap_max_messages", "0"),
        ("sms_cap_window_days", "-1"),
    ],
)
def test_malformed_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, field: str, value: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        _settings(monkeypatch, **{field: value})
    assert [e["loc"] for e in raised.value.errors()] == [(field,)]
    assert field in str(raised.value)


def test_a_configured_email_window_holds_the_email(
    harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = _settings(monkeypatch, email_send_window="mon-fri 08:00-11:00").policy()
    h = harness(plans=[_alert("a", 1)], policy=policy)
    h.order(T0 - D, "o1")  # a customer: soft opt-in
    h.emit(CustomTracked(name="Ping"), T0)  # Monday 12:00, after the window
    h.until(T0 + 5 * D)
    assert [s.at for s in h.sends("a")] == [datetime(2025, 3, 4, 8, 0, tzinfo=UTC)]
    assert ("a", "held", "quiet_hours") in [(d.plan, d.decision, d.reason) for d in h.sim.decisions]


@pytest.mark.parametrize(
    ("window_days", "low_sent", "low_decision"),
    [("2", [T0 + 2 * D], "held"), ("5", [], "dropped")],
)
def test_a_configured_cap_of_one_holds_or_drops_the_second_message(
    harness: Any,
    monkeypatch: pytest.MonkeyPatch,
    window_days: str,
    low_sent: list[datetime],
    low_decision: str,
) -> None:
    policy = _settings(
        monkeypatch, email_cap_max_messages="1", email_cap_window_days=window_days
    ).policy()
    h = harness(plans=[_alert("low", 50), _alert("high", 1)], policy=policy)
    h.order(T0 - 10 * D, "o1")
    h.emit(CustomTracked(name="Ping"), T0)
    h.until(T0 + 10 * D)
    assert [s.at for s in h.sends("high")] == [T0]
    assert [s.at for s in h.sends("low")] == low_sent
    decisions = [(d.plan, d.decision, d.reason) for d in h.sim.decisions]
    assert ("low", low_decision, "frequency_cap") in decisions


def _marketing_email_gaps(out: Path) -> list[timedelta]:
    purposes = {(p.name, s.name): s.purpose or p.purpose for p in load_plans() for s in p.steps}
    by_user: dict[str, list[datetime]] = {}
    for line in out.read_bytes().splitlines():
        send = orjson.loads(line)
        if send["channel"] == "email" and purposes[(send["plan"], send["step"])] == "marketing":
            by_user.setdefault(send["user_id"], []).append(datetime.fromisoformat(send["at"]))
    return [b - a for times in by_user.values() for a, b in itertools.pairwise(times)]


def test_simulate_config_honours_a_configured_cap(tmp_path: Path) -> None:
    events = _events(tmp_path / "events.jsonl")
    until = datetime(2011, 12, 31, tzinfo=UTC)
    simulate(events, until, tmp_path / "default.jsonl", progress=False, console_file=io.StringIO())
    config = tmp_path / "config.yaml"
    config.write_text("email_cap_max_messages: 1\nemail_cap_window_days: 30\n")
    simulate(events, until, tmp_path / "capped.jsonl", config, False, console_file=io.StringIO())
    assert min(_marketing_email_gaps(tmp_path / "default.jsonl")) < 30 * D
    capped = _marketing_email_gaps(tmp_path / "capped.jsonl")
    assert capped and min(capped) >= 30 * D

    bad = tmp_path / "bad.yaml"
    bad.write_text("sms_send_window: sun 25:00-26:00\n")
    with pytest.raises(PlanDefinitionError, match="sms_send_window"):
        simulate(events, until, tmp_path / "x.jsonl", bad, False, console_file=io.StringIO())

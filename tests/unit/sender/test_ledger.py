from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relance_sender.domain import ledger
from relance_sender.domain.ledger import TRANSITIONS, LedgerRow
from relance_sender.domain.outcome import Accepted, Ambiguous, Deferred, Rejected, RetryPolicy
from relance_sender.errors import IllegalTransition

from .conftest import NOW

RETRY = RetryPolicy(initial=timedelta(minutes=30), horizon=timedelta(days=4))


def pending(purpose: str = "marketing") -> LedgerRow:
    return ledger.new_row(
        message_id="m-1",
        shop_id="s",
        contact_key="c",
        channel="email",
        purpose="marketing" if purpose == "marketing" else "transactional",
        plan="birthday",
        step="wishes",
        now=NOW,
    )


def sending(purpose: str = "marketing") -> LedgerRow:
    return ledger.claim(pending(purpose), now=NOW, owner="a", address="x@example.org")


def test_claim_moves_pending_to_sending_and_counts_the_attempt() -> None:
    row = sending()
    assert (row.state, row.attempts, row.owner, row.first_attempt_at) == ("sending", 1, "a", NOW)


def test_accepted_is_sent_and_rejected_is_failed() -> None:
    assert ledger.settle(sending(), Accepted("q1"), now=NOW, retry=RETRY).state == "sent"
    failed = ledger.settle(sending(), Rejected("550 5.1.1 no"), now=NOW, retry=RETRY)
    assert (failed.state, failed.last_error) == ("failed", "550 5.1.1 no")


def test_deferred_schedules_a_retry_then_gives_up_past_the_horizon() -> None:
    row = ledger.settle(sending(), Deferred("451 later"), now=NOW, retry=RETRY)
    assert row.state == "pending"
    assert row.next_attempt_at == NOW + timedelta(minutes=30)
    late = NOW + timedelta(days=4)
    again = ledger.claim(row, now=late, owner="a", address="x@example.org")
    gave_up = ledger.settle(again, Deferred("451 later"), now=late, retry=RETRY)
    assert gave_up.state == "failed"
    assert gave_up.last_error is not None and "gave up after 2 attempts" in gave_up.last_error


def test_broken_after_data_is_ambiguous() -> None:
    assert ledger.settle(sending(), Ambiguous("reset"), now=NOW, retry=RETRY).state == "ambiguous"


def test_recovery_never_resends_marketing_but_resends_transactional() -> None:
    assert ledger.recover(sending("marketing"), now=NOW).state == "ambiguous"
    resent = ledger.recover(sending("transactional"), now=NOW)
    assert (resent.state, resent.next_attempt_at) == ("pending", NOW)
    assert ledger.is_due(resent, NOW)


def test_a_sent_message_cannot_be_claimed_again() -> None:
    sent = ledger.settle(sending(), Accepted(), now=NOW, retry=RETRY)
    with pytest.raises(IllegalTransition):
        ledger.claim(sent, now=NOW, owner="a", address="x@example.org")


OUTCOMES = st.sampled_from([Accepted("q"), Rejected("no"), Deferred("later"), Ambiguous("reset")])


@given(st.lists(OUTCOMES, max_size=8))
def test_terminal_states_are_final_and_attempts_only_grow(outcomes: list[object]) -> None:
    row = pending()
    for outcome in outcomes:
        before = row
        if row.state in ledger.TERMINAL:
            with pytest.raises(IllegalTransition):
                ledger.claim(row, now=NOW, owner="a", address="x")
            assert row == before
            continue
        row = ledger.claim(row, now=NOW, owner="a", address="x")
        assert row.attempts == before.attempts + 1
        row = ledger.settle(row, outcome, now=NOW, retry=RETRY)  # type: ignore[arg-type]
        assert row.state in {"pending", "sent", "failed", "ambiguous"}
        assert (before.state, "claim") in TRANSITIONS

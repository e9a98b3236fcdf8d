"""The circuit breaker's state machine (driven by a fake clock) and the backoff / Retry-After rules."""

from __future__ import annotations

import email.utils

import pytest

from tiergate.config import BreakerConfig
from tiergate.errors import InvalidRequest, UpstreamError, UpstreamHTTPError, UpstreamTimeout
from tiergate.tiers.resilience import (
    BreakerState,
    CircuitBreaker,
    backoff_delay,
    is_tier_failure,
    parse_retry_after,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_breaker(threshold: int = 3, reset: float = 10.0) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker(threshold, reset, clock=clock, name="frontier"), clock


def test_opens_after_consecutive_failures_only() -> None:
    breaker, _ = make_breaker(threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # a success in between starts the count again
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()


def test_half_open_lets_exactly_one_trial_through_then_closes_on_success() -> None:
    breaker, clock = make_breaker(threshold=1, reset=10.0)
    breaker.record_failure()
    clock.advance(9.9)
    assert not breaker.allow()
    assert breaker.retry_in() == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()          # the trial
    assert not breaker.allow()      # everyone else waits for its verdict
    assert not breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert all(breaker.allow() for _ in range(5))


def test_failed_trial_opens_again_for_a_full_period() -> None:
    breaker, clock = make_breaker(threshold=2, reset=5.0)
    breaker.record_failure()
    breaker.record_failure()
    clock.advance(5.0)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.advance(4.0)
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 0


def test_lost_trial_is_given_out_again_and_release_returns_it() -> None:
    breaker, clock = make_breaker(threshold=1, reset=5.0)
    breaker.record_failure()
    clock.advance(5.0)
    assert breaker.allow()
    clock.advance(4.9)
    assert not breaker.allow()      # the trial is still out
    clock.advance(0.1)
    assert breaker.allow()          # ...for too long: its task was lost, another trial goes
    breaker.release()               # cancelled: the slot comes back at once
    assert breaker.allow()


def test_late_outcomes_while_open_do_not_change_the_state() -> None:
    breaker, clock = make_breaker(threshold=1, reset=5.0)
    breaker.record_failure()
    breaker.record_success()        # a request let through before the circuit opened
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.advance(5.0)
    assert breaker.allow()


def test_from_config_reset_and_validation() -> None:
    breaker = CircuitBreaker.from_config(BreakerConfig(failure_threshold=1, reset_after_s=60), name="x")
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and "open" in repr(breaker)
    breaker.reset()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1.0)
    with pytest.raises(ValueError):
        CircuitBreaker(1, 0.0)


def test_which_errors_count_against_a_tier() -> None:
    assert is_tier_failure(UpstreamError("down"))
    assert is_tier_failure(UpstreamTimeout("slow"))
    assert is_tier_failure(UpstreamHTTPError("limited", status=429, body=b""))
    assert is_tier_failure(UpstreamHTTPError("broken", status=500, body=b""))
    assert not is_tier_failure(UpstreamHTTPError("bad request", status=400, body=b""))
    assert not is_tier_failure(InvalidRequest("bad field"))
    assert not is_tier_failure(ValueError("ours"))


def test_backoff_is_full_jitter_doubling_up_to_the_cap() -> None:
    assert backoff_delay(1, base=0.25, cap=8.0, rng=lambda: 1.0) == 0.25
    assert backoff_delay(3, base=0.25, cap=8.0, rng=lambda: 1.0) == 1.0
    assert backoff_delay(10, base=0.25, cap=8.0, rng=lambda: 1.0) == 8.0
    assert backoff_delay(500, base=0.25, cap=8.0, rng=lambda: 1.0) == 8.0
    assert backoff_delay(3, base=0.25, cap=8.0, rng=lambda: 0.5) == 0.5
    assert backoff_delay(3, base=0.25, cap=8.0, rng=lambda: 0.0) == 0.0
    for attempt in range(1, 8):
        assert 0.0 <= backoff_delay(attempt, base=0.1, cap=1.0) <= min(1.0, 0.1 * 2 ** (attempt - 1))


def test_retry_after_seconds_and_http_date_are_honoured_and_capped() -> None:
    now = 1_700_000_000.0
    assert backoff_delay(1, 0.25, 8.0, retry_after="3", rng=lambda: 0.0) == 3.0
    assert backoff_delay(1, 0.25, 8.0, retry_after=1.5) == 1.5
    assert backoff_delay(1, 0.25, 8.0, retry_after="120") == 8.0      # capped by backoff_max_s
    date = email.utils.formatdate(now + 4, usegmt=True)
    assert backoff_delay(1, 0.25, 8.0, retry_after=date, now=now) == pytest.approx(4.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert backoff_delay(1, 0.25, 8.0, retry_after=past, now=now) == 0.0
    # unusable hints fall back to jittered backoff
    assert backoff_delay(2, 0.25, 8.0, retry_after="soon", rng=lambda: 1.0) == 0.5
    assert backoff_delay(2, 0.25, 8.0, retry_after="nan", rng=lambda: 1.0) == 0.5


def test_parse_retry_after_edge_cases() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after(" 2 ") == 2.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("inf") is None
    assert parse_retry_after("") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 10) == pytest.approx(10.0)

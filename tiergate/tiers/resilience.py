"""Resilience policies shared by the tiers and the gateway's dispatcher: a circuit breaker and backoff.

    breaker = CircuitBreaker.from_config(tier_config.breaker)
    if not breaker.allow():
        ...                                  # circuit open: use the tier's fallback without calling it
    try:
        result = await tier.complete(body)
    except Exception as exc:
        if is_tier_failure(exc):
            breaker.record_failure()
        else:
            breaker.release()                # the caller's fault (a 400): says nothing about the tier
        raise
    breaker.record_success()

    await asyncio.sleep(backoff_delay(attempt, base=0.25, cap=8.0, retry_after=resp.headers.get("retry-after")))

The breaker is a plain object driven from one event loop (no locks): the dispatcher owns one per tier. Its
clock is injectable so tests step through the state machine without sleeping.
"""

from __future__ import annotations

import email.utils
import enum
import random
import time
from collections.abc import Callable
from typing import Any

from tiergate.errors import UpstreamError, UpstreamHTTPError, UpstreamTimeout


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """closed -> open after `failure_threshold` consecutive failures -> half-open once `reset_after_s` have
    passed, letting ONE trial request through -> closed when it succeeds, open again when it fails.

    A trial whose outcome is never recorded (its task was cancelled) would wedge the breaker half-open, so the
    trial slot is given out again after another `reset_after_s`; `release()` gives it back at once.
    """

    def __init__(self, failure_threshold: int = 5, reset_after_s: float = 30.0, *,
                 clock: Callable[[], float] = time.monotonic, name: str = "") -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_after_s <= 0:
            raise ValueError("reset_after_s must be positive")
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self.name = name
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_at: float | None = None

    @classmethod
    def from_config(cls, config: Any, *, clock: Callable[[], float] = time.monotonic,
                    name: str = "") -> CircuitBreaker:
        """Build from a `tiergate.config.BreakerConfig` (anything with its two fields)."""
        return cls(config.failure_threshold, config.reset_after_s, clock=clock, name=name)

    def __repr__(self) -> str:
        return f"CircuitBreaker(name={self.name!r}, state={self.state.value}, failures={self._failures})"

    @property
    def state(self) -> BreakerState:
        """The current state; an open circuit reads half-open once its trial may go through."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_after_s:
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures counted while closed."""
        return self._failures

    def retry_in(self) -> float:
        """Seconds until an open circuit lets its trial through (0 when a request would be allowed now)."""
        if self._state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self.reset_after_s - self._clock())
        if self._state is BreakerState.HALF_OPEN and self._trial_at is not None:
            return max(0.0, self._trial_at + self.reset_after_s - self._clock())
        return 0.0

    def allow(self) -> bool:
        """May a request go to the tier now? In half-open state only the one trial request gets True."""
        state = self._state
        if state is BreakerState.CLOSED:
            return True
        now = self._clock()
        if state is BreakerState.OPEN:
            if now - self._opened_at < self.reset_after_s:
                return False
            self._state = BreakerState.HALF_OPEN
        elif self._trial_at is not None and now - self._trial_at < self.reset_after_s:
            return False
        self._trial_at = now
        return True

    def record_success(self) -> None:
        """A request succeeded: close the circuit (a late success while open is ignored)."""
        if self._state is BreakerState.OPEN:
            return
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._trial_at = None

    def record_failure(self) -> None:
        """A request failed: count it while closed; a failed trial re-opens the circuit."""
        if self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open()
        elif self._state is BreakerState.HALF_OPEN:
            self._open()

    def release(self) -> None:
        """The allowed request ended with no verdict on the tier (cancelled, or the caller's own error)."""
        if self._state is BreakerState.HALF_OPEN:
            self._trial_at = None

    def reset(self) -> None:
        """Close the circuit by hand (admin action, config reload)."""
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._trial_at = None

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._failures = 0
        self._trial_at = None


def is_tier_failure(exc: BaseException) -> bool:
    """Does this error count against the tier's breaker? Upstream 4xx answers (other than 429) are the
    caller's fault, passed through unchanged, and must not open the circuit for everyone else."""
    if isinstance(exc, UpstreamHTTPError):
        return exc.status >= 500 or exc.status == 429
    return isinstance(exc, UpstreamError | UpstreamTimeout)


def parse_retry_after(value: str | float | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds or an HTTP date; None when absent or invalid."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return max(0.0, float(value))
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive parse means it said so in another way
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0.0, seconds)


def backoff_delay(attempt: int, base: float, cap: float, retry_after: str | float | None = None, *,
                  rng: Callable[[], float] = random.random, now: float | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1 = the first retry).

    Full jitter (uniform in [0, min(cap, base * 2**(attempt-1))]) spreads the retries of many clients that
    failed together. A Retry-After the upstream sent (seconds or an HTTP date) is honoured instead, capped by
    `cap` so a hostile or confused upstream cannot park a request for minutes.
    """
    hinted = parse_retry_after(retry_after, now=now)
    if hinted is not None:
        return min(cap, hinted)
    ceiling = min(cap, base * (2.0 ** min(max(0, attempt - 1), 62)))
    return rng() * ceiling

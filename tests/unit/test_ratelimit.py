"""The failed-login limiter, driven by a fake clock."""

from __future__ import annotations

import pytest

from rmail.errors import RateLimited
from rmail.ratelimit import LoginLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _limiter(clock: FakeClock, **kwargs: int) -> LoginLimiter:
    return LoginLimiter(
        kwargs.pop("max_failures", 3),
        kwargs.pop("window", 60),
        kwargs.pop("lockout", 300),
        clock=clock,
        **kwargs,
    )


def test_account_is_locked_after_max_failures_from_any_ip(clock: FakeClock) -> None:
    limiter = _limiter(clock)
    for i in range(2):
        limiter.failure(f"192.0.2.{i}", "alice@example.test")
        limiter.check("203.0.113.9", "alice@example.test")
    limiter.failure("192.0.2.9", "Alice@Example.test")
    with pytest.raises(RateLimited) as excinfo:
        limiter.check("203.0.113.9", "ALICE@example.test")
    assert excinfo.value.retry_after == pytest.approx(300)
    limiter.check("203.0.113.9", "bob@example.test")


def test_ip_is_locked_after_max_failures_on_any_account(clock: FakeClock) -> None:
    limiter = _limiter(clock)
    for name in ("a", "b", "c"):
        limiter.failure("192.0.2.1", f"{name}@example.test")
    with pytest.raises(RateLimited):
        limiter.check("192.0.2.1", "d@example.test")
    with pytest.raises(RateLimited):
        limiter.check("192.0.2.1", None)
    limiter.check("192.0.2.2", "d@example.test")


def test_lockout_expires(clock: FakeClock) -> None:
    limiter = _limiter(clock)
    for _ in range(3):
        limiter.failure("192.0.2.1", "alice@example.test")
    clock.now += 200
    with pytest.raises(RateLimited) as excinfo:
        limiter.check("192.0.2.1", "alice@example.test")
    assert excinfo.value.retry_after == pytest.approx(100)
    clock.now += 100
    limiter.check("192.0.2.1", "alice@example.test")
    # The counter started afresh: one more failure does not lock again.
    limiter.failure("192.0.2.1", "alice@example.test")
    limiter.check("192.0.2.1", "alice@example.test")


def test_failures_outside_the_window_do_not_count(clock: FakeClock) -> None:
    limiter = _limiter(clock)
    limiter.failure("192.0.2.1", "alice@example.test")
    limiter.failure("192.0.2.1", "alice@example.test")
    clock.now += 61
    limiter.failure("192.0.2.1", "alice@example.test")
    limiter.check("192.0.2.1", "alice@example.test")
    limiter.failure("192.0.2.1", "alice@example.test")
    limiter.failure("192.0.2.1", "alice@example.test")
    with pytest.raises(RateLimited):
        limiter.check("192.0.2.1", "alice@example.test")


def test_success_clears_the_counters(clock: FakeClock) -> None:
    limiter = _limiter(clock)
    limiter.failure("192.0.2.1", "alice@example.test")
    limiter.failure("192.0.2.1", "alice@example.test")
    limiter.success("192.0.2.1", "alice@example.test")
    limiter.failure("192.0.2.1", "alice@example.test")
    limiter.failure("192.0.2.1", "alice@example.test")
    limiter.check("192.0.2.1", "alice@example.test")


def test_success_does_not_lift_a_lockout(clock: FakeClock) -> None:
    limiter = _limiter(clock)
    for _ in range(3):
        limiter.failure("192.0.2.1", "alice@example.test")
    limiter.success("192.0.2.1", "alice@example.test")
    with pytest.raises(RateLimited):
        limiter.check("192.0.2.1", "alice@example.test")


def test_ipv6_is_counted_per_64(clock: FakeClock) -> None:
    limiter = _limiter(clock)
    for i in range(3):
        limiter.failure(f"2001:db8:1:2::{i + 1}", f"u{i}@example.test")
    with pytest.raises(RateLimited):
        limiter.check("2001:db8:1:2:ffff::1", "x@example.test")
    limiter.check("2001:db8:1:3::1", "x@example.test")


def test_ipv4_mapped_ipv6_is_the_ipv4_client(clock: FakeClock) -> None:
    limiter = _limiter(clock)
    for i in range(3):
        limiter.failure("::ffff:192.0.2.1", f"u{i}@example.test")
    with pytest.raises(RateLimited):
        limiter.check("192.0.2.1", "x@example.test")


def test_memory_is_bounded(clock: FakeClock) -> None:
    limiter = _limiter(clock, max_keys=100)
    for i in range(1000):
        limiter.failure(f"10.0.{i // 256}.{i % 256}", f"user{i}@example.test")
    assert len(limiter) <= 100
    # The most recent keys are kept.
    limiter.failure("10.0.3.231", "user999@example.test")
    limiter.failure("10.0.3.231", "user999@example.test")
    with pytest.raises(RateLimited):
        limiter.check(None, "user999@example.test")


def test_stale_entries_are_dropped(clock: FakeClock) -> None:
    limiter = _limiter(clock)
    for i in range(50):
        limiter.failure(f"192.0.2.{i}", None)
    clock.now += 61
    limiter.failure("198.51.100.1", None)
    assert len(limiter) == 1


def test_unknown_ip_and_account_are_not_counted(clock: FakeClock) -> None:
    limiter = _limiter(clock)
    for _ in range(10):
        limiter.failure(None, "")
    limiter.check(None, None)
    assert len(limiter) == 0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        LoginLimiter(0, 60, 300)

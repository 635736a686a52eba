"""The shared WebDAV lock table and checks (rmail.web.davlocks) with a fake clock."""

from __future__ import annotations

from rmail.web.davif import parse_if
from rmail.web.davlocks import LockTable, blocking_lock, if_holds, parse_timeout


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_timeouts_are_parsed_and_capped() -> None:
    assert parse_timeout("Second-60") == 60
    assert parse_timeout("Infinite, Second-5") == 7 * 24 * 3600
    assert parse_timeout("Second-99999999") == 7 * 24 * 3600
    assert parse_timeout(None) == 3600
    assert parse_timeout("garbage") == 3600


def test_lock_expires_after_its_timeout_and_refresh_extends_it() -> None:
    clock = _Clock()
    table = LockTable(clock)
    path = ("calendars", "default", "a.ics")
    lock = table.acquire("u", path, scope="exclusive", deep=False, owner="", timeout=10)
    clock.now += 9
    assert table.covering("u", path) == [lock]
    refreshed = table.refresh("u", lock.token, 10)
    assert refreshed is not None and table.remaining(refreshed) == 10
    clock.now += 10.5
    assert table.covering("u", path) == []
    assert table.get("u", lock.token) is None


def test_blocking_lock_and_if_header() -> None:
    table = LockTable(_Clock())
    coll = ("calendars", "default")
    lock = table.acquire("u", coll, scope="exclusive", deep=False, owner="", timeout=60)
    member = (*coll, "new.ics")
    # A depth-0 lock on the collection guards its membership, not its members' content.
    assert blocking_lock(table, "u", member, set()) is None
    assert blocking_lock(table, "u", member, set(), members=True) == lock
    assert blocking_lock(table, "u", member, {lock.token}, members=True) is None
    # Locks are per user.
    assert blocking_lock(table, "other", member, set(), members=True) is None
    lists = parse_if(f"(<{lock.token}>)")
    assert if_holds(lists, "u", table, lambda tag: coll, lambda p: None)
    assert not if_holds(lists, "u", table, lambda tag: member, lambda p: None)
    etags = parse_if('(["abc"])')
    assert if_holds(etags, "u", table, lambda tag: coll, lambda p: '"abc"')
    assert not if_holds(etags, "u", table, lambda tag: coll, lambda p: None)

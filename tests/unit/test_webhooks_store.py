"""The webhook store (``webhooks.json`` per user) on real files in a temporary directory."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from rmail.config import AuthConfig
from rmail.errors import InvalidInput, NotFound
from rmail.store.accounts import Accounts
from rmail.store.webhooks import EVENT_NAMES, MAX_URL_LENGTH, MAX_WEBHOOKS, Webhooks

CHEAP = AuthConfig(argon2_time_cost=1, argon2_memory_kib=64)
ALICE = "alice@example.test"
BOB = "bob@example.test"


@pytest.fixture
def accounts(tmp_path: Path) -> Accounts:
    acc = Accounts(tmp_path, CHEAP, fsync=False)
    acc.add_domain("example.test")
    acc.add_user(ALICE, "pw")
    acc.add_user(BOB, "pw")
    return acc


@pytest.fixture
def hooks(accounts: Accounts) -> Webhooks:
    return Webhooks(accounts, fsync=False)


def test_a_new_user_has_no_webhooks(hooks: Webhooks) -> None:
    assert hooks.list(ALICE) == []


def test_add_makes_an_id_a_secret_and_defaults_to_every_event(hooks: Webhooks) -> None:
    hook = hooks.add(ALICE, "https://hooks.example.org/rmail")
    assert hook.events == EVENT_NAMES
    assert len(hook.secret) == 64 and int(hook.secret, 16) >= 0
    assert hook.id and hook.created
    assert hooks.list(ALICE) == [hook]


def test_events_are_kept_in_canonical_order_without_duplicates(hooks: Webhooks) -> None:
    hook = hooks.add(ALICE, "http://h.example/", ["flagsChanged", "messageNew", "flagsChanged"])
    assert hook.events == ("messageNew", "flagsChanged")
    assert hook.wants("messageNew") and not hook.wants("messageDeleted")


def test_two_hooks_get_different_ids_and_secrets(hooks: Webhooks) -> None:
    one = hooks.add(ALICE, "https://a.example/")
    two = hooks.add(ALICE, "https://a.example/")
    assert one.id != two.id and one.secret != two.secret


def test_the_file_is_json_in_the_user_dir_readable_by_the_owner_only(
    hooks: Webhooks, accounts: Accounts
) -> None:
    hook = hooks.add(ALICE, "https://a.example/x")
    path = accounts.user_dir(ALICE) / "webhooks.json"
    data = json.loads(path.read_text())
    assert data["webhooks"][0]["secret"] == hook.secret
    assert data["webhooks"][0]["events"] == list(EVENT_NAMES)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_second_store_sees_changes_through_the_cache(hooks: Webhooks, accounts: Accounts) -> None:
    other = Webhooks(accounts, fsync=False)
    assert other.list(ALICE) == []
    hook = hooks.add(ALICE, "https://a.example/")
    assert other.list(ALICE) == [hook]
    hooks.delete(ALICE, hook.id)
    assert other.list(ALICE) == []


def test_delete_removes_only_that_hook(hooks: Webhooks) -> None:
    one = hooks.add(ALICE, "https://a.example/1")
    two = hooks.add(ALICE, "https://a.example/2")
    hooks.delete(ALICE, one.id)
    assert hooks.list(ALICE) == [two]


def test_delete_of_an_unknown_id_is_not_found(hooks: Webhooks) -> None:
    with pytest.raises(NotFound):
        hooks.delete(ALICE, "nope")


def test_users_do_not_share_hooks(hooks: Webhooks) -> None:
    alices = hooks.add(ALICE, "https://a.example/")
    assert hooks.list(BOB) == []
    with pytest.raises(NotFound):
        hooks.delete(BOB, alices.id)
    assert hooks.list(ALICE) == [alices]


def test_an_unknown_user_is_not_found(hooks: Webhooks) -> None:
    with pytest.raises(NotFound):
        hooks.list("carol@example.test")
    with pytest.raises(NotFound):
        hooks.add("carol@example.test", "https://a.example/")


def test_at_most_ten_hooks_per_user(hooks: Webhooks) -> None:
    for n in range(MAX_WEBHOOKS):
        hooks.add(ALICE, f"https://a.example/{n}")
    with pytest.raises(InvalidInput, match="at most"):
        hooks.add(ALICE, "https://a.example/one-more")
    assert len(hooks.list(ALICE)) == MAX_WEBHOOKS
    hooks.add(BOB, "https://a.example/bob")  # the limit is per user


@pytest.mark.parametrize(
    "url",
    [
        "ftp://a.example/",
        "a.example/hook",
        "https:///nohost",
        "http://a.example:port/",
        "https://a.example/with space",
        "https://a.example/\nX-Injected: 1",
        "javascript:alert(1)",
        "",
        "https://a.example/" + "x" * MAX_URL_LENGTH,
    ],
)
def test_bad_urls_are_refused(hooks: Webhooks, url: str) -> None:
    with pytest.raises(InvalidInput):
        hooks.add(ALICE, url)
    assert hooks.list(ALICE) == []


def test_a_url_of_exactly_the_limit_is_accepted(hooks: Webhooks) -> None:
    url = "https://a.example/"
    url += "x" * (MAX_URL_LENGTH - len(url))
    assert hooks.add(ALICE, url).url == url


@pytest.mark.parametrize("events", [[], ["messageNew", "mailArrived"], [1]])
def test_bad_event_lists_are_refused(hooks: Webhooks, events: list[object]) -> None:
    with pytest.raises(InvalidInput):
        hooks.add(ALICE, "https://a.example/", events)


def test_a_damaged_file_is_invalid_input_not_a_crash(hooks: Webhooks, accounts: Accounts) -> None:
    (accounts.user_dir(ALICE) / "webhooks.json").write_text("{not json")
    with pytest.raises(InvalidInput, match="damaged"):
        hooks.list(ALICE)


def test_peek_answers_from_memory_only_for_a_recent_list(hooks: Webhooks) -> None:
    assert hooks.peek(ALICE, 60) is None  # never listed
    assert hooks.list(ALICE) == []
    assert hooks.peek(ALICE, 60) == ()
    assert hooks.peek("Alice@Example.test", 60) == ()  # the same account
    assert hooks.peek(ALICE, -1) is None  # older than max_age
    assert hooks.peek(BOB, 60) is None
    assert hooks.peek("not an address", 60) is None


def test_a_change_through_the_store_is_seen_by_peek_at_once(hooks: Webhooks) -> None:
    hooks.list(ALICE)
    hook = hooks.add(ALICE, "https://hooks.example.org/rmail")
    assert hooks.peek(ALICE, 60) is None  # forgotten: the next look reads the file
    assert hooks.list(ALICE) == [hook]
    assert hooks.peek(ALICE, 60) == (hook,)
    hooks.delete(ALICE, hook.id)
    assert hooks.peek(ALICE, 60) is None

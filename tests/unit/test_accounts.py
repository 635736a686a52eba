"""Accounts, passwords, aliases and the Authenticator, on real files in a temporary directory."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from passlib.hash import sha256_crypt

from rmail.auth import Authenticator, create_user
from rmail.config import AuthConfig
from rmail.errors import (
    AlreadyExists,
    InvalidInput,
    NotFound,
    PermissionDenied,
    RateLimited,
)
from rmail.ratelimit import LoginLimiter
from rmail.store.accounts import Account, Accounts, Recipient

CHEAP = AuthConfig(argon2_time_cost=1, argon2_memory_kib=64)


@pytest.fixture
def accounts(tmp_path: Path) -> Accounts:
    acc = Accounts(tmp_path, CHEAP, fsync=False)
    acc.add_domain("example.test")
    return acc


def _record(accounts: Accounts, address: str) -> dict[str, object]:
    path = accounts.user_dir(address) / "account.json"
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


# ------------------------------------------------------------------ domains


def test_domain_is_created_listed_and_deleted(tmp_path: Path) -> None:
    acc = Accounts(tmp_path, CHEAP, fsync=False)
    acc.add_domain("Example.TEST.")
    assert acc.list_domains() == ["example.test"]
    assert acc.has_domain("EXAMPLE.test")
    assert (tmp_path / "domains/example.test/domain.json").is_file()
    assert json.loads((tmp_path / "domains/example.test/aliases.json").read_text()) == []
    with pytest.raises(AlreadyExists):
        acc.add_domain("example.test")
    acc.delete_domain("example.test")
    assert acc.list_domains() == []
    assert not acc.has_domain("example.test")
    assert [p.name for p in (tmp_path / "domains").iterdir() if not p.name.startswith(".")] == []


def test_domain_with_users_cannot_be_deleted(accounts: Accounts) -> None:
    accounts.add_user("alice@example.test", "pw")
    with pytest.raises(InvalidInput, match="still has users"):
        accounts.delete_domain("example.test")
    accounts.delete_user("alice@example.test")
    accounts.delete_domain("example.test")
    with pytest.raises(NotFound):
        accounts.delete_domain("example.test")


@pytest.mark.parametrize("name", ["", "../x", "a/b", "a\0b", "-bad.test", "x" * 64 + ".test"])
def test_invalid_domain_names_are_refused(accounts: Accounts, name: str) -> None:
    with pytest.raises(InvalidInput):
        accounts.add_domain(name)
    assert not accounts.has_domain(name)


def test_domain_can_be_recreated_after_delete(accounts: Accounts) -> None:
    accounts.delete_domain("example.test")
    accounts.add_domain("example.test")
    accounts.add_user("bob@example.test", "pw")
    assert accounts.user_exists("bob@example.test")


# ------------------------------------------------------------------ users


def test_user_is_created_with_defaults_and_no_hash_exposed(accounts: Accounts) -> None:
    account = accounts.add_user("Alice@Example.Test", "secret")
    assert account.address == "alice@example.test"
    assert (account.admin, account.enabled, account.quota_mb, account.token_version) == (
        False,
        True,
        1024,
        0,
    )
    assert account.created.endswith("+00:00")
    assert not hasattr(account, "password_hash")
    assert "secret" not in repr(account)
    assert accounts.get_user("ALICE@example.test") == account
    record = _record(accounts, "alice@example.test")
    assert str(record["password_hash"]).startswith("$argon2id$")
    assert "secret" not in json.dumps(record)
    assert accounts.user_dir("alice@example.test") == (
        accounts.root / "domains/example.test/users/alice"
    )


@pytest.mark.parametrize(
    "address",
    [
        "../x@example.test",
        "a/b@example.test",
        "a\0b@example.test",
        "x" * 65 + "@example.test",
        "a..b@example.test",
        ".alice@example.test",
        "@example.test",
        "alice",
        "alice@",
        "al ice@example.test",
        "alice@b@example.test",
        "alice+tag@example.test",
        "alice@../example.test",
    ],
)
def test_invalid_user_names_are_refused(accounts: Accounts, address: str) -> None:
    with pytest.raises(InvalidInput):
        accounts.add_user(address, "pw")
    assert not accounts.user_exists(address)


def test_longest_user_name_is_accepted(accounts: Accounts) -> None:
    accounts.add_user("a" * 64 + "@example.test", "pw")
    assert accounts.user_exists("A" * 64 + "@EXAMPLE.TEST")


def test_duplicate_user_is_refused(accounts: Accounts) -> None:
    accounts.add_user("alice@example.test", "pw")
    with pytest.raises(AlreadyExists):
        accounts.add_user("ALICE@example.test", "other")
    accounts.verify_password("alice@example.test", "pw")


def test_user_in_missing_domain_is_refused(accounts: Accounts) -> None:
    with pytest.raises(NotFound):
        accounts.add_user("alice@nowhere.test", "pw")


@pytest.mark.parametrize("password", ["", "x" * 1025, "a\0b", "\udc80"])
def test_invalid_passwords_are_refused(accounts: Accounts, password: str) -> None:
    with pytest.raises(InvalidInput):
        accounts.add_user("alice@example.test", password)


def test_password_limit_counts_utf8_bytes(accounts: Accounts) -> None:
    accounts.add_user("alice@example.test", "é" * 512)  # 1024 bytes
    with pytest.raises(InvalidInput):
        accounts.add_user("bob@example.test", "é" * 513)


@pytest.mark.parametrize("quota", [0, -1, 1048577, True])
def test_invalid_quotas_are_refused(accounts: Accounts, quota: int) -> None:
    with pytest.raises(InvalidInput):
        accounts.add_user("alice@example.test", "pw", quota_mb=quota)


def test_set_user_changes_settings(accounts: Accounts) -> None:
    accounts.add_user("alice@example.test", "pw")
    account = accounts.set_user("alice@example.test", admin=True, quota_mb=5)
    assert (account.admin, account.quota_mb, account.enabled) == (True, 5, True)
    assert accounts.get_user("alice@example.test") == account
    assert accounts.mail_quota_bytes("alice@example.test") == 5 * 1024 * 1024
    with pytest.raises(InvalidInput):
        accounts.set_user("alice@example.test", quota_mb=0)
    with pytest.raises(NotFound):
        accounts.set_user("nobody@example.test", admin=True)


def test_list_users(accounts: Accounts) -> None:
    accounts.add_domain("other.test")
    accounts.add_user("bob@example.test", "pw")
    accounts.add_user("alice@example.test", "pw")
    accounts.add_user("carol@other.test", "pw")
    assert [a.address for a in accounts.list_users("example.test")] == [
        "alice@example.test",
        "bob@example.test",
    ]
    assert [a.address for a in accounts.list_users()] == [
        "alice@example.test",
        "bob@example.test",
        "carol@other.test",
    ]
    with pytest.raises(NotFound):
        accounts.list_users("missing.test")


def test_delete_user_removes_the_directory(accounts: Accounts) -> None:
    accounts.add_user("alice@example.test", "pw")
    user_dir = accounts.user_dir("alice@example.test")
    (user_dir / "mail").mkdir()
    (user_dir / "mail" / "somefile").write_text("x")
    accounts.delete_user("alice@example.test")
    assert not user_dir.exists()
    assert not accounts.user_exists("alice@example.test")
    leftovers = [p.name for p in (accounts.root / "domains/example.test").iterdir()]
    assert not any(name.startswith(".deleted-") for name in leftovers)
    with pytest.raises(NotFound):
        accounts.get_user("alice@example.test")
    with pytest.raises(NotFound):
        accounts.delete_user("alice@example.test")
    with pytest.raises(PermissionDenied):
        accounts.verify_password("alice@example.test", "pw")


def test_missing_user_is_not_found(accounts: Accounts) -> None:
    with pytest.raises(NotFound):
        accounts.get_user("nobody@example.test")
    with pytest.raises(NotFound):
        accounts.user_dir("nobody@example.test")
    with pytest.raises(NotFound):
        accounts.mail_quota_bytes("nobody@example.test")


# ------------------------------------------------------------------ passwords


def test_right_password_logs_in(accounts: Accounts) -> None:
    accounts.add_user("alice@example.test", "correct horse")
    account = accounts.verify_password("ALICE@example.test", "correct horse")
    assert account.address == "alice@example.test"


@pytest.mark.parametrize(
    ("address", "password"),
    [
        ("alice@example.test", "wrong"),
        ("nobody@example.test", "pw"),
        ("alice@missing.test", "pw"),
        ("not an address", "pw"),
        ("alice@example.test", ""),
        ("alice@example.test", "x" * 5000),
    ],
)
def test_bad_credentials_all_say_the_same(accounts: Accounts, address: str, password: str) -> None:
    accounts.add_user("alice@example.test", "pw")
    with pytest.raises(PermissionDenied) as excinfo:
        accounts.verify_password(address, password)
    assert str(excinfo.value) == "invalid credentials"


def test_disabled_account_cannot_log_in_even_when_cached(accounts: Accounts) -> None:
    accounts.add_user("alice@example.test", "pw")
    accounts.verify_password("alice@example.test", "pw")  # now cached
    accounts.set_user("alice@example.test", enabled=False)
    with pytest.raises(PermissionDenied, match=r"^invalid credentials$"):
        accounts.verify_password("alice@example.test", "pw")
    accounts.set_user("alice@example.test", enabled=True)
    accounts.verify_password("alice@example.test", "pw")


def test_password_change_bumps_token_version_and_invalidates_cache(accounts: Accounts) -> None:
    accounts.add_user("alice@example.test", "old")
    accounts.verify_password("alice@example.test", "old")  # cached
    account = accounts.set_password("alice@example.test", "new")
    assert account.token_version == 1
    assert accounts.get_user("alice@example.test").token_version == 1
    with pytest.raises(PermissionDenied):
        accounts.verify_password("alice@example.test", "old")
    assert accounts.verify_password("alice@example.test", "new").token_version == 1
    accounts.set_password("alice@example.test", "newer")
    assert accounts.get_user("alice@example.test").token_version == 2


def test_cache_is_checked_against_the_current_hash(tmp_path: Path) -> None:
    """A second process changing the password must void this process's cached login."""
    ours = Accounts(tmp_path, CHEAP, fsync=False)
    theirs = Accounts(tmp_path, CHEAP, fsync=False)
    ours.add_domain("example.test")
    ours.add_user("alice@example.test", "old")
    ours.verify_password("alice@example.test", "old")  # cached in `ours`
    theirs.set_password("alice@example.test", "new")
    with pytest.raises(PermissionDenied):
        ours.verify_password("alice@example.test", "old")
    ours.verify_password("alice@example.test", "new")


def test_cache_hit_skips_the_hash(accounts: Accounts, monkeypatch: pytest.MonkeyPatch) -> None:
    accounts.add_user("alice@example.test", "pw")
    accounts.verify_password("alice@example.test", "pw")
    calls: list[str] = []
    real = accounts._crypt.verify_and_update

    def counting(password: str, stored: str) -> tuple[bool, str | None]:
        calls.append("x")
        result: tuple[bool, str | None] = real(password, stored)
        return result

    monkeypatch.setattr(accounts._crypt, "verify_and_update", counting)
    accounts.verify_password("alice@example.test", "pw")
    assert calls == []
    with pytest.raises(PermissionDenied):
        accounts.verify_password("alice@example.test", "wrong")
    assert calls == ["x"]


def test_cache_can_be_turned_off(tmp_path: Path) -> None:
    acc = Accounts(tmp_path, AuthConfig(argon2_time_cost=1, argon2_memory_kib=64, cache_seconds=0))
    acc.add_domain("example.test")
    acc.add_user("alice@example.test", "pw")
    acc.verify_password("alice@example.test", "pw")
    assert len(acc._cache) == 0


def test_old_hash_scheme_is_upgraded_on_login(accounts: Accounts) -> None:
    accounts.add_user("alice@example.test", "placeholder")
    path = accounts.user_dir("alice@example.test") / "account.json"
    record = json.loads(path.read_text())
    record["password_hash"] = sha256_crypt.using(rounds=1000).hash("legacy")
    path.write_text(json.dumps(record))
    account = accounts.verify_password("alice@example.test", "legacy")
    assert account.token_version == 0  # an upgrade is not a password change
    upgraded = str(_record(accounts, "alice@example.test")["password_hash"])
    assert upgraded.startswith("$argon2id$")
    assert "m=64,t=1" in upgraded
    accounts.verify_password("alice@example.test", "legacy")
    fresh = Accounts(accounts.root, CHEAP, fsync=False)  # no cache: checks the new hash
    fresh.verify_password("alice@example.test", "legacy")


def test_argon2_cost_change_is_upgraded_on_login(tmp_path: Path) -> None:
    old = Accounts(tmp_path, CHEAP, fsync=False)
    old.add_domain("example.test")
    old.add_user("alice@example.test", "pw")
    new = Accounts(tmp_path, AuthConfig(argon2_time_cost=2, argon2_memory_kib=128), fsync=False)
    new.verify_password("alice@example.test", "pw")
    assert "m=128,t=2" in str(_record(new, "alice@example.test")["password_hash"])


def test_unverifiable_hash_is_denied(accounts: Accounts) -> None:
    accounts.add_user("alice@example.test", "pw")
    path = accounts.user_dir("alice@example.test") / "account.json"
    record = json.loads(path.read_text())
    record["password_hash"] = "garbage"
    path.write_text(json.dumps(record))
    with pytest.raises(PermissionDenied):
        accounts.verify_password("alice@example.test", "pw")


async def test_averify_password_runs_off_the_loop(accounts: Accounts) -> None:
    accounts.add_user("alice@example.test", "pw")
    account = await accounts.averify_password("alice@example.test", "pw")
    assert account.address == "alice@example.test"


# ------------------------------------------------------------------ aliases


@pytest.fixture
def routed(accounts: Accounts) -> Accounts:
    for user in ("alice", "bob", "carol"):
        accounts.add_user(f"{user}@example.test", "pw")
    return accounts


def test_unknown_address_is_not_found(routed: Accounts) -> None:
    with pytest.raises(NotFound):
        routed.resolve("nobody@example.test")
    with pytest.raises(NotFound):
        routed.resolve("alice@elsewhere.test")
    with pytest.raises(InvalidInput):
        routed.resolve("not-an-address")


def test_user_resolves_to_itself_case_insensitively(routed: Accounts) -> None:
    assert routed.resolve("Alice@EXAMPLE.test") == [Recipient("alice@example.test", None, True)]


def test_exact_alias_with_several_targets(routed: Accounts) -> None:
    alias = routed.add_alias("example.test", "Sales@Example.test", "Alice@example.test, bob@x.org")
    assert alias.pattern == "sales@example.test"
    assert alias.target == "alice@example.test,bob@x.org"
    assert routed.resolve("sales@example.test") == [
        Recipient("alice@example.test", None, True),
        Recipient("bob@x.org", None, False),
    ]
    assert routed.list_aliases("example.test") == [alias]


def test_exact_alias_wins_over_user(routed: Accounts) -> None:
    routed.add_alias("example.test", "alice@example.test", "bob@example.test")
    assert routed.resolve("alice@example.test") == [Recipient("bob@example.test")]


def test_alias_to_itself_keeps_a_copy(routed: Accounts) -> None:
    routed.add_alias("example.test", "alice@example.test", "alice@example.test,bob@example.test")
    assert routed.resolve("alice@example.test") == [
        Recipient("alice@example.test"),
        Recipient("bob@example.test"),
    ]


def test_regex_rules_apply_in_file_order_after_users(routed: Accounts) -> None:
    routed.add_alias("example.test", r"support-.*@example\.test", "bob@example.test")
    routed.add_alias("example.test", r".*-team@example\.test", "carol@example.test")
    routed.add_alias("example.test", r"a.*@example\.test", "carol@example.test")
    assert routed.resolve("support-x@example.test") == [Recipient("bob@example.test")]
    assert routed.resolve("support-team@example.test") == [Recipient("bob@example.test")]
    assert routed.resolve("dev-team@example.test") == [Recipient("carol@example.test")]
    assert routed.resolve("alice@example.test") == [Recipient("alice@example.test")]
    assert routed.resolve("anna@example.test") == [Recipient("carol@example.test")]


def test_regex_must_match_the_whole_address(routed: Accounts) -> None:
    routed.add_alias("example.test", "info", "bob@example.test")
    with pytest.raises(NotFound):
        routed.resolve("info@example.test")


def test_catch_all_comes_last(routed: Accounts) -> None:
    routed.add_alias("example.test", "@example.test", "carol@example.test")
    routed.add_alias("example.test", r"sales.*@example\.test", "bob@example.test")
    assert routed.resolve("whatever@example.test") == [Recipient("carol@example.test")]
    assert routed.resolve("sales1@example.test") == [Recipient("bob@example.test")]
    assert routed.resolve("alice@example.test") == [Recipient("alice@example.test")]


def test_plus_addressing(routed: Accounts) -> None:
    routed.add_alias("example.test", "@example.test", "carol@example.test")
    assert routed.resolve("alice+news@example.test") == [
        Recipient("alice@example.test", "news", True)
    ]
    assert routed.resolve("bob+a+b@example.test") == [Recipient("bob@example.test", "a+b")]


def test_plus_addressing_tries_the_full_local_part_first(routed: Accounts) -> None:
    routed.add_alias("example.test", "alice+vip@example.test", "bob@example.test")
    assert routed.resolve("alice+vip@example.test") == [Recipient("bob@example.test")]
    assert routed.resolve("alice+other@example.test") == [Recipient("alice@example.test", "other")]


def test_plus_detail_passes_through_an_alias(routed: Accounts) -> None:
    routed.add_alias("example.test", "sales@example.test", "alice@example.test,x@remote.test")
    assert routed.resolve("sales+eu@example.test") == [
        Recipient("alice@example.test", "eu", True),
        Recipient("x@remote.test", None, False),
    ]


def test_aliases_resolve_recursively(routed: Accounts) -> None:
    routed.add_alias("example.test", "a@example.test", "b@example.test")
    routed.add_alias("example.test", "b@example.test", "c@example.test,alice@example.test")
    routed.add_alias("example.test", "c@example.test", "bob@example.test,alice@example.test")
    assert routed.resolve("a@example.test") == [
        Recipient("bob@example.test"),
        Recipient("alice@example.test"),
    ]


def test_alias_loop_terminates(routed: Accounts) -> None:
    routed.add_alias("example.test", "a@example.test", "b@example.test")
    routed.add_alias("example.test", "b@example.test", "a@example.test")
    with pytest.raises(NotFound):
        routed.resolve("a@example.test")
    routed.add_alias("example.test", "c@example.test", "a@example.test,bob@example.test")
    assert routed.resolve("c@example.test") == [Recipient("bob@example.test")]


def test_alias_chain_depth_is_limited(routed: Accounts) -> None:
    for i in range(20):
        routed.add_alias("example.test", f"l{i}@example.test", f"l{i + 1}@example.test")
    routed.add_alias("example.test", "l20@example.test", "alice@example.test")
    with pytest.raises(NotFound):
        routed.resolve("l0@example.test")
    assert routed.resolve("l15@example.test") == [Recipient("alice@example.test")]


def test_catch_all_loop_terminates(routed: Accounts) -> None:
    routed.add_alias("example.test", "@example.test", "nobody@example.test")
    with pytest.raises(NotFound):
        routed.resolve("x@example.test")


@pytest.mark.parametrize(
    ("pattern", "target"),
    [
        ("(unclosed@example.test", "alice@example.test"),
        ("[a-", "alice@example.test"),
        ("x" * 513, "alice@example.test"),
        ("", "alice@example.test"),
        ("@other.test", "alice@example.test"),
        ("sales@other.test", "alice@example.test"),
        ("sales@example.test", ""),
        ("sales@example.test", "not-an-address"),
        ("sales@example.test", "alice@example.test,bad address@x.org"),
    ],
)
def test_bad_aliases_are_refused(routed: Accounts, pattern: str, target: str) -> None:
    with pytest.raises(InvalidInput):
        routed.add_alias("example.test", pattern, target)
    assert routed.list_aliases("example.test") == []


def test_duplicate_alias_and_delete(routed: Accounts) -> None:
    routed.add_alias("example.test", "sales@example.test", "alice@example.test")
    with pytest.raises(AlreadyExists):
        routed.add_alias("example.test", "SALES@example.test", "bob@example.test")
    routed.delete_alias("example.test", "Sales@example.test")
    assert routed.list_aliases("example.test") == []
    with pytest.raises(NotFound):
        routed.delete_alias("example.test", "sales@example.test")
    with pytest.raises(NotFound):
        routed.add_alias("missing.test", "@missing.test", "alice@example.test")


def test_concurrent_alias_writes_are_not_lost(routed: Accounts) -> None:
    def add(i: int) -> None:
        routed.add_alias("example.test", f"list{i}@example.test", "alice@example.test")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(add, range(40)))
    assert len(routed.list_aliases("example.test")) == 40


def test_alias_file_format(routed: Accounts) -> None:
    routed.add_alias("example.test", "@example.test", "alice@example.test")
    data = json.loads((routed.root / "domains/example.test/aliases.json").read_text())
    assert data == [{"pattern": "@example.test", "target": "alice@example.test"}]


# ------------------------------------------------------------------ auth service


def _authenticator(accounts: Accounts, max_failures: int = 3) -> Authenticator:
    return Authenticator(accounts, LoginLimiter(max_failures, 600, 900))


async def test_login_returns_the_account(accounts: Accounts) -> None:
    accounts.add_user("alice@example.test", "pw")
    account = await _authenticator(accounts).login("alice@example.test", "pw", "192.0.2.1", "imap")
    assert isinstance(account, Account)
    assert account.address == "alice@example.test"


async def test_failed_login_never_logs_the_password(
    accounts: Accounts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    accounts.add_user("alice@example.test", "Sup3rSecret!")
    auth = _authenticator(accounts)
    with pytest.raises(PermissionDenied):
        await auth.login("alice@example.test", "WrongSecret!", "192.0.2.1", "smtp")
    with pytest.raises(PermissionDenied):
        await auth.login("ghost@example.test", "GhostSecret!", "192.0.2.1", "smtp")
    await auth.login("alice@example.test", "Sup3rSecret!", "192.0.2.1", "smtp")
    text = caplog.text
    assert "auth failed protocol=smtp user=alice@example.test ip=192.0.2.1" in text
    for secret in ("Sup3rSecret!", "WrongSecret!", "GhostSecret!"):
        assert secret not in text


async def test_login_is_rate_limited(accounts: Accounts) -> None:
    accounts.add_user("alice@example.test", "pw")
    auth = _authenticator(accounts, max_failures=2)
    for _ in range(2):
        with pytest.raises(PermissionDenied):
            await auth.login("alice@example.test", "wrong", "192.0.2.1", "imap")
    with pytest.raises(RateLimited) as excinfo:
        await auth.login("alice@example.test", "pw", "198.51.100.7", "api")
    assert excinfo.value.retry_after > 0


async def test_create_user_compatibility_wrapper(tmp_path: Path) -> None:
    account = await create_user(tmp_path, "admin", "Example.COM", "password", admin=True)
    assert account.address == "admin@example.com"
    assert account.admin
    acc = Accounts(tmp_path, CHEAP, fsync=False)
    assert acc.list_domains() == ["example.com"]
    acc.verify_password("admin@example.com", "password")
    # The Store facade made the mail folders too.
    assert (acc.user_dir("admin@example.com") / "mail").is_dir()
    with pytest.raises(AlreadyExists):
        await create_user(str(tmp_path), "admin", "example.com", "password")

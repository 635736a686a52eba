"""The ``rmail`` admin commands as a user runs them: a child process, its exit code and output.

Each test gets a config file (``RMAIL_CONFIG``) whose data directory is in ``tmp_path``; the
results are read back through the store API, never by parsing the command's output alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from rmail import config as config_mod
from rmail.auth import create_user
from rmail.config import AuthConfig
from rmail.errors import PermissionDenied
from rmail.store import Store

if TYPE_CHECKING:
    from conftest import MakeConfig

REPO: Path = Path(__file__).resolve().parents[2]
CHEAP = AuthConfig(argon2_time_cost=1, argon2_memory_kib=64)
EX_DATAERR = 65
EX_NOUSER = 67
EX_CONFIG = 78


@dataclass
class Cli:
    """Runs ``python -m rmail`` in ``cwd`` with ``RMAIL_CONFIG`` set to ``config_path``."""

    cwd: Path
    config_path: Path
    root: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RMAIL_")}
        env["RMAIL_CONFIG"] = str(self.config_path)
        return env

    def __call__(
        self, *args: str, stdin: bytes | str = b"", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        result = subprocess.run(
            [sys.executable, "-m", "rmail", *args],
            cwd=self.cwd,
            env=env if env is not None else self.env(),
            input=data,
            capture_output=True,
            timeout=60,
            check=False,
        )
        return subprocess.CompletedProcess(
            result.args,
            result.returncode,
            result.stdout.decode("utf-8", "replace"),
            result.stderr.decode("utf-8", "replace"),
        )

    def ok(self, *args: str, stdin: bytes | str = b"") -> str:
        """Run a command that must succeed; returns its stdout."""
        result = self(*args, stdin=stdin)
        assert result.returncode == 0, f"{args}: {result.returncode}\n{result.stderr}"
        assert "Traceback" not in result.stderr
        return result.stdout

    def fails(self, code: int, *args: str, stdin: bytes | str = b"") -> str:
        """Run a command that must exit with ``code`` and one clean line; returns stderr."""
        result = self(*args, stdin=stdin)
        assert result.returncode == code, f"{args}: {result.returncode}\n{result.stderr}"
        assert "Traceback" not in result.stderr
        assert result.stderr.strip(), "a failure must say why"
        return result.stderr


@pytest.fixture
def cli(tmp_path: Path, make_config: MakeConfig) -> Cli:
    config_path = make_config(tmp_path)
    return Cli(tmp_path, config_path, tmp_path / "data")


@pytest.fixture
def store(cli: Cli) -> Iterator[Store]:
    """The same data directory through the store API (a second process, as it were)."""
    store = Store.open(cli.root, auth=CHEAP, fsync=False)
    yield store
    store.close()


def _inbox(store: Store, address: str, folder: str = "INBOX") -> list[bytes]:
    box = store.mailbox(address).folder(folder)
    return [box.read(meta.uid) for meta in box.refresh().messages()]


# ------------------------------------------------------------------ --config and --data


def test_config_and_data_are_accepted_before_and_after_the_subcommand(
    cli: Cli, tmp_path: Path, make_config: MakeConfig
) -> None:
    other = make_config(tmp_path, _name="other.json", mail_root=str(tmp_path / "other"))
    cli.ok("--config", str(other), "domain", "add", "one.test")
    cli.ok("domain", "add", "two.test", "--config", str(other))
    cli.ok("domain", "--config", str(other), "add", "three.test")
    assert cli.ok("domain", "list", "--config", str(other)).split() == [
        "one.test",
        "three.test",
        "two.test",
    ]
    # --config wins over RMAIL_CONFIG, whose data directory stays untouched.
    assert not cli.root.exists()
    assert cli.ok("domain", "list") == ""

    data = tmp_path / "by-flag"
    cli.ok("--data", str(data), "domain", "add", "four.test")
    cli.ok("domain", "add", "five.test", "--data", "by-flag")  # relative to the cwd
    assert sorted(p.name for p in (data / "domains").glob("*.test")) == ["five.test", "four.test"]
    assert cli.ok("domain", "list", "--data", str(data)).split() == ["five.test", "four.test"]


# ------------------------------------------------------------------ domains


def test_domain_add_list_del_and_del_refused_while_users_exist(cli: Cli, store: Store) -> None:
    assert cli.ok("domain", "add", "Other.TEST") == "added domain other.test\n"
    assert cli.ok("domain", "list").split() == ["other.test"]
    assert cli.fails(1, "domain", "add", "other.test").count("\n") == 1

    cli.ok("user", "add", "zoe@other.test", "--password", "pw")
    err = cli.fails(1, "domain", "del", "other.test")
    assert "still has users" in err
    assert store.accounts.has_domain("other.test")

    cli.ok("user", "del", "zoe@other.test")
    cli.ok("domain", "del", "other.test")
    assert cli.ok("domain", "list") == ""
    assert "no such domain" in cli.fails(1, "domain", "del", "other.test").lower()
    assert "invalid domain" in cli.fails(1, "domain", "add", "bad domain!")


# ------------------------------------------------------------------ users


def test_user_add_reads_the_password_from_stdin_or_the_option(cli: Cli, store: Store) -> None:
    out = cli.ok("user", "add", "alice@example.test", stdin="from stdin\n")
    assert out == "added user alice@example.test\n"
    cli.ok("user", "add", "Bob@Example.test", "--password", "from option", "--admin")
    assert store.accounts.verify_password("alice@example.test", "from stdin").address
    bob = store.accounts.verify_password("bob@example.test", "from option")
    assert bob.admin
    assert "exists" in cli.fails(1, "user", "add", "alice@example.test", "--password", "x")
    assert "no password" in cli.fails(1, "user", "add", "carol@example.test", stdin="")
    # A new user has INBOX and the special-use folders.
    names = store.mailbox("alice@example.test").folder_names()
    assert {"INBOX", "Drafts", "Sent", "Trash", "Junk", "Archive"} <= set(names)


@pytest.mark.parametrize("address", ["../x@example.test", "../x", "a/b@example.test"])
def test_user_add_refuses_a_bad_name_cleanly(cli: Cli, store: Store, address: str) -> None:
    err = cli.fails(1, "user", "add", address, "--password", "pw")
    assert err.startswith("rmail user: invalid"), err
    assert err.count("\n") == 1
    assert store.accounts.list_users() == []
    assert [p for p in cli.cwd.rglob("x") if p.is_dir()] == []


def test_user_add_with_a_bad_address_creates_no_domain(cli: Cli, store: Store) -> None:
    cli.fails(1, "user", "add", "nodomain", "--password", "pw")
    cli.fails(1, "user", "add", "Bad Name@new.test", "--password", "pw")
    assert store.accounts.list_domains() == []


def test_user_list_and_passwd(cli: Cli, store: Store) -> None:
    cli.ok("user", "add", "alice@example.test", "--password", "old-pw")
    cli.ok("user", "add", "bob@example.test", "--password", "pw", "--quota-mb", "7")
    listing = cli.ok("user", "list").splitlines()
    assert listing == ["alice@example.test\tquota=1024MB", "bob@example.test\tquota=7MB"]
    assert cli.ok("user", "list", "example.test") == "\n".join(listing) + "\n"

    before = store.accounts.get_user("alice@example.test").token_version
    cli.ok("user", "passwd", "alice@example.test", stdin="new-pw\n")
    after = store.accounts.get_user("alice@example.test")
    assert after.token_version == before + 1
    with pytest.raises(PermissionDenied):
        store.accounts.verify_password("alice@example.test", "old-pw")
    store.accounts.verify_password("alice@example.test", "new-pw")
    assert "no such user" in cli.fails(
        1, "user", "passwd", "nobody@example.test", "--password", "x"
    )
    cli.ok("user", "passwd", "alice@example.test", "--password", "newer-pw")
    assert store.accounts.get_user("alice@example.test").token_version == before + 2


def test_user_set_and_del(cli: Cli, store: Store) -> None:
    cli.ok("user", "add", "bob@example.test", "--password", "pw")
    out = cli.ok("user", "set", "bob@example.test", "--admin", "yes", "--quota-mb", "5")
    assert "admin=True" in out
    bob = store.accounts.get_user("bob@example.test")
    assert (bob.admin, bob.quota_mb, bob.enabled) == (True, 5, True)
    cli.ok("user", "set", "bob@example.test", "--enabled", "no")
    assert cli.ok("user", "list").splitlines() == ["bob@example.test\tquota=5MB\tadmin disabled"]

    cli.ok("user", "del", "bob@example.test")
    assert not store.accounts.user_exists("bob@example.test")
    assert not (cli.root / "domains/example.test/users/bob").exists()
    assert "no such user" in cli.fails(1, "user", "del", "bob@example.test")
    assert "no such user" in cli.fails(1, "user", "set", "bob@example.test", "--admin", "no")


# ------------------------------------------------------------------ aliases


def test_alias_add_list_del_and_delivery_through_alias_and_catch_all(
    cli: Cli, store: Store
) -> None:
    cli.ok("user", "add", "carol@example.test", "--password", "pw")
    cli.ok("alias", "add", "example.test", "sales@example.test", "carol@example.test")
    cli.ok("alias", "add", "example.test", "@example.test", "carol@example.test")
    assert cli.ok("alias", "list", "example.test").splitlines() == [
        "sales@example.test\tcarol@example.test",
        "@example.test\tcarol@example.test",
    ]
    assert "exists" in cli.fails(
        1, "alias", "add", "example.test", "sales@example.test", "carol@example.test"
    )

    cli.ok("deliver", "sales@example.test", stdin="Subject: via alias\n\nx\n")
    cli.ok("deliver", "anyone@example.test", stdin="Subject: via catch-all\n\nx\n")
    subjects = [m.split(b"\r\n")[0] for m in _inbox(store, "carol@example.test")]
    assert subjects == [b"Subject: via alias", b"Subject: via catch-all"]

    cli.ok("alias", "del", "example.test", "@example.test")
    cli.fails(EX_NOUSER, "deliver", "anyone@example.test", stdin="Subject: lost\n\nx\n")
    cli.ok("alias", "del", "example.test", "sales@example.test")
    assert cli.ok("alias", "list", "example.test") == ""
    assert "no alias" in cli.fails(1, "alias", "del", "example.test", "sales@example.test")
    assert len(_inbox(store, "carol@example.test")) == 2


# ------------------------------------------------------------------ deliver


def test_deliver_stores_crlf_with_return_path(cli: Cli, store: Store) -> None:
    cli.ok("user", "add", "carol@example.test", "--password", "pw")
    out = cli.ok(
        "deliver",
        "carol@example.test",
        "--from",
        "sender@remote.test",
        stdin=b"Subject: lf\n\nline one\nline two\n",
    )
    assert "carol@example.test: delivered to carol@example.test INBOX uid=1" in out
    (stored,) = _inbox(store, "carol@example.test")
    assert stored == (
        b"Return-Path: <sender@remote.test>\r\nSubject: lf\r\n\r\nline one\r\nline two\r\n"
    )


def test_deliver_exit_codes_for_unknown_mixed_and_empty(cli: Cli, store: Store) -> None:
    cli.ok("user", "add", "carol@example.test", "--password", "pw")
    err = cli.fails(EX_NOUSER, "deliver", "nobody@example.test", stdin="Subject: a\n\nx\n")
    assert "nobody@example.test" in err
    cli.fails(EX_NOUSER, "deliver", "x@not-hosted.test", stdin="Subject: a\n\nx\n")

    result = cli("deliver", "carol@example.test", "nobody@example.test", stdin="Subject: b\n\nx\n")
    assert result.returncode == EX_NOUSER
    assert "delivered to carol@example.test" in result.stdout
    assert "nobody@example.test" in result.stderr
    assert len(_inbox(store, "carol@example.test")) == 1

    cli.fails(EX_DATAERR, "deliver", "carol@example.test", stdin="")
    cli.fails(EX_DATAERR, "deliver", "carol@example.test", stdin="\n \n")
    assert len(_inbox(store, "carol@example.test")) == 1


def test_deliver_plus_address_goes_to_the_folder_when_it_exists(cli: Cli, store: Store) -> None:
    cli.ok("user", "add", "carol@example.test", "--password", "pw")
    out = cli.ok("deliver", "carol+lists@example.test", stdin="Subject: one\n\nx\n")
    assert "INBOX" in out
    store.mailbox("carol@example.test").create_folder("lists")
    out = cli.ok("deliver", "carol+Lists@example.test", stdin="Subject: two\n\nx\n")
    assert "carol@example.test lists uid=1" in out
    assert len(_inbox(store, "carol@example.test")) == 1
    assert len(_inbox(store, "carol@example.test", "lists")) == 1


def test_deliver_over_quota_stores_nothing(cli: Cli, store: Store) -> None:
    cli.ok("user", "add", "carol@example.test", "--password", "pw", "--quota-mb", "1")
    big = b"Subject: big\n\n" + (b"x" * 76 + b"\n") * (2 * 1024 * 1024 // 77)
    result = cli("deliver", "carol@example.test", stdin=big)
    assert result.returncode not in (0, EX_NOUSER)
    assert "quota" in result.stderr.lower()
    assert "Traceback" not in result.stderr
    assert _inbox(store, "carol@example.test") == []
    mail = store.accounts.user_dir("carol@example.test") / "mail"
    assert [p for sub in ("new", "cur", "tmp") for p in (mail / sub).iterdir()] == []


# ------------------------------------------------------------------ check


def test_check_is_ok_then_reports_a_missing_message_file(cli: Cli, store: Store) -> None:
    cli.ok("user", "add", "carol@example.test", "--password", "pw")
    cli.ok("deliver", "carol@example.test", stdin="Subject: a\n\nx\n")
    cli.ok("deliver", "carol@example.test", stdin="Subject: b\n\nx\n")
    assert cli.ok("check").startswith("ok:")

    inbox = store.mailbox("carol@example.test").folder("INBOX")
    victim = inbox.refresh().get(2)
    inbox.message_path(victim).unlink()
    result = cli("check")
    assert result.returncode == 1
    assert "carol@example.test INBOX: UID 2 has no message file" in result.stdout
    assert "UID 1" not in result.stdout


# ------------------------------------------------------------------ init


def test_init_writes_a_config_that_loads_and_needs_force_to_overwrite(
    cli: Cli, tmp_path: Path
) -> None:
    target = tmp_path / "new" / "config.json"
    target.parent.mkdir()
    out = cli.ok("init", str(target))
    assert str(target) in out
    loaded = config_mod.load(target, env={})
    assert loaded.replace(source=None) == config_mod.Config()

    target.write_text("{}")
    err = cli.fails(1, "init", str(target))
    assert "--force" in err
    assert target.read_text() == "{}"
    cli.ok("init", str(target), "--force")
    assert json.loads(target.read_text()) == json.loads(config_mod.example_json())


def test_init_force_replaces_a_broken_config_json_in_the_cwd(cli: Cli, tmp_path: Path) -> None:
    """The way out of a broken ./config.json is ``rmail init --force``; it must not need it."""
    broken = tmp_path / "config.json"
    broken.write_text('{"no_such_option": 1}')
    env = {k: v for k, v in cli.env().items() if k != "RMAIL_CONFIG"}
    result = cli("init", "--force", env=env)
    assert result.returncode == 0, result.stderr
    config_mod.load(broken, env={})


def test_print_example_and_reference_match_the_committed_files(cli: Cli) -> None:
    assert cli.ok("init", "--print-example") == (REPO / "config.json.example").read_text()
    assert cli.ok("init", "--print-reference") == (REPO / "docs" / "configuration.md").read_text()


# ------------------------------------------------------------------ the original API


async def test_auth_create_user_makes_a_working_admin(tmp_path: Path) -> None:
    root = tmp_path / "mailstore"
    account = await create_user(str(root), "admin", "example.com", "pw", admin=True)
    assert (account.address, account.admin, account.enabled) == ("admin@example.com", True, True)

    store = Store.open(root)
    try:
        assert store.accounts.list_domains() == ["example.com"]
        assert store.accounts.verify_password("admin@example.com", "pw").admin
        mailbox = store.mailbox("admin@example.com")
        assert {"INBOX", "Drafts", "Sent", "Trash", "Junk", "Archive"} <= set(
            mailbox.folder_names()
        )
        assert mailbox.special_use()["Sent"] == "\\Sent"
        mailbox.folder("INBOX").append(b"Subject: hi\r\n\r\nhello\r\n")
    finally:
        store.close()

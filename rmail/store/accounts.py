"""Domains, users, passwords and aliases: everything under ``{mail_root}/domains/``.

This module owns the account records and nothing inside a user's mail, calendars or drive
(those belong to ``maildir.py``, ``calendars.py`` and ``drive.py``; the Store facade creates
them beside the account). It knows nothing of sockets or protocols: every method is blocking
file I/O, safe to call from several threads, and async callers run it in
``asyncio.to_thread`` (:meth:`Accounts.averify_password` does so for the slow hash).

On-disk layout::

    {mail_root}/domains/.lock                       serializes creating and deleting domains
    {mail_root}/domains/{domain}/domain.json        {"created": iso, ...settings}
    {mail_root}/domains/{domain}/aliases.json       [{"pattern": ..., "target": ...}, ...]
    {mail_root}/domains/{domain}/.lock              serializes writes inside the domain
    {mail_root}/domains/{domain}/users/{user}/account.json
        {"password_hash", "enabled", "admin", "quota_mb", "created", "token_version"}

Rules:

- every write is :func:`fsio.atomic_write_json` under the domain's :class:`fsio.FileLock`
  (lock order: the ``domains/.lock`` first, then a domain's lock); reads take no lock;
- a domain or user directory appears complete or not at all: it is built under a hidden
  ``.new-*`` name and renamed into place; deletion renames it aside to ``.deleted-*`` first;
- names from clients are validated (:func:`normalize_address`) before they touch a path;
- reads are cached in memory (other processes may write the same files): ``account.json``
  and ``aliases.json`` are reused while their ``stat`` (mtime_ns, size, inode) is unchanged
  (local delivery checks at most every ``REVALIDATE_AFTER`` seconds; logins and every
  read-modify-write check each time), and dropped on our own writes; a
  positive :meth:`Accounts.has_domain` answer is trusted for ``DOMAIN_TTL`` seconds (a
  domain deleted by another process still looks hosted for that long, which only turns its
  "no such domain" into "no such user");
- the password hash never leaves this module: :class:`Account` does not carry it, the
  verified-credentials cache keys on an HMAC and never holds a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

from passlib.context import CryptContext
from passlib.exc import MissingBackendError

from rmail.config import AuthConfig
from rmail.errors import (
    AlreadyExists,
    InvalidInput,
    NotFound,
    PermissionDenied,
    RmailError,
    TemporaryFailure,
)
from rmail.store import fsio

__all__ = [
    "DEFAULT_QUOTA_MB",
    "Account",
    "Accounts",
    "Alias",
    "Recipient",
    "check_new_user_fields",
    "normalize_address",
    "normalize_domain",
]

logger = logging.getLogger(__name__)

DEFAULT_QUOTA_MB: Final = 1024
MAX_QUOTA_MB: Final = 1048576  # 1 TiB
MAX_PASSWORD_BYTES: Final = 1024
MAX_ALIAS_PATTERN: Final = 512
# RFC 5321 §4.5.3.1.1 (local part 64 octets), §4.5.3.1.2 (domain 255 octets); the practical
# limit for a whole path is 254 (RFC 3696 errata 1690).
MAX_LOCAL_PART: Final = 64
MAX_ADDRESS: Final = 254
# How far alias targets are followed before the chain is considered broken (Postfix uses 100
# for virtual_alias_recursion_limit; a mail server of one process needs far less).
MAX_ALIAS_DEPTH: Final = 8
# Entries in the verified-credentials cache; oldest are dropped beyond this.
_CACHE_MAX: Final = 10000
# Parsed account.json / aliases.json files kept in memory (stat-validated); oldest dropped.
_FILE_CACHE_MAX: Final = 10000
# Local delivery (resolve and get_user with max_age) uses a cached account.json/aliases.json
# checked less than this many seconds ago without a new stat, so it sees what another process
# wrote at most this late. Everything else (logins, every read-modify-write) checks each time.
# (A named constant rather than a config key: config.py is not ours to change here.)
REVALIDATE_AFTER: Final = 0.1
# How long a positive has_domain answer is trusted without looking at the disk again.
# (A named constant rather than a config key: config.py is not ours to change here.)
DOMAIN_TTL: Final = 2.0
_DOMAIN_CACHE_MAX: Final = 1024

_USER_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_LABEL_RE: Final = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# A dot-atom local part (RFC 5322 §3.2.3 atext plus "."), for alias targets that may be remote.
_LOCAL_RE: Final = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")
# An alias pattern is an exact address only if its local part has no regex syntax besides
# "." and "+" (read literally); anything else that is not "@domain" is a regex.
_LITERAL_LOCAL_RE: Final = re.compile(r"^[a-z0-9._+-]{1,64}$")

# Results of the pure name normalizers, by the string as given (they run several times per
# message on the delivery path); each is emptied when it reaches _MEMO_MAX entries.
_MEMO_MAX: Final = 4096
_V = TypeVar("_V")
_DOMAIN_MEMO: dict[str, str] = {}
_ADDRESS_MEMO: dict[str, tuple[str, str]] = {}
_ANY_ADDRESS_MEMO: dict[str, tuple[str, str]] = {}

_ACCOUNT_FILE: Final = "account.json"
_DOMAIN_FILE: Final = "domain.json"
_ALIASES_FILE: Final = "aliases.json"
_LOCK_FILE: Final = ".lock"


@dataclass(frozen=True, slots=True)
class Account:
    """One mailbox owner, as callers see it (never with the password hash).

    Attributes:
        username: the local part, lowercase.
        domain: the domain, lowercase.
        admin: may use the admin API and CLI-equivalent operations.
        enabled: a disabled account cannot log in and receives no mail.
        quota_mb: mail quota in MiB.
        created: ISO-8601 UTC time of creation.
        token_version: bumped by a password change; tokens carrying an older one are void.
    """

    username: str
    domain: str
    admin: bool
    enabled: bool
    quota_mb: int
    created: str
    token_version: int

    @property
    def address(self) -> str:
        """``user@domain``."""
        return f"{self.username}@{self.domain}"


@dataclass(frozen=True, slots=True)
class Alias:
    """One rule of a domain's ``aliases.json``.

    Attributes:
        pattern: ``user@domain`` (exact), ``@domain`` (catch-all) or a regex matched with
            ``re.fullmatch`` against the whole lowercase address.
        target: comma-separated addresses, lowercase.
    """

    pattern: str
    target: str

    @property
    def targets(self) -> list[str]:
        """The target addresses, in order."""
        return [t for t in (part.strip() for part in self.target.split(",")) if t]


@dataclass(frozen=True, slots=True)
class Recipient:
    """Where mail for an address really goes.

    Attributes:
        address: the local user (``local`` true) or a remote address to relay to.
        detail: the ``+detail`` of a plus-address, for local users only.
        local: true for a user of this server, false for a remote target of an alias.
    """

    address: str
    detail: str | None = None
    local: bool = True


def _memo(cache: dict[str, _V], key: str, value: _V) -> _V:
    """Remember a pure function's result (bounded: emptied when full); returns ``value``."""
    if len(cache) >= _MEMO_MAX:
        cache.clear()
    cache[key] = value
    return value


def normalize_domain(domain: str) -> str:
    """Lowercase ``domain``, drop a trailing dot and check it is a host name.

    Raises:
        InvalidInput: not an ASCII host name (IDNs must be given in punycode).
    """
    if not isinstance(domain, str):
        raise InvalidInput("domain must be a string")
    known = _DOMAIN_MEMO.get(domain)
    if known is not None:
        return known
    name = domain.strip().lower().rstrip(".")
    labels = name.split(".")
    if not (0 < len(name) <= 253 and all(_LABEL_RE.match(label) for label in labels)):
        raise InvalidInput(f"invalid domain name {domain[:100]!r} (IDNs must use punycode)")
    return _memo(_DOMAIN_MEMO, domain, name)


def _check_username(user: str) -> str:
    if not _USER_RE.match(user) or ".." in user:
        raise InvalidInput(
            f"invalid user name {user[:100]!r}: 1-64 characters a-z 0-9 . _ -, starting with a "
            "letter or digit, no '..'"
        )
    return user


def normalize_address(address: str) -> tuple[str, str]:
    """Split a local account address into lowercase ``(user, domain)``.

    Raises:
        InvalidInput: not ``user@domain`` with a valid user name and domain.
    """
    if not isinstance(address, str):
        raise InvalidInput("address must be a string")
    known = _ADDRESS_MEMO.get(address)
    if known is not None:
        return known
    user, at, domain = address.strip().lower().partition("@")
    if not at or "@" in domain:
        raise InvalidInput(f"invalid address {address[:100]!r}: expected user@domain")
    return _memo(_ADDRESS_MEMO, address, (_check_username(user), normalize_domain(domain)))


def _split_any_address(address: str) -> tuple[str, str]:
    """Split any deliverable address (local or remote) into lowercase ``(local, domain)``."""
    if not isinstance(address, str):
        raise InvalidInput("address must be a string")
    known = _ANY_ADDRESS_MEMO.get(address)
    if known is not None:
        return known
    text = address.strip().lower()
    local, at, domain = text.rpartition("@")
    if not at or len(text) > MAX_ADDRESS or not _LOCAL_RE.match(local):
        raise InvalidInput(f"invalid address {address[:100]!r}")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise InvalidInput(f"invalid address {address[:100]!r}: misplaced '.'")
    return _memo(_ANY_ADDRESS_MEMO, address, (local, normalize_domain(domain)))


def _check_password(password: str) -> bytes:
    if not isinstance(password, str):
        raise InvalidInput("password must be a string")
    try:
        data = password.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("password is not valid UTF-8") from None
    if not 1 <= len(data) <= MAX_PASSWORD_BYTES:
        raise InvalidInput(f"password must be 1 to {MAX_PASSWORD_BYTES} bytes of UTF-8")
    # SASL PLAIN (RFC 4616 §2) separates fields with NUL: such a password could never log in.
    if "\0" in password:
        raise InvalidInput("password must not contain NUL")
    return data


def _check_quota(quota_mb: object) -> int:
    if isinstance(quota_mb, bool) or not isinstance(quota_mb, int):
        raise InvalidInput("quota_mb must be a whole number")
    if not 1 <= quota_mb <= MAX_QUOTA_MB:
        raise InvalidInput(f"quota_mb must be between 1 and {MAX_QUOTA_MB}")
    return quota_mb


def check_new_user_fields(password: str, quota_mb: object) -> None:
    """Raise InvalidInput when a new user's password or quota is not acceptable."""
    _check_password(password)
    _check_quota(quota_mb)


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false")
    return value


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _account_from_record(user: str, domain: str, record: dict[str, Any]) -> Account:
    """Build an :class:`Account`, tolerating hand-edited records with missing fields."""
    quota = record.get("quota_mb", DEFAULT_QUOTA_MB)
    token_version = record.get("token_version", 0)
    return Account(
        username=user,
        domain=domain,
        admin=record.get("admin") is True,
        enabled=record.get("enabled", True) is not False,
        quota_mb=quota
        if isinstance(quota, int) and not isinstance(quota, bool)
        else DEFAULT_QUOTA_MB,
        created=str(record.get("created", "")),
        token_version=token_version if isinstance(token_version, int) else 0,
    )


_T = TypeVar("_T")
_StatKey = tuple[int, int, int]


def _stat_key(st: os.stat_result) -> _StatKey:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class _FileCache(Generic[_T]):
    """Parsed JSON files, reused while the file's ``stat`` (mtime_ns, size, inode) holds.

    A hit costs one ``stat``; a caller that accepts a little staleness (``max_age``) may
    skip even that while the entry was checked recently. Writers replace these files by
    rename (a new inode) or, when edited by hand, change the mtime and usually the size, so a
    change by another process is seen on the next check; our own writes call :meth:`forget`.
    The key is taken with ``fstat`` on the descriptor that is read, so a cached value is
    never newer than its key: a change racing the read only causes one more read later.
    Thread-safe; bounded (oldest entries dropped).
    """

    def __init__(self, parse: Callable[[Path, Any], _T], max_entries: int = _FILE_CACHE_MAX):
        self._parse = parse
        self._max = max_entries
        # path -> (stat key, parsed value, monotonic time of the last check)
        self._entries: dict[str, tuple[_StatKey, _T, float]] = {}
        self._guard = threading.Lock()

    def get(self, path: Path, max_age: float = 0.0) -> _T:
        """The parsed content of ``path``; with ``max_age``, a copy checked against the
        disk less than that many seconds ago is returned without a new ``stat``.

        Raises:
            FileNotFoundError, NotADirectoryError: no such file.
            OSError, ValueError: unreadable or not JSON (the parser may raise more).
        """
        name = str(path)
        now = time.monotonic()
        entry = self._entries.get(name)  # a dict read is atomic under the GIL
        if entry is not None and now - entry[2] < max_age:
            return entry[1]
        try:
            key = _stat_key(os.stat(name))
        except (FileNotFoundError, NotADirectoryError):
            self.forget(path)
            raise
        if entry is not None and entry[0] == key:
            with self._guard:
                if self._entries.get(name) is entry:
                    self._entries[name] = (key, entry[1], now)
            return entry[1]
        with open(name, "rb") as f:
            key = _stat_key(os.fstat(f.fileno()))
            raw = f.read()
        value = self._parse(path, json.loads(raw))
        with self._guard:
            self._entries.pop(name, None)
            while len(self._entries) >= self._max:
                del self._entries[next(iter(self._entries))]
            self._entries[name] = (key, value, now)
        return value

    def forget(self, path: Path) -> None:
        with self._guard:
            self._entries.pop(str(path), None)

    def clear(self) -> None:
        with self._guard:
            self._entries.clear()


@dataclass(frozen=True, slots=True)
class _AliasTable:
    """A domain's alias rules, parsed once per version of ``aliases.json``."""

    rules: tuple[Alias, ...]
    exact: dict[str, Alias]


def _parse_record(path: Path, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        logger.error("account record is not an object path=%s", path)
        raise TemporaryFailure("the account record is unreadable")
    return raw


def _parse_aliases(path: Path, raw: Any) -> _AliasTable:
    if not isinstance(raw, list):
        logger.error("alias list is not a list path=%s", path)
        raise TemporaryFailure("the alias list is unreadable")
    rules = tuple(
        Alias(str(item["pattern"]), str(item["target"]))
        for item in raw
        if isinstance(item, dict) and "pattern" in item and "target" in item
    )
    exact = {a.pattern: a for a in rules if _literal_address(a.pattern) is not None}
    return _AliasTable(rules, exact)


class Accounts:
    """The account database of one ``mail_root``.

    Blocking and thread-safe. Every failure is one of the ``rmail.errors`` types; no method
    returns ``None`` to mean "not there".
    """

    def __init__(self, root: Path, auth: AuthConfig, *, fsync: bool = True) -> None:
        """Open (and, on first write, create) the account database under ``root``.

        Args:
            root: ``mail_root``.
            auth: hash cost and cache lifetime.
            fsync: fsync every write (turn off only for throwaway data and tests).
        """
        self.root = Path(root)
        self.domains_dir = self.root / "domains"
        self.auth = auth
        self.fsync = fsync
        self._locks: dict[str, fsio.FileLock] = {}
        self._locks_guard = threading.Lock()
        self._root_lock: fsio.FileLock | None = None
        # parallelism 1: one request, one core; concurrency comes from many requests.
        self._crypt = CryptContext(
            schemes=["argon2", "bcrypt", "sha512_crypt", "sha256_crypt"],
            deprecated="auto",
            argon2__time_cost=auth.argon2_time_cost,
            argon2__memory_cost=auth.argon2_memory_kib,
            argon2__parallelism=1,
        )
        self._dummy_hash: str | None = None
        self._cache_key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, tuple[float, str, str]] = OrderedDict()
        self._cache_guard = threading.Lock()
        self._records: _FileCache[dict[str, Any]] = _FileCache(_parse_record)
        self._alias_tables: _FileCache[_AliasTable] = _FileCache(_parse_aliases)
        self._path_memo: dict[tuple[str, ...], Path] = {}
        # has_domain: the name as asked -> monotonic expiry; positive answers only.
        self._domains: dict[str, float] = {}
        self._domains_guard = threading.Lock()

    # ----------------------------------------------------------------- paths and locks

    def _domain_dir(self, domain: str) -> Path:
        path = self._path_memo.get(("dir", domain))
        if path is None:
            path = self._remember_path(("dir", domain), fsio.safe_join(self.domains_dir, domain))
        return path

    def _user_path(self, user: str, domain: str) -> Path:
        path = self._path_memo.get(("user", domain, user))
        if path is None:
            path = fsio.safe_join(self.domains_dir, domain, "users", user)
            path = self._remember_path(("user", domain, user), path)
        return path

    def _account_file(self, user: str, domain: str) -> Path:
        path = self._path_memo.get(("account", domain, user))
        if path is None:
            path = self._user_path(user, domain) / _ACCOUNT_FILE
            path = self._remember_path(("account", domain, user), path)
        return path

    def _remember_path(self, key: tuple[str, ...], path: Path) -> Path:
        """Paths are pure functions of checked names: kept to spare pathlib and safe_join."""
        if len(self._path_memo) >= _FILE_CACHE_MAX:
            self._path_memo.clear()
        self._path_memo[key] = path
        return path

    def _domain_lock(self, domain: str) -> fsio.FileLock:
        with self._locks_guard:
            lock = self._locks.get(domain)
            if lock is None:
                lock = fsio.FileLock(self._domain_dir(domain) / _LOCK_FILE)
                self._locks[domain] = lock
            return lock

    @contextlib.contextmanager
    def _locked_domain(self, domain: str) -> Iterator[Path]:
        """Hold the domain's lock; yields its directory.

        Raises:
            NotFound: the domain does not exist (or was deleted while we waited).
        """
        ddir = self._domain_dir(domain)
        if not (ddir / _DOMAIN_FILE).is_file():
            raise NotFound(f"no such domain {domain}")
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self._domain_lock(domain).hold())
            except FileNotFoundError:
                # The lock file lives in the domain directory, which was just removed.
                raise NotFound(f"no such domain {domain}") from None
            if not (ddir / _DOMAIN_FILE).is_file():
                raise NotFound(f"no such domain {domain}")
            yield ddir

    @contextlib.contextmanager
    def _locked_root(self) -> Iterator[None]:
        self.domains_dir.mkdir(parents=True, exist_ok=True)
        with self._locks_guard:
            if self._root_lock is None:
                self._root_lock = fsio.FileLock(self.domains_dir / _LOCK_FILE)
            lock = self._root_lock
        with lock.hold():
            yield

    def _write_json(self, path: Path, value: Any) -> None:
        try:
            fsio.atomic_write_json(path, value, fsync=self.fsync)
        finally:
            self._records.forget(path)
            self._alias_tables.forget(path)

    def _read_cached(
        self, cache: _FileCache[_T], path: Path, what: str, max_age: float = 0.0
    ) -> _T:
        try:
            return cache.get(path, max_age)
        except (FileNotFoundError, NotADirectoryError):
            raise
        except (OSError, ValueError) as exc:
            logger.error("unreadable %s path=%s error=%s", what, path, exc)
            raise TemporaryFailure(f"the {what} is unreadable") from exc

    def _read_record(self, user: str, domain: str, max_age: float = 0.0) -> dict[str, Any]:
        """The raw ``account.json`` (``max_age``: see :meth:`_FileCache.get`).

        Raises:
            NotFound: no such user.
            TemporaryFailure: the file is corrupt.
        """
        path = self._account_file(user, domain)
        try:
            record = self._read_cached(self._records, path, "account record", max_age)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no such user {user}@{domain}") from None
        return dict(record)  # a copy: callers update it before writing it back

    def _aside(self, path: Path, parent: Path) -> None:
        """Rename ``path`` to a hidden ``.deleted-*`` name in ``parent``, then remove it."""
        grave = parent / f".deleted-{secrets.token_hex(8)}"
        os.rename(path, grave)
        if self.fsync:
            fsio.fsync_dir(path.parent)
        shutil.rmtree(grave, ignore_errors=False)

    def _build_dir(self, final: Path, files: dict[str, Any], subdirs: tuple[str, ...]) -> None:
        """Create ``final`` complete or not at all: build under ``.new-*``, then rename.

        Raises:
            AlreadyExists: ``final`` is there already.
        """
        tmp = final.parent / f".new-{secrets.token_hex(8)}"
        tmp.mkdir(mode=0o700)
        try:
            for sub in subdirs:
                (tmp / sub).mkdir(mode=0o700)
            for name, value in files.items():
                self._write_json(tmp / name, value)
            try:
                # rename(2) onto an existing non-empty directory fails, so this also checks.
                if final.exists():
                    raise AlreadyExists(f"{final.name} exists already")
                os.rename(tmp, final)
            except OSError as exc:
                raise AlreadyExists(f"{final.name} exists already") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if self.fsync:
            fsio.fsync_dir(final.parent)

    # ----------------------------------------------------------------- domains

    def add_domain(self, domain: str) -> None:
        """Create a hosted domain with no users and no aliases.

        Raises:
            InvalidInput: not a valid domain name.
            AlreadyExists: the domain exists.
        """
        name = normalize_domain(domain)
        with self._locked_root():
            final = self._domain_dir(name)
            if (final / _DOMAIN_FILE).is_file():
                raise AlreadyExists(f"domain {name} exists already")
            if final.exists():
                # Left over from a crash before domain.json was written: not a domain yet.
                self._aside(final, self.domains_dir)
            self._build_dir(
                final,
                {_DOMAIN_FILE: {"created": _now_iso()}, _ALIASES_FILE: []},
                ("users",),
            )
        logger.info("domain added domain=%s", name)

    def has_domain(self, domain: str) -> bool:
        """Whether ``domain`` is hosted here; an invalid name is simply not hosted."""
        now = time.monotonic()
        if isinstance(domain, str):
            expiry = self._domains.get(domain)  # a dict read is atomic under the GIL
            if expiry is not None and expiry > now:
                return True
        try:
            name = normalize_domain(domain)
        except InvalidInput:
            return False
        if not (self._domain_dir(name) / _DOMAIN_FILE).is_file():
            return False
        with self._domains_guard:
            if len(self._domains) >= _DOMAIN_CACHE_MAX:
                self._domains.clear()
            self._domains[domain] = now + DOMAIN_TTL
        return True

    def _forget_domain(self, name: str) -> None:
        """Drop cached answers about a domain we deleted (every spelling of it)."""
        with self._domains_guard:
            for key in [k for k in self._domains if k.strip().lower().rstrip(".") == name]:
                del self._domains[key]
        self._records.clear()
        self._alias_tables.clear()

    def list_domains(self) -> list[str]:
        """The hosted domains, sorted."""
        try:
            entries = list(os.scandir(self.domains_dir))
        except FileNotFoundError:
            return []
        return sorted(
            e.name
            for e in entries
            if not e.name.startswith(".") and os.path.isfile(Path(e.path) / _DOMAIN_FILE)
        )

    def delete_domain(self, domain: str) -> None:
        """Delete a domain that has no users left (its aliases go with it).

        Raises:
            InvalidInput: invalid name, or the domain still has users.
            NotFound: no such domain.
        """
        name = normalize_domain(domain)
        with self._locked_root(), self._locked_domain(name) as ddir:
            if self._user_names(name):
                raise InvalidInput(f"domain {name} still has users; delete them first")
            self._aside(ddir, self.domains_dir)
            self._forget_domain(name)
            with self._locks_guard:
                lock = self._locks.pop(name, None)
        # Closed after release: FileLock.hold released the flock on the (now removed) file.
        if lock is not None:
            lock.close()
        logger.info("domain deleted domain=%s", name)

    # ----------------------------------------------------------------- users

    def _user_names(self, domain: str) -> list[str]:
        try:
            entries = list(os.scandir(self._domain_dir(domain) / "users"))
        except FileNotFoundError:
            return []
        return sorted(
            e.name
            for e in entries
            if _USER_RE.match(e.name) and os.path.isfile(Path(e.path) / _ACCOUNT_FILE)
        )

    def add_user(
        self,
        address: str,
        password: str,
        *,
        admin: bool = False,
        quota_mb: int = DEFAULT_QUOTA_MB,
    ) -> Account:
        """Create an account (only its record; the Store facade adds the mail folders).

        Args:
            address: ``user@domain``; lowercased.
            password: 1 to 1024 bytes of UTF-8, no NUL.
            admin: grant admin rights.
            quota_mb: mail quota in MiB, 1 to 1048576.

        Returns:
            The new account.

        Raises:
            InvalidInput: bad address, password or quota.
            NotFound: the domain does not exist.
            AlreadyExists: the user exists.
        """
        user, domain = normalize_address(address)
        _check_password(password)
        _check_bool(admin, "admin")
        _check_quota(quota_mb)
        if not self.has_domain(domain):
            raise NotFound(f"no such domain {domain}")
        # Hash before taking the lock: it is slow on purpose.
        record = {
            "password_hash": self._crypt.hash(password),
            "enabled": True,
            "admin": admin,
            "quota_mb": quota_mb,
            "created": _now_iso(),
            "token_version": 0,
        }
        with self._locked_domain(domain) as ddir:
            users_dir = ddir / "users"
            users_dir.mkdir(mode=0o700, exist_ok=True)
            try:
                self._build_dir(users_dir / user, {_ACCOUNT_FILE: record}, ())
            except AlreadyExists:
                raise AlreadyExists(f"user {user}@{domain} exists already") from None
        logger.info("user added user=%s@%s admin=%s", user, domain, admin)
        return _account_from_record(user, domain, record)

    def get_user(self, address: str, *, max_age: float = 0.0) -> Account:
        """The account of ``address``.

        Args:
            address: ``user@domain``.
            max_age: accept what was read from the disk up to this many seconds ago (what
                another process changed meanwhile is not seen yet); 0 checks the file now.

        Raises:
            InvalidInput: not a valid address.
            NotFound: no such user.
        """
        user, domain = normalize_address(address)
        return _account_from_record(user, domain, self._read_record(user, domain, max_age))

    def user_exists(self, address: str, *, max_age: float = 0.0) -> bool:
        """Whether ``address`` is a user here; an invalid address is simply not one.

        ``max_age``: as for :meth:`get_user`.
        """
        try:
            user, domain = normalize_address(address)
        except InvalidInput:
            return False
        try:
            self._records.get(self._account_file(user, domain), max_age)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except (OSError, ValueError, TemporaryFailure):
            # There, but unreadable or not a record: it exists (get_user says the rest).
            return self._account_file(user, domain).is_file()
        return True

    def user_dir(self, address: str) -> Path:
        """The directory of a user (``domains/{domain}/users/{user}``).

        Raises:
            InvalidInput: not a valid address.
            NotFound: no such user.
        """
        user, domain = normalize_address(address)
        path = self._user_path(user, domain)
        if not (path / _ACCOUNT_FILE).is_file():
            raise NotFound(f"no such user {user}@{domain}")
        return path

    def list_users(self, domain: str | None = None) -> list[Account]:
        """The users of one domain, or of all domains; sorted by domain, then user.

        Raises:
            InvalidInput: invalid domain name.
            NotFound: the domain does not exist.
        """
        if domain is not None:
            name = normalize_domain(domain)
            if not self.has_domain(name):
                raise NotFound(f"no such domain {name}")
            domains = [name]
        else:
            domains = self.list_domains()
        out: list[Account] = []
        for dom in domains:
            for user in self._user_names(dom):
                try:
                    out.append(_account_from_record(user, dom, self._read_record(user, dom)))
                except NotFound:
                    continue  # deleted while we listed
        return out

    def set_user(
        self,
        address: str,
        *,
        admin: bool | None = None,
        enabled: bool | None = None,
        quota_mb: int | None = None,
    ) -> Account:
        """Change the settings of a user; ``None`` leaves a setting as it is.

        Raises:
            InvalidInput: bad address or value.
            NotFound: no such user.
        """
        user, domain = normalize_address(address)
        changes: dict[str, Any] = {}
        if admin is not None:
            changes["admin"] = _check_bool(admin, "admin")
        if enabled is not None:
            changes["enabled"] = _check_bool(enabled, "enabled")
        if quota_mb is not None:
            changes["quota_mb"] = _check_quota(quota_mb)
        with self._locked_domain(domain):
            record = self._read_record(user, domain)
            if changes:
                record.update(changes)
                self._write_json(self._account_file(user, domain), record)
        if enabled is False:
            self._forget(f"{user}@{domain}")
        if changes:
            logger.info(
                "user changed user=%s@%s %s",
                user,
                domain,
                " ".join(f"{k}={v}" for k, v in sorted(changes.items())),
            )
        return _account_from_record(user, domain, record)

    def set_password(self, address: str, password: str) -> Account:
        """Set a new password; bumps ``token_version`` so old API tokens stop working.

        Raises:
            InvalidInput: bad address or password.
            NotFound: no such user.
        """
        user, domain = normalize_address(address)
        _check_password(password)
        self._read_record(user, domain)  # fail fast before the slow hash
        new_hash = self._crypt.hash(password)
        with self._locked_domain(domain):
            record = self._read_record(user, domain)
            record["password_hash"] = new_hash
            record["token_version"] = _account_from_record(user, domain, record).token_version + 1
            self._write_json(self._account_file(user, domain), record)
        self._forget(f"{user}@{domain}")
        logger.info("password changed user=%s@%s", user, domain)
        return _account_from_record(user, domain, record)

    def delete_user(self, address: str) -> None:
        """Delete a user and everything in the user's directory (mail, calendars, drive).

        Raises:
            InvalidInput: bad address.
            NotFound: no such user.
        """
        user, domain = normalize_address(address)
        with self._locked_domain(domain) as ddir:
            path = self._user_path(user, domain)
            if not (path / _ACCOUNT_FILE).is_file():
                raise NotFound(f"no such user {user}@{domain}")
            grave = ddir / f".deleted-{secrets.token_hex(8)}"
            os.rename(path, grave)
            if self.fsync:
                fsio.fsync_dir(path.parent)
            self._records.forget(path / _ACCOUNT_FILE)
        self._forget(f"{user}@{domain}")
        # Outside the lock: removing a large mailbox can take a while, and the user is
        # already gone for every reader.
        shutil.rmtree(grave)
        logger.info("user deleted user=%s@%s", user, domain)

    def mail_quota_bytes(self, address: str) -> int:
        """The user's mail quota in bytes.

        Raises:
            InvalidInput: bad address.
            NotFound: no such user.
        """
        return self.get_user(address).quota_mb * 1024 * 1024

    # ----------------------------------------------------------------- passwords

    def _cache_digest(self, address: str, password: str) -> bytes:
        message = address.encode("utf-8", "surrogatepass") + b"\0"
        message += password.encode("utf-8", "surrogatepass")
        return hmac.new(self._cache_key, message, hashlib.sha256).digest()

    def _forget(self, address: str) -> None:
        with self._cache_guard:
            stale = [k for k, (_, _, addr) in self._cache.items() if addr == address]
            for key in stale:
                del self._cache[key]

    def _remember(self, digest: bytes, address: str, password_hash: str) -> None:
        if self.auth.cache_seconds <= 0:
            return
        expiry = time.monotonic() + self.auth.cache_seconds
        with self._cache_guard:
            self._cache[digest] = (expiry, password_hash, address)
            self._cache.move_to_end(digest)
            while len(self._cache) > _CACHE_MAX:
                self._cache.popitem(last=False)

    def _cached(self, digest: bytes, password_hash: str) -> bool:
        with self._cache_guard:
            entry = self._cache.get(digest)
            if entry is None:
                return False
            expiry, cached_hash, _ = entry
            if expiry <= time.monotonic():
                del self._cache[digest]
                return False
        return hmac.compare_digest(cached_hash.encode(), password_hash.encode())

    def _spend_hash(self, password: str) -> None:
        """Verify against a throwaway hash so an unknown user costs what a known one does."""
        if self._dummy_hash is None:
            self._dummy_hash = self._crypt.hash(secrets.token_urlsafe(16))
        with contextlib.suppress(ValueError):
            self._crypt.verify(password, self._dummy_hash)

    def verify_password(self, address: str, password: str) -> Account:
        """Check a login; upgrades an old hash (scheme or cost) to the current one on success.

        Unknown user, wrong password and disabled account all raise the same error after
        about the same work, so the answer does not reveal which users exist.

        Raises:
            PermissionDenied: "invalid credentials", whatever the reason.
            TemporaryFailure: the account record is unreadable or cannot be updated.
        """
        denied = PermissionDenied("invalid credentials")
        try:
            user, domain = normalize_address(address)
            _check_password(password)
            record = self._read_record(user, domain)
        except (InvalidInput, NotFound):
            if isinstance(password, str):
                self._spend_hash(password)
            raise denied from None
        addr = f"{user}@{domain}"
        stored = record.get("password_hash")
        if not isinstance(stored, str):
            logger.error("account record has no password hash user=%s", addr)
            raise denied
        digest = self._cache_digest(addr, password)
        if self._cached(digest, stored):
            account = _account_from_record(user, domain, record)
            if not account.enabled:
                raise denied
            return account
        try:
            ok, new_hash = self._crypt.verify_and_update(password, stored)
        except (ValueError, MissingBackendError) as exc:
            # A hash we cannot check is our problem, not the client's; still deny.
            logger.error("cannot verify password hash user=%s error=%s", addr, exc)
            raise denied from None
        account = _account_from_record(user, domain, record)
        if not ok or not account.enabled:
            raise denied
        if new_hash is not None:
            stored = self._upgrade_hash(user, domain, stored, new_hash)
        self._remember(digest, addr, stored)
        return account

    def _upgrade_hash(self, user: str, domain: str, old_hash: str, new_hash: str) -> str:
        """Save ``new_hash`` unless the password changed meanwhile; returns the current hash."""
        try:
            with self._locked_domain(domain):
                record = self._read_record(user, domain)
                if record.get("password_hash") != old_hash:
                    current = record.get("password_hash")
                    return current if isinstance(current, str) else old_hash
                record["password_hash"] = new_hash
                self._write_json(self._account_file(user, domain), record)
        except (NotFound, TemporaryFailure) as exc:
            # The login itself was good; the upgrade is retried on the next one.
            logger.warning("password hash upgrade skipped user=%s@%s error=%s", user, domain, exc)
            return old_hash
        logger.info("password hash upgraded user=%s@%s", user, domain)
        return new_hash

    async def averify_password(self, address: str, password: str) -> Account:
        """:meth:`verify_password` off the event loop (the hash is slow on purpose).

        Raises:
            PermissionDenied: "invalid credentials", whatever the reason.
            TemporaryFailure: the account record is unreadable or cannot be updated.
        """
        return await asyncio.to_thread(self.verify_password, address, password)

    # ----------------------------------------------------------------- aliases

    def _alias_table(self, domain: str, max_age: float = 0.0) -> _AliasTable:
        path = self._path_memo.get(("aliases", domain))
        if path is None:
            path = self._domain_dir(domain) / _ALIASES_FILE
            path = self._remember_path(("aliases", domain), path)
        try:
            return self._read_cached(self._alias_tables, path, "alias list", max_age)
        except (FileNotFoundError, NotADirectoryError):
            return _AliasTable((), {})

    def _read_aliases(self, domain: str) -> list[Alias]:
        return list(self._alias_table(domain).rules)

    def _write_aliases(self, domain: str, aliases: list[Alias]) -> None:
        self._write_json(
            self._domain_dir(domain) / _ALIASES_FILE,
            [{"pattern": a.pattern, "target": a.target} for a in aliases],
        )

    @staticmethod
    def _normalize_pattern(domain: str, pattern: str) -> str:
        if not isinstance(pattern, str) or not pattern.strip():
            raise InvalidInput("alias pattern must not be empty")
        if len(pattern) > MAX_ALIAS_PATTERN:
            raise InvalidInput(f"alias pattern longer than {MAX_ALIAS_PATTERN} characters")
        text = pattern.strip()
        if text.startswith("@"):
            if normalize_domain(text[1:]) != domain:
                raise InvalidInput(f"catch-all must be @{domain}")
            return f"@{domain}"
        literal = _literal_address(text)
        if literal is not None:
            if literal.rpartition("@")[2] != domain:
                raise InvalidInput(f"alias {text!r} is not in domain {domain}")
            return literal
        try:
            re.compile(text)
        except re.error as exc:
            raise InvalidInput(f"invalid alias regex {text!r}: {exc}") from None
        return text

    @staticmethod
    def _normalize_target(target: str) -> str:
        if not isinstance(target, str):
            raise InvalidInput("alias target must be a string")
        parts = [p.strip() for p in target.split(",") if p.strip()]
        if not parts:
            raise InvalidInput("alias target must name at least one address")
        out: list[str] = []
        for part in parts:
            local, domain = _split_any_address(part)
            address = f"{local}@{domain}"
            if address not in out:
                out.append(address)
        return ",".join(out)

    def add_alias(self, domain: str, pattern: str, target: str) -> Alias:
        """Add an alias rule to a domain.

        Args:
            domain: the domain whose mail the rule routes.
            pattern: ``user@domain`` (exact), ``@domain`` (catch-all), or a Python regex
                matched with ``re.fullmatch`` against the whole lowercase address.
            target: comma-separated addresses, local or remote.

        Returns:
            The rule as stored (normalized).

        Raises:
            InvalidInput: bad domain, pattern (including a regex that does not compile, or
                longer than 512 characters) or target address.
            NotFound: no such domain.
            AlreadyExists: a rule with this pattern exists.
        """
        name = normalize_domain(domain)
        alias = Alias(self._normalize_pattern(name, pattern), self._normalize_target(target))
        with self._locked_domain(name):
            aliases = self._read_aliases(name)
            if any(a.pattern == alias.pattern for a in aliases):
                raise AlreadyExists(f"alias {alias.pattern} exists already")
            aliases.append(alias)
            self._write_aliases(name, aliases)
        logger.info("alias added domain=%s pattern=%s target=%s", name, alias.pattern, alias.target)
        return alias

    def list_aliases(self, domain: str) -> list[Alias]:
        """The alias rules of a domain, in file (= evaluation) order.

        Raises:
            InvalidInput: bad domain name.
            NotFound: no such domain.
        """
        name = normalize_domain(domain)
        if not self.has_domain(name):
            raise NotFound(f"no such domain {name}")
        return self._read_aliases(name)

    def delete_alias(self, domain: str, pattern: str) -> None:
        """Remove the alias rule with this pattern.

        Raises:
            InvalidInput: bad domain name or pattern.
            NotFound: no such domain or no such rule.
        """
        name = normalize_domain(domain)
        key = self._normalize_pattern(name, pattern)
        with self._locked_domain(name):
            aliases = self._read_aliases(name)
            kept = [a for a in aliases if a.pattern != key]
            if len(kept) == len(aliases):
                raise NotFound(f"no alias {key} in {name}")
            self._write_aliases(name, kept)
        logger.info("alias deleted domain=%s pattern=%s", name, key)

    # ----------------------------------------------------------------- resolution

    def resolve(self, address: str, *, max_age: float = 0.0) -> list[Recipient]:
        """Where mail for ``address`` goes, after aliases and plus-addressing.

        Order, first hit wins: exact alias, existing user (each tried for the full local
        part, then for it with ``+detail`` stripped), regex rules in file order, catch-all.
        Alias targets are resolved the same way, up to 8 levels deep; a target that leads
        back into the chain delivers to the user of that name if there is one and is
        dropped otherwise. Remote targets come back with ``local=False``. A ``+detail``
        stripped to find an alias is passed on to the local users it expands to.

        ``max_age``: accept alias lists and account records read from the disk up to this
        many seconds ago (as :meth:`get_user`); local delivery passes ``REVALIDATE_AFTER``.

        Returns:
            The recipients, without duplicates, in order; never empty.

        Raises:
            InvalidInput: not a valid address.
            NotFound: the domain is not hosted or nothing here takes the address.
        """
        local, domain = _split_any_address(address)
        if not self.has_domain(domain):
            raise NotFound(f"{domain} is not a domain of this server")
        out: list[Recipient] = []
        self._expand(local, domain, None, (), out, max_age=max_age)
        if not out:
            raise NotFound(f"no such user {local}@{domain}")
        return out

    def own_addresses(self, address: str) -> list[str]:
        """The user's address, then every exact alias that delivers to this user alone
        (the CalDAV calendar-user-address-set, RFC 6638 §2.4.1). Never raises."""
        try:
            local, domain = _split_any_address(address)
        except InvalidInput:
            return [address]
        own = f"{local}@{domain}"
        out = [own]
        try:
            rules = self._alias_table(domain).rules if self.has_domain(domain) else []
        except RmailError:
            return out
        for rule in rules:
            literal = _literal_address(rule.pattern)
            if literal is None or literal == own:
                continue
            try:
                targets = self.resolve(literal)
            except RmailError:
                continue
            if [(r.address, r.local) for r in targets] == [(own, True)]:
                out.append(literal)
        return out

    def may_send_as(self, address: str, sender: str) -> bool:
        """Whether the user ``address`` may send with ``sender`` as envelope or From address.

        Allowed: the user's own address (with or without ``+detail``) and any address an
        exact or regex alias delivers to this user. A catch-all does not count: it would
        let one user speak for every unknown name of the domain.
        """
        own = f"{_split_any_address(address)[0]}@{_split_any_address(address)[1]}"
        try:
            local, domain = _split_any_address(sender)
        except InvalidInput:
            return False
        candidate = f"{local}@{domain}"
        if f"{local.partition('+')[0]}@{domain}" == own:
            return True
        if not self.has_domain(domain):
            return False
        for rule in self._alias_table(domain).rules:
            if rule.pattern.startswith("@"):
                continue
            literal = _literal_address(rule.pattern)
            if literal is not None:
                matched = literal in {candidate, f"{local.partition('+')[0]}@{domain}"}
            else:
                try:
                    matched = re.fullmatch(rule.pattern, candidate, re.IGNORECASE) is not None
                except re.error:
                    continue
            if matched:
                try:
                    return own in {r.address for r in self.resolve(candidate) if r.local}
                except RmailError:
                    return False
        return False

    def _expand(
        self,
        local: str,
        domain: str,
        inherited_detail: str | None,
        path: tuple[str, ...],
        out: list[Recipient],
        *,
        max_age: float,
    ) -> None:
        """Append the recipients of ``local@domain`` to ``out`` (see :meth:`resolve`)."""
        address = f"{local}@{domain}"
        if address in path or len(path) > MAX_ALIAS_DEPTH:
            if address in path and self.user_exists(address, max_age=max_age):
                # "alice -> alice, archive": the alias keeps a copy for the user itself.
                _add(out, Recipient(address, inherited_detail, True))
            else:
                logger.warning("alias chain broken address=%s chain=%s", address, ",".join(path))
            return
        if not self.has_domain(domain):
            _add(out, Recipient(address, None, False))
            return
        table = self._alias_table(domain, max_age)
        aliases, exact = table.rules, table.exact
        catch_all = f"@{domain}"
        candidates: list[tuple[str, str | None]] = [(local, inherited_detail)]
        base, plus, detail = local.partition("+")
        if plus and base:
            candidates.append((base, detail or inherited_detail))
        for name, name_detail in candidates:
            rule = exact.get(f"{name}@{domain}")
            if rule is not None:
                self._expand_targets(rule, name_detail, (*path, address), out, max_age=max_age)
                return
            if self.user_exists(f"{name}@{domain}", max_age=max_age):
                _add(out, Recipient(f"{name}@{domain}", name_detail, True))
                return
        for rule in aliases:
            if rule.pattern.startswith("@") or rule.pattern in exact:
                continue
            try:
                matched = re.fullmatch(rule.pattern, address, re.IGNORECASE) is not None
            except re.error:
                logger.error("invalid alias regex domain=%s pattern=%s", domain, rule.pattern)
                continue
            if matched:
                self._expand_targets(rule, inherited_detail, (*path, address), out, max_age=max_age)
                return
        for rule in aliases:
            if rule.pattern == catch_all:
                self._expand_targets(rule, inherited_detail, (*path, address), out, max_age=max_age)
                return
        if path:
            logger.warning("alias target unknown address=%s chain=%s", address, ",".join(path))

    def _expand_targets(
        self,
        rule: Alias,
        detail: str | None,
        path: tuple[str, ...],
        out: list[Recipient],
        *,
        max_age: float,
    ) -> None:
        for target in rule.targets:
            try:
                local, domain = _split_any_address(target)
            except InvalidInput:
                logger.error("invalid alias target pattern=%s target=%s", rule.pattern, target)
                continue
            self._expand(local, domain, detail, path, out, max_age=max_age)


def _literal_address(pattern: str) -> str | None:
    """``pattern`` lowercased if it is an exact address (not a regex), else None."""
    local, at, domain = pattern.strip().lower().rpartition("@")
    if not at or not _LITERAL_LOCAL_RE.match(local):
        return None
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return None
    try:
        return f"{local}@{normalize_domain(domain)}"
    except InvalidInput:
        return None


def _add(out: list[Recipient], recipient: Recipient) -> None:
    if recipient not in out:
        out.append(recipient)

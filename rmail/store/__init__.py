"""The store: everything rmail keeps, in one data directory, usable from a plain script.

It knows nothing of sockets, HTTP or IMAP syntax. Layout of ``mail_root``::

    secrets/                        jwt.key, dkim/{domain}.key, tls/{cert,key}.pem
    domains/{domain}/domain.json    aliases.json
    domains/{domain}/users/{user}/account.json
    domains/{domain}/users/{user}/mail/        Maildir++ (see maildir.py, mailindex.py,
                                     headercache.py)
    domains/{domain}/users/{user}/webhooks.json the user's webhooks (see webhooks.py)
    domains/{domain}/users/{user}/webmail.json  webmail display name and signature (preferences.py)
    domains/{domain}/users/{user}/calendars/, addressbooks/   collections (see dav.py)
    domains/{domain}/users/{user}/schedule/inbox/   the CalDAV scheduling Inbox (RFC 6638), a
                                     collection like a calendar holding iTIP messages
    run/ports.json                  what the running server bound
    queue/                          outbound relay queue

Rules (ARCHITECTURE "Rules of the store"): every write is atomic (temp file, fsync, rename,
fsync the folder, all in ``fsio``); an index changes only under its flock; a message is on
disk and fsynced before any call that stores it returns; quotas are checked before a write.
Every method here blocks: async callers run them with ``asyncio.to_thread``.

Example::

    store = Store.open("./mailstore")
    store.create_user("alice@example.test", "secret")
    inbox = store.mailbox("alice@example.test").folder("INBOX")
    inbox.append(b"Subject: hi\\r\\n\\r\\nhello\\r\\n")
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Final

from rmail.config import AuthConfig, Config, StoreConfig
from rmail.errors import AlreadyExists, NotFound
from rmail.store.accounts import Account, Accounts, check_new_user_fields, normalize_address
from rmail.store.dav import Collection, DavStore, Kind
from rmail.store.maildir import Folder, FolderInfo, Mailbox
from rmail.store.webhooks import Webhooks

__all__ = ["Account", "Accounts", "Folder", "FolderInfo", "Mailbox", "Store"]

# The scheduling Inbox's collection name inside ``users/{user}/schedule/``.
SCHEDULE_INBOX: Final = "inbox"
# Users whose DavStore stays cached; past it the cache starts over.
_DAV_CACHE_MAX: Final = 10_000


class Store:
    """The facade the services and protocols use: accounts plus each user's mailbox."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = config.root
        self.fsync = config.store.fsync
        self.accounts = Accounts(self.root, config.auth, fsync=self.fsync)
        self.webhooks = Webhooks(self.accounts, fsync=self.fsync)
        self._mailboxes: dict[str, Mailbox] = {}
        self._dav: dict[tuple[str, Kind], DavStore] = {}
        self._schedule: dict[str, DavStore] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        mail_root: str | os.PathLike[str],
        *,
        fsync: bool = True,
        auth: AuthConfig | None = None,
        hostname: str = "localhost",
    ) -> Store:
        """A store on ``mail_root`` with default settings (for scripts and tests)."""
        config = Config(
            mail_root=str(Path(mail_root).absolute()),
            hostname=hostname,
            store=StoreConfig(fsync=fsync),
            auth=auth or AuthConfig(),
        )
        return cls(config)

    def create_user(
        self, address: str, password: str, *, admin: bool = False, quota_mb: int = 1024
    ) -> Account:
        """Create an account and its mailbox with INBOX and the special-use folders.

        The domain is added when it is missing.

        Raises:
            InvalidInput: bad address, password or quota.
            AlreadyExists: the user exists.
        """
        # Validate everything before the domain is created, so a refused user leaves no trace.
        _user, domain = normalize_address(address)
        check_new_user_fields(password, quota_mb)
        if not self.accounts.has_domain(domain):
            self.accounts.add_domain(domain)
        account = self.accounts.add_user(address, password, admin=admin, quota_mb=quota_mb)
        self.mailbox(account.address).initialize()
        return account

    def delete_user(self, address: str) -> None:
        """Remove an account with all its data. Raises NotFound."""
        account = self.accounts.get_user(address)
        with self._lock:
            mailbox = self._mailboxes.pop(account.address, None)
        if mailbox is not None:
            mailbox.close()
        self.accounts.delete_user(account.address)

    def mailbox(self, address: str) -> Mailbox:
        """The mailbox of an existing user (cached).

        Raises:
            NotFound: no such user.
        """
        key = address.lower()
        with self._lock:
            mailbox = self._mailboxes.get(key)
        if mailbox is not None:
            return mailbox
        if not self.accounts.user_exists(key):
            raise NotFound(f"no such user {address!r}")
        mail_dir = self.accounts.user_dir(key) / "mail"
        mailbox = Mailbox(
            mail_dir,
            hostname=self.config.hostname,
            fsync=self.fsync,
            journal_max=self.config.store.journal_max_records,
            quota_bytes=lambda: self.accounts.mail_quota_bytes(key),
        )
        with self._lock:
            return self._mailboxes.setdefault(key, mailbox)

    def dav(self, address: str, kind: Kind) -> DavStore:
        """The calendars or address books of an existing user (cached, one per user and kind).

        One instance per collection folder in the process, so that every caller shares the
        collection's cached index. Raises NotFound: no such user.
        """
        key = (address.lower(), kind)
        with self._lock:
            found = self._dav.get(key)
        if found is not None:
            return found
        found = DavStore(self.accounts.user_dir(key[0]), kind, fsync=self.fsync)
        with self._lock:
            if len(self._dav) > _DAV_CACHE_MAX:
                self._dav.clear()
            return self._dav.setdefault(key, found)

    def schedule_inbox(self, address: str) -> Collection:
        """The scheduling Inbox of an existing user (RFC 6638 §2.2), made on first use.

        A collection like a calendar, kept in ``users/{user}/schedule/inbox/`` apart from
        the calendars: it holds iTIP messages (METHOD kept), so it is never listed among
        them. Raises NotFound: no such user.
        """
        key = (address.lower(), "schedule")
        with self._lock:
            found = self._schedule.get(key[0])
        if found is None:
            user_dir = self.accounts.user_dir(key[0])
            found = DavStore(user_dir, "calendars", fsync=self.fsync, folder="schedule")
            with self._lock:
                if len(self._schedule) > _DAV_CACHE_MAX:
                    self._schedule.clear()
                found = self._schedule.setdefault(key[0], found)
        try:
            return found.collection(SCHEDULE_INBOX)
        except NotFound:
            pass
        try:
            return found.create(SCHEDULE_INBOX, {"displayname": "Inbox", "components": []})
        except AlreadyExists:  # made meanwhile by another request
            return found.collection(SCHEDULE_INBOX)

    def close(self) -> None:
        with self._lock:
            self._schedule.clear()
            self._dav.clear()
            for mailbox in self._mailboxes.values():
                mailbox.close()
            self._mailboxes.clear()

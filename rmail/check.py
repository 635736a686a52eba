"""``rmail check``: find what is wrong with a data directory, without changing it.

Reports, one line each: an unwritable data directory, secrets readable by others,
unreadable accounts, folders whose index does not load,
indexed messages whose file is missing, and message files no index names (left by a crash
between the file's rename and its index record: mail that was never acknowledged).
"""

from __future__ import annotations

import os
import stat

from rmail.errors import RmailError
from rmail.store import Store

__all__ = ["check"]


def check(store: Store) -> list[str]:
    """Every problem found, as lines for a person to read; empty when all is well."""
    root = store.root
    problems: list[str] = []
    if not root.is_dir():
        return [f"data directory {root} does not exist (rmail serve creates it)"]
    if not os.access(root, os.W_OK):
        problems.append(f"data directory {root} is not writable")
    secrets = root / "secrets"
    if secrets.is_dir() and stat.S_IMODE(secrets.stat().st_mode) & 0o077:
        problems.append(f"{secrets} is readable by others: chmod 700 it")
    for domain in store.accounts.list_domains():
        try:
            users = store.accounts.list_users(domain)
        except RmailError as exc:
            problems.append(f"domain {domain}: {exc}")
            continue
        for account in users:
            problems.extend(_check_mailbox(store, account.address))
    return problems


def _check_mailbox(store: Store, address: str) -> list[str]:
    problems: list[str] = []
    try:
        mailbox = store.mailbox(address)
        names = mailbox.folder_names()
    except (RmailError, OSError) as exc:
        return [f"{address}: mailbox unreadable: {exc}"]
    for name in names:
        try:
            folder = mailbox.folder(name)
        except (RmailError, OSError, ValueError, KeyError) as exc:
            problems.append(f"{address} {name}: index does not load: {exc!r}")
            continue
        indexed = set()
        for meta in folder.index.messages():
            indexed.add(meta.base)
            try:
                folder.message_path(meta)
            except RmailError:
                problems.append(f"{address} {name}: UID {meta.uid} has no message file")
        for sub in ("new", "cur"):
            for entry in os.scandir(folder.dir / sub):
                if entry.name.split(":", 1)[0] not in indexed:
                    problems.append(
                        f"{address} {name}: {sub}/{entry.name} is in no index "
                        "(unacknowledged mail left by a crash)"
                    )
    return problems

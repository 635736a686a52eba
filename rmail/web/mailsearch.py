"""Message listings shared by the JSON API and the webmail: cached summaries and header
texts of messages (which never change), and the listing search (from, to, subject, text,
since, before, unseen, flagged) with its query-string parsing."""

from __future__ import annotations

import datetime
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from rmail.errors import NotFound
from rmail.message import Summary, header_fields, parse, summarize
from rmail.store.maildir import Folder
from rmail.store.mailindex import MessageMeta
from rmail.web.http import ApiError

__all__ = ["HEADER_TEXTS", "SUMMARIES", "Search", "matches", "parse_search"]

# Parsed summaries of messages (which never change) for listings: (folder dir, base).
_SUMMARY_CACHE_SIZE: Final = 20_000


class SummaryCache:
    """Summaries by (folder directory, message file base), least recently used dropped;
    shared by the worker threads of every request, so every change holds the lock."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, str], Summary] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, folder: Folder, meta: MessageMeta) -> Summary:
        key = (str(folder.dir), meta.base)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
        summary = summarize(folder.read(meta.uid))
        with self._lock:
            self._items[key] = summary
            while len(self._items) > _SUMMARY_CACHE_SIZE:
                self._items.popitem(last=False)
        return summary


SUMMARIES = SummaryCache()


class HeaderTextCache:
    """Lower-cased header text of messages for ``?from=/to=/subject=``, cached like summaries.

    Without it every such search read and parsed the header of every message in the folder
    (about 3 s for 10,000 messages in bench/api.py). Message files never change, so the
    text is keyed like the summaries, by (folder dir, maildir base), and each field is
    parsed only when a search first asks for it.
    """

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, str], dict[str, str]] = OrderedDict()
        self._guard = threading.Lock()  # requests run in several threads

    def get(self, folder: Folder, meta: MessageMeta, names: tuple[str, ...]) -> list[str]:
        """The text of each header in ``names``. Raises NotFound (message gone)."""
        key = (str(folder.dir), meta.base)
        with self._guard:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                if all(n in found for n in names):
                    return [found[n] for n in names]
        head = header_fields(folder.read(meta.uid))
        texts = {n: " ".join(_safe_str(v) for v in head.get_all(n, [])).lower() for n in names}
        with self._guard:
            entry = self._items.setdefault(key, {})
            entry.update(texts)
            if len(self._items) > _SUMMARY_CACHE_SIZE:
                self._items.popitem(last=False)
        return [texts[n] for n in names]


HEADER_TEXTS = HeaderTextCache()


@dataclass(frozen=True, slots=True)
class Search:
    sender: str | None = None
    to: str | None = None
    subject: str | None = None
    text: str | None = None
    since: int | None = None
    before: int | None = None
    unseen: bool = False
    flagged: bool = False

    @property
    def empty(self) -> bool:
        return self == Search()


def parse_search(query: Any) -> Search:
    def date(name: str) -> int | None:
        value = query.get(name)
        if not value:
            return None
        try:
            day = datetime.date.fromisoformat(value)
        except ValueError:
            raise ApiError(400, f"{name} must be a date like 2026-01-31") from None
        return int(datetime.datetime.combine(day, datetime.time(), datetime.UTC).timestamp())

    def yes(name: str) -> bool:
        value = query.get(name, "").lower()
        if value not in ("", "0", "1", "true", "false"):
            raise ApiError(400, f"{name} must be true or false")
        return value in ("1", "true")

    def text(name: str) -> str | None:
        value = query.get(name)
        if value is not None and len(value) > 1000:
            raise ApiError(400, f"{name} is too long")
        return value.lower() if value else None

    search = query.get("search")
    return Search(
        sender=text("from"),
        to=text("to"),
        subject=text("subject"),
        text=text("text") or (search.lower() if search else None),
        since=date("since"),
        before=date("before"),
        unseen=yes("unseen"),
        flagged=yes("flagged"),
    )


def matches(folder: Folder, meta: MessageMeta, search: Search) -> bool:
    flags = {f.lower() for f in meta.flags}
    if search.unseen and "\\seen" in flags:
        return False
    if search.flagged and "\\flagged" not in flags:
        return False
    if search.since is not None and meta.date < search.since:
        return False
    if search.before is not None and meta.date >= search.before:
        return False
    if not (search.sender or search.to or search.subject or search.text):
        return True
    if search.sender or search.to or search.subject:
        wanted = [
            (name, needle)
            for name, needle in (
                ("From", search.sender),
                ("To", search.to),
                ("Subject", search.subject),
            )
            if needle is not None
        ]
        try:
            texts = HEADER_TEXTS.get(folder, meta, tuple(name for name, _ in wanted))
        except NotFound:
            return False
        for text, (_, needle) in zip(texts, wanted, strict=True):
            if needle not in text:
                return False
    if search.text is not None:
        try:
            raw = folder.read(meta.uid)
        except NotFound:
            return False
        parsed = parse(raw)
        haystack = " ".join(
            [
                parsed.subject,
                " ".join(f"{a.name} {a.address}" for a in parsed.from_ + parsed.to + parsed.cc),
                parsed.text or "",
                parsed.html or "",
            ]
        ).lower()
        if search.text not in haystack:
            return False
    return True


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # an undecodable header value
        return ""

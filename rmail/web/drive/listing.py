"""The JSON listing of a folder (``GET`` of a folder), rendered entry by entry.

The answer is ``{"path", "type", "self", "totals", "children"}`` with each child's
:meth:`Entry.to_json`, written compactly by orjson (no spaces, UTF-8 as is: 10,000 children
in 7 ms where ``json.dumps`` takes 20). Each child's text is kept in the folder's fragments,
so a listing after a change renders only the children that changed.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from rmail.store.drive import Entry, Totals
from rmail.web.drive.base import Fragments

__all__ = ["entry_json", "listing_json"]


def entry_json(entry: Entry) -> str:
    """One child of the listing, as JSON text."""
    return _dumps(entry.to_json())


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # a name with a lone surrogate (undecodable bytes on disk)
        return json.dumps(value, separators=(",", ":"))


def listing_json(
    shown_path: str,
    entries: list[Entry],
    own: Totals,
    total: Totals,
    fragments: dict[str, tuple[Entry, str]],
) -> bytes:
    """The listing as sent: ``shown_path`` is the folder's path as the client sees it
    (``/`` and the components); ``fragments`` are the folder's earlier entry texts (see
    :class:`rmail.web.drive.base.Fragments`), reused and filled."""
    head: dict[str, Any] = {
        "path": shown_path,
        "type": "dir",
        "self": own.to_json(),
        "totals": total.to_json(),
    }
    texts = []
    for entry in entries:
        hit = fragments.get(entry.name)
        if hit is not None and hit[0] is entry:
            texts.append(hit[1])
            continue
        text = entry_json(entry)
        fragments[entry.name] = (entry, text)
        texts.append(text)
    Fragments.trim(fragments, entries)
    opening = _dumps(head)[:-1]  # without its closing brace
    return (opening + ',"children":[' + ",".join(texts) + "]}").encode()

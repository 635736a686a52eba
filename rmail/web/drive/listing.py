"""The JSON listing of a folder (``GET`` of a folder), rendered entry by entry.

The answer is ``json.dumps`` of ``{"path", "type", "self", "totals", "children"}`` with
each child's :meth:`Entry.to_json`, byte for byte; each child's text is written straight
from its fields (``json.dumps`` of 10,000 dicts costs 20 ms) and kept in the folder's
fragments, so a listing after a change renders the children that changed.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any

from rmail.store.drive import Entry, Totals
from rmail.web.drive.base import Fragments

__all__ = ["entry_json", "listing_json"]


def entry_json(entry: Entry) -> str:
    """``json.dumps(entry.to_json())``."""
    size, mtime = entry.size, entry.mtime
    if (
        type(size) is int
        and (type(mtime) is int or (type(mtime) is float and mtime - mtime == 0.0))
        and type(entry.type) is str
        and type(entry.etag) is str
        and type(entry.content_type) is str
    ):
        # What json.dumps writes: ASCII-escaped strings, int and float reprs (a finite
        # float; inf and nan are spelt differently), ", " and ": " between items.
        enc = encode_basestring_ascii
        return (
            f'{{"name": {enc(entry.name)}, "type": {enc(entry.type)}, "size": {size!r}, '
            f'"etag": {enc(entry.etag)}, "mtime": {mtime!r}, '
            f'"content_type": {enc(entry.content_type)}}}'
        )
    return json.dumps(entry.to_json())


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
    opening = json.dumps(head)[:-1]  # without its closing brace
    return (opening + ', "children": [' + ", ".join(texts) + "]}").encode()

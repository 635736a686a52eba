"""Rendering drive listings: the fast paths give the very bytes of the general ones."""

from __future__ import annotations

import datetime
import email.utils
import importlib
import json
import re
from typing import Final

from hypothesis import given, settings
from hypothesis import strategies as st

from rmail.store.drive import Entry, Totals
from rmail.web.davlocks import LockTable
from rmail.web.drive.base import href_of
from rmail.web.drive.listing import listing_json
from rmail.web.drive.xml import http_date, iso_date, multistatus

# rmail.web.drive re-exports the handler under the module's name.
propfind = importlib.import_module("rmail.web.drive.propfind")

D: Final = "{DAV:}"
ASKED: Final = [
    ("allprop", []),
    ("propname", []),
    ("prop", [f"{D}resourcetype", f"{D}getcontentlength", f"{D}getetag", f"{D}getlastmodified"]),
    (
        "prop",
        [
            f"{D}displayname",
            f"{D}getcontenttype",
            "{urn:x%y&z}foo",
            f"{D}quota-used-bytes",
            f"{D}creationdate",
            f"{D}supportedlock",
            f"{D}lockdiscovery",
            f"{D}getetag",
            "plain",
        ],
    ),
    ("prop", [f"{D}quota-available-bytes", f"{D}displayname"]),
]

times = st.one_of(
    st.floats(min_value=-1e10, max_value=2.5e11, allow_nan=False),
    st.integers(min_value=0, max_value=4_000_000_000).map(lambda s: s + 0.9999994),
    st.integers(min_value=0, max_value=4_000_000_000).map(lambda s: s + 0.9999996),
    st.integers(min_value=0, max_value=4_000_000_000).map(float),
)


@given(times)
@settings(max_examples=2000)
def test_http_and_iso_dates_are_those_of_the_standard_library(ts: float) -> None:
    try:
        expected = email.utils.formatdate(ts, usegmt=True)
    except (ValueError, OverflowError, OSError) as exc:
        try:
            http_date(ts)
        except type(exc):
            return
        raise AssertionError("the standard library refuses this time") from None
    assert http_date(ts) == expected
    moment = datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)
    assert iso_date(ts) == moment.strftime("%Y-%m-%dT%H:%M:%SZ")


names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\\x00"), min_size=1
)
entries = st.builds(
    Entry,
    name=names,
    type=st.sampled_from(["file", "dir"]),
    size=st.integers(min_value=0, max_value=1 << 40),
    etag=st.sampled_from(["", '"0123abcd"', "a&b<c>"]),
    mtime=st.floats(min_value=0, max_value=4e9),
    content_type=st.sampled_from(["", "text/plain", "a&<b>"]),
    props=st.sampled_from([{}, {"{urn:x}foo": '<x:foo xmlns:x="urn:x">1</x:foo>'}]),
)


@given(st.lists(entries, max_size=8), st.sampled_from(ASKED), st.sampled_from([[], ["a b", "&"]]))
@settings(max_examples=300)
def test_a_multistatus_listing_is_what_each_property_rendered_in_turn_gives(
    children: list[Entry], asked: tuple[str, list[str]], parts: list[str]
) -> None:
    table = LockTable()
    folder = Entry(parts[-1] if parts else "", "dir", 0, "", 1.5e9, "")

    def quota() -> tuple[int, int | None]:
        return 123, 456

    fast = propfind.render(
        "u", table, parts=parts, entry=folder, children=children, asked=asked, quota=quota
    )
    slow = [
        propfind._response(p, e, asked, locks=[], quota=quota, remaining=table.remaining)
        for p, e in [(parts, folder), *(([*parts, c.name], c) for c in children)]
    ]
    # The same responses, the folder's own first; the children grouped by kind.
    assert len(fast) == len(multistatus(slow))
    assert _responses(fast)[0] == slow[0]
    assert sorted(_responses(fast)) == sorted(slow)
    if children:
        assert href_of([*parts, children[0].name], children[0].type == "dir") in fast.decode()


def test_a_multistatus_lists_folders_first_then_files_by_name() -> None:
    names = ["b.txt", "a", "c", "a.txt", "d.txt"]
    children = [Entry(n, "file" if "." in n else "dir", 1, '"e"', 1.5e9, "") for n in names]
    children.append(Entry("0.txt", "file", 1, '"e"', 1.5e9, "", {"{urn:x}p": "<x:p/>"}))
    body = propfind.render(
        "u",
        LockTable(),
        parts=["f"],
        entry=Entry("f", "dir", 0, "", 1.5e9, ""),
        children=sorted(children, key=lambda e: e.name),
        asked=ASKED[2],
        quota=lambda: (0, None),
    )
    hrefs = re.findall(r"<D:href>([^<]*)</D:href>", body.decode())
    assert hrefs == [
        "/drive/f/",
        "/drive/f/a/",
        "/drive/f/c/",
        "/drive/f/a.txt",
        "/drive/f/b.txt",
        "/drive/f/d.txt",
        "/drive/f/0.txt",  # with a dead property: rendered on its own, after the others
    ]


def _responses(body: bytes) -> list[str]:
    text = body.decode()
    start = text.index("<D:response>")
    end = text.rindex("</D:multistatus>")
    return [part + "</D:response>" for part in text[start:end].split("</D:response>")[:-1]]


json_entries = st.builds(
    Entry,
    name=names,
    type=st.sampled_from(["file", "dir"]),
    size=st.integers(min_value=0, max_value=1 << 70),
    etag=st.text(),
    mtime=st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(min_value=-(1 << 60), max_value=1 << 60),
    ),
    content_type=st.text(),
)


@given(st.lists(json_entries, max_size=6))
def test_a_json_listing_reads_back_as_its_entries_fields(entries: list[Entry]) -> None:
    """Names with lone surrogates (undecodable bytes on disk) and sizes past 64 bits too."""
    own, total = Totals(1, 2, 3), Totals(4, 5, 6)
    body = listing_json("/a b/ü", entries, own, total)
    assert json.loads(body) == {
        "path": "/a b/ü",
        "type": "dir",
        "self": own.to_json(),
        "totals": total.to_json(),
        "children": [e.to_json() for e in entries],
    }

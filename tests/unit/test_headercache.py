"""The per-folder header cache: what it keeps, that it survives restarts, torn writes and
expunges, and that ENVELOPE and header SEARCH read the same from it as from the message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rmail.errors import NotFound
from rmail.imap import fetch
from rmail.imap.parser.types import FetchAttr
from rmail.store.headercache import CACHED_FIELDS, HeaderCache, header_values
from rmail.store.maildir import Mailbox

DATA = Path(__file__).parent.parent / "data"
HOST = "mx.example.test"
EDGE_CASES = [
    b"From: a@example.test\r\nFrom: second@example.test\r\nSubject: two froms\r\n\r\nbody\r\n",
    b"from :  spaced@example.test  \r\nTO: Upper <u@example.test>\r\n\r\n",
    b"Subject: folded\r\n\tacross\r\n  lines\r\nX-Other: x\r\n\r\nbody\r\n",
    b"Subject: caf\xe9 latin-1\r\nFrom: =?utf-8?q?J=C3=BCrgen?= <j@example.test>\r\n\r\n",
    b"Subject: bare LF\nFrom: lf@example.test\n\nbody\n",
    b"\r\nno header at all\r\n",
    b"Subject: no body, no blank line\r\nCc: c@example.test",
    b"Message-ID: <m@x>\r\nIn-Reply-To: <p@x>\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\n\r\n",
]


def messages() -> list[bytes]:
    return [p.read_bytes() for p in sorted(DATA.glob("*.eml"))] + EDGE_CASES


def header_block(raw: bytes) -> bytes:
    """What Folder.read_header gives: up to the first CRLF CRLF, or everything."""
    end = raw.find(b"\r\n\r\n")
    return raw if end < 0 else raw[: end + 4]


@pytest.fixture
def mailbox(tmp_path: Path) -> Mailbox:
    mb = Mailbox(tmp_path / "mail", hostname=HOST, fsync=False)
    mb.initialize()
    return mb


@pytest.mark.parametrize("raw", messages(), ids=range(len(messages())))
def test_envelope_and_header_search_values_are_the_same_from_the_cache(raw: bytes) -> None:
    parsed = fetch.ParsedMessage.parse(raw)
    for source in (raw, header_block(raw)):
        values = header_values(source)
        assert fetch.render_envelope(values) == fetch.render_item(FetchAttr("ENVELOPE"), parsed)
        for name in CACHED_FIELDS:
            assert fetch.decode_values(values.get(name, ())) == fetch.header_value(parsed, name)


def test_records_written_at_append_serve_another_process_without_the_file(
    mailbox: Mailbox,
) -> None:
    raw = EDGE_CASES[0]
    meta = mailbox.folder("INBOX").append(raw)
    other = Mailbox(mailbox.dir, hostname=HOST, fsync=False).folder("INBOX")
    os.unlink(other.dir / meta.relpath)  # the record alone must answer
    assert other.header_values(meta) == header_values(raw)
    assert other.header_values(meta)["from"] == ("a@example.test", "second@example.test")


def test_a_missing_record_is_made_from_the_file_and_kept(mailbox: Mailbox) -> None:
    inbox = mailbox.folder("INBOX")
    meta = inbox.append(EDGE_CASES[2])
    cache_file = inbox.dir / "headers.cache"
    cache_file.unlink()
    fresh = Mailbox(mailbox.dir, hostname=HOST, fsync=False).folder("INBOX")
    assert fresh.header_values(meta) == header_values(EDGE_CASES[2])
    assert len(cache_file.read_bytes().splitlines()) == 1
    cache_file.unlink()
    os.unlink(fresh.dir / meta.relpath)
    with pytest.raises(NotFound):
        Mailbox(mailbox.dir, hostname=HOST, fsync=False).folder("INBOX").header_values(meta)


def test_torn_and_garbage_lines_are_skipped(tmp_path: Path) -> None:
    writer = HeaderCache(tmp_path)
    writer.put_many([("a", {"subject": ("one",)})])
    with open(tmp_path / "headers.cache", "ab") as f:
        f.write(b'["b", {"subject": ["torn by a cr')  # a crash in the middle of a write
    writer.put_many([("c", {"subject": ("three",)})])  # glued to the torn line
    with open(tmp_path / "headers.cache", "ab") as f:
        f.write(b'not json\n["d", {"unknown-field": ["x"]}]\n["e", {"to": ["five"]}]\n')
        f.write(b'["f", {"subject": ["no newline yet"]}]')
    reader = HeaderCache(tmp_path)
    assert reader.get("a") == {"subject": ("one",)}
    assert reader.get("c") is None  # lost with the torn line: made again from the file
    assert reader.get("d") is None
    assert reader.get("e") == {"to": ("five",)}
    assert reader.get("f") is None  # not complete yet
    with open(tmp_path / "headers.cache", "ab") as f:
        f.write(b"\n")
    assert reader.get("f") == {"subject": ("no newline yet",)}


def test_compaction_keeps_only_live_records_and_others_follow(tmp_path: Path) -> None:
    cache = HeaderCache(tmp_path, compact_slack=0)
    cache.put_many([(f"m{i}", {"subject": (str(i),)}) for i in range(10)])
    other = HeaderCache(tmp_path)
    assert other.get("m9") == {"subject": ("9",)}
    cache.compact(lambda: ["m1", "m2"], 2)  # 10 records > 2 * 2: rewritten
    assert len((tmp_path / "headers.cache").read_bytes().splitlines()) == 2
    assert cache.get("m5") is None and cache.get("m2") == {"subject": ("2",)}
    cache.put_many([("m10", {"subject": ("10",)})])
    assert other.get("m10") == {"subject": ("10",)}  # reads the new file from its start
    assert other.get("m1") == {"subject": ("1",)}


def test_expunge_compacts_away_orphans_and_expunged_records(tmp_path: Path) -> None:
    mailbox = Mailbox(tmp_path / "mail", hostname=HOST, fsync=False)
    mailbox.initialize()
    inbox = mailbox.folder("INBOX")
    inbox.headers = HeaderCache(inbox.dir, compact_slack=0)
    # Records of files a crash left unindexed.
    inbox.headers.put_many([(f"orphan{i}", {"subject": ("x",)}) for i in range(5)])
    metas = [inbox.append(m) for m in EDGE_CASES[:4]]
    inbox.expunge([metas[0].uid])
    lines = (inbox.dir / "headers.cache").read_bytes().splitlines()
    assert len(lines) == 3
    assert all(m.base.encode() in b"".join(lines) for m in metas[1:])


def test_copy_takes_the_record_along(mailbox: Mailbox) -> None:
    inbox, archive = mailbox.folder("INBOX"), mailbox.folder("Archive")
    meta = inbox.append(EDGE_CASES[7])
    ((_src, new_uid),) = inbox.copy_to([meta.uid], archive)
    copied = archive.index.get(new_uid)
    assert archive.headers.get(copied.base) == header_values(EDGE_CASES[7])

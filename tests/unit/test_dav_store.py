"""The calendar store's index: snapshot plus journal, replay, compaction, older layouts.

Every test runs the real :class:`DavStore` on a temporary directory; "another process" is a
second ``DavStore`` on the same directory, which shares nothing in memory with the first.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rmail.errors import AlreadyExists, NotFound
from rmail.store import dav
from rmail.store.dav import Collection, DavStore, PreconditionFailed, SyncTokenExpired


def _put(c: Collection, name: str, uid: str, body: bytes = b"x") -> None:
    c.put(name, body, uid=uid, component="VEVENT", start=1.0, end=2.0)


def _state(c: Collection) -> tuple[int, dict[str, tuple[str, str, int]], list[str]]:
    changed, gone, sync = c.changes_since(None, None)
    objects = {m.name: (m.uid, m.etag, m.token) for m in changed}
    return sync, objects, sorted(gone)


def test_a_second_process_sees_puts_and_deletes_through_the_journal(tmp_path: Path) -> None:
    writer = DavStore(tmp_path, "calendars", fsync=False).create("work", {})
    reader = DavStore(tmp_path, "calendars", fsync=False).collection("work")
    assert reader.objects() == []
    _put(writer, "a.ics", "A")
    _put(writer, "b.ics", "B")
    writer.delete("a.ics")
    assert [m.name for m in reader.objects()] == ["b.ics"]
    assert reader.info().sync == writer.info().sync == 3
    info = reader.info()
    assert reader.changes_since(1, info.instance)[1] == ["a.ics"]
    assert (tmp_path / "calendars" / "work" / "index.journal").read_bytes().count(b"\n") == 4


def test_a_put_does_not_rewrite_the_snapshot(tmp_path: Path) -> None:
    c = DavStore(tmp_path, "calendars", fsync=False).create("work", {})
    _put(c, "first.ics", "F")  # may compact once
    snapshot = tmp_path / "calendars" / "work" / "index.json"
    before = snapshot.stat().st_ino, snapshot.read_bytes()
    for n in range(20):
        _put(c, f"{n}.ics", f"U{n}")
    assert (snapshot.stat().st_ino, snapshot.read_bytes()) == before


def test_compaction_keeps_every_fact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dav, "JOURNAL_MAX", 5)
    c = DavStore(tmp_path, "calendars", fsync=False).create("work", {"displayname": "W"})
    for n in range(17):
        _put(c, f"{n}.ics", f"U{n}", body=str(n).encode())
    c.delete("3.ics")
    c.set_props({"color": "#ff0000"})
    _put(c, "4.ics", "U4", body=b"changed")
    snapshot = json.loads((tmp_path / "calendars" / "work" / "index.json").read_text())
    assert snapshot["generation"] > 1
    fresh = DavStore(tmp_path, "calendars", fsync=False).collection("work")
    assert _state(fresh) == _state(c)
    assert fresh.info().props == {"displayname": "W", "color": "#ff0000"}
    assert fresh.info().sync == 20


def test_preconditions_and_uid_conflicts_hold_across_processes(tmp_path: Path) -> None:
    one = DavStore(tmp_path, "calendars", fsync=False).create("work", {})
    two = DavStore(tmp_path, "calendars", fsync=False).collection("work")
    _put(one, "a.ics", "A")
    with pytest.raises(AlreadyExists):
        _put(two, "b.ics", "A")
    with pytest.raises(PreconditionFailed):
        two.put("a.ics", b"y", uid="A", component="VEVENT", if_none_match=True)
    # Renaming the UID of a.ics frees "A" for another resource.
    _put(two, "a.ics", "A2")
    _put(one, "b.ics", "A")
    assert {m.uid for m in one.objects()} == {"A2", "A"}


def test_a_partial_journal_line_is_ignored_then_cut(tmp_path: Path) -> None:
    c = DavStore(tmp_path, "calendars", fsync=False).create("work", {})
    _put(c, "a.ics", "A")
    journal = tmp_path / "calendars" / "work" / "index.journal"
    with journal.open("ab") as f:
        f.write(b'["p","b.ics",{"uid":"B"')  # a crash in the middle of an append
    fresh = DavStore(tmp_path, "calendars", fsync=False).collection("work")
    assert [m.name for m in fresh.objects()] == ["a.ics"]
    _put(fresh, "c.ics", "C")
    assert sorted(m.name for m in c.objects()) == ["a.ics", "c.ics"]
    assert all(line.startswith(b"[") for line in journal.read_bytes().splitlines())


def test_a_snapshot_without_journal_as_older_versions_wrote_it(tmp_path: Path) -> None:
    folder = tmp_path / "calendars" / "old"
    (folder / "events").mkdir(parents=True)
    (folder / "events" / "a.ics").write_bytes(b"x")
    (folder / "calendar.json").write_text("{}")
    meta = {"uid": "A", "etag": '"e"', "size": 1, "component": "VEVENT", "token": 1}
    old = {"sync": 2, "instance": "abc", "objects": {"a.ics": meta}, "tombstones": {"z": 2}}
    (folder / "index.json").write_text(json.dumps(old))
    c = DavStore(tmp_path, "calendars", fsync=False).collection("old")
    assert [m.name for m in c.objects()] == ["a.ics"]
    assert c.changes_since(1, "abc")[1] == ["z"]
    with pytest.raises(SyncTokenExpired):
        c.changes_since(1, "other")
    _put(c, "b.ics", "B")
    assert os.path.exists(folder / "index.journal")
    fresh = DavStore(tmp_path, "calendars", fsync=False).collection("old")
    assert _state(fresh) == _state(c)
    assert fresh.info().sync == 3


def test_a_deleted_collection_is_not_found(tmp_path: Path) -> None:
    store = DavStore(tmp_path, "calendars", fsync=False)
    c = store.create("work", {})
    _put(c, "a.ics", "A")
    store.delete("work")
    with pytest.raises(NotFound):
        c.objects()
    again = store.create("work", {})
    assert again.objects() == []


def test_schedule_tag_is_new_kept_or_absent_and_survives_a_reread(tmp_path: Path) -> None:
    c = DavStore(tmp_path, "calendars", fsync=False).create("work", {})
    first, _ = c.put("m.ics", b"1", uid="M", component="VEVENT", schedule_tag="new")
    assert first.schedule_tag is not None
    kept, _ = c.put("m.ics", b"2", uid="M", component="VEVENT", schedule_tag="keep")
    assert kept.schedule_tag == first.schedule_tag  # a reply merged by the server
    again, _ = c.put("m.ics", b"3", uid="M", component="VEVENT", schedule_tag="new")
    assert again.schedule_tag not in (None, first.schedule_tag)
    plain, _ = c.put("p.ics", b"4", uid="P", component="VEVENT")
    assert plain.schedule_tag is None
    reader = DavStore(tmp_path, "calendars", fsync=False).collection("work")
    assert reader.get("m.ics").schedule_tag == again.schedule_tag
    assert reader.get("p.ics").schedule_tag is None


def test_if_schedule_tag_match_guards_put_and_delete(tmp_path: Path) -> None:
    c = DavStore(tmp_path, "calendars", fsync=False).create("work", {})
    meta, _ = c.put("m.ics", b"1", uid="M", component="VEVENT", schedule_tag="new")
    assert meta.schedule_tag is not None
    with pytest.raises(PreconditionFailed):
        c.put("m.ics", b"2", uid="M", component="VEVENT", if_schedule_tag='"other"')
    with pytest.raises(PreconditionFailed):
        c.delete("m.ics", if_schedule_tag='"other"')
    c.put("m.ics", b"2", uid="M", component="VEVENT", if_schedule_tag=meta.schedule_tag)
    c.delete("m.ics")
    assert c.objects() == []


def test_move_to_another_collection_and_within_one(tmp_path: Path) -> None:
    store = DavStore(tmp_path, "calendars", fsync=False)
    home, work = store.create("home", {}), store.create("work", {})
    home.put("a.ics", b"A", uid="A", component="VEVENT", schedule_tag="new")
    tag = home.get("a.ics").schedule_tag
    home_sync, work_sync = home.info().sync, work.info().sync
    moved, created = home.move_to("a.ics", work, "b.ics")
    assert created and moved.name == "b.ics" and moved.schedule_tag == tag
    # Seen by another process: gone (with a tombstone) here, there with its UID.
    again = DavStore(tmp_path, "calendars", fsync=False)
    assert again.collection("home").objects() == []
    assert again.collection("home").changes_since(home_sync, home.info().instance)[1] == ["a.ics"]
    assert again.collection("work").by_uid("A") == moved
    assert work.read("b.ics")[0] == b"A" and work.info().sync == work_sync + 1
    # A rename keeps the UID findable under the new name only.
    work.move_to("b.ics", work, "c.ics")
    assert [m.name for m in work.objects()] == ["c.ics"]
    found = again.collection("work").by_uid("A")
    assert found is not None and found.name == "c.ics"
    # Preconditions: Overwrite F, If-Match, a UID already in the target, no source.
    _put(work, "d.ics", "D")
    with pytest.raises(PreconditionFailed):
        work.move_to("c.ics", work, "d.ics", overwrite=False)
    with pytest.raises(PreconditionFailed):
        work.move_to("c.ics", home, "c.ics", if_match='"nope"')
    _put(home, "twin.ics", "D")
    with pytest.raises(AlreadyExists):
        home.move_to("twin.ics", work, "twin.ics")
    with pytest.raises(NotFound):
        home.move_to("missing.ics", work, "x.ics")
    # Overwrite: the replaced object's UID is no longer indexed.
    moved, created = work.move_to("c.ics", work, "d.ics")
    assert not created and [m.uid for m in work.objects()] == ["A"]
    assert work.by_uid("D") is None

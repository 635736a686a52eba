"""The drive store: totals kept exact by every operation, names checked, quota, races."""

from __future__ import annotations

import json
import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest

from rmail.errors import AlreadyExists, InvalidInput, NotFound, QuotaExceeded
from rmail.store.drive import FLUSH_EVERY, Drive, PreconditionFailedError, Totals, split_path


def _recount(drive: Drive, path: str = "") -> Totals:
    """Totals the slow way: walking the tree."""
    total = Totals()
    for _, entry in drive.walk(path):
        total = total + (Totals(1, 0, entry.size) if entry.type == "file" else Totals(0, 1, 0))
    return total


def _check_all(drive: Drive) -> None:
    _, _, total = drive.listing("")
    assert total == _recount(drive)
    for rel, entry in drive.walk(""):
        if entry.type == "dir":
            children, own, sub_total = drive.listing(rel)
            assert sub_total == _recount(drive, rel), rel
            files = [c for c in children if c.type == "file"]
            assert own == Totals(len(files), len(children) - len(files), sum(c.size for c in files))


def test_totals_stay_exact_through_every_operation(tmp_path: Path) -> None:
    drive = Drive(tmp_path / "drive", fsync=False)
    drive.write("a/b/c.txt", [b"hello"])
    drive.write("a/top.bin", [b"x" * 100, b"y" * 50])
    drive.mkdir("empty")
    _check_all(drive)
    entry, created = drive.write("a/b/c.txt", [b"hello world"])
    assert not created and entry.size == 11
    _check_all(drive)
    drive.move("a/b", "empty/moved")
    _check_all(drive)
    drive.copy("empty", "copied")
    _check_all(drive)
    drive.delete("empty")
    _check_all(drive)
    assert drive.usage() == 11 + 150
    assert drive.stat("copied/moved/c.txt").content_type == "text/plain"
    with drive.open("copied/moved/c.txt")[0] as f:
        assert f.read() == b"hello world"


def test_etags_and_preconditions(tmp_path: Path) -> None:
    drive = Drive(tmp_path / "drive", fsync=False)
    first, _ = drive.write("f", [b"one"])
    assert first.etag == drive.stat("f").etag and first.etag.startswith('"')
    with pytest.raises(AlreadyExists):
        drive.write("f", [b"two"], if_none_match=True)
    with pytest.raises(PreconditionFailedError):
        drive.write("f", [b"two"], if_match='"stale"')
    second, _ = drive.write("f", [b"two"], if_match=first.etag)
    assert second.etag != first.etag
    with pytest.raises(PreconditionFailedError):
        drive.delete("f", if_match=first.etag)


@pytest.mark.parametrize(
    "path",
    ["..", "a/../b", "a\\b", "a\x00b", "_index.json", "x/_meta.json", "up.tmp", "a/\x7f", "é" * 200,
     "/".join(["d"] * 65)],
)  # fmt: skip
def test_bad_and_reserved_names_are_refused(tmp_path: Path, path: str) -> None:
    drive = Drive(tmp_path / "drive", fsync=False)
    with pytest.raises(InvalidInput):
        drive.write(path, [b"x"])
    with pytest.raises(InvalidInput):
        split_path(path)


def test_moves_that_make_no_sense_are_refused(tmp_path: Path) -> None:
    drive = Drive(tmp_path / "drive", fsync=False)
    drive.write("d/f", [b"x"])
    drive.write("g", [b"y"])
    with pytest.raises(InvalidInput):
        drive.move("d", "d/inside")
    with pytest.raises(AlreadyExists):
        drive.move("g", "d/f", overwrite=False)
    with pytest.raises(NotFound):
        drive.move("nope", "x")
    with pytest.raises(InvalidInput):
        drive.write("d", [b"a folder is there"])


def test_quota_counts_drive_and_elsewhere(tmp_path: Path) -> None:
    drive = Drive(tmp_path / "drive", fsync=False, quota=lambda: (1000, 600))
    drive.write("small", [b"x" * 300])
    with pytest.raises(QuotaExceeded):
        drive.write("big", [b"x" * 50, b"x" * 100])
    with pytest.raises(NotFound):
        drive.stat("big")
    assert drive.usage() == 300
    assert not list((tmp_path / "drive" / "files").glob("*.tmp"))


def test_concurrent_writers_keep_totals_exact(tmp_path: Path) -> None:
    drive = Drive(tmp_path / "drive", fsync=False)
    drive.mkdir("shared")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            other = Drive(tmp_path / "drive", fsync=False)  # its own locks, as another process
            for i in range(20):
                other.write(f"shared/{n}-{i}", [b"z" * (i + 1)])
                if i % 5 == 0:
                    other.delete(f"shared/{n}-{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _check_all(drive)
    _, own, _ = drive.listing("shared")
    assert own.files == 6 * 16


def test_dead_properties_survive_put_move_and_copy(tmp_path: Path) -> None:
    drive = Drive(tmp_path, fsync=False)
    drive.write("a/f.txt", [b"one"])
    drive.set_props("a/f.txt", [("{urn:x}p", '<ns0:p xmlns:ns0="urn:x">v</ns0:p>')])
    drive.set_props("a", [("{urn:x}q", '<ns0:q xmlns:ns0="urn:x" />')])
    drive.write("a/f.txt", [b"two"])
    assert set(drive.stat("a/f.txt").props) == {"{urn:x}p"}
    drive.move("a", "b")
    drive.copy("b", "c")
    for folder in ("b", "c"):
        assert set(drive.stat(folder).props) == {"{urn:x}q"}
        assert set(drive.stat(f"{folder}/f.txt").props) == {"{urn:x}p"}
    drive.set_props("c/f.txt", [("{urn:x}p", None)])
    assert drive.stat("c/f.txt").props == {} and drive.stat("b/f.txt").props
    drive.copy("b", "d", recursive=False)
    assert drive.listing("d")[0] == [] and drive.stat("d").props
    _check_all(drive)


def test_adopt_indexes_files_put_there_by_other_means(tmp_path: Path) -> None:
    drive = Drive(tmp_path, fsync=False)
    drive.mkdir("bulk")
    for i in range(5):
        (drive.files / "bulk" / f"f{i}.bin").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(i))
    (drive.files / "bulk" / "skip.tmp").write_bytes(b"reserved name")
    added = drive.adopt("bulk")
    assert added == Totals(5, 0, 5 * 8 + 10)
    assert drive.stat("bulk/f3.bin").content_type == "image/png"
    assert drive.adopt("bulk") == Totals()
    _check_all(drive)


def test_overwriting_a_file_needs_room_only_for_the_difference(tmp_path: Path) -> None:
    drive = Drive(tmp_path, fsync=False, quota=lambda: (1000, 0))
    drive.write("f", [b"x" * 800], size_hint=800)
    drive.write("f", [b"y" * 900], size_hint=900)
    drive.write("f", [b"z" * 100, b"z" * 850])  # no size given: checked as it arrives
    with pytest.raises(QuotaExceeded):
        drive.write("g", [b"x" * 100], size_hint=100)


# -- the folder index: snapshot + journal ------------------------------------------------------


def _index_files(folder: Path) -> tuple[tuple[int, int], int]:
    st = (folder / "_index.json").stat()
    return (st.st_ino, st.st_mtime_ns), (folder / "_index.journal").stat().st_size


def test_a_write_in_a_big_folder_appends_to_the_journal_not_the_snapshot(tmp_path: Path) -> None:
    drive = Drive(tmp_path, fsync=False)
    for i in range(300):
        drive.write(f"big/f{i}", [b"x"])
    drive.write("big/sub/deep", [b"y"])
    big, root = drive.files / "big", drive.files
    before = {f: _index_files(f) for f in (big, root, big / "sub")}
    drive.write("big/new", [b"hello"])
    drive.write("big/sub/deep", [b"longer"])
    drive.delete("big/f7")
    drive.move("big/f8", "big/sub/f8")
    drive.mkdir("big/folder")
    drive.set_props("big/f9", [("{urn:x}p", "<p/>")])
    for folder, (snapshot, journal) in before.items():
        now_snapshot, now_journal = _index_files(folder)
        assert now_snapshot == snapshot, folder  # the snapshot is untouched
        assert now_journal > journal, folder  # the change (or the totals) were appended
    _check_all(drive)
    assert drive.stat("big/f9").props == {"{urn:x}p": "<p/>"}


def test_a_fresh_drive_sees_what_the_journal_holds(tmp_path: Path) -> None:
    writer = Drive(tmp_path, fsync=False)
    writer.write("a/b/c", [b"123"])
    reader = Drive(tmp_path, fsync=False)
    assert reader.listing("a")[2] == Totals(1, 1, 3)
    writer.write("a/b/d", [b"4567"])  # the reader replays only the new tail
    assert reader.stat("a/b/d").size == 4
    assert reader.listing("")[2] == Totals(2, 2, 7)
    before = reader.version("a/b")
    writer.delete("a/b/c")
    assert reader.version("a/b") != before
    assert reader.usage() == 4


def _listed(drive: Drive, path: str) -> list[tuple[object, ...]]:
    return [
        (e.name, e.type, e.size, e.etag, e.mtime, e.content_type, e.props)
        for e in drive.listing(path)[0]
    ]


def test_a_listing_kept_up_to_date_change_by_change_is_the_one_read_from_disk(
    tmp_path: Path,
) -> None:
    drive = Drive(tmp_path, fsync=False, journal_max=7)  # compactions on the way too
    other = Drive(tmp_path, fsync=False)  # another process: the first replays its records
    for i in range(20):
        drive.write(f"d/f{i:02d}", [b"x" * i])
    kept = drive.listing("d")[0]
    steps = [
        lambda: drive.write("d/f05", [b"changed"]),
        lambda: other.write("d/a-first", [b"1"]),
        lambda: other.write("d/zz-last", [b"2"]),
        lambda: drive.delete("d/f00"),
        lambda: other.delete("d/f19"),
        lambda: drive.move("d/f07", "d/f07-moved"),
        lambda: other.move("d/f08", "elsewhere/f08"),
        lambda: drive.mkdir("d/sub"),
        lambda: drive.set_props("d/f09", [("{urn:x}p", "<p/>")]),
        lambda: other.copy("d/f10", "d/f10-copy"),
        lambda: drive.delete("d/sub"),
        lambda: other.write("d/f11", [b"again"]),
    ]
    for step in steps:
        step()
        assert _listed(drive, "d") == _listed(Drive(tmp_path, fsync=False), "d")
        assert _listed(other, "d") == _listed(drive, "d")
    now = {e.name: e for e in drive.listing("d")[0]}
    # Children that did not change keep their entry objects (a listing after a change
    # builds only the changed ones); changed ones are new.
    assert now["f12"] is next(e for e in kept if e.name == "f12")
    assert now["f05"] is not next(e for e in kept if e.name == "f05")
    _check_all(drive)


def test_a_torn_last_journal_line_is_ignored_then_cut(tmp_path: Path) -> None:
    drive = Drive(tmp_path, fsync=False)
    drive.write("d/f", [b"abc"])
    journal = drive.files / "d" / "_index.journal"
    good = journal.read_bytes()
    with journal.open("ab") as f:
        f.write(b'["c","ghost",{"type":"file","si')  # a crash in the middle of an append
    reader = Drive(tmp_path, fsync=False)
    assert [e.name for e in reader.listing("d")[0]] == ["f"]
    reader.write("d/g", [b"xy"])
    data = journal.read_bytes()
    assert data.startswith(good) and b"ghost" not in data and data.endswith(b"\n")
    assert [e.name for e in Drive(tmp_path).listing("d")[0]] == ["f", "g"]
    _check_all(Drive(tmp_path, fsync=False))


def test_the_journal_is_compacted_after_journal_max_records(tmp_path: Path) -> None:
    drive = Drive(tmp_path, fsync=False, journal_max=10)
    reader = Drive(tmp_path, fsync=False)
    for i in range(25):
        drive.write(f"d/f{i}", [b"x" * i])
        assert reader.listing("d")[1] == Totals(i + 1, 0, sum(range(i + 1)))
    journal = (drive.files / "d" / "_index.journal").read_bytes().splitlines()
    assert len(journal) <= 11  # the header and at most journal_max records
    generation = json.loads((drive.files / "d" / "_index.json").read_bytes())["generation"]
    assert json.loads(journal[0]) == ["h", generation] and generation >= 2
    _check_all(Drive(tmp_path, fsync=False))


def test_a_compaction_that_stopped_between_snapshot_and_journal_is_not_replayed(
    tmp_path: Path,
) -> None:
    drive = Drive(tmp_path, fsync=False)
    drive.write("d/f", [b"abc"])
    drive.write("d/g", [b"de"])
    folder = drive.files / "d"
    snapshot = json.loads((folder / "_index.json").read_bytes())
    # A snapshot of the next generation with everything, the old journal still there.
    state = Drive(tmp_path, fsync=False).listing("d")
    snapshot["generation"] += 1
    snapshot["self"] = state[1].to_json()
    snapshot["total"] = state[2].to_json()
    snapshot["children"] = {
        e.name: {k: v for k, v in e.to_json().items() if k != "name"} for e in state[0]
    }
    (folder / "_index.json").write_text(json.dumps(snapshot))
    reader = Drive(tmp_path, fsync=False)
    assert reader.listing("d")[1] == Totals(2, 0, 5)  # not counted twice
    reader.write("d/h", [b"f"])
    assert Drive(tmp_path).listing("d")[1] == Totals(3, 0, 6)
    _check_all(Drive(tmp_path, fsync=False))


def test_a_drive_written_before_the_journal_still_loads(tmp_path: Path) -> None:
    files = tmp_path / "files"
    (files / "docs").mkdir(parents=True)
    (files / "docs" / "a.txt").write_bytes(b"hello")
    child = {"type": "file", "size": 5, "etag": '"e"', "mtime": 1.0, "content_type": "text/plain"}
    old_docs = {"self": {"files": 1, "dirs": 0, "bytes": 5}, "total": {"files": 1, "bytes": 5},
                "children": {"a.txt": child}}  # fmt: skip
    old_root = {
        "self": {"dirs": 1},
        "total": {"files": 1, "dirs": 1, "bytes": 5},
        "children": {"docs": {"type": "dir", "size": 0, "etag": "", "mtime": 1.0,
                              "content_type": ""}},
        "props": {"{urn:x}r": "<r/>"},
    }  # fmt: skip
    (files / "docs" / "_index.json").write_text(json.dumps(old_docs, indent=1))
    (files / "_index.json").write_text(json.dumps(old_root, indent=1))
    drive = Drive(tmp_path, fsync=False)
    assert drive.stat("docs/a.txt").etag == '"e"'
    assert drive.stat("").props == {"{urn:x}r": "<r/>"}
    assert drive.usage() == 5
    drive.write("docs/b.txt", [b"12"])  # the first write compacts, then appends
    assert (files / "docs" / "_index.journal").exists()
    assert Drive(tmp_path).listing("docs")[1] == Totals(2, 0, 7)
    assert Drive(tmp_path).stat("").props == {"{urn:x}r": "<r/>"}
    _check_all(drive)


def _process_writer(root: str, n: int) -> None:
    drive = Drive(Path(root), fsync=False, journal_max=7)  # compactions under the race too
    for i in range(15):
        drive.write(f"shared/sub{n % 2}/{n}-{i}", [b"z" * (i + 1)])
        if i % 5 == 0:
            drive.delete(f"shared/sub{n % 2}/{n}-{i}")


def test_concurrent_processes_keep_totals_exact(tmp_path: Path) -> None:
    drive = Drive(tmp_path / "drive", fsync=False)
    drive.mkdir("shared")
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_process_writer, args=(str(tmp_path / "drive"), n)) for n in range(4)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0] * 4
    _check_all(drive)
    _, _, total = drive.listing("shared")
    assert total.files == 4 * 12 and total.dirs == 2


def _big_chunks(megabytes: int, fail_at: int | None = None) -> Iterator[bytes]:
    for n in range(megabytes):
        if n == fail_at:
            raise ConnectionError("the client went away")
        yield bytes([n % 251]) * (1 << 20)


def _flushers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "drive-flush"]


@pytest.mark.parametrize("fsync", [False, True])
def test_a_big_file_is_stored_whole_with_its_blake3_etag(tmp_path: Path, fsync: bool) -> None:
    """Past FLUSH_EVERY a fsyncing store flushes from a thread of its own as it writes."""
    drive = Drive(tmp_path / "drive", fsync=fsync)
    megabytes = 2 * (FLUSH_EVERY >> 20) + 24
    entry, created = drive.write("big.bin", _big_chunks(megabytes))
    expected = b"".join(_big_chunks(megabytes))
    assert created and entry.size == len(expected)
    assert (tmp_path / "drive" / "files" / "big.bin").read_bytes() == expected
    assert entry.etag == '"' + blake3.blake3(expected).hexdigest()[:40] + '"'
    assert not _flushers()


def test_a_big_body_that_fails_midway_leaves_nothing(tmp_path: Path) -> None:
    drive = Drive(tmp_path / "drive", fsync=True)
    with pytest.raises(ConnectionError):
        drive.write("cut.bin", _big_chunks(80, fail_at=(FLUSH_EVERY >> 20) + 8))
    limit = FLUSH_EVERY + (4 << 20)  # over quota once the flush thread has started
    tight = Drive(tmp_path / "drive", fsync=True, quota=lambda: (limit, 0))
    with pytest.raises(QuotaExceeded):
        tight.write("over.bin", _big_chunks(80))
    assert not _flushers()
    assert not list((tmp_path / "drive" / "files").glob(".*tmp"))
    with pytest.raises(NotFound):
        drive.stat("cut.bin")
    assert drive.usage() == 0

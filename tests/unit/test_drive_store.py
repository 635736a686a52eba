"""The drive store: totals kept exact by every operation, names checked, quota, races."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from rmail.errors import AlreadyExists, InvalidInput, NotFound, QuotaExceeded
from rmail.store.drive import Drive, PreconditionFailedError, Totals, split_path


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

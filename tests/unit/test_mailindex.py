"""The per-folder index: flag masks, journal replay, compaction, UIDs, MODSEQs, crash leftovers.

Every test runs the real :class:`MailIndex` on a temporary directory; "another process" is a
second ``MailIndex`` on the same directory, which shares nothing in memory with the first.
"""

from __future__ import annotations

import json
import os
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmail.errors import NotFound
from rmail.store.mailindex import (
    ANSWERED,
    DELETED,
    DRAFT,
    FLAGGED,
    IN_NEW,
    SEEN,
    SYSTEM_FLAGS,
    MailIndex,
    MessageMeta,
    flags_to_mask,
    mask_to_flags,
)

UIDVALIDITY = 1_700_000_000
DATE = 1_700_000_123


# -- helpers ---------------------------------------------------------------------------


def state(index: MailIndex) -> dict[str, Any]:
    """Everything a reader can observe of an index, after bringing it up to date."""
    index.refresh()
    return {
        "uidvalidity": index.uidvalidity,
        "uidnext": index.uidnext,
        "highestmodseq": index.highestmodseq,
        "uids": list(index.uids),
        "masks": list(index.masks),
        "modseqs": list(index.modseqs),
        "sizes": list(index.sizes),
        "dates": list(index.dates),
        "bases": list(index.bases),
        "keywords": {m.uid: m.keywords for m in index.messages() if m.keywords},
        "total_size": index.total_size,
        "unseen": index.unseen,
        "vanished": index.vanished_since(0),
    }


def computed(index: MailIndex) -> tuple[int, int]:
    """(total_size, unseen) recomputed from the columns, to check the running counters."""
    return sum(index.sizes), sum(1 for m in index.masks if not m & SEEN)


def new_index(folder: Path, *, journal_max: int = 5000) -> MailIndex:
    folder.mkdir(parents=True, exist_ok=True)
    return MailIndex.create(folder, UIDVALIDITY, fsync=False, journal_max=journal_max)


def reopen(folder: Path, *, journal_max: int = 5000) -> MailIndex:
    index = MailIndex(folder, fsync=False, journal_max=journal_max)
    index.refresh()
    return index


def journal_lines(folder: Path) -> list[bytes]:
    return (folder / "index.journal").read_bytes().splitlines()


def add_n(index: MailIndex, n: int, *, prefix: str = "m") -> list[int]:
    return [index.add(f"{prefix}{i}", IN_NEW, (), 100 + i, DATE + i).uid for i in range(n)]


def mutate(index: MailIndex) -> None:
    """A mixed history: appends (with and without flags/keywords), flag changes, expunges."""
    uids = [
        index.add("a", IN_NEW, (), 10, DATE).uid,
        index.add("b", SEEN, ("$Label1",), 20, DATE + 1).uid,
        index.add("c", FLAGGED | DRAFT, ("$Junk", "Work"), 30, DATE + 2).uid,
        index.add("d", IN_NEW, (), 40, DATE + 3).uid,
        index.add("e", ANSWERED, (), 50, DATE + 4).uid,
    ]
    index.set_flags(uids[0], SEEN | FLAGGED, ("Important",))
    index.set_flags(uids[1], 0, ())
    index.set_flags(uids[2], DELETED, ("$Junk",))
    index.expunge([uids[2]])
    metas = index.add_many(
        [("f", IN_NEW, (), 60, DATE + 5), ("g", SEEN | DELETED, ("x",), 70, DATE + 6)]
    )
    index.set_flags(metas[0].uid, SEEN, ("$Forwarded",))
    index.expunge([uids[3], metas[1].uid])


# -- flags_to_mask / mask_to_flags -------------------------------------------------------

SYSTEM_NAMES = [*SYSTEM_FLAGS, "\\Recent"]
keyword = st.text(alphabet=string.ascii_letters + string.digits + "$_-.\\", min_size=1, max_size=10)


@st.composite
def system_flag(draw: st.DrawFn) -> str:
    """A system flag (or \\Recent) in random letter case."""
    name = draw(st.sampled_from(SYSTEM_NAMES))
    upper = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if u else c.lower() for c, u in zip(name, upper, strict=True))


@given(st.sets(st.one_of(system_flag(), keyword), max_size=12))
def test_flags_survive_a_round_trip_through_mask_and_keywords(flags: set[str]) -> None:
    lowered = {name.lower(): bit for name, bit in SYSTEM_FLAGS.items()}
    expected_mask = 0
    expected_keywords: set[str] = set()
    for flag in flags:
        if flag.lower() in lowered:
            expected_mask |= lowered[flag.lower()]
        elif flag.lower() != "\\recent":
            expected_keywords.add(flag.lower())

    mask, keywords = flags_to_mask(flags)

    assert mask == expected_mask
    assert mask & IN_NEW == 0
    assert {k.lower() for k in keywords} == expected_keywords
    assert len(keywords) == len(expected_keywords), "keywords de-duplicated case-insensitively"
    assert list(keywords) == sorted(keywords)
    assert all(k in flags for k in keywords), "keywords keep the spelling they came with"
    out = mask_to_flags(mask, keywords)
    assert "\\recent" not in {f.lower() for f in out}
    assert {f for f in out if f in SYSTEM_FLAGS} == {
        name for name, bit in SYSTEM_FLAGS.items() if mask & bit
    }, "system flags come back in their canonical spelling"
    assert flags_to_mask(out) == (mask, keywords)


def test_system_flags_match_case_insensitively_and_recent_is_dropped() -> None:
    assert flags_to_mask(["\\SEEN", "\\deleted", "\\Recent", "\\RECENT"]) == (SEEN | DELETED, ())
    assert mask_to_flags(SEEN | DELETED | IN_NEW) == ("\\Seen", "\\Deleted")


# -- journal replay --------------------------------------------------------------------


def test_a_second_index_replaying_the_journal_sees_the_same_state(tmp_path: Path) -> None:
    writer = new_index(tmp_path)
    watcher = reopen(tmp_path)  # opened before the changes: reads only the journal's tail

    mutate(writer)

    expected = state(writer)
    assert expected["uids"] == [1, 2, 5, 6]
    assert expected["keywords"] == {1: ("Important",), 6: ("$Forwarded",)}
    assert expected["vanished"] == [3, 4, 7]
    assert (expected["total_size"], expected["unseen"]) == computed(writer)
    assert state(reopen(tmp_path)) == expected
    assert state(watcher) == expected
    assert json.loads(journal_lines(tmp_path)[0]) == ["h", 0], "no compaction happened"


def test_a_reader_catches_up_change_by_change(tmp_path: Path) -> None:
    writer = new_index(tmp_path)
    reader = reopen(tmp_path)
    uid = writer.add("a", IN_NEW, (), 10, DATE).uid
    assert state(reader) == state(writer)
    writer.set_flags(uid, SEEN, ("k",))
    assert state(reader) == state(writer)
    assert reader.get(uid).keywords == ("k",)
    writer.expunge([uid])
    assert state(reader) == state(writer)
    with pytest.raises(NotFound):
        reader.get(uid)


def test_two_writers_on_one_folder_interleave_without_losing_changes(tmp_path: Path) -> None:
    one = new_index(tmp_path)
    two = reopen(tmp_path)
    a = one.add("a", IN_NEW, (), 10, DATE)
    b = two.add("b", IN_NEW, (), 20, DATE)
    assert (a.uid, b.uid) == (1, 2)
    one.set_flags(b.uid, SEEN, ())
    two.set_flags(a.uid, FLAGGED, ())
    assert state(one) == state(two)
    assert one.get(a.uid).mask == FLAGGED
    assert two.get(b.uid).mask == SEEN


# -- compaction ------------------------------------------------------------------------


def test_compact_keeps_every_message_flag_keyword_and_modseq(tmp_path: Path) -> None:
    index = new_index(tmp_path)
    watcher = reopen(tmp_path)
    mutate(index)
    before = state(index)

    index.compact()

    assert journal_lines(tmp_path) == [b'["h", 1]']
    assert index.generation == 1
    assert state(index) == before
    assert state(reopen(tmp_path)) == before
    assert state(watcher) == before, "a reader opened before the compaction follows it"
    # and writing goes on from there
    uid = index.add("z", IN_NEW, (), 5, DATE).uid
    assert uid == before["uidnext"]
    assert state(reopen(tmp_path)) == state(index)


def test_automatic_compaction_with_a_small_journal_keeps_everything(tmp_path: Path) -> None:
    index = new_index(tmp_path, journal_max=10)
    watcher = reopen(tmp_path, journal_max=10)
    uids = add_n(index, 40)
    for uid in uids[::3]:
        index.set_flags(uid, SEEN | FLAGGED, (f"k{uid}",))
    index.expunge(uids[5:15])
    index.expunge([uids[-1]])
    mutate(index)
    # a second writer with its own counter also compacts
    other = reopen(tmp_path, journal_max=10)
    add_n(other, 12, prefix="o")

    expected = state(index)
    assert index.generation >= 5
    assert len(journal_lines(tmp_path)) <= 11  # the header + at most journal_max records
    assert state(reopen(tmp_path)) == expected
    assert state(watcher) == expected
    assert state(other) == expected
    assert (expected["total_size"], expected["unseen"]) == computed(index)
    assert expected["vanished"][:11] == [*uids[5:15], uids[-1]]


# -- UIDs and MODSEQs ------------------------------------------------------------------


def test_uids_increase_strictly_and_are_never_reused_after_expunge(tmp_path: Path) -> None:
    index = new_index(tmp_path)
    assert add_n(index, 3) == [1, 2, 3]
    index.expunge([3])  # the highest: uidnext must not go back to 3
    assert index.uidnext == 4
    assert reopen(tmp_path).uidnext == 4
    index.compact()
    assert reopen(tmp_path).uidnext == 4, "the snapshot keeps uidnext past expunged UIDs"
    index.expunge([1, 2])
    assert len(index) == 0
    fresh = reopen(tmp_path)
    assert fresh.add("n", IN_NEW, (), 1, DATE).uid == 4
    assert [m.uid for m in fresh.add_many([("p", 0, (), 1, DATE), ("q", 0, (), 1, DATE)])] == [5, 6]
    assert list(reopen(tmp_path).uids) == [4, 5, 6]
    assert reopen(tmp_path).vanished_since(0) == [1, 2, 3]


def test_highestmodseq_grows_with_every_change_and_only_then(tmp_path: Path) -> None:
    index = new_index(tmp_path)
    seen = [index.highestmodseq]

    def changed() -> int:
        assert index.highestmodseq > seen[-1]
        seen.append(index.highestmodseq)
        return index.highestmodseq

    a = index.add("a", IN_NEW, (), 1, DATE)
    assert a.modseq == changed()
    metas = index.add_many([("b", 0, (), 1, DATE), ("c", 0, (), 1, DATE)])
    assert metas[0].modseq < metas[1].modseq == changed()
    _, after = index.set_flags(a.uid, SEEN, ())
    assert after.modseq == changed()
    before, after = index.set_flags(a.uid, SEEN, ())  # no change: no new MODSEQ
    assert before == after
    assert index.highestmodseq == seen[-1]
    _, after = index.set_flags(a.uid, SEEN, ("kw",))
    assert after.modseq == changed()
    index.expunge([metas[0].uid])
    changed()
    assert index.expunge([metas[0].uid]) == []  # already gone: nothing to record
    assert index.highestmodseq == seen[-1]
    assert reopen(tmp_path).highestmodseq == seen[-1]


def test_set_flags_with_unchanged_since_refuses_a_message_modified_later(tmp_path: Path) -> None:
    index = new_index(tmp_path)
    meta = index.add("a", IN_NEW, (), 1, DATE)

    before, after = index.set_flags(meta.uid, SEEN, (), unchanged_since=meta.modseq)
    assert after.mask == SEEN and after.modseq > meta.modseq

    top = index.highestmodseq
    before, after = index.set_flags(meta.uid, FLAGGED, ("late",), unchanged_since=meta.modseq)
    assert before == after
    assert after.mask == SEEN and after.keywords == ()
    assert index.highestmodseq == top
    assert reopen(tmp_path).get(meta.uid).mask == SEEN

    _, after = index.set_flags(meta.uid, FLAGGED, (), unchanged_since=top)
    assert after.mask == FLAGGED


def test_change_flags_adds_and_removes_against_the_current_flags(tmp_path: Path) -> None:
    index = new_index(tmp_path)
    meta = index.add("a", IN_NEW, ("$A",), 1, DATE)

    _, after = index.change_flags(meta.uid, "add", SEEN, ("$a", "Work"))
    assert (after.mask, after.keywords) == (SEEN, ("$A", "Work")), "IN_NEW gone, no duplicate"
    top = index.highestmodseq
    before, after = index.change_flags(meta.uid, "add", SEEN, ("work",))
    assert before == after and index.highestmodseq == top, "adding what is there is no change"
    _, after = index.change_flags(meta.uid, "remove", SEEN | DELETED, ("WORK",))
    assert (after.mask, after.keywords) == (0, ("$A",))
    assert state(reopen(tmp_path)) == state(index)


def test_set_flags_of_an_unknown_uid_raises_not_found(tmp_path: Path) -> None:
    index = new_index(tmp_path)
    with pytest.raises(NotFound):
        index.set_flags(42, SEEN, ())


def test_vanished_since_lists_uids_expunged_after_a_modseq(tmp_path: Path) -> None:
    index = new_index(tmp_path)
    uids = add_n(index, 6)
    start = index.highestmodseq
    index.expunge([uids[1]])
    first = index.highestmodseq
    index.expunge([uids[3], uids[4]])
    second = index.highestmodseq

    assert index.vanished_since(0) == [2, 4, 5]
    assert index.vanished_since(start) == [2, 4, 5]
    assert index.vanished_since(first) == [4, 5]
    assert index.vanished_since(second) == []
    index.compact()
    fresh = reopen(tmp_path)
    assert fresh.vanished_since(start) == [2, 4, 5]
    assert fresh.vanished_since(first) == [4, 5]


# -- crash leftovers -------------------------------------------------------------------


def test_a_partial_trailing_journal_line_is_ignored_then_truncated(tmp_path: Path) -> None:
    index = new_index(tmp_path)
    add_n(index, 3)
    expected = state(index)
    journal = tmp_path / "index.journal"
    clean = journal.read_bytes()
    with open(journal, "ab") as f:
        f.write(b'["a",99')

    reader = reopen(tmp_path)
    assert state(reader) == expected
    assert state(index) == expected

    writer = reopen(tmp_path)
    uid = writer.add("after", IN_NEW, (), 7, DATE).uid
    assert uid == 4
    data = journal.read_bytes()
    assert b"99" not in data
    assert data.startswith(clean) and data.endswith(b"\n")
    assert all(json.loads(line) for line in data.splitlines())
    assert list(reopen(tmp_path).uids) == [1, 2, 3, 4]
    assert state(reader) == state(writer)
    assert state(index) == state(writer)


def test_a_stale_journal_left_by_a_crash_mid_compaction_is_skipped(tmp_path: Path) -> None:
    index = new_index(tmp_path)
    add_n(index, 5)
    index.set_flags(2, SEEN, ("k",))
    journal = tmp_path / "index.journal"
    # The crash: the new snapshot (generation 1) is in place, the old journal (generation 0,
    # the same file) was never replaced.
    os.link(journal, tmp_path / "old.journal")
    index.compact()
    os.replace(tmp_path / "old.journal", journal)
    assert json.loads(journal_lines(tmp_path)[0]) == ["h", 0]
    expected = state(reopen(tmp_path))
    assert expected["uids"] == [1, 2, 3, 4, 5], "the old records are not applied twice"
    assert state(index) == expected

    writer = reopen(tmp_path)
    assert writer.add("next", IN_NEW, (), 1, DATE).uid == 6
    header = json.loads(journal_lines(tmp_path)[0])
    assert header[0] == "h" and header[1] > 1, "the next writer restarted the journal"
    assert list(reopen(tmp_path).uids) == [1, 2, 3, 4, 5, 6]
    assert state(index) == state(writer)
    assert index.get(2).keywords == ("k",)


def test_a_missing_index_means_the_folder_is_gone(tmp_path: Path) -> None:
    index = MailIndex(tmp_path, fsync=False)
    with pytest.raises(NotFound):
        index.refresh()


def test_rows_and_get_many_agree_with_messages(tmp_path: Path) -> None:
    index = new_index(tmp_path / "f")
    mutate(index)
    metas = list(index.messages())
    assert [MessageMeta(*row) for row in index.rows()] == metas
    uids = [m.uid for m in metas]
    assert index.get_many([uids[-1], 999, uids[0]]) == [metas[-1], metas[0]]
    assert index.get_many([]) == []


def test_change_flags_many_matches_one_change_after_the_other(tmp_path: Path) -> None:
    one, many = new_index(tmp_path / "one"), new_index(tmp_path / "many")
    for index in (one, many):
        mutate(index)
    uids = [m.uid for m in one.messages()]
    wanted = [uids[0], 999, uids[-1], uids[0], uids[1]]
    since = max(m.modseq for m in one.messages()) - 1

    expected = []
    for uid in wanted:
        try:
            expected.append(
                one.change_flags(uid, "add", FLAGGED, ("$Work",), unchanged_since=since)
            )
        except NotFound:
            continue
    renamed: list[tuple[int, int]] = []
    got = many.change_flags_many(
        wanted,
        "add",
        FLAGGED,
        ("$Work",),
        unchanged_since=since,
        on_change=lambda before, after: renamed.append((before.modseq, after.modseq)),
    )
    assert got == expected
    assert renamed == [(b.modseq, a.modseq) for b, a in expected if a is not b]
    assert state(reopen(tmp_path / "many")) == state(reopen(tmp_path / "one"))

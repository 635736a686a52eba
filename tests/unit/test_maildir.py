"""A user's Maildir++ folders on real files: messages, flags in file names, folders, quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rmail.errors import AlreadyExists, InvalidInput, NotFound, QuotaExceeded
from rmail.store.maildir import DEFAULT_FOLDERS, Folder, Mailbox
from rmail.store.mailindex import IN_NEW, MessageMeta

HOST = "mx.example.test"
LF_MESSAGE = b"From: a@example.test\nSubject: hi\n\nline one\nline two\n"
CRLF_MESSAGE = LF_MESSAGE.replace(b"\n", b"\r\n")


@pytest.fixture
def mailbox(tmp_path: Path) -> Mailbox:
    mb = Mailbox(tmp_path / "mail", hostname=HOST, fsync=False)
    mb.initialize()
    return mb


def reopen(mailbox: Mailbox) -> Mailbox:
    """A second Mailbox on the same directory: what another process would see."""
    return Mailbox(mailbox.dir, hostname=HOST, fsync=False)


def message(n: int) -> bytes:
    return f"Message-ID: <m{n}@test>\r\nSubject: {n}\r\n\r\nbody {n}\r\n".encode()


def files_of(folder: Folder) -> dict[str, list[str]]:
    return {sub: sorted(os.listdir(folder.dir / sub)) for sub in ("new", "cur", "tmp")}


def only_file(folder: Folder) -> str:
    """The relative path of the one message file in the folder."""
    found = [f"{sub}/{name}" for sub, names in files_of(folder).items() for name in names]
    assert len(found) == 1, found
    return found[0]


# -- messages --------------------------------------------------------------------------


def test_append_then_read_returns_the_message_with_crlf_line_endings(mailbox: Mailbox) -> None:
    inbox = mailbox.folder("INBOX")
    meta = inbox.append(LF_MESSAGE, date=1_700_000_000)

    assert inbox.read(meta.uid) == CRLF_MESSAGE
    assert meta.size == len(CRLF_MESSAGE) == len(LF_MESSAGE) + LF_MESSAGE.count(b"\n")
    assert meta.date == 1_700_000_000
    assert inbox.index.total_size == meta.size
    fresh = reopen(mailbox).folder("INBOX")
    assert fresh.read(meta.uid) == CRLF_MESSAGE
    assert fresh.index.get(meta.uid) == meta


def test_append_keeps_crlf_and_fixes_only_bare_lf(mailbox: Mailbox) -> None:
    inbox = mailbox.folder("INBOX")
    a = inbox.append(CRLF_MESSAGE)
    b = inbox.append(b"A: 1\r\nB: 2\n\r\nx\ny\r\n")
    assert inbox.read(a.uid) == CRLF_MESSAGE
    assert inbox.read(b.uid) == b"A: 1\r\nB: 2\r\n\r\nx\r\ny\r\n"
    assert b.size == len(inbox.read(b.uid))


def test_new_mail_sits_in_new_until_flagged_then_cur_mirrors_the_flags(mailbox: Mailbox) -> None:
    inbox = mailbox.folder("INBOX")
    meta = inbox.append(CRLF_MESSAGE)
    assert meta.mask == IN_NEW
    assert only_file(inbox) == f"new/{meta.base}"

    inbox.change_flags(meta.uid, "add", ["\\Seen"])
    assert only_file(inbox) == f"cur/{meta.base}:2,S"
    inbox.change_flags(meta.uid, "add", ["\\Flagged", "\\Answered", "$Label"])
    assert only_file(inbox) == f"cur/{meta.base}:2,FRS"  # keywords are not in the name
    inbox.change_flags(meta.uid, "remove", ["\\Seen", "\\Answered"])
    assert only_file(inbox) == f"cur/{meta.base}:2,F"
    inbox.change_flags(meta.uid, "set", [])
    assert only_file(inbox) == f"cur/{meta.base}:2,"
    assert inbox.read(meta.uid) == CRLF_MESSAGE


def test_append_with_flags_goes_straight_to_cur(mailbox: Mailbox) -> None:
    inbox = mailbox.folder("INBOX")
    meta = inbox.append(CRLF_MESSAGE, flags=["\\seen", "\\Draft", "$Work", "\\Recent"])
    assert meta.flags == ("\\Seen", "\\Draft", "$Work")
    assert only_file(inbox) == f"cur/{meta.base}:2,DS"


def test_a_file_renamed_by_another_program_is_still_found(mailbox: Mailbox) -> None:
    inbox = mailbox.folder("INBOX")
    meta = inbox.append(CRLF_MESSAGE, flags=["\\Seen"])
    # mutt flags it: cur/{base}:2,S -> cur/{base}:2,FS
    os.rename(inbox.dir / f"cur/{meta.base}:2,S", inbox.dir / f"cur/{meta.base}:2,FS")
    assert inbox.read(meta.uid) == CRLF_MESSAGE
    assert reopen(mailbox).folder("INBOX").read(meta.uid) == CRLF_MESSAGE

    # our next flag change renames it to what the (authoritative) index says
    inbox.change_flags(meta.uid, "add", ["\\Answered"])
    assert only_file(inbox) == f"cur/{meta.base}:2,RS"
    assert inbox.read(meta.uid) == CRLF_MESSAGE


def test_a_new_message_moved_to_cur_by_another_program_is_still_found(mailbox: Mailbox) -> None:
    inbox = mailbox.folder("INBOX")
    meta = inbox.append(CRLF_MESSAGE)
    os.rename(inbox.dir / f"new/{meta.base}", inbox.dir / f"cur/{meta.base}:2,S")
    assert inbox.read(meta.uid) == CRLF_MESSAGE
    assert inbox.expunge([meta.uid]) == [meta]
    assert files_of(inbox) == {"new": [], "cur": [], "tmp": []}


def test_copy_keeps_flags_keywords_and_content(mailbox: Mailbox) -> None:
    inbox = mailbox.folder("INBOX")
    plain = inbox.append(message(1))
    flagged = inbox.append(message(2), flags=["\\Seen", "\\Flagged", "$Label"])
    archive = mailbox.folder("Archive")

    pairs = inbox.copy_to([flagged.uid, plain.uid, 999], archive)

    assert [src for src, _ in pairs] == [plain.uid, flagged.uid]
    copies = {src: archive.index.get(dst) for src, dst in pairs}
    assert copies[plain.uid].mask == IN_NEW
    assert copies[flagged.uid].flags == ("\\Seen", "\\Flagged", "$Label")
    assert copies[flagged.uid].size == flagged.size
    assert copies[flagged.uid].date == flagged.date
    for src, dst in pairs:
        assert archive.read(dst) == inbox.read(src)
    assert len(inbox.refresh()) == 2, "COPY leaves the source alone"
    assert sorted(files_of(archive)["cur"]) == [f"{copies[flagged.uid].base}:2,FS"]
    assert files_of(archive)["new"] == [copies[plain.uid].base]


def test_move_keeps_flags_and_keywords_and_removes_the_source(mailbox: Mailbox) -> None:
    inbox = mailbox.folder("INBOX")
    meta = inbox.append(message(1), flags=["\\Answered", "Work"])
    keep = inbox.append(message(2))
    trash = mailbox.folder("Trash")

    ((src, dst),) = inbox.move_to([meta.uid], trash)

    assert src == meta.uid
    moved = trash.index.get(dst)
    assert moved.flags == ("\\Answered", "Work")
    assert trash.read(dst) == message(1)
    assert list(inbox.refresh().uids) == [keep.uid]
    assert inbox.index.vanished_since(0) == [meta.uid]
    assert files_of(inbox)["cur"] == []
    assert files_of(inbox)["new"] == [keep.base]
    fresh = reopen(mailbox)
    assert list(fresh.folder("INBOX").index.uids) == [keep.uid]
    assert fresh.folder("Trash").read(dst) == message(1)


def test_expunge_without_uids_removes_only_deleted_messages(mailbox: Mailbox) -> None:
    inbox = mailbox.folder("INBOX")
    metas = [inbox.append(message(n)) for n in range(4)]
    inbox.change_flags(metas[1].uid, "add", ["\\Deleted"])
    inbox.change_flags(metas[3].uid, "add", ["\\Deleted", "\\Seen"])
    inbox.change_flags(metas[2].uid, "add", ["\\Seen"])

    gone = inbox.expunge()

    assert [m.uid for m in gone] == [metas[1].uid, metas[3].uid]
    assert list(inbox.index.uids) == [metas[0].uid, metas[2].uid]
    assert files_of(inbox)["new"] == [metas[0].base]
    assert files_of(inbox)["cur"] == [f"{metas[2].base}:2,S"]
    assert inbox.index.total_size == metas[0].size + metas[2].size
    assert inbox.expunge() == []


# -- folders ---------------------------------------------------------------------------


def test_a_new_mailbox_has_inbox_and_the_special_use_folders(mailbox: Mailbox) -> None:
    infos = {info.name: info for info in mailbox.list_folders()}
    assert set(infos) == {"INBOX", *DEFAULT_FOLDERS}
    for name, attr in DEFAULT_FOLDERS.items():
        assert infos[name].special_use == attr
        assert infos[name].subscribed
    assert mailbox.special_use() == DEFAULT_FOLDERS
    assert mailbox.folder_names()[0] == "INBOX"
    mailbox.initialize()  # idempotent
    assert {i.name for i in reopen(mailbox).list_folders()} == set(infos)


def test_create_makes_missing_parents(mailbox: Mailbox) -> None:
    mailbox.create_folder("a/b/c")
    names = reopen(mailbox).folder_names()
    assert {"a", "a/b", "a/b/c"} <= set(names)
    infos = {i.name: i for i in mailbox.list_folders()}
    assert infos["a"].has_children and infos["a/b"].has_children
    assert not infos["a/b/c"].has_children
    assert len(mailbox.folder("a/b").refresh()) == 0


def test_create_with_special_use_records_it(mailbox: Mailbox) -> None:
    mailbox.create_folder("Starred", special_use="\\Flagged")
    assert mailbox.special_use()["Starred"] == "\\Flagged"
    with pytest.raises(InvalidInput):
        mailbox.create_folder("Odd", special_use="\\Bogus")


def test_a_folder_name_with_a_dot_is_not_a_hierarchy(mailbox: Mailbox) -> None:
    mailbox.create_folder("python.dev")
    mailbox.create_folder("python/dev")
    meta = mailbox.folder("python.dev").append(message(1))

    fresh = reopen(mailbox)
    names = fresh.folder_names()
    assert "python.dev" in names and "python/dev" in names and "python" in names
    assert fresh.folder("python.dev").read(meta.uid) == message(1)
    assert len(fresh.folder("python/dev").index) == 0


@pytest.mark.parametrize("name", ["100%", "a%2Eb", "%25.x", "ünï.cödé", "x.y/z.w"])
def test_folder_names_with_escape_characters_round_trip(mailbox: Mailbox, name: str) -> None:
    mailbox.create_folder(name)
    assert name in reopen(mailbox).folder_names()
    assert reopen(mailbox).exists(name)


def test_rename_moves_children_messages_subscriptions_and_special_use(mailbox: Mailbox) -> None:
    mailbox.create_folder("work", special_use="\\Flagged")
    mailbox.create_folder("work/2024")
    mailbox.create_folder("workshop")  # a sibling that only shares the prefix
    mailbox.subscribe("work")
    mailbox.subscribe("work/2024")
    mailbox.subscribe("workshop")
    meta = mailbox.folder("work/2024").append(message(1), flags=["\\Seen"])
    uidvalidity = mailbox.folder("work/2024").index.uidvalidity

    mailbox.rename_folder("work", "jobs/old")

    fresh = reopen(mailbox)
    names = fresh.folder_names()
    assert {"jobs", "jobs/old", "jobs/old/2024", "workshop"} <= set(names)
    assert "work" not in names and "work/2024" not in names
    child = fresh.folder("jobs/old/2024")
    assert child.read(meta.uid) == message(1)
    assert child.index.get(meta.uid).flags == ("\\Seen",)
    assert child.index.uidvalidity == uidvalidity
    subs = set(fresh.subscriptions())
    assert {"jobs/old", "jobs/old/2024", "workshop"} <= subs
    assert not {"work", "work/2024"} & subs
    assert fresh.special_use().get("jobs/old") == "\\Flagged"
    assert "work" not in fresh.special_use()
    with pytest.raises(NotFound):
        mailbox.folder("work/2024")


def test_a_folder_made_again_under_an_old_name_gets_a_new_uidvalidity(mailbox: Mailbox) -> None:
    mailbox.create_folder("x")
    first = mailbox.folder("x").index.uidvalidity
    mailbox.rename_folder("x", "y")
    mailbox.create_folder("x")
    assert mailbox.folder("x").index.uidvalidity > first
    mailbox.delete_folder("x")
    mailbox.create_folder("x")
    assert mailbox.folder("x").index.uidvalidity > first + 1


def test_rename_inbox_moves_its_messages_and_leaves_it_empty(mailbox: Mailbox) -> None:
    inbox = mailbox.folder("INBOX")
    metas = [inbox.append(message(n), flags=["\\Seen"] if n else []) for n in range(3)]

    mailbox.rename_folder("INBOX", "Old Inbox")

    fresh = reopen(mailbox)
    assert len(fresh.folder("INBOX").index) == 0
    assert files_of(fresh.folder("INBOX")) == {"new": [], "cur": [], "tmp": []}
    old = fresh.folder("Old Inbox")
    assert [old.read(m.uid) for m in old.index.messages()] == [message(n) for n in range(3)]
    assert [m.mask for m in old.index.messages()] == [m.mask for m in metas]
    assert inbox.append(message(9)).uid > metas[-1].uid, "INBOX UIDs do not restart"


def test_delete_removes_the_folder_and_its_children_only(mailbox: Mailbox) -> None:
    mailbox.create_folder("a/b/c")
    mailbox.create_folder("ab")
    mailbox.create_folder("a.b")
    mailbox.create_folder("Gone", special_use="\\Flagged")
    mailbox.folder("a/b").append(message(1))
    cached = mailbox.folder("a/b/c")

    mailbox.delete_folder("a")
    mailbox.delete_folder("Gone")

    names = reopen(mailbox).folder_names()
    assert not {"a", "a/b", "a/b/c", "Gone"} & set(names)
    assert {"ab", "a.b"} <= set(names)
    assert "Gone" not in mailbox.special_use()
    assert not cached.dir.exists()
    with pytest.raises(NotFound):
        mailbox.folder("a/b/c")
    with pytest.raises(NotFound):
        cached.refresh()
    assert list((mailbox.dir / "tmp").iterdir()) == [], "the renamed-away directories are gone"


def test_an_open_folder_deleted_meanwhile_answers_not_found(mailbox: Mailbox) -> None:
    mailbox.create_folder("x")
    folder = mailbox.folder("x")
    meta = folder.append(message(1))
    reopen(mailbox).delete_folder("x")  # another session
    with pytest.raises(NotFound):
        folder.read(meta.uid)
    with pytest.raises(NotFound):
        folder.change_flags(meta.uid, "add", ["\\Seen"])
    with pytest.raises(NotFound):
        folder.expunge()


def test_appending_to_a_folder_deleted_meanwhile_answers_not_found(mailbox: Mailbox) -> None:
    mailbox.create_folder("x")
    folder = mailbox.folder("x")
    reopen(mailbox).delete_folder("x")
    with pytest.raises(NotFound):
        folder.append(message(1))


def test_deleting_inbox_is_refused(mailbox: Mailbox) -> None:
    for name in ("INBOX", "inbox"):
        with pytest.raises(InvalidInput, match="INBOX"):
            mailbox.delete_folder(name)
    assert mailbox.exists("INBOX")


def test_a_missing_folder_is_not_found(mailbox: Mailbox) -> None:
    with pytest.raises(NotFound):
        mailbox.folder("nope")
    with pytest.raises(NotFound):
        mailbox.delete_folder("nope")
    with pytest.raises(NotFound):
        mailbox.rename_folder("nope", "other")
    assert not mailbox.exists("other")


def test_creating_an_existing_folder_says_already_exists(mailbox: Mailbox) -> None:
    mailbox.create_folder("x/y")
    for name in ("x", "x/y", "INBOX", "inbox", "Sent"):
        with pytest.raises(AlreadyExists):
            mailbox.create_folder(name)
    with pytest.raises(AlreadyExists):
        mailbox.rename_folder("x/y", "Sent")


def test_renaming_a_folder_into_itself_is_refused(mailbox: Mailbox) -> None:
    mailbox.create_folder("x")
    with pytest.raises(InvalidInput):
        mailbox.rename_folder("x", "x/y")
    with pytest.raises(InvalidInput):
        mailbox.rename_folder("x", "INBOX")


BAD_NAMES = [
    "",
    "..",
    ".",
    "a/../b",
    "a/./b",
    "a//b",
    "/a",
    "a/",
    "a\x00b",
    "\x01",
    "a\x7fb",
    "a\\b",
    "x" * 300,
    "é" * 150,
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bad_folder_name_is_refused_with_a_clear_message(mailbox: Mailbox, name: str) -> None:
    before = sorted(os.listdir(mailbox.dir))
    for attempt in (
        lambda: mailbox.create_folder(name),
        lambda: mailbox.folder(name),
        lambda: mailbox.delete_folder(name),
        lambda: mailbox.rename_folder("Sent", name),
        lambda: mailbox.subscribe(name),
    ):
        with pytest.raises(InvalidInput, match="folder name") as caught:
            attempt()
        assert len(str(caught.value)) < 200
    assert sorted(os.listdir(mailbox.dir)) == before


# -- quota -----------------------------------------------------------------------------


def test_an_append_over_quota_is_refused_and_stores_nothing(tmp_path: Path) -> None:
    mailbox = Mailbox(tmp_path / "mail", hostname=HOST, fsync=False, quota_bytes=lambda: 1000)
    mailbox.initialize()
    inbox = mailbox.folder("INBOX")
    first = inbox.append(b"x" * 600)
    uidnext = inbox.index.uidnext

    with pytest.raises(QuotaExceeded, match="quota"):
        inbox.append(b"y" * 401)
    with pytest.raises(QuotaExceeded):
        inbox.append_many([(b"a" * 100, (), None), (b"b" * 301, (), None)])
    # 390 bytes with LF become 400 with CRLF: it is the stored size that counts
    with pytest.raises(QuotaExceeded):
        inbox.append(b"z\n" * 195)

    assert list(inbox.refresh().uids) == [first.uid]
    assert inbox.index.uidnext == uidnext
    assert files_of(inbox) == {"new": [first.base], "cur": [], "tmp": []}
    assert mailbox.usage_bytes() == 600
    assert inbox.append(b"w" * 400).uid == uidnext, "exactly full is allowed"


def test_an_over_quota_copy_to_another_folder_is_refused(tmp_path: Path) -> None:
    mailbox = Mailbox(tmp_path / "mail", hostname=HOST, fsync=False, quota_bytes=lambda: 1000)
    mailbox.initialize()
    meta = mailbox.folder("INBOX").append(b"x" * 600)
    archive = mailbox.folder("Archive")
    with pytest.raises(QuotaExceeded):
        mailbox.folder("INBOX").copy_to([meta.uid], archive)
    assert len(archive.refresh()) == 0
    assert files_of(archive) == {"new": [], "cur": [], "tmp": []}


def test_a_full_mailbox_can_still_move_mail_to_trash(tmp_path: Path) -> None:
    mailbox = Mailbox(tmp_path / "mail", hostname=HOST, fsync=False, quota_bytes=lambda: 1000)
    mailbox.initialize()
    inbox = mailbox.folder("INBOX")
    meta = inbox.append(b"x" * 900)
    pairs = inbox.move_to([meta.uid], mailbox.folder("Trash"))
    assert len(pairs) == 1
    assert mailbox.usage_bytes() == 900


def test_quota_counts_every_folder_and_extra_usage(tmp_path: Path) -> None:
    mailbox = Mailbox(
        tmp_path / "mail",
        hostname=HOST,
        fsync=False,
        quota_bytes=lambda: 1000,
        extra_usage=lambda: 300,
    )
    mailbox.initialize()
    mailbox.folder("Sent").append(b"s" * 400)
    with pytest.raises(QuotaExceeded):
        mailbox.folder("INBOX").append(b"i" * 301)
    assert mailbox.folder("INBOX").append(b"i" * 300).size == 300


def test_unflagged_meta_relpath_points_into_new() -> None:
    meta = MessageMeta(uid=1, base="b", mask=IN_NEW, keywords=(), size=0, date=0, modseq=1)
    assert meta.relpath == "new/b"


def test_expunge_of_given_uids_spares_those_no_longer_flagged_deleted(tmp_path: Path) -> None:
    """IMAP UID EXPUNGE: a session may clear \\Deleted between the client's STORE and EXPUNGE."""
    mailbox = Mailbox(tmp_path / "mail", hostname="test", fsync=False)
    mailbox.initialize()
    inbox = mailbox.folder("INBOX")
    kept = inbox.append(b"Subject: keep\r\n\r\nx\r\n")
    gone = inbox.append(b"Subject: go\r\n\r\ny\r\n")
    inbox.change_flags(gone.uid, "add", ["\\Deleted"])
    removed = inbox.expunge([kept.uid, gone.uid], only_deleted=True)
    assert [m.uid for m in removed] == [gone.uid]
    assert list(inbox.refresh().uids) == [kept.uid]


def test_read_message_follows_a_file_renamed_behind_the_index(mailbox: Mailbox) -> None:
    inbox = mailbox.folder("INBOX")
    meta = inbox.append(CRLF_MESSAGE)
    assert inbox.read_message(meta) == CRLF_MESSAGE
    os.rename(inbox.dir / f"new/{meta.base}", inbox.dir / f"cur/{meta.base}:2,S")
    assert inbox.read_message(meta) == CRLF_MESSAGE
    os.unlink(inbox.dir / f"cur/{meta.base}:2,S")
    with pytest.raises(NotFound):
        inbox.read_message(meta)


def test_read_message_reads_the_whole_file_whatever_size_the_index_says(mailbox: Mailbox) -> None:
    inbox = mailbox.folder("INBOX")
    meta = inbox.append(CRLF_MESSAGE)
    path = inbox.dir / meta.relpath
    for changed in (CRLF_MESSAGE + b"x" * 3_000_000, CRLF_MESSAGE[:10], b""):
        path.write_bytes(changed)  # another program rewrote it (files are not meant to change)
        assert inbox.read_message(meta) == changed

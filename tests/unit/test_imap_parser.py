"""The IMAP command parser: client-shaped commands in, typed command values out.

The inputs are the forms real clients send (Thunderbird, Apple Mail, mutt, imaplib,
IMAPClient, mbsync), literals inline as ``server.py`` hands them over. Every error path
raises ``ParseError`` with the tag (or ``BadCharset``), and hypothesis checks that no input
makes the parser raise anything else.
"""

from __future__ import annotations

import contextlib
import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmail.imap import mutf7
from rmail.imap.parser.commands import (
    AppendCommand,
    AppendMessage,
    AuthenticateCommand,
    CapabilityCommand,
    CheckCommand,
    CloseCommand,
    Command,
    CopyCommand,
    CreateCommand,
    DeleteCommand,
    EnableCommand,
    ExpungeCommand,
    FetchCommand,
    GetQuotaCommand,
    GetQuotaRootCommand,
    IdCommand,
    IdleCommand,
    ListCommand,
    LoginCommand,
    LogoutCommand,
    LsubCommand,
    MoveCommand,
    NamespaceCommand,
    NoopCommand,
    QResyncParams,
    RenameCommand,
    SearchCommand,
    SelectCommand,
    SortCommand,
    StartTlsCommand,
    StatusCommand,
    StoreCommand,
    SubscribeCommand,
    ThreadCommand,
    UnselectCommand,
    UnsubscribeCommand,
)
from rmail.imap.parser.errors import BadCharset, ParseError
from rmail.imap.parser.parse import command_name, literal_at_end, parse_command
from rmail.imap.parser.types import (
    FetchAttr,
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchSet,
    SearchSize,
    SearchText,
    Section,
    SequenceSet,
    SortKey,
)


def _parse(line: bytes | str, *, utf8: bool = False) -> Command:
    data = line.encode() if isinstance(line, str) else line
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return parse_command(data, utf8=utf8)


def _error(line: bytes | str, *, utf8: bool = False) -> ParseError:
    with pytest.raises(ParseError) as info:
        _parse(line, utf8=utf8)
    return info.value


def _key(criteria: str) -> SearchKey | None:
    command = _parse(f"s SEARCH {criteria}")
    assert isinstance(command, SearchCommand)
    return command.key


def _set(*ranges: tuple[int | None, int | None]) -> SequenceSet:
    return SequenceSet(tuple(ranges))


def _attrs(items: str) -> tuple[FetchAttr, ...]:
    command = _parse(f"f FETCH 1 {items}")
    assert isinstance(command, FetchCommand)
    return command.attrs


ALL_STAR = _set((1, None))


# -- tags and command names ------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["A1", "1", "3.53", "a0001", "JKLM12", "x]y", "~!#"])
def test_tag_may_be_any_astring_char_except_plus(tag: str) -> None:
    assert _parse(f"{tag} NOOP") == NoopCommand(tag)


@pytest.mark.parametrize("line", ["+ NOOP", "+a NOOP", " NOOP", "(a NOOP", '"a" NOOP', ""])
def test_unreadable_tag_is_a_bad_without_tag(line: str) -> None:
    error = _error(line)
    assert error.tag is None
    assert error.offset == 0


def test_command_names_are_case_insensitive() -> None:
    assert _parse("a capability") == CapabilityCommand("a")
    assert _parse("a Uid Fetch 1 flags") == FetchCommand(
        "a", _set((1, 1)), (FetchAttr("FLAGS"),), uid=True
    )


def test_unknown_command_is_named_in_the_error() -> None:
    error = _error("a7 XYZZY foo")
    assert error.tag == "a7"
    assert "XYZZY" in error.message
    assert error.offset == 3


def test_unknown_uid_command_is_named_in_the_error() -> None:
    error = _error("a UID FROB 1")
    assert "UID FROB" in error.message


def test_missing_command_name_keeps_the_tag() -> None:
    assert _error("a1").tag == "a1"
    assert _error("a1 ").tag == "a1"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("a CAPABILITY", CapabilityCommand("a")),
        ("a NOOP", NoopCommand("a")),
        ("a LOGOUT", LogoutCommand("a")),
        ("a STARTTLS", StartTlsCommand("a")),
        ("a NAMESPACE", NamespaceCommand("a")),
        ("a IDLE", IdleCommand("a")),
        ("a UNSELECT", UnselectCommand("a")),
        ("a CHECK", CheckCommand("a")),
        ("a CLOSE", CloseCommand("a")),
        ("a EXPUNGE", ExpungeCommand("a")),
    ],
)
def test_commands_without_arguments(line: str, expected: Command) -> None:
    assert _parse(line) == expected


@pytest.mark.parametrize("line", ["a NOOP x", "a NOOP ", "a IDLE\r\n\r\n", "a LOGOUT)"])
def test_trailing_garbage_is_rejected(line: str) -> None:
    error = _error(line)
    assert error.tag == "a"
    assert "unexpected data" in error.message


def test_line_may_end_in_lf_or_nothing() -> None:
    assert parse_command(b"a NOOP\n") == NoopCommand("a")
    assert parse_command(b"a NOOP") == NoopCommand("a")


def test_bare_cr_is_rejected() -> None:
    with pytest.raises(ParseError):
        parse_command(b"a NOOP\r")


# -- ID, ENABLE, LOGIN, AUTHENTICATE ---------------------------------------------------------


def test_id_from_apple_mail() -> None:
    line = (
        '1.3 ID ("name" "Mac OS X Mail" "version" "16.0 (3696.120.41.1.1)" "os" "Mac OS X"'
        ' "os-version" "12.4 (21F79)" "vendor" "Apple Inc.")'
    )
    assert _parse(line) == IdCommand(
        "1.3",
        (
            ("name", "Mac OS X Mail"),
            ("version", "16.0 (3696.120.41.1.1)"),
            ("os", "Mac OS X"),
            ("os-version", "12.4 (21F79)"),
            ("vendor", "Apple Inc."),
        ),
    )


def test_id_nil_and_nil_values() -> None:
    assert _parse("3 ID NIL") == IdCommand("3", None)
    assert _parse('3 ID ("name" "Thunderbird" "support-url" NIL)') == IdCommand(
        "3", (("name", "Thunderbird"), ("support-url", None))
    )
    assert _parse("3 ID ()") == IdCommand("3", ())


@pytest.mark.parametrize("line", ["3 ID", '3 ID ("name")', '3 ID ("a" "b"', "3 ID FOO"])
def test_id_malformed_is_rejected(line: str) -> None:
    assert _error(line).tag == "3"


def test_enable_upper_cases_capabilities() -> None:
    assert _parse("a ENABLE QRESYNC condstore") == EnableCommand("a", ("QRESYNC", "CONDSTORE"))
    assert _parse("JKLM3 ENABLE UTF8=ACCEPT") == EnableCommand("JKLM3", ("UTF8=ACCEPT",))
    assert "missing" in _error("a ENABLE").message


def test_login_forms_of_imaplib_mutt_and_literals() -> None:
    assert _parse("JKLM2 LOGIN joe secret") == LoginCommand("JKLM2", "joe", "secret")
    assert _parse('a0001 LOGIN "joe@example.com" "pa ss\\"w\\\\rd"') == LoginCommand(
        "a0001", "joe@example.com", 'pa ss"w\\rd'
    )
    # A synchronizing and a non-synchronizing (RFC 7888) literal, inline.
    assert _parse(b"2 LOGIN {3}\r\njoe {6+}\r\nse cr)") == LoginCommand("2", "joe", "se cr)")


def test_login_password_keeps_undecodable_bytes() -> None:
    command = _parse(b"a LOGIN joe {4}\r\np\xe4ss")
    assert isinstance(command, LoginCommand)
    assert command.password == "p\udce4ss"
    assert command.password.encode("utf-8", "surrogateescape") == b"p\xe4ss"
    assert "p\udce4ss" not in repr(command)  # never logged


@pytest.mark.parametrize(
    "line",
    [
        'a LOGIN joe "hunter2"hunter2',
        "a LOGIN joe hunter2 hunter2",
        'a LOGIN joe "hunter2\\hunter2"',
        'a LOGIN joe "hunter2',
        "a AUTHENTICATE PLAIN aHVudGVyMg== aHVudGVyMg==",
        "a AUTHENTICATE PLAIN aHVudGVyMg",
    ],
)
def test_login_errors_never_quote_the_credentials(line: str) -> None:
    error = _error(line)
    assert "hunter2" not in error.message
    assert "aHVudGVyMg" not in error.message


@pytest.mark.parametrize("line", ["a LOGIN", "a LOGIN joe", "a LOGIN joe ", 'a LOGIN "joe pass'])
def test_login_missing_arguments(line: str) -> None:
    assert _error(line).tag == "a"


def test_authenticate_with_and_without_initial_response() -> None:
    assert _parse("a0001 AUTHENTICATE PLAIN") == AuthenticateCommand("a0001", "PLAIN")
    # SASL-IR (RFC 4959)
    assert _parse("2 authenticate plain AGpvZQBzZWNyZXQ=") == AuthenticateCommand(
        "2", "PLAIN", "AGpvZQBzZWNyZXQ="
    )
    assert _parse("2 AUTHENTICATE EXTERNAL =") == AuthenticateCommand("2", "EXTERNAL", "=")


@pytest.mark.parametrize("response", ["AGpvZQ", "A===", "not!base64"])
def test_authenticate_rejects_non_base64_initial_response(response: str) -> None:
    assert "base64" in _error(f"2 AUTHENTICATE PLAIN {response}").message


# -- SELECT / EXAMINE (RFC 3501, RFC 7162) ---------------------------------------------------


def test_select_inbox_in_any_case_is_inbox() -> None:
    assert _parse("a SELECT inbox") == SelectCommand("a", "INBOX")
    assert _parse('a SELECT "InBoX"') == SelectCommand("a", "INBOX")
    assert _parse("a SELECT INBOX.Sent") == SelectCommand("a", "INBOX.Sent")


def test_select_with_condstore_from_thunderbird() -> None:
    assert _parse('2 SELECT "INBOX" (CONDSTORE)') == SelectCommand("2", "INBOX", condstore=True)


def test_examine_is_a_readonly_select() -> None:
    assert _parse('a EXAMINE "Sent"') == SelectCommand("a", "Sent", readonly=True)


def test_select_with_qresync_known_uids() -> None:
    command = _parse("a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))")
    assert command == SelectCommand(
        "a",
        "INBOX",
        qresync=QResyncParams(67890007, 20050715194045000, _set((41, 41), (43, 211), (214, 541))),
    )


def test_select_with_qresync_sequence_match_data() -> None:
    # RFC 7162 §3.2.5.2's example
    command = _parse(
        "B283 SELECT INBOX (QRESYNC (67890007 20050715194045000 1:29997 "
        "(5000,7500,9000,9990:9999 15000,22500,27000,29970,29973,29976,29979:29997)))"
    )
    assert isinstance(command, SelectCommand)
    assert command.qresync == QResyncParams(
        67890007,
        20050715194045000,
        _set((1, 29997)),
        (
            _set((5000, 5000), (7500, 7500), (9000, 9000), (9990, 9999)),
            _set((15000, 15000), (22500, 22500), (27000, 27000), (29970, 29970),
                 (29973, 29973), (29976, 29976), (29979, 29997)),
        ),
    )  # fmt: skip


def test_select_with_qresync_minimal_and_condstore() -> None:
    command = _parse("a select INBOX (condstore qresync (1 5))")
    assert command == SelectCommand("a", "INBOX", condstore=True, qresync=QResyncParams(1, 5))


@pytest.mark.parametrize(
    "line",
    [
        "a SELECT",
        "a SELECT INBOX ()",
        "a SELECT INBOX (FOO)",
        "a SELECT INBOX (CONDSTORE",
        "a SELECT INBOX (QRESYNC (0 5))",  # uidvalidity is nz-number
        "a SELECT INBOX (QRESYNC (1 5 1:*))",  # "*" is not allowed in known-uids
        "a SELECT INBOX (QRESYNC (1))",
        "a SELECT INBOX (QRESYNC (1 5) QRESYNC (1 5))",
    ],
)
def test_select_malformed_parameters(line: str) -> None:
    assert _error(line).tag == "a"


# -- mailbox names (RFC 3501 §5.1.3, RFC 6855) ----------------------------------------------


def test_mailbox_names_are_decoded_from_modified_utf7() -> None:
    assert _parse('a SELECT "Entw&APw-rfe"') == SelectCommand("a", "Entwürfe")
    assert _parse("a DELETE ~peter/mail/&U,BTFw-/&ZeVnLIqe-") == DeleteCommand(
        "a", "~peter/mail/台北/日本語"
    )
    assert _parse('a CREATE "Tom &- Jerry"') == CreateCommand("a", "Tom & Jerry")


@pytest.mark.parametrize("name", ['"Tom & Jerry"', '"&AGE-"', '"caf\xc3\xa9"', "&U,BTFw"])
def test_malformed_modified_utf7_is_rejected(name: str) -> None:
    error = _error(f"a SELECT {name}".encode("latin-1"))
    assert "modified UTF-7" in error.message


def test_utf8_mode_takes_mailbox_names_as_utf8() -> None:
    assert _parse('a SELECT "Entwürfe"', utf8=True) == SelectCommand("a", "Entwürfe")
    assert _parse('a SELECT "Tom & Jerry"', utf8=True) == SelectCommand("a", "Tom & Jerry")
    assert _parse('a SELECT "inbox"', utf8=True) == SelectCommand("a", "INBOX")
    assert "UTF-8" in _error(b'a SELECT "\xff"', utf8=True).message


# -- CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, quota -------------------------------------


def test_create_with_special_use_canonicalizes_attributes() -> None:
    # RFC 6154 §5.2's example, and canonical case for known attributes
    assert _parse("t1 CREATE MySpecial (USE (\\Drafts \\Sent))") == CreateCommand(
        "t1", "MySpecial", ("\\Drafts", "\\Sent")
    )
    assert _parse("t1 create Junk (use (\\junk))") == CreateCommand("t1", "Junk", ("\\Junk",))
    assert _parse("t1 CREATE x (USE ())") == CreateCommand("t1", "x")


@pytest.mark.parametrize(
    "line", ["a CREATE", "a CREATE x (FOO)", "a CREATE x (USE (Drafts))", "a CREATE x (USE)"]
)
def test_create_malformed_is_rejected(line: str) -> None:
    assert _error(line).tag == "a"


def test_mailbox_management_commands_take_decoded_names() -> None:
    assert _parse('a DELETE "Old Stuff"') == DeleteCommand("a", "Old Stuff")
    assert _parse('a RENAME "Old" "New/Sub"') == RenameCommand("a", "Old", "New/Sub")
    assert _parse("a SUBSCRIBE Lists") == SubscribeCommand("a", "Lists")
    assert _parse('a UNSUBSCRIBE "Lists"') == UnsubscribeCommand("a", "Lists")
    assert "missing new mailbox name" in _error("a RENAME Old").message


def test_quota_commands_take_a_root_or_a_mailbox() -> None:
    assert _parse('16 getquotaroot "INBOX"') == GetQuotaRootCommand("16", "INBOX")
    assert _parse('a GETQUOTA ""') == GetQuotaCommand("a", "")
    assert _parse("a GETQUOTA user.joe") == GetQuotaCommand("a", "user.joe")


# -- LIST / LSUB (RFC 3501, RFC 5258, RFC 5819, RFC 6154) --------------------------------------


def test_list_basic_forms_decode_reference_and_pattern() -> None:
    assert _parse('a0002 LIST "" ""') == ListCommand("a0002", "", ("",))
    assert _parse('3 LIST "" "*"') == ListCommand("3", "", ("*",))
    assert _parse("a LIST ~/Mail/ %") == ListCommand("a", "~/Mail/", ("%",))
    assert _parse('a LIST "" INBOX.*') == ListCommand("a", "", ("INBOX.*",))
    assert _parse('a LIST "" "&AOk-*"') == ListCommand("a", "", ("é*",))


def test_list_return_options_make_it_extended() -> None:
    assert _parse('3 LIST "" "*" RETURN (SPECIAL-USE SUBSCRIBED)') == ListCommand(
        "3", "", ("*",), return_options=("SPECIAL-USE", "SUBSCRIBED"), extended=True
    )


def test_list_extended_selection_and_patterns() -> None:
    # RFC 5258 §5's examples
    assert _parse('A02 LIST (SUBSCRIBED) "" "*"') == ListCommand(
        "A02", "", ("*",), select_options=("SUBSCRIBED",), extended=True
    )
    assert _parse('A03 LIST () "" "%" RETURN (CHILDREN)') == ListCommand(
        "A03", "", ("%",), return_options=("CHILDREN",), extended=True
    )
    assert _parse('A04 LIST (REMOTE SUBSCRIBED RECURSIVEMATCH) "" ("Foo" "Bar/%")') == (
        ListCommand(
            "A04",
            "",
            ("Foo", "Bar/%"),
            select_options=("REMOTE", "SUBSCRIBED", "RECURSIVEMATCH"),
            extended=True,
        )
    )
    assert _parse('a LIST "" "*" RETURN ()') == ListCommand("a", "", ("*",), extended=True)


def test_list_return_status_collects_status_items() -> None:
    # RFC 5819 §3's example
    assert _parse('A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))') == ListCommand(
        "A01", "", ("%",), return_status=("MESSAGES", "UNSEEN"), extended=True
    )
    assert _parse('a LIST (SPECIAL-USE) "" "*" RETURN (SUBSCRIBED STATUS (SIZE))') == (
        ListCommand(
            "a",
            "",
            ("*",),
            select_options=("SPECIAL-USE",),
            return_options=("SUBSCRIBED",),
            return_status=("SIZE",),
            extended=True,
        )
    )


@pytest.mark.parametrize(
    "line",
    [
        'a LIST ""',
        "a LIST",
        'a LIST (FOO) "" "*"',
        'a LIST (RECURSIVEMATCH) "" "*"',  # RFC 5258 §3.1: needs another option
        'a LIST "" "*" RETURN (FOO)',
        'a LIST "" "*" RETURN',
        'a LIST "" "*" FOO',
        'a LIST "" ()',
        'a LIST "" "*" RETURN (STATUS (BOGUS))',
    ],
)
def test_list_malformed_is_rejected(line: str) -> None:
    assert _error(line).tag == "a"


def test_lsub_takes_reference_and_pattern() -> None:
    assert _parse('a0007 LSUB "" "*"') == LsubCommand("a0007", "", "*")
    assert _parse("a LSUB #news. comp.mail.*") == LsubCommand("a", "#news.", "comp.mail.*")


# -- STATUS ---------------------------------------------------------------------------------


def test_status_items_from_thunderbird_and_extensions() -> None:
    assert _parse('17 STATUS "Sent" (UIDNEXT MESSAGES UNSEEN RECENT HIGHESTMODSEQ)') == (
        StatusCommand("17", "Sent", ("UIDNEXT", "MESSAGES", "UNSEEN", "RECENT", "HIGHESTMODSEQ"))
    )
    assert _parse("a status INBOX (uidvalidity size appendlimit)") == StatusCommand(
        "a", "INBOX", ("UIDVALIDITY", "SIZE", "APPENDLIMIT")
    )


@pytest.mark.parametrize(
    "line",
    ["a STATUS INBOX", "a STATUS INBOX ()", "a STATUS INBOX (FOO)", "a STATUS INBOX MESSAGES"],
)
def test_status_malformed_is_rejected(line: str) -> None:
    assert _error(line).tag == "a"


# -- APPEND (RFC 3501, RFC 3502, RFC 3516, RFC 7888) ----------------------------------------

_MESSAGE = b"From: joe@example.com\r\nSubject: draft\r\n\r\n" + b"x" * 267 + b"\r\n"


def test_append_draft_with_flags_date_and_literal_plus() -> None:
    assert len(_MESSAGE) == 310
    data = (
        b't APPEND Drafts (\\Seen \\Draft) " 4-Jul-2024 12:00:00 +0200" {310+}\r\n'
        + _MESSAGE
        + b"\r\n"
    )
    when = datetime.datetime(
        2024, 7, 4, 12, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    )
    assert parse_command(data) == AppendCommand(
        "t", "Drafts", (AppendMessage(_MESSAGE, ("\\Seen", "\\Draft"), when),)
    )


def test_append_forms_of_imaplib_mutt_and_mbsync() -> None:
    # imaplib's Time2Internaldate and mutt both write a two-digit day.
    command = parse_command(b'JKLM4 APPEND INBOX () "04-Jul-2024 23:59:60 -0730" {5}\r\nhello\r\n')
    assert isinstance(command, AppendCommand)
    (message,) = command.messages
    assert message.flags == ()
    assert message.date == datetime.datetime(
        2024, 7, 4, 23, 59, 59, tzinfo=datetime.timezone(-datetime.timedelta(hours=7, minutes=30))
    )
    assert parse_command(b'5 APPEND "INBOX" (\\seen) {5+}\r\nhello\r\n') == AppendCommand(
        "5", "INBOX", (AppendMessage(b"hello", ("\\Seen",)),)
    )
    assert parse_command(b"5 APPEND Sent {0}\r\n\r\n") == AppendCommand(
        "5", "Sent", (AppendMessage(b""),)
    )


def test_append_multiappend_several_messages() -> None:
    # RFC 3502 §6.3.11's shape
    data = (
        b"A003 APPEND saved-messages (\\Seen) {3}\r\none"
        b' " 7-Feb-1994 21:52:25 -0800" {3+}\r\ntwo {5}\r\nthree\r\n'
    )
    command = parse_command(data)
    assert isinstance(command, AppendCommand)
    assert [m.data for m in command.messages] == [b"one", b"two", b"three"]
    assert [m.flags for m in command.messages] == [("\\Seen",), (), ()]
    assert command.messages[1].date is not None
    assert command.messages[0].date is None


def test_append_literal8_may_hold_nul() -> None:
    command = parse_command(b"a APPEND INBOX ~{4}\r\na\x00b\xff\r\n")
    assert command == AppendCommand("a", "INBOX", (AppendMessage(b"a\x00b\xff", binary=True),))


def test_append_utf8_data_extension_once_utf8_is_enabled() -> None:
    # RFC 6855 §4
    data = b'a APPEND "Entw\xc3\xbcrfe" UTF8 (~{6}\r\nSu: \xc3\xa9)\r\n'
    assert parse_command(data, utf8=True) == AppendCommand(
        "a", "Entwürfe", (AppendMessage(b"Su: \xc3\xa9", binary=True),)
    )
    assert _error(b"a APPEND INBOX UTF8 (~{1}\r\nx)").tag == "a"
    assert "literal8" in _error(b"a APPEND INBOX UTF8 ({1}\r\nx)", utf8=True).message


def test_append_plain_literal_may_not_hold_nul() -> None:
    error = _error(b"a APPEND INBOX {3}\r\na\x00b")
    assert "NUL" in error.message
    assert error.offset == len(b"a APPEND INBOX {3}\r\na")


@pytest.mark.parametrize(
    "data",
    [
        b"a APPEND INBOX",
        b"a APPEND INBOX (\\Seen)",
        b'a APPEND INBOX "hello"',
        b'a APPEND INBOX "31-Feb-2024 12:00:00 +0000" {1}\r\nx',
        b'a APPEND INBOX "4-Jux-2024 12:00:00 +0000" {1}\r\nx',
        b'a APPEND INBOX "4-Jul-2024 12:00 +0000" {1}\r\nx',
        b'a APPEND INBOX "4-Jul-2024 25:00:00 +0000" {1}\r\nx',
        b'a APPEND INBOX "4-Jul-2024 12:00:00 +0099" {1}\r\nx',
        b"a APPEND INBOX {1}\r\nx junk",
        b"a APPEND INBOX {9}\r\nabc",
    ],
)
def test_append_malformed_is_rejected(data: bytes) -> None:
    assert _error(data).tag == "a"


# -- sequence sets (RFC 3501 §9, RFC 5182) ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", _set((1, 1))),
        ("*", _set((None, None))),
        ("1:*", ALL_STAR),
        ("*:4", _set((None, 4))),
        ("5:2", _set((5, 2))),
        ("1,3:5,7:*", _set((1, 1), (3, 5), (7, None))),
        ("4294967295", _set((4294967295, 4294967295))),
        ("$", SequenceSet((), last_result=True)),
    ],
)
def test_sequence_sets_keep_ranges_stars_and_saved_result(text: str, expected: SequenceSet) -> None:
    command = _parse(f"a COPY {text} Trash")
    assert command == CopyCommand("a", expected, "Trash")


@pytest.mark.parametrize(
    "text", ["0", "0:5", "1:0", "01", "4294967296", "1,", ",1", "1:", "1::2", "1x", "$,1", "-1"]
)
def test_bad_sequence_sets_are_rejected(text: str) -> None:
    error = _error(f"a COPY {text} Trash")
    assert error.tag == "a"
    assert "sequence set" in error.message or "space" in error.message


def test_zero_in_a_sequence_set_is_named_as_such() -> None:
    assert "0 is not a message number" in _error("a FETCH 0 FLAGS").message


# -- COPY / MOVE / EXPUNGE -----------------------------------------------------------------


def test_copy_move_and_uid_forms() -> None:
    assert _parse('a0006 UID COPY 1 "Archive"') == CopyCommand(
        "a0006", _set((1, 1)), "Archive", uid=True
    )
    assert _parse('15 UID MOVE 7 "Trash"') == MoveCommand("15", _set((7, 7)), "Trash", uid=True)
    assert _parse("a MOVE 2:4 Junk") == MoveCommand("a", _set((2, 4)), "Junk")
    assert "missing mailbox name" in _error("a COPY 1").message


def test_uid_expunge_takes_a_uid_set() -> None:
    assert _parse("18 UID EXPUNGE 3000:3002,3005") == ExpungeCommand(
        "18", _set((3000, 3002), (3005, 3005))
    )
    assert "missing UID set" in _error("18 UID EXPUNGE").message


# -- FETCH (RFC 3501 §6.4.5, RFC 3516, RFC 7162) --------------------------------------------


def test_thunderbird_header_fetch_keeps_field_names() -> None:
    command = _parse(
        "A1 UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc "
        "Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To "
        "Content-Type Reply-To)])"
    )
    fields = (
        "From", "To", "Cc", "Bcc", "Subject", "Date", "Message-ID", "Priority", "X-Priority",
        "References", "Newsgroups", "In-Reply-To", "Content-Type", "Reply-To",
    )  # fmt: skip
    assert command == FetchCommand(
        "A1",
        ALL_STAR,
        (
            FetchAttr("UID"),
            FetchAttr("RFC822.SIZE"),
            FetchAttr("FLAGS"),
            FetchAttr("BODY[]", Section((), "HEADER.FIELDS", fields), peek=True),
        ),
        uid=True,
    )


def test_mutt_and_mbsync_header_fetches() -> None:
    assert _attrs(
        "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (DATE FROM SENDER "
        "SUBJECT TO CC MESSAGE-ID REFERENCES CONTENT-TYPE CONTENT-DESCRIPTION IN-REPLY-TO "
        "REPLY-TO LINES LIST-POST X-LABEL)])"
    )[-1].section == Section(
        (),
        "HEADER.FIELDS",
        ("DATE", "FROM", "SENDER", "SUBJECT", "TO", "CC", "MESSAGE-ID", "REFERENCES",
         "CONTENT-TYPE", "CONTENT-DESCRIPTION", "IN-REPLY-TO", "REPLY-TO", "LINES",
         "LIST-POST", "X-LABEL"),
    )  # fmt: skip
    assert _attrs("(UID FLAGS BODY.PEEK[HEADER.FIELDS (X-TUID)])")[-1] == FetchAttr(
        "BODY[]", Section((), "HEADER.FIELDS", ("X-TUID",)), peek=True
    )
    assert _attrs("(BODY.PEEK[])") == (FetchAttr("BODY[]", Section(), peek=True),)
    assert _attrs("(RFC822)") == (FetchAttr("RFC822"),)


def test_fetch_macros_are_expanded() -> None:
    fast = (FetchAttr("FLAGS"), FetchAttr("INTERNALDATE"), FetchAttr("RFC822.SIZE"))
    assert _attrs("FAST") == fast
    assert _attrs("all") == (*fast, FetchAttr("ENVELOPE"))
    assert _attrs("FULL") == (*fast, FetchAttr("ENVELOPE"), FetchAttr("BODY"))


def test_fetch_single_item_without_parentheses() -> None:
    assert _attrs("flags") == (FetchAttr("FLAGS"),)
    assert _attrs("BODY[]") == (FetchAttr("BODY[]", Section()),)
    assert _attrs("BODYSTRUCTURE") == (FetchAttr("BODYSTRUCTURE"),)


def test_fetch_every_simple_item() -> None:
    names = (
        "FLAGS INTERNALDATE RFC822 RFC822.HEADER RFC822.SIZE RFC822.TEXT ENVELOPE BODY "
        "BODYSTRUCTURE UID MODSEQ"
    )
    assert [attr.name for attr in _attrs(f"({names.lower()})")] == names.split()


def test_fetch_sections_with_parts_and_partials() -> None:
    assert _attrs("(BODY[1.2.MIME] BODY.PEEK[1.2]<0.10240> BODY[TEXT]<100.200>)") == (
        FetchAttr("BODY[]", Section((1, 2), "MIME")),
        FetchAttr("BODY[]", Section((1, 2)), (0, 10240), peek=True),
        FetchAttr("BODY[]", Section((), "TEXT"), (100, 200)),
    )
    assert _attrs("(BODY[4.2.2.1.HEADER] BODY[3.TEXT] BODY[header])") == (
        FetchAttr("BODY[]", Section((4, 2, 2, 1), "HEADER")),
        FetchAttr("BODY[]", Section((3,), "TEXT")),
        FetchAttr("BODY[]", Section((), "HEADER")),
    )
    assert _attrs('BODY[2.HEADER.FIELDS.NOT ("Received" {6}\r\nX-Spam)]') == (
        FetchAttr("BODY[]", Section((2,), "HEADER.FIELDS.NOT", ("Received", "X-Spam"))),
    )


def test_fetch_binary_items_take_part_numbers_and_partials() -> None:
    # RFC 3516 §4.2
    assert _attrs("(BINARY[1] BINARY.PEEK[1.2]<0.1024> BINARY.SIZE[2] BINARY[])") == (
        FetchAttr("BINARY[]", Section((1,))),
        FetchAttr("BINARY[]", Section((1, 2)), (0, 1024), peek=True),
        FetchAttr("BINARY.SIZE[]", Section((2,))),
        FetchAttr("BINARY[]", Section()),
    )


def test_fetch_changedsince_and_vanished_modifiers_are_kept() -> None:
    assert _parse("5 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)") == FetchCommand(
        "5", ALL_STAR, (FetchAttr("FLAGS"),), uid=True, changed_since=12345, vanished=True
    )
    assert _parse("3.53 FETCH 1:* (FLAGS MODSEQ) (CHANGEDSINCE 9223372036854775807)") == (
        FetchCommand(
            "3.53",
            ALL_STAR,
            (FetchAttr("FLAGS"), FetchAttr("MODSEQ")),
            changed_since=9223372036854775807,
        )
    )


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ("(FLAGS) (VANISHED CHANGEDSINCE 5)", "UID FETCH"),
        ("(FLAGS) (CHANGEDSINCE 9223372036854775808)", "too large"),
        ("(FLAGS) (FOO)", "unknown fetch modifier"),
        ("(FLAGS ALL)", "alone"),
        ("()", "fetch item"),
        ("(FLAGS", "')'"),
        ("(X-GM-MSGID)", "unknown fetch item"),
        ("BODY[MIME]", "invalid section"),
        ("BODY[1.FOO]", "invalid section"),
        ("BODY[0]", "non-zero"),
        ("BODY[HEADER.FIELDS]", "header list"),
        ("BODY[HEADER.FIELDS ()]", "header field name"),
        ("BODY[]<0>", "'.'"),
        ("BODY[]<0.0>", "non-zero"),
        ("BODY.PEEK", "'['"),
        ("BINARY[HEADER]", "part numbers"),
        ("BINARY.SIZE[1]<0.5>", "unexpected data"),
        ("BODY[1", "']'"),
        ("", "missing fetch items"),
    ],
)
def test_fetch_malformed_is_rejected(items: str, message: str) -> None:
    error = _error(f"f FETCH 1 {items}".rstrip())
    assert error.tag == "f"
    assert message in error.message


def test_uid_fetch_vanished_requires_changedsince() -> None:
    assert "CHANGEDSINCE" in _error("f UID FETCH 1:* (FLAGS) (VANISHED)").message


# -- STORE (RFC 3501 §6.4.6, RFC 7162 §3.1.3) -----------------------------------------------


def test_store_forms_of_thunderbird_imaplib_and_mutt() -> None:
    assert _parse("13 uid store 5 +Flags (\\Seen)") == StoreCommand(
        "13", _set((5, 5)), "add", flags=("\\Seen",), uid=True
    )
    # imaplib.store(num, "+FLAGS", "\\Deleted") sends a single flag without parentheses
    assert _parse("JKLM6 STORE 1 +FLAGS \\Deleted") == StoreCommand(
        "JKLM6", _set((1, 1)), "add", flags=("\\Deleted",)
    )
    assert _parse("a0005 UID STORE 1,3:5 -FLAGS.SILENT (\\Deleted $Junk)") == StoreCommand(
        "a0005", _set((1, 1), (3, 5)), "remove", True, ("\\Deleted", "$Junk"), uid=True
    )
    assert _parse("a STORE 2 FLAGS ()") == StoreCommand("a", _set((2, 2)), "set")
    assert _parse("a STORE 2 flags.silent \\seen \\FLAGGED Work") == StoreCommand(
        "a", _set((2, 2)), "set", True, ("\\Seen", "\\Flagged", "Work")
    )


def test_store_unchangedsince_is_kept() -> None:
    # RFC 7162 §3.1.3's example
    assert _parse("d105 STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)") == (
        StoreCommand(
            "d105",
            _set((7, 7), (5, 5), (9, 9)),
            "add",
            True,
            ("\\Deleted",),
            unchanged_since=320162338,
        )
    )
    assert _parse("a STORE 1 (UNCHANGEDSINCE 0) FLAGS (\\Seen)") == StoreCommand(
        "a", _set((1, 1)), "set", flags=("\\Seen",), unchanged_since=0
    )


@pytest.mark.parametrize(
    "line",
    [
        "a STORE 1",
        "a STORE 1 +FLAGS",
        "a STORE 1 *FLAGS (\\Seen)",
        "a STORE 1 +FLAGS.LOUD (\\Seen)",
        "a STORE 1 X-GM-LABELS (foo)",
        "a STORE 1 (FOO 1) FLAGS (\\Seen)",
        "a STORE 1 (UNCHANGEDSINCE) FLAGS (\\Seen)",
        "a STORE 1 FLAGS (\\Seen",
        "a STORE 1 FLAGS (\\)",
        "a STORE 1 FLAGS (\\Seen\\Draft)",
        'a STORE 1 FLAGS ("quoted")',
    ],
)
def test_store_malformed_is_rejected(line: str) -> None:
    assert _error(line).tag == "a"


# -- SEARCH (RFC 3501 §6.4.4, RFC 4731, RFC 5182, RFC 7162) ----------------------------------


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ("ALL", SearchAll()),
        ("ANSWERED", SearchFlag("\\Answered")),
        ("DELETED", SearchFlag("\\Deleted")),
        ("DRAFT", SearchFlag("\\Draft")),
        ("FLAGGED", SearchFlag("\\Flagged")),
        ("SEEN", SearchFlag("\\Seen")),
        ("RECENT", SearchFlag("\\Recent")),
        ("UNANSWERED", SearchFlag("\\Answered", False)),
        ("UNDELETED", SearchFlag("\\Deleted", False)),
        ("UNDRAFT", SearchFlag("\\Draft", False)),
        ("UNFLAGGED", SearchFlag("\\Flagged", False)),
        ("UNSEEN", SearchFlag("\\Seen", False)),
        ("NEW", SearchAnd((SearchFlag("\\Recent"), SearchFlag("\\Seen", False)))),
        ("OLD", SearchFlag("\\Recent", False)),
        ("KEYWORD $Forwarded", SearchFlag("$Forwarded")),
        ("UNKEYWORD $Junk", SearchFlag("$Junk", False)),
        ('FROM "joe@example.com"', SearchHeader("From", "joe@example.com")),
        ("TO joe", SearchHeader("To", "joe")),
        ("CC joe", SearchHeader("Cc", "joe")),
        ("BCC joe", SearchHeader("Bcc", "joe")),
        ('SUBJECT "re: lunch"', SearchHeader("Subject", "re: lunch")),
        ('HEADER Message-ID "<a@b>"', SearchHeader("Message-ID", "<a@b>")),
        ('HEADER X-Spam ""', SearchHeader("X-Spam", "")),
        ("BODY hello", SearchText("body", "hello")),
        ('TEXT "hello world"', SearchText("text", "hello world")),
        ("BEFORE 1-Feb-1994", SearchDate("before", datetime.date(1994, 2, 1))),
        ("ON 01-feb-1994", SearchDate("on", datetime.date(1994, 2, 1))),
        ('SINCE "1-Feb-1994"', SearchDate("since", datetime.date(1994, 2, 1))),
        ("SENTBEFORE 29-Feb-2024", SearchDate("before", datetime.date(2024, 2, 29), True)),
        ("SENTON 31-Dec-1999", SearchDate("on", datetime.date(1999, 12, 31), True)),
        ("SENTSINCE 1-Jan-2000", SearchDate("since", datetime.date(2000, 1, 1), True)),
        ("LARGER 1024", SearchSize(True, 1024)),
        ("SMALLER 5000000000", SearchSize(False, 5000000000)),
        ("UID 1:100", SearchSet(_set((1, 100)), uid=True)),
        ("UID $", SearchSet(SequenceSet((), last_result=True), uid=True)),
        ("1:5,7", SearchSet(_set((1, 5), (7, 7)))),
        ("*", SearchSet(_set((None, None)))),
        ("$", SearchSet(SequenceSet((), last_result=True))),
        ("NOT DELETED", SearchNot(SearchFlag("\\Deleted"))),
        ("OR SEEN FLAGGED", SearchOr(SearchFlag("\\Seen"), SearchFlag("\\Flagged"))),
        ("(SEEN)", SearchFlag("\\Seen")),
        ("(SEEN FLAGGED)", SearchAnd((SearchFlag("\\Seen"), SearchFlag("\\Flagged")))),
        ("MODSEQ 620162338", SearchModSeq(620162338)),
        ('MODSEQ "/flags/\\\\draft" all 620162338', SearchModSeq(620162338)),
        ("MODSEQ 0", SearchModSeq(0)),
    ],
)
def test_every_search_key_parses_to_its_value(criteria: str, expected: SearchKey) -> None:
    assert _key(criteria) == expected


def test_search_keys_are_case_insensitive() -> None:
    assert _key("unseen from joe") == SearchAnd(
        (SearchFlag("\\Seen", False), SearchHeader("From", "joe"))
    )


def test_several_top_level_keys_are_anded() -> None:
    # RFC 3501 §6.4.4's example
    assert _key('FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"') == SearchAnd(
        (
            SearchFlag("\\Flagged"),
            SearchDate("since", datetime.date(1994, 2, 1)),
            SearchNot(SearchHeader("From", "Smith")),
        )
    )


def test_nested_or_not_and_parentheses() -> None:
    assert _key("OR (UNSEEN FLAGGED) NOT OR 1:3 UID 5") == SearchOr(
        SearchAnd((SearchFlag("\\Seen", False), SearchFlag("\\Flagged"))),
        SearchNot(SearchOr(SearchSet(_set((1, 3))), SearchSet(_set((5, 5)), uid=True))),
    )


def test_imapclient_and_mutt_searches_decode_literal_values() -> None:
    command = _parse(b"a UID SEARCH CHARSET UTF-8 SUBJECT {5}\r\ncaf\xc3\xa9 NOT DELETED")
    assert command == SearchCommand(
        "a",
        SearchAnd((SearchHeader("Subject", "café"), SearchNot(SearchFlag("\\Deleted")))),
        uid=True,
        charset="UTF-8",
    )
    assert _parse("a0010 UID SEARCH SINCE 01-Jul-2024 UNDELETED") == SearchCommand(
        "a0010",
        SearchAnd((SearchDate("since", datetime.date(2024, 7, 1)), SearchFlag("\\Deleted", False))),
        uid=True,
    )


def test_search_values_keep_undecodable_bytes() -> None:
    command = _parse(b'a SEARCH BODY "caf\xe9"')
    assert isinstance(command, SearchCommand)
    assert command.key == SearchText("body", "caf\udce9")


def test_search_charset_us_ascii_and_utf8_are_accepted() -> None:
    for charset in ("UTF-8", "us-ascii", '"utf-8"'):
        command = _parse(f"a SEARCH CHARSET {charset} ALL")
        assert isinstance(command, SearchCommand)
        assert command.charset in ("UTF-8", "US-ASCII")


def test_search_unknown_charset_is_badcharset() -> None:
    with pytest.raises(BadCharset) as info:
        _parse("a SEARCH CHARSET KOI8-R SUBJECT hello")
    assert info.value.tag == "a"
    assert info.value.message.startswith("[BADCHARSET (UTF-8 US-ASCII)]")
    assert isinstance(info.value, ParseError)


def test_search_return_options_request_esearch() -> None:
    # RFC 4731 §3.1 and RFC 5182 §2.4
    assert _parse("A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994") == SearchCommand(
        "A282",
        SearchAnd((SearchFlag("\\Flagged"), SearchDate("since", datetime.date(1994, 2, 1)))),
        returns=("MIN", "COUNT"),
    )
    assert _parse("A300 UID SEARCH RETURN (SAVE) CHARSET UTF-8 UNSEEN") == SearchCommand(
        "A300", SearchFlag("\\Seen", False), uid=True, charset="UTF-8", returns=("SAVE",)
    )
    command = _parse("A301 UID SEARCH RETURN () ALL")
    assert isinstance(command, SearchCommand)
    assert command.returns == ("ALL",)  # RFC 4731: () means (ALL)


@pytest.mark.parametrize(
    "criteria",
    [
        "",
        "FOO",
        "FROM",
        "BEFORE",
        "BEFORE 31-Feb-2024",
        "BEFORE 1-Foo-2024",
        "BEFORE 2024-02-01",
        'BEFORE "1-Feb-2024',
        "LARGER x",
        "NOT",
        "OR SEEN",
        "()",
        "(SEEN",
        "SEEN)",
        "KEYWORD \\Seen",
        "UID",
        "MODSEQ",
        'MODSEQ "/flags/\\\\draft" bogus 5',
        "RETURN (BOGUS) ALL",
        "CHARSET",
        "SEEN  FLAGGED",
    ],
)
def test_search_malformed_is_rejected(criteria: str) -> None:
    error = _error(f"s SEARCH {criteria}".rstrip())
    assert error.tag == "s"
    assert not isinstance(error, BadCharset)


def test_search_nesting_is_bounded() -> None:
    assert "nested" in _error("s SEARCH " + "NOT " * 200 + "SEEN").message
    assert "nested" in _error("s SEARCH " + "(" * 200 + "SEEN" + ")" * 200).message


# -- SORT / THREAD (RFC 5256, RFC 5267) ------------------------------------------------------


def test_sort_from_imapclient_and_rfc_examples() -> None:
    assert _parse("a UID SORT (REVERSE ARRIVAL) UTF-8 ALL") == SortCommand(
        "a", (SortKey("ARRIVAL", True),), "UTF-8", SearchAll(), uid=True
    )
    # RFC 5256 §3's example
    assert _parse("A283 SORT (SUBJECT REVERSE DATE) UTF-8 ALL") == SortCommand(
        "A283", (SortKey("SUBJECT"), SortKey("DATE", True)), "UTF-8", SearchAll()
    )
    assert _parse('A285 SORT (SUBJECT) US-ASCII TEXT "not in mailbox"') == SortCommand(
        "A285", (SortKey("SUBJECT"),), "US-ASCII", SearchText("text", "not in mailbox")
    )


def test_sort_return_options_request_esort() -> None:
    # RFC 5267 §3.2
    assert _parse("A282 SORT RETURN (MIN) (DATE) UTF-8 SUBJECT orange") == SortCommand(
        "A282",
        (SortKey("DATE"),),
        "UTF-8",
        SearchHeader("Subject", "orange"),
        returns=("MIN",),
    )


def test_thread_takes_algorithm_charset_and_criteria() -> None:
    assert _parse("A283 THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000") == ThreadCommand(
        "A283", "ORDEREDSUBJECT", "UTF-8", SearchDate("since", datetime.date(2000, 3, 5))
    )
    assert _parse("a UID THREAD references utf-8 ALL") == ThreadCommand(
        "a", "REFERENCES", "UTF-8", SearchAll(), uid=True
    )


@pytest.mark.parametrize(
    "line",
    [
        "a SORT",
        "a SORT (DATE)",
        "a SORT (DATE) UTF-8",
        "a SORT () UTF-8 ALL",
        "a SORT (REVERSE) UTF-8 ALL",
        "a SORT (DISPLAYFROM) UTF-8 ALL",
        "a SORT DATE UTF-8 ALL",
        "a THREAD REFS UTF-8 ALL",
        "a THREAD REFERENCES",
    ],
)
def test_sort_and_thread_malformed_is_rejected(line: str) -> None:
    error = _error(line)
    assert error.tag == "a"


def test_sort_and_thread_check_the_charset() -> None:
    with pytest.raises(BadCharset):
        _parse("a SORT (DATE) ISO-8859-1 ALL")
    with pytest.raises(BadCharset):
        _parse("a THREAD REFERENCES BIG5 ALL")


# -- strings and literals (RFC 3501 §4.3, RFC 7888) -----------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'a LOGIN "joe', "unterminated quoted string"),
        (b'a LOGIN "jo\x00e" x', "NUL in quoted string"),
        (b'a LOGIN "jo\re" x', "bare CR or LF"),
        (b'a LOGIN "jo\ne" x', "bare CR or LF"),
        (b'a LOGIN "j\\oe" x', "invalid escape"),
        (b"a LOGIN {10}\r\njoe x", "literal shorter than announced"),
        (b"a LOGIN {3}\r\nj\x00e x", "NUL in literal"),
        (b"a LOGIN ~{3}\r\njoe x", "literal8"),
        (b"a LOGIN {3} joe x", "invalid literal"),
        (b"a LOGIN {99999999999}\r\n", "invalid literal"),
        (b"a LOGIN {4294967296}\r\n", "too large"),
    ],
)
def test_malformed_strings_and_literals(data: bytes, message: str) -> None:
    error = _error(data)
    assert error.tag == "a"
    assert message in error.message


def test_literal_shorter_than_announced_points_at_the_literal() -> None:
    error = _error(b"a LOGIN joe {10}\r\nabc")
    assert error.offset == len(b"a LOGIN joe ")


def test_literal_may_hold_crlf_and_quotes() -> None:
    assert parse_command(b'a LOGIN {8}\r\na"b\r\nc\\d {1+}\r\n)\r\n') == LoginCommand(
        "a", 'a"b\r\nc\\d', ")"
    )


# -- framing helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"a LOGIN {5}", (5, False, False)),
        (b"a LOGIN joe {12+}", (12, True, False)),
        (b"a APPEND INBOX ~{310}", (310, False, True)),
        (b"a APPEND INBOX (\\Seen) ~{0+}", (0, True, True)),
        (b"a FETCH 1 BODY[HEADER.FIELDS ({4}", (4, False, False)),
        (b"a NOOP", None),
        (b"a LOGIN x{5}", None),
        (b"a LOGIN {5", None),
        (b"a LOGIN {}", None),
        (b"a LOGIN {5++}", None),
        (b"a LOGIN {-5}", None),
        (b"{5}", None),
        (b"a LOGIN {" + b"9" * 30 + b"}", None),
    ],
)
def test_literal_at_end_finds_only_announced_literals(
    line: bytes, expected: tuple[int, bool, bool] | None
) -> None:
    assert literal_at_end(line) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"a1 uid fetch 1:* FLAGS\r\n", ("a1", "UID FETCH")),
        (b"t APPEND Drafts {310+}\r\n", ("t", "APPEND")),
        (b"3.5 noop\r\n", ("3.5", "NOOP")),
        (b"a UID\r\n", ("a", "UID")),
        (b"a\r\n", ("a", None)),
        (b"+ NOOP\r\n", (None, None)),
        (b"", (None, None)),
        (b"a \xff\r\n", ("a", None)),
    ],
)
def test_command_name_reads_tag_and_name_without_parsing(
    data: bytes, expected: tuple[str | None, str | None]
) -> None:
    assert command_name(data) == expected


# -- properties ----------------------------------------------------------------------------

_CORPUS = [
    b"A1 UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To)])\r\n",
    b'2 SELECT "INBOX" (CONDSTORE)\r\n',
    b"5 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n",
    b"a SELECT INBOX (QRESYNC (67890007 20050715194045000 41:211 (1,3 5,7)))\r\n",
    b'3 LIST (SUBSCRIBED) "" ("*" "%") RETURN (SPECIAL-USE STATUS (MESSAGES))\r\n',
    b't APPEND Drafts (\\Seen \\Draft) " 4-Jul-2024 12:00:00 +0200" {5+}\r\nhello\r\n',
    b"a APPEND INBOX ~{3}\r\na\x00b {1}\r\nc\r\n",
    b"s UID SEARCH RETURN (MIN) CHARSET UTF-8 OR (FROM {3}\r\njoe) NOT 1:5 MODSEQ 5\r\n",
    b"a SORT RETURN (COUNT) (REVERSE DATE) UTF-8 SINCE 1-Feb-1994\r\n",
    b"a STORE 1 (UNCHANGEDSINCE 5) +FLAGS.SILENT (\\Seen $Junk)\r\n",
    b'a LOGIN "j\\"oe" {4}\r\npass\r\n',
    b"a CREATE x (USE (\\Drafts))\r\n",
    b'a ID ("name" NIL)\r\n',
    b"a FETCH 1 (BODY[1.2.MIME]<0.5> BINARY.PEEK[1] BINARY.SIZE[2])\r\n",
]


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes_raise_only_parse_error(data: bytes, utf8: bool) -> None:
    with contextlib.suppress(ParseError):
        parse_command(data, utf8=utf8)
    literal_at_end(data)
    command_name(data)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_CORPUS),
    st.lists(
        st.tuples(st.integers(0, 200), st.integers(0, 3), st.binary(min_size=0, max_size=4)),
        max_size=4,
    ),
    st.booleans(),
)
def test_mutated_client_commands_raise_only_parse_error(
    base: bytes, edits: list[tuple[int, int, bytes]], utf8: bool
) -> None:
    data = base
    for position, delete, insert in edits:
        at = position % (len(data) + 1)
        data = data[:at] + insert + data[at + delete :]
    with contextlib.suppress(ParseError):
        parse_command(data, utf8=utf8)


_TOKENS = [
    b" ", b"(", b")", b"[", b"]", b"<", b">", b".", b":", b",", b"*", b"$", b"\\", b'"',
    b"{3}\r\n", b"{0+}\r\n", b"~{2}\r\n", b"\r\n", b"0", b"1", b"42", b"4294967296",
    b"NIL", b"INBOX", b"&AOk-", b"&", b"UID", b"FETCH", b"SEARCH", b"NOT", b"OR", b"RETURN",
    b"CHARSET", b"UTF-8", b"BODY", b"BODY.PEEK", b"HEADER.FIELDS", b"MIME", b"BINARY",
    b"FLAGS", b"+FLAGS.SILENT", b"\\Seen", b"QRESYNC", b"CHANGEDSINCE", b"VANISHED",
    b"MODSEQ", b"1-Feb-1994", b'" 4-Jul-2024 12:00:00 +0200"', b"LIST", b"STATUS",
]  # fmt: skip
_COMMAND_NAMES = [
    b"FETCH", b"UID", b"SEARCH", b"SELECT", b"LIST", b"APPEND", b"STORE", b"SORT", b"THREAD",
    b"ID", b"LOGIN", b"AUTHENTICATE", b"CREATE", b"STATUS", b"COPY", b"ENABLE",
]  # fmt: skip


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_COMMAND_NAMES), st.lists(st.sampled_from(_TOKENS), max_size=25), st.booleans()
)
def test_token_soup_raises_only_parse_error(name: bytes, tokens: list[bytes], utf8: bool) -> None:
    with contextlib.suppress(ParseError):
        parse_command(b"a " + name + b" " + b"".join(tokens) + b"\r\n", utf8=utf8)


_ranges = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(1, 4294967295)),
        st.one_of(st.none(), st.integers(1, 4294967295)),
    ),
    min_size=1,
    max_size=6,
)


def _format_set(ranges: list[tuple[int | None, int | None]]) -> str:
    def number(value: int | None) -> str:
        return "*" if value is None else str(value)

    return ",".join(
        number(low) if low == high else f"{number(low)}:{number(high)}" for low, high in ranges
    )


@given(_ranges)
def test_sequence_sets_round_trip(ranges: list[tuple[int | None, int | None]]) -> None:
    command = _parse(f"a UID FETCH {_format_set(ranges)} FLAGS")
    assert isinstance(command, FetchCommand)
    assert command.set == SequenceSet(tuple(ranges))


@given(st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=30))
def test_mailbox_names_round_trip_through_modified_utf7(name: str) -> None:
    quoted = mutf7.encode(name).replace("\\", "\\\\").replace('"', '\\"')
    command = _parse(f'a SELECT "{quoted}"')
    assert isinstance(command, SelectCommand)
    assert command.mailbox == ("INBOX" if name.upper() == "INBOX" else name)
    utf8_command = _parse(b"a SELECT {%d}\r\n" % len(name.encode()) + name.encode(), utf8=True)
    assert isinstance(utf8_command, SelectCommand)
    assert utf8_command.mailbox == ("INBOX" if name.upper() == "INBOX" else name)


@given(st.dates(min_value=datetime.date(1000, 1, 1)), st.booleans())
def test_search_dates_round_trip(date: datetime.date, quoted: bool) -> None:
    text = f"{date.day}-{date.strftime('%b')}-{date.year:04d}"
    if quoted:
        text = f'"{text}"'
    assert _key(f"SENTON {text}") == SearchDate("on", date, True)

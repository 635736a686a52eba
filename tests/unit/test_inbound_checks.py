"""Inbound authentication pieces: the DMARC record parser, alignment and policy, From
domains, the Authentication-Results field, removal of forged fields; and the checker itself
against the loopback DNS server (a real resolver, no network)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dns_server import DnsServer
from hypothesis import given
from hypothesis import strategies as st

from rmail.config import Config, InboundConfig
from rmail.relay.dns import Resolver
from rmail.relay.inbound import (
    DkimOutcome,
    DmarcRecord,
    InboundAuth,
    SpfOutcome,
    aligned,
    evaluate_dmarc,
    from_domains,
    organizational_domain,
    parse_dmarc_record,
    render_results,
    strip_forged_results,
)

SPF_PASS = SpfOutcome("pass", "mailfrom", "example.org", "a@example.org")
SPF_NONE = SpfOutcome("none", "mailfrom", "other.net", "a@other.net")
NO_DKIM: list[DkimOutcome] = []

# ------------------------------------------------------------------ DMARC record


def test_dmarc_record_with_only_p_gets_the_defaults() -> None:
    assert parse_dmarc_record("v=DMARC1; p=reject") == DmarcRecord(
        p="reject", sp="reject", adkim="r", aspf="r", pct=100
    )


def test_dmarc_record_reads_every_tag() -> None:
    text = "v=DMARC1;p=quarantine; sp=none ;adkim=s; aspf=s; pct=25; rua=mailto:d@example.org"
    assert parse_dmarc_record(text) == DmarcRecord(
        p="quarantine", sp="none", adkim="s", aspf="s", pct=25
    )


def test_dmarc_record_tag_values_are_case_insensitive() -> None:
    assert parse_dmarc_record("v=DMARC1; p=REJECT; ADKIM=S") == DmarcRecord(
        p="reject", sp="reject", adkim="s"
    )


@pytest.mark.parametrize(
    "text",
    [
        "p=reject; v=DMARC1",  # v= must come first
        "v=DMARC2; p=reject",
        "v=spf1 -all",
        "",
        "v=DMARC1",  # no policy, no reports asked for
        "v=DMARC1; p=block",
        "v=DMARC1; p=reject; sp=maybe",
    ],
)
def test_dmarc_record_without_a_usable_policy_is_none(text: str) -> None:
    assert parse_dmarc_record(text) is None


def test_dmarc_record_asking_for_reports_without_policy_counts_as_p_none() -> None:
    # RFC 7489 §6.6.3 step 6.
    record = parse_dmarc_record("v=DMARC1; rua=mailto:d@example.org")
    assert record == DmarcRecord(p="none", sp="none")


@pytest.mark.parametrize("pct", ["101", "-1", "ten", ""])
def test_dmarc_record_ignores_an_invalid_pct(pct: str) -> None:
    record = parse_dmarc_record(f"v=DMARC1; p=reject; pct={pct}")
    assert record is not None and record.pct == 100


def test_dmarc_record_ignores_invalid_alignment_values() -> None:
    record = parse_dmarc_record("v=DMARC1; p=none; adkim=x; aspf=strict")
    assert record == DmarcRecord(p="none", sp="none", adkim="r", aspf="r")


# ------------------------------------------------------------------ alignment


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("example.org", "example.org"),
        ("mail.Example.ORG.", "example.org"),
        ("a.b.example.co.uk", "example.co.uk"),
        ("co.uk", "co.uk"),  # a public suffix is its own
        ("host.example.test", "example.test"),
    ],
)
def test_organizational_domain(domain: str, org: str) -> None:
    assert organizational_domain(domain) == org


@pytest.mark.parametrize(
    ("identifier", "from_domain", "mode", "expected"),
    [
        ("example.org", "example.org", "s", True),
        ("EXAMPLE.org.", "example.org", "s", True),
        ("mail.example.org", "example.org", "s", False),
        ("mail.example.org", "example.org", "r", True),
        ("example.org", "news.example.org", "r", True),
        ("a.example.co.uk", "b.example.co.uk", "r", True),
        ("example.co.uk", "other.co.uk", "r", False),
        ("example.net", "example.org", "r", False),
        ("", "example.org", "r", False),
    ],
)
def test_alignment(identifier: str, from_domain: str, mode: str, expected: bool) -> None:
    assert aligned(identifier, from_domain, mode) is expected  # type: ignore[arg-type]


# ------------------------------------------------------------------ DMARC evaluation


def test_dmarc_passes_with_relaxed_spf_alignment() -> None:
    spf = SpfOutcome("pass", "mailfrom", "bounces.example.org", "b@bounces.example.org")
    outcome = evaluate_dmarc("example.org", DmarcRecord("reject", "reject"), False, spf, NO_DKIM)
    assert (outcome.result, outcome.policy, outcome.reject) == ("pass", "reject", False)


def test_dmarc_fails_strict_spf_alignment_of_a_subdomain() -> None:
    spf = SpfOutcome("pass", "mailfrom", "bounces.example.org", "b@bounces.example.org")
    record = DmarcRecord("reject", "reject", aspf="s")
    outcome = evaluate_dmarc("example.org", record, False, spf, NO_DKIM)
    assert (outcome.result, outcome.reject) == ("fail", True)


def test_dmarc_passes_on_an_aligned_dkim_signature_among_others() -> None:
    dkims = [
        DkimOutcome("fail", "example.org", "s1", "AAAA"),
        DkimOutcome("pass", "esp.example.net", "s2", "BBBB"),
        DkimOutcome("pass", "example.org", "s3", "CCCC"),
    ]
    record = DmarcRecord("reject", "reject", adkim="s")
    assert evaluate_dmarc("example.org", record, False, SPF_NONE, dkims).result == "pass"


def test_dmarc_fails_when_only_unaligned_checks_pass() -> None:
    dkims = [DkimOutcome("pass", "esp.example.net", "s", "AAAA")]
    spf = SpfOutcome("pass", "mailfrom", "esp.example.net", "x@esp.example.net")
    outcome = evaluate_dmarc(
        "example.org", DmarcRecord("quarantine", "quarantine"), False, spf, dkims
    )
    assert (outcome.result, outcome.policy, outcome.reject) == ("fail", "quarantine", False)


def test_dmarc_sp_applies_to_subdomains_only_through_the_organizational_record() -> None:
    record = DmarcRecord("reject", "none")
    via_org = evaluate_dmarc("news.example.org", record, True, SPF_NONE, NO_DKIM)
    assert (via_org.policy, via_org.reject) == ("none", False)
    own = evaluate_dmarc("news.example.org", record, False, SPF_NONE, NO_DKIM)
    assert (own.policy, own.reject) == ("reject", True)
    org_itself = evaluate_dmarc("example.org", record, True, SPF_NONE, NO_DKIM)
    assert org_itself.policy == "reject"


def test_dmarc_pct_outside_the_sample_applies_the_next_weaker_policy() -> None:
    record = DmarcRecord("reject", "reject", pct=30)
    inside = evaluate_dmarc("example.org", record, False, SPF_NONE, NO_DKIM, sample=lambda: 0.1)
    outside = evaluate_dmarc("example.org", record, False, SPF_NONE, NO_DKIM, sample=lambda: 0.5)
    assert (inside.policy, inside.reject) == ("reject", True)
    assert (outside.result, outside.policy, outside.reject) == ("fail", "quarantine", False)


def test_dmarc_pct_zero_never_rejects() -> None:
    record = DmarcRecord("reject", "reject", pct=0)
    outcome = evaluate_dmarc("example.org", record, False, SPF_NONE, NO_DKIM, sample=lambda: 0.0)
    assert outcome.reject is False


def test_dmarc_is_temperror_not_fail_when_an_aligned_check_could_not_finish() -> None:
    spf = SpfOutcome("temperror", "mailfrom", "example.org", "a@example.org")
    outcome = evaluate_dmarc("example.org", DmarcRecord("reject", "reject"), False, spf, NO_DKIM)
    assert (outcome.result, outcome.reject) == ("temperror", False)
    dkims = [DkimOutcome("temperror", "", "", "")]  # the whole DKIM step timed out
    outcome = evaluate_dmarc("example.org", DmarcRecord("reject", "reject"), False, SPF_NONE, dkims)
    assert (outcome.result, outcome.reject) == ("temperror", False)


def test_dmarc_without_record_is_none() -> None:
    outcome = evaluate_dmarc("example.org", None, False, SPF_NONE, NO_DKIM)
    assert (outcome.result, outcome.policy, outcome.reject) == ("none", None, False)


# ------------------------------------------------------------------ From domains


@pytest.mark.parametrize(
    ("header", "domains"),
    [
        (b"From: A <a@Example.ORG>\r\n", ["example.org"]),
        (b"From: a@example.org, b@example.org\r\n", ["example.org"]),
        (b"From: a@example.org, b@other.net\r\n", ["example.org", "other.net"]),
        (b"From: a@example.org\r\nFrom: b@third.example\r\n", ["example.org", "third.example"]),
        (b"To: a@example.org\r\n", []),
        (b"From: undisclosed\r\n", []),
        (b"From: a@[192.0.2.1]\r\n", []),
        (b"From: a@\r\n", []),  # the email package's address parser crashes on this one
        (b"From: A\r\n <a@folded.example>\r\n", ["folded.example"]),
        (b"FROM : a@spaced.example\r\n", ["spaced.example"]),
        ("From: a@bücher.example\r\n".encode(), ["xn--bcher-kva.example"]),
    ],
)
def test_from_domains(header: bytes, domains: list[str]) -> None:
    assert from_domains(header + b"Subject: x\r\n\r\nFrom: body@not.header\r\n") == domains


# ------------------------------------------------------------------ the header field


def test_results_field_lists_every_method_one_per_line() -> None:
    dkims = [
        DkimOutcome("pass", "example.org", "s1", "AbC+/xyz"),
        DkimOutcome("fail", "example.org", "s2", "zzzz"),
    ]
    from_ = evaluate_dmarc("example.org", DmarcRecord("reject", "reject"), False, SPF_PASS, dkims)
    text = render_results("mx.example.net", SPF_PASS, dkims, [from_])
    assert text == (
        "Authentication-Results: mx.example.net;\r\n"
        "\tspf=pass smtp.mailfrom=a@example.org;\r\n"
        '\tdkim=pass header.d=example.org header.s=s1 header.b="AbC+/xyz";\r\n'
        "\tdkim=fail header.d=example.org header.s=s2 header.b=zzzz;\r\n"
        "\tdmarc=pass header.from=example.org policy.dmarc=reject\r\n"
    )


def test_results_field_quotes_what_is_not_a_token() -> None:
    spf = SpfOutcome("none", "helo", "", 'bad "helo" name')
    text = render_results("mx.example.net", spf, [], [])
    assert 'smtp.helo="bad \\"helo\\" name"' in text
    control = render_results("mx", SpfOutcome("none", "helo", "", "a\r\n\x00b"), [], [])
    assert 'smtp.helo="a???b"' in control
    assert "dkim=none" in text and "dmarc=permerror" in text


# ------------------------------------------------------------------ forged fields


def test_forged_fields_with_our_id_are_removed_and_others_kept() -> None:
    head = (
        b"Received: from a\r\n"
        b"Authentication-Results: MX.example.net; spf=pass\r\n"
        b"authentication-results:\r\n (comment (nested)) mx.example.net;\r\n\tdkim=pass\r\n"
        b'Authentication-Results: "mx.example.net" 1; dmarc=pass\r\n'
        b"Authentication-Results: mx.example.net.evil; spf=pass\r\n"
        b"Authentication-Results: other.example; spf=pass smtp.mailfrom=mx.example.net\r\n"
        b"Subject: Authentication-Results: mx.example.net;\r\n"
        b"\r\n"
    )
    assert strip_forged_results(head, "mx.example.net") == (
        b"Received: from a\r\n"
        b"Authentication-Results: mx.example.net.evil; spf=pass\r\n"
        b"Authentication-Results: other.example; spf=pass smtp.mailfrom=mx.example.net\r\n"
        b"Subject: Authentication-Results: mx.example.net;\r\n"
        b"\r\n"
    )


def test_a_header_without_the_field_is_returned_as_is() -> None:
    head = b"From: a@example.org\nSubject: hi\n\n"
    assert strip_forged_results(head, "mx.example.net") is head


# ------------------------------------------------------------------ the checker


@pytest.fixture(scope="module")
def zone() -> Iterator[DnsServer]:
    with DnsServer(
        {
            "helo.example.org": {"TXT": ['"v=spf1 ip4:127.0.0.1 -all"']},
            "example.org": {"TXT": ['"v=spf1 ip4:192.0.2.1 -all"']},
            "_dmarc.example.org": {"TXT": ['"v=DMARC1; p=reject"']},
            "other.net": {"TXT": ['"v=spf1 ip4:127.0.0.1 -all"']},
            "_dmarc.other.net": {"TXT": ['"v=DMARC1; p=none"']},
        }
    ) as server:
        yield server


def checker(dns: DnsServer, *, dmarc_reject: bool = False, lifetime: float = 2.0) -> InboundAuth:
    config = Config(hostname="mx.example.net", inbound=InboundConfig(dmarc_reject=dmarc_reject))
    return InboundAuth(Resolver([dns.address], lifetime=lifetime), config)


MESSAGE = b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n"


async def test_null_sender_is_checked_by_helo_which_dmarc_aligns(zone: DnsServer) -> None:
    auth = checker(zone)
    try:
        verdict = await auth.check(MESSAGE, ip="127.0.0.1", helo="helo.example.org", mail_from="")
    finally:
        auth.close()
    assert "spf=pass smtp.helo=helo.example.org;" in verdict.header
    # RFC 7489 §3.1.2: with a null MAIL FROM the HELO identity is the one aligned (relaxed).
    assert "dmarc=pass header.from=example.org policy.dmarc=reject" in verdict.header
    assert verdict.refusal is None


async def test_one_failing_from_domain_with_p_reject_refuses_the_message(zone: DnsServer) -> None:
    message = b"From: a@other.net, b@example.org\r\n\r\nbody\r\n"
    auth = checker(zone, dmarc_reject=True)
    try:
        verdict = await auth.check(message, ip="127.0.0.1", helo="h", mail_from="x@other.net")
    finally:
        auth.close()
    assert "dmarc=pass header.from=other.net policy.dmarc=none;" in verdict.header
    assert "dmarc=fail header.from=example.org policy.dmarc=reject" in verdict.header
    assert verdict.refusal is not None and "example.org" in verdict.refusal


async def test_no_from_is_recorded_and_never_refused(zone: DnsServer) -> None:
    auth = checker(zone, dmarc_reject=True)
    try:
        verdict = await auth.check(
            b"Subject: x\r\n\r\nbody\r\n", ip="127.0.0.1", helo="h", mail_from="a@example.org"
        )
    finally:
        auth.close()
    assert "spf=fail smtp.mailfrom=a@example.org" in verdict.header
    assert "dmarc=permerror" in verdict.header and verdict.refusal is None


async def test_a_dns_server_that_never_answers_gives_temperror(zone: DnsServer) -> None:
    zone.silent.update({"slow.example.", "_dmarc.slow.example."})
    message = b"From: a@slow.example\r\n\r\nbody\r\n"
    auth = checker(zone, dmarc_reject=True, lifetime=0.3)
    try:
        verdict = await auth.check(message, ip="127.0.0.1", helo="h", mail_from="a@slow.example")
    finally:
        auth.close()
    assert "spf=temperror smtp.mailfrom=a@slow.example" in verdict.header
    assert "dmarc=temperror header.from=slow.example" in verdict.header
    assert verdict.refusal is None


# ------------------------------------------------------------------ hostile input

HEADER_LINES = [
    b"Authentication-Results: mx.example.net; forged\r\n",
    b"Authentication-Results:\r\n\t(c) mx.example.net; forged\r\n",
    b"\tcontinued\r\n",
    b"Authentication-Results: other.example; kept\r\n",
    b"Subject: kept\r\n",
    b"X-Odd: (unclosed kept\n",
    b'Authentication-Results: "unclosed\r\n',
    b"garbage without colon kept\r\n",
]


@given(st.text(max_size=200))
def test_dmarc_record_parser_never_crashes(text: str) -> None:
    record = parse_dmarc_record(text)
    assert record is None or 0 <= record.pct <= 100


@given(st.binary(max_size=300))
def test_from_domains_never_crashes(data: bytes) -> None:
    assert all(d == d.lower() and d.isascii() for d in from_domains(data))


@given(st.lists(st.sampled_from(HEADER_LINES), max_size=8))
def test_stripping_forged_fields_keeps_every_other_line(lines: list[bytes]) -> None:
    head = b"".join(lines)
    stripped = strip_forged_results(head, "mx.example.net")
    assert strip_forged_results(stripped, "mx.example.net") == stripped
    assert b"mx.example.net; forged" not in stripped
    assert stripped.count(b"kept") == head.count(b"kept")


async def test_a_sender_seen_again_is_not_looked_up_again(zone: DnsServer) -> None:
    """SPF results and DMARC records are reused for a while (SPF_CACHE_SECONDS): the second
    message of the same sender from the same client asks the DNS server nothing, and gets
    the same results."""
    auth = checker(zone)
    message = b"From: a@other.net\r\n\r\nbody\r\n"
    try:
        first = await auth.check(message, ip="127.0.0.1", helo="h", mail_from="x@other.net")
        asked = len(zone.queries)
        second = await auth.check(message, ip="127.0.0.1", helo="h", mail_from="x@other.net")
        assert len(zone.queries) == asked
        assert second == first
        other = await auth.check(message, ip="127.0.0.2", helo="h", mail_from="x@other.net")
        assert "spf=fail" in other.header  # another client IP: SPF is evaluated again
    finally:
        auth.close()
    assert "spf=pass" in first.header and "dmarc=pass" in first.header


async def test_an_unsigned_message_of_a_sender_seen_again_needs_no_thread(
    zone: DnsServer,
) -> None:
    """With its SPF result and DMARC records at hand, an unsigned message is judged on the
    event loop: the check pool is not used (here: shut down, so using it would raise), and
    the verdict, a DMARC refusal included, is the one the full path gives."""
    auth = checker(zone, dmarc_reject=True)
    message = b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n"
    try:
        first = await auth.check(message, ip="127.0.0.1", helo="h", mail_from="b@example.org")
        auth._pool.shutdown(wait=True)
        again = await auth.check(message, ip="127.0.0.1", helo="h", mail_from="b@example.org")
    finally:
        auth.close()
    assert first.refusal is not None and "dmarc=fail" in first.header
    assert again == first

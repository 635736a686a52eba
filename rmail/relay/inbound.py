"""Inbound authentication: SPF, DKIM and DMARC for mail arriving on the MX port.

:class:`InboundAuth` evaluates one message and returns the ``Authentication-Results`` field
to prepend (RFC 8601, authserv-id = ``hostname``) and, when ``inbound.dmarc_reject`` is on
and the message definitely fails DMARC under ``p=reject``, a refusal. It owns no sockets and
speaks no SMTP: the SMTP handler calls it after DATA and picks the reply.

- SPF (RFC 7208) is pyspf, DKIM (RFC 6376) is dkimpy; DMARC (RFC 7489) is written here
  (record discovery, alignment, policy), small and pure apart from two TXT lookups.
- Every DNS query goes through the process's one :class:`~rmail.relay.dns.Resolver`
  (``relay.nameservers``). pyspf has a single module-level lookup function, so building an
  :class:`InboundAuth` points ``spf.DNSLookup`` at that resolver for the whole process.
- pyspf and dkimpy block (DNS, RSA), so they run on a small pool of threads of our own
  (a slow DNS server must not starve the threads other code reaches with ``to_thread``).
- A check that cannot finish never loses or holds mail: the whole evaluation is bounded by
  :data:`CHECK_TIMEOUT`; whatever is unfinished then, or hit a DNS failure, is reported as
  ``temperror``, and a temperror never leads to a refusal.
"""

from __future__ import annotations

import asyncio
import binascii
import email.utils
import functools
import ipaddress
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeVar

import dkim
import spf
from publicsuffixlist import PublicSuffixList

from rmail.config import Config
from rmail.mime import header_block_end
from rmail.relay.dns import DnsTemporary, Resolver

__all__ = [
    "CHECK_TIMEOUT",
    "AuthVerdict",
    "DkimOutcome",
    "DmarcOutcome",
    "DmarcRecord",
    "InboundAuth",
    "SpfOutcome",
    "aligned",
    "evaluate_dmarc",
    "from_domains",
    "organizational_domain",
    "parse_dmarc_record",
    "render_results",
    "strip_forged_results",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

# RFC 7208 §4.6.4: an SPF evaluation's total time SHOULD be limited to at least 20 seconds.
# The same bound covers DKIM and DMARC, which run beside SPF, so one message waits at most
# this long at DATA; the client's own DATA timeout is 10 minutes (RFC 5321 §4.5.3.2.6).
CHECK_TIMEOUT: Final = 20.0
# Threads for the blocking checks (two per message: SPF and DKIM). Each DNS query is bounded
# by the resolver's lifetime, so a stuck thread comes back; meanwhile later messages wait in
# the pool's queue, still under CHECK_TIMEOUT.
CHECK_THREADS: Final = 8
# RFC 6376 §6.1: a verifier MAY limit the number of signatures it tries.
MAX_SIGNATURES: Final = 5
# RFC 7489 §6.6.1 evaluates every From domain; bound the work a crafted header can ask for.
MAX_FROM_DOMAINS: Final = 5
# From fields longer than this (one line of RFC 5322 §2.1.1) are parsed without caching.
_FROM_CACHE_BYTES: Final = 998
# RFC 6008 §2: the first 8 characters of b= tell signatures from the same d= apart.
_HEADER_B_LEN: Final = 8

SpfResult = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]
DkimResult = Literal["pass", "fail", "neutral", "none", "temperror", "permerror"]
DmarcResult = Literal["pass", "fail", "none", "temperror", "permerror"]
Policy = Literal["none", "quarantine", "reject"]
Alignment = Literal["r", "s"]

_SPF_RESULTS: Final[frozenset[str]] = frozenset(
    {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"}
)
_POLICIES: Final[dict[str, Policy]] = {
    "none": "none",
    "quarantine": "quarantine",
    "reject": "reject",
}
_LABEL: Final = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_DOMAIN_RE: Final = re.compile(rf"^(?=.{{1,253}}$)(?:{_LABEL}\.)*{_LABEL}$")
# RFC 2045 token characters: what a resinfo value may be without quotes (RFC 8601 §2.2).
_TOKEN_RE: Final = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")
_ATEXT: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM_LOCAL_RE: Final = re.compile(rf"^{_ATEXT}(?:\.{_ATEXT})*$")
_DMARC_V1_RE: Final = re.compile(r"^\s*v\s*=\s*DMARC1\s*(;|$)")


# -- results --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpfOutcome:
    """SPF of the MAIL FROM identity, or of HELO for the null sender (RFC 7208 §2.4)."""

    result: SpfResult
    identity: Literal["mailfrom", "helo"]
    domain: str  # the domain checked: what DMARC aligns (RFC 7489 §3.1.2)
    value: str  # smtp.mailfrom / smtp.helo value


@dataclass(frozen=True, slots=True)
class DkimOutcome:
    """One DKIM-Signature's verdict (RFC 8601 §2.7.1)."""

    result: DkimResult
    domain: str  # d=
    selector: str  # s=
    b: str  # the start of b= (RFC 6008)


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """A parsed ``_dmarc`` TXT record (RFC 7489 §6.3), defaults filled in."""

    p: Policy
    sp: Policy
    adkim: Alignment = "r"
    aspf: Alignment = "r"
    pct: int = 100


@dataclass(frozen=True, slots=True)
class DmarcOutcome:
    """DMARC of one RFC5322.From domain."""

    result: DmarcResult
    from_domain: str
    policy: Policy | None  # policy.dmarc: after sp= and pct= (None: no record)
    reject: bool  # failed, and the policy to apply is reject


@dataclass(frozen=True, slots=True)
class AuthVerdict:
    """What the SMTP handler needs: the header field to prepend and an optional refusal."""

    header: str  # "Authentication-Results: ...\r\n", folded
    refusal: str | None  # why the message must be refused (for the log), or None


# -- the checker ----------------------------------------------------------------------------

# Seconds an SPF result is reused for the same client IP, HELO name and sender. DNS records
# behind it live for minutes to hours; a change in them is seen within this time.
SPF_CACHE_SECONDS: Final = 60.0
_RECENT_MAX: Final = 10_000
_K = TypeVar("_K")
_V = TypeVar("_V")


class _Recent(Generic[_K, _V]):
    """A small dict whose entries expire ``ttl`` seconds after they were put (event loop
    only, no lock); emptied when it reaches ``_RECENT_MAX`` entries."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._items: dict[_K, tuple[float, _V]] = {}

    def get(self, key: _K) -> _V | None:
        found = self._items.get(key)
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def put(self, key: _K, value: _V) -> None:
        if len(self._items) >= _RECENT_MAX:
            self._items.clear()
        self._items[key] = (time.monotonic() + self.ttl, value)


class InboundAuth:
    """SPF, DKIM and DMARC for inbound mail, with one resolver and a pool of threads.

    Args:
        resolver: the process's resolver (``relay.nameservers``); also installed as pyspf's
            DNS lookup, which is process-wide.
        config: ``hostname`` (the authserv-id) and ``inbound.dmarc_reject`` are read at each
            message; the server replaces ``config`` on SIGHUP.
    """

    def __init__(self, resolver: Resolver, config: Config) -> None:
        self.resolver = resolver
        self.config = config
        self._pool = ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="inbound-auth")
        # pyspf looks names up through one module-level function (spf.DNSLookup); rmail has
        # one resolver per process, so this is set once, here, and stays.
        spf.DNSLookup = _spf_lookup(resolver)
        # SPF results of recent (client IP, HELO, sender) triples: a sender that sends many
        # messages in a row (a list, a bulk run) is evaluated once a minute, not per message.
        self._spf_seen: _Recent[tuple[str, str, str], SpfOutcome] = _Recent(SPF_CACHE_SECONDS)
        self._dmarc_seen: _Recent[str, tuple[DmarcRecord | None, bool]] = _Recent(SPF_CACHE_SECONDS)
        _psl()  # parsed now, at start-up, rather than on the loop at the first message

    def close(self) -> None:
        """Stop the threads (checks in progress finish on their own; nothing waits)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def check(self, message: bytes, *, ip: str, helo: str, mail_from: str) -> AuthVerdict:
        """Evaluate one message; never raises for DNS trouble and never takes longer than
        :data:`CHECK_TIMEOUT` (plus a little).

        Args:
            message: the message as received (header and body, before our trace fields).
            ip: the SMTP client's address.
            helo: the name the client gave in EHLO/HELO.
            mail_from: the envelope sender, "" for the null sender.
        """
        started = time.monotonic()
        hostname = self.config.hostname
        head = message[: header_block_end(message)]
        domains = from_domains(head)
        spf_key = (ip, helo.lower(), mail_from.lower())
        cached_spf = self._spf_seen.get(spf_key)
        signed = b"dkim-signature" in head.lower()
        if cached_spf is not None and not signed:
            # The common case of a sender seen in the last minute, unsigned: every answer
            # is at hand (unless a From domain's DMARC record is not), so no task, no
            # timer and no thread trip.
            records = [self._dmarc_seen.get(domain) for domain in domains]
            if all(record is not None for record in records):
                outcomes = [
                    evaluate_dmarc(domain, record, from_org, cached_spf, [])
                    for domain, (record, from_org) in zip(domains, _present(records), strict=True)
                ]
                return self._verdict(hostname, cached_spf, [], outcomes, started)
        loop = asyncio.get_running_loop()
        spf_task: asyncio.Future[Any]
        if cached_spf is not None:
            spf_task = loop.create_future()
            spf_task.set_result(cached_spf)
        else:
            spf_task = loop.run_in_executor(
                self._pool, _guarded, "spf", _check_spf, ip, helo, mail_from, hostname
            )
        dkim_task: asyncio.Future[Any]
        if not signed:
            dkim_task = loop.create_future()  # unsigned: nothing to verify, no thread trip
            dkim_task.set_result([])
        else:
            dkim_task = loop.run_in_executor(
                self._pool, _guarded, "dkim", _check_dkim, message, self.resolver
            )
        record_tasks = [asyncio.ensure_future(self._dmarc_record(domain)) for domain in domains]
        tasks: list[asyncio.Future[Any]] = [spf_task, dkim_task, *record_tasks]
        _done, pending = await asyncio.wait(tasks, timeout=CHECK_TIMEOUT)
        for task in pending:
            task.cancel()
        if pending:
            logger.warning(
                "inbound checks unfinished after %ss: reported as temperror", CHECK_TIMEOUT
            )
        spf_outcome = _result_or(spf_task, _spf_temperror(helo, mail_from))
        if cached_spf is None and spf_outcome.result != "temperror":
            self._spf_seen.put(spf_key, spf_outcome)
        dkim_outcomes = _result_or(dkim_task, [DkimOutcome("temperror", "", "", "")])
        dmarc_outcomes: list[DmarcOutcome] = []
        for domain, task in zip(domains, record_tasks, strict=True):
            found = _result_or(task, None)
            if found is None:
                dmarc_outcomes.append(DmarcOutcome("temperror", domain, None, reject=False))
                continue
            record, from_org = found
            dmarc_outcomes.append(
                evaluate_dmarc(domain, record, from_org, spf_outcome, dkim_outcomes)
            )
        return self._verdict(hostname, spf_outcome, dkim_outcomes, dmarc_outcomes, started)

    def _verdict(
        self,
        hostname: str,
        spf_outcome: SpfOutcome,
        dkim_outcomes: list[DkimOutcome],
        dmarc_outcomes: list[DmarcOutcome],
        started: float,
    ) -> AuthVerdict:
        """The header field and the refusal (if any) from the outcomes of one message."""
        header = render_results(hostname, spf_outcome, dkim_outcomes, dmarc_outcomes)
        refusal = None
        rejecting = [o.from_domain for o in dmarc_outcomes if o.reject]
        if rejecting and self.config.inbound.dmarc_reject:
            refusal = f"DMARC fail, policy reject: {','.join(rejecting)}"
        logger.debug(
            "inbound auth spf=%s dkim=%s dmarc=%s ms=%d",
            spf_outcome.result,
            ",".join(o.result for o in dkim_outcomes) or "none",
            ",".join(f"{o.result}:{o.from_domain}" for o in dmarc_outcomes) or "permerror",
            (time.monotonic() - started) * 1000,
        )
        return AuthVerdict(header, refusal)

    async def _dmarc_record(self, domain: str) -> tuple[DmarcRecord | None, bool] | None:
        """RFC 7489 §6.6.3 policy discovery: the record, and whether it came from the
        organizational domain; None after a DNS failure (then the result is temperror).
        Answers are reused for ``SPF_CACHE_SECONDS``, like SPF results."""
        cached = self._dmarc_seen.get(domain)
        if cached is not None:
            return cached
        try:
            record, present = await self._dmarc_at(domain)
            found: tuple[DmarcRecord | None, bool] = (record, False)
            org = organizational_domain(domain)
            if record is None and not present and org != domain:
                record, _ = await self._dmarc_at(org)
                found = (record, True)
        except DnsTemporary as exc:
            logger.info("DMARC lookup failed domain=%s: %s", domain, exc)
            return None
        self._dmarc_seen.put(domain, found)
        return found

    async def _dmarc_at(self, domain: str) -> tuple[DmarcRecord | None, bool]:
        """The record at ``_dmarc.{domain}``, and whether records were there at all (several
        records, or one that does not parse, end discovery without a policy)."""
        texts = [t for t in await self.resolver.txt(f"_dmarc.{domain}") if _DMARC_V1_RE.match(t)]
        if len(texts) != 1:
            return None, len(texts) > 1
        return parse_dmarc_record(texts[0]), True


def _present(
    records: list[tuple[DmarcRecord | None, bool] | None],
) -> list[tuple[DmarcRecord | None, bool]]:
    """``records`` once the caller has checked that none is None (for the type checker)."""
    return [record for record in records if record is not None]


def _result_or(task: asyncio.Future[T], default: T) -> T:
    """The task's result; ``default`` when it did not finish or failed (a failure of the
    pool's checks is logged where it happens)."""
    if not task.done() or task.cancelled():
        return default
    exc = task.exception()
    if exc is None:
        return task.result()
    if not isinstance(exc, _Logged):
        logger.error("inbound check failed", exc_info=exc)
    return default


def _guarded(kind: str, check: Callable[..., T], *args: Any) -> T:
    """Run a library check in a pool thread. pyspf and dkimpy parse what a stranger sent;
    a crash there must not cost the mail, so it is logged as our bug and the message goes
    on with temperror (the caller sees an exception and uses its default)."""
    try:
        return check(*args)
    except Exception as exc:
        logger.error("%s check crashed", kind, exc_info=True)
        raise _Logged(kind) from exc


class _Logged(Exception):
    """A check's crash, logged already."""


# -- SPF ------------------------------------------------------------------------------------


def _spf_lookup(resolver: Resolver) -> Callable[..., list[tuple[tuple[str, str], Any]]]:
    """pyspf's ``DNSLookup(name, qtype, tcpfallback, timeout)`` over our resolver: a list of
    ``((name, qtype), value)``, value as pyspf's own dnspython lookup gives it. The resolver's
    lifetime bounds each query, so pyspf's timeout is not needed."""

    def lookup(
        name: str, qtype: str, tcpfallback: bool = True, timeout: float = 30
    ) -> list[tuple[tuple[str, str], Any]]:
        if qtype not in ("A", "AAAA", "MX", "PTR", "TXT"):
            return []  # type SPF (99) is only asked in pyspf's "harsh" mode, never here
        try:
            records = resolver.lookup_sync(name, qtype)
        except DnsTemporary as exc:
            raise spf.TempError(f"DNS {exc}") from exc
        out: list[tuple[tuple[str, str], Any]] = []
        for record in records:
            value: Any
            if qtype == "TXT":
                value = record
            else:
                text = record[0].decode("ascii", "replace")
                if qtype == "MX":
                    preference, _, exchange = text.partition(" ")
                    value = (int(preference), exchange)
                elif qtype == "PTR":
                    value = text.rstrip(".")
                else:
                    value = text
            out.append(((name, qtype), value))
        return out

    return lookup


def _spf_identity(helo: str, mail_from: str) -> tuple[Literal["mailfrom", "helo"], str, str]:
    """(identity, domain, header value) of what SPF checks."""
    if mail_from:
        domain = mail_from.rpartition("@")[2].lower().rstrip(".")
        local = mail_from.rpartition("@")[0]
        value = mail_from if _DOT_ATOM_LOCAL_RE.match(local) and "@" in mail_from else domain
        return "mailfrom", domain, value
    return "helo", helo.lower().rstrip("."), helo


def _spf_temperror(helo: str, mail_from: str) -> SpfOutcome:
    identity, domain, value = _spf_identity(helo, mail_from)
    return SpfOutcome("temperror", identity, domain, value)


def _check_spf(ip: str, helo: str, mail_from: str, receiver: str) -> SpfOutcome:
    """RFC 7208 check_host() of MAIL FROM, or of HELO when the sender is null (§2.3)."""
    identity, domain, value = _spf_identity(helo, mail_from)
    if not _is_domain(domain):
        # An address literal in HELO, or a sender without a usable domain: nothing to check.
        return SpfOutcome("none", identity, domain, value or "unknown")
    query = spf.query(i=ip, s=mail_from, h=helo, receiver=receiver, querytime=CHECK_TIMEOUT)
    result, _code, _explanation = query.check()
    if result not in _SPF_RESULTS:  # pragma: no cover - pyspf's results are these seven
        result = "permerror"
    return SpfOutcome(result, identity, domain, value)


# -- DKIM -----------------------------------------------------------------------------------


def _check_dkim(message: bytes, resolver: Resolver) -> list[DkimOutcome]:
    """Every DKIM-Signature (up to :data:`MAX_SIGNATURES`), top first; [] when unsigned."""
    try:
        verifier = dkim.DKIM(message, minkey=1024)
    except dkim.DKIMException as exc:  # a header dkimpy cannot split into fields
        logger.debug("DKIM: message not parsed: %s", exc)
        signed = b"dkim-signature" in message[: header_block_end(message)].lower()
        return [DkimOutcome("permerror", "", "", "")] if signed else []
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    if count > MAX_SIGNATURES:
        logger.info("DKIM: %d signatures, only the first %d verified", count, MAX_SIGNATURES)
    return [_verify_one(verifier, idx, resolver) for idx in range(min(count, MAX_SIGNATURES))]


def _verify_one(verifier: Any, idx: int, resolver: Resolver) -> DkimOutcome:
    keys: list[bytes | None] = []

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        records = resolver.lookup_sync(text.rstrip("."), "TXT")
        # RFC 6376 §3.6.2.2: with several records the verifier may pick one; take the first.
        key = b"".join(records[0]) if records else None
        keys.append(key)
        return key

    verifier.signature_fields = {}  # set by verify(); stale from the previous signature
    result: DkimResult
    try:
        ok = verifier.verify(idx, dnsfunc=dnsfunc)
    except DnsTemporary as exc:
        logger.info("DKIM key lookup failed: %s", exc)
        result = "temperror"
    except dkim.KeyFormatError:
        result = "permerror"  # a key that cannot be used (RFC 6376 §6.1.2)
    except dkim.DKIMException as exc:
        logger.debug("DKIM signature %d: %s", idx, exc)
        # Raised before the key lookup: the signature's own syntax (RFC 8601 §2.7.1
        # neutral); after it, the check itself (a body hash mismatch): fail.
        result = "fail" if keys else "neutral"
    else:
        if ok:
            result = "pass"
        elif not keys or keys[-1] is None or not _usable_key(keys[-1]):
            result = "permerror"  # no key, or a key record that does not parse
        else:
            result = "fail"
    fields: dict[bytes, bytes] = verifier.signature_fields or {}
    return DkimOutcome(
        result,
        _text(fields.get(b"d", b"")).lower(),
        _text(fields.get(b"s", b"")),
        re.sub(r"\s", "", _text(fields.get(b"b", b"")))[:_HEADER_B_LEN],
    )


def _usable_key(record: bytes) -> bool:
    try:
        dkim.evaluate_pk(b"key", record)
    except (dkim.DKIMException, binascii.Error):  # what dkimpy's verify catches, too
        return False
    return True


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace")


# -- DMARC ----------------------------------------------------------------------------------


def parse_dmarc_record(text: str) -> DmarcRecord | None:
    """A DMARC record (RFC 7489 §6.3, §6.4), or None when it gives no policy.

    ``v=DMARC1`` must come first. A missing or unknown ``p=`` (or a bad ``sp=``) makes the
    record count as ``p=none`` when it asks for reports (``rua=``), else as no record
    (§6.6.3 step 6). Other tags with invalid values are ignored, leaving their default.
    """
    tags: dict[str, str] = {}
    for i, part in enumerate(text.split(";")):
        name, sep, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if i == 0:
            if name != "v" or value != "DMARC1":
                return None
            continue
        if sep and name and name not in tags:
            tags[name] = value
    p = _POLICIES.get(tags.get("p", "").lower())
    sp_text = tags.get("sp")
    sp = p if sp_text is None else _POLICIES.get(sp_text.lower())
    if p is None or sp is None:
        if not tags.get("rua"):
            return None
        p = p or "none"
        sp = sp or p
    adkim: Alignment = "s" if tags.get("adkim", "").lower() == "s" else "r"
    aspf: Alignment = "s" if tags.get("aspf", "").lower() == "s" else "r"
    pct_text = tags.get("pct", "100")
    pct = int(pct_text) if pct_text.isdigit() and int(pct_text) <= 100 else 100
    return DmarcRecord(p=p, sp=sp, adkim=adkim, aspf=aspf, pct=pct)


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()  # the list shipped with the package; parsed once, ~50 ms


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label (``a.b.example.co.uk`` ->
    ``example.co.uk``); a name that is itself a public suffix is its own."""
    domain = domain.lower().rstrip(".")
    return _psl().privatesuffix(domain) or domain


def aligned(identifier: str, from_domain: str, mode: Alignment) -> bool:
    """RFC 7489 §3.1: strict means the same name, relaxed the same organizational domain."""
    a, b = identifier.lower().rstrip("."), from_domain.lower().rstrip(".")
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return organizational_domain(a) == organizational_domain(b)


def evaluate_dmarc(
    from_domain: str,
    record: DmarcRecord | None,
    from_org: bool,
    spf_outcome: SpfOutcome,
    dkim_outcomes: Sequence[DkimOutcome],
    *,
    sample: Callable[[], float] = random.random,
) -> DmarcOutcome:
    """RFC 7489 §4.2 and §6.6: pass when SPF or a DKIM signature passes for an aligned domain.

    Args:
        from_domain: the RFC5322.From domain.
        record: its policy record; None: no policy, the result is ``none``.
        from_org: the record was found at the organizational domain (so ``sp=`` applies to
            a From domain below it, §6.3).
        sample: a number in [0, 1) drawn per message for ``pct=`` (§6.6.4).
    """
    if record is None:
        return DmarcOutcome("none", from_domain, None, reject=False)
    policy = (
        record.sp if from_org and organizational_domain(from_domain) != from_domain else record.p
    )
    if (
        spf_outcome.result == "pass" and aligned(spf_outcome.domain, from_domain, record.aspf)
    ) or any(
        d.result == "pass" and aligned(d.domain, from_domain, record.adkim) for d in dkim_outcomes
    ):
        return DmarcOutcome("pass", from_domain, policy, reject=False)
    # A check that could not finish might have passed: not a definite fail (§6.6.2).
    if (
        spf_outcome.result == "temperror" and aligned(spf_outcome.domain, from_domain, record.aspf)
    ) or any(
        d.result == "temperror" and (not d.domain or aligned(d.domain, from_domain, record.adkim))
        for d in dkim_outcomes
    ):
        return DmarcOutcome("temperror", from_domain, policy, reject=False)
    if record.pct < 100 and sample() * 100 >= record.pct:
        # §6.6.4: outside the sampled percentage, the next less strict policy applies.
        policy = "quarantine" if policy == "reject" else "none"
    return DmarcOutcome("fail", from_domain, policy, reject=policy == "reject")


def from_domains(message: bytes) -> list[str]:
    """The distinct domains of every RFC5322.From address, in order (RFC 7489 §6.6.1: each
    is evaluated and the strictest failing policy wins); [] when there is none usable."""
    # Not the email package's structured parser: it crashes on some malformed addresses
    # (an IndexError on "a@"); the legacy address parser takes anything.
    values = []
    for field in _fields(message[: header_block_end(message)]):
        name, sep, value = field.partition(b":")
        if sep and name.strip().lower() == b"from":
            values.append(value.replace(b"\r", b"").replace(b"\n", b""))
    key = tuple(values)
    if sum(len(value) for value in key) > _FROM_CACHE_BYTES:
        return list(_domains_of.__wrapped__(key))
    return list(_domains_of(key))


@functools.lru_cache(maxsize=1024)
def _domains_of(values: tuple[bytes, ...]) -> tuple[str, ...]:
    """:func:`from_domains` of the unfolded From field bodies (the same sender's messages
    have the same From: parsed once)."""
    domains: list[str] = []
    texts = [value.decode("utf-8", "replace") for value in values]
    for _name, address in email.utils.getaddresses(texts):
        domain = _ascii_domain(address.rpartition("@")[2]) if "@" in address else None
        if domain is not None and domain not in domains:
            domains.append(domain)
    return tuple(domains[:MAX_FROM_DOMAINS])


def _ascii_domain(text: str) -> str | None:
    domain = text.strip().lower().rstrip(".")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return domain if _is_domain(domain) else None


def _is_domain(name: str) -> bool:
    if not _DOMAIN_RE.match(name) or "." not in name:
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return True
    return False


# -- Authentication-Results -----------------------------------------------------------------


def _value(text: str) -> str:
    """A resinfo value: a token as is, anything else as a quoted-string (RFC 8601 §2.2)."""
    if _TOKEN_RE.match(text):
        return text
    text = "".join(c if c.isprintable() else "?" for c in text)  # no CR, LF, NUL in a field
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pvalue(text: str) -> str:
    """A property value: ``local-part@domain`` and domain names stay bare (RFC 8601 §2.2
    pvalue), anything else goes through :func:`_value`."""
    local, at, domain = text.rpartition("@")
    if _TOKEN_RE.match(domain) and (not at or not local or _DOT_ATOM_LOCAL_RE.match(local)):
        return text
    return _value(text)


def render_results(
    authserv_id: str,
    spf_outcome: SpfOutcome,
    dkim_outcomes: Sequence[DkimOutcome],
    dmarc_outcomes: Sequence[DmarcOutcome],
) -> str:
    """The ``Authentication-Results`` field (RFC 8601 §2.2), one resinfo per line."""
    parts = [f"spf={spf_outcome.result} smtp.{spf_outcome.identity}={_pvalue(spf_outcome.value)}"]
    if not dkim_outcomes:
        parts.append("dkim=none")
    several = len(dkim_outcomes) > 1
    for d in dkim_outcomes:
        text = f"dkim={d.result}"
        if d.domain:
            text += f" header.d={_pvalue(d.domain)}"
        if d.selector:
            text += f" header.s={_value(d.selector)}"
        if several and d.b:
            text += f" header.b={_value(d.b)}"
        parts.append(text)
    if not dmarc_outcomes:
        parts.append("dmarc=permerror (no From domain)")
    for m in dmarc_outcomes:
        text = f"dmarc={m.result} header.from={_pvalue(m.from_domain)}"
        if m.policy is not None:
            text += f" policy.dmarc={m.policy}"
        parts.append(text)
    return f"Authentication-Results: {authserv_id};\r\n\t" + ";\r\n\t".join(parts) + "\r\n"


def strip_forged_results(head: bytes, authserv_id: str) -> bytes:
    """The header block without Authentication-Results fields that carry our authserv-id.

    RFC 8601 §5: such a field did not come from us (we add ours after this), so it is a
    forgery or a leftover and must not reach the reader. Fields of other servers stay.
    """
    if b"authentication-results" not in head.lower():
        return head
    ours = authserv_id.lower().encode("ascii", "replace")
    return b"".join(f for f in _fields(head) if _authserv_id(f) != ours)


def _fields(head: bytes) -> list[bytes]:
    """The header block cut into fields, each with its continuation lines and line ends
    (joined again, they give ``head`` back byte for byte)."""
    fields: list[bytes] = []
    for line in re.split(rb"(?<=\n)", head):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        elif line:
            fields.append(line)
    return fields


def _authserv_id(field: bytes) -> bytes | None:
    """The authserv-id of an Authentication-Results field (lowercased), else None."""
    name, sep, value = field.partition(b":")
    if not sep or name.strip().lower() != b"authentication-results":
        return None
    text = value.replace(b"\r", b"").replace(b"\n", b"")
    i, depth = 0, 0
    while i < len(text):  # skip CFWS: spaces and (nested) comments
        c = text[i : i + 1]
        if c == b"(":
            depth += 1
        elif c == b")" and depth:
            depth -= 1
        elif c == b"\\" and depth:
            i += 1
        elif depth == 0 and c not in (b" ", b"\t"):
            break
        i += 1
    match = re.match(rb'"((?:[^"\\]|\\.)*)"|[^\s;()]+', text[i:])
    if match is None:
        return None
    token = match.group(1) if match.group(1) is not None else match.group(0)
    return token.lower()

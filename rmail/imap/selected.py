"""The selected mailbox as one session sees it: sequence numbers, and what it has been told.

A client numbers messages by position (sequence numbers). Those numbers may change only
when the server says so (EXISTS, EXPUNGE, VANISHED), so each session keeps its own list of
UIDs and reconciles it with the folder's index at the moments RFC 3501 allows:

- new messages (UIDs above the last one it knows) -> ``* n EXISTS`` and ``* n RECENT``;
- flag changes (MODSEQ above its flags watermark, not its own) -> ``* n FETCH (FLAGS ...)``;
- expunges (the index's expunge log above its expunge watermark) -> ``* n EXPUNGE`` or
  ``* VANISHED`` (QRESYNC), but never while answering FETCH, STORE or SEARCH
  (RFC 3501 §7.4.1); until then the message keeps its number.

Nothing here does I/O, but the index is shared with other sessions and with delivery, which
change it from worker threads: :meth:`SelectedView.open`, :meth:`~SelectedView.updates`,
:meth:`~SelectedView.metas` and :meth:`~SelectedView.qresync` run in a worker thread (after
the session refreshed the index) and read it under its in-memory lock, so that its columns
are consistent with each other; that lock is never taken on the event loop, where a writer
holding it across an fsync would stall every connection.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from rmail.imap import responses
from rmail.imap.parser.types import SequenceSet
from rmail.store.maildir import Folder
from rmail.store.mailindex import SEEN, MailIndex, MessageMeta

__all__ = ["BadSequence", "ClaimRecent", "SelectedView"]

ClaimRecent = Callable[[int], int]
"""``claim(top_uid) -> previous claim``: the session may show UIDs above the previous claim
as \\Recent (RFC 3501 §2.3.2: one session only); a read-only one claims nothing."""


def _locked(index: MailIndex) -> AbstractContextManager[bool]:
    """The index's in-memory lock, under which its columns are mutually consistent.

    MailIndex documents each public method as thread-safe but has no public way to read
    several columns consistently; the store itself (``Folder.expunge``) reads them so.
    """
    return index._mem


class BadSequence(Exception):
    """A sequence number beyond the mailbox (RFC 3501 §6.4.8 says BAD)."""


@dataclass
class SelectedView:
    folder: Folder
    readonly: bool
    uids: list[int] = field(default_factory=list)
    recent: set[int] = field(default_factory=set)
    # Everything up to these MODSEQs has been reported to the client.
    flags_modseq: int = 0
    expunge_modseq: int = 0
    uidnext: int = 1
    keywords: set[str] = field(default_factory=set)
    # Changes this session made and already answered with FETCH: uid -> modseq.
    own: dict[int, int] = field(default_factory=dict)
    saved: set[int] | None = None
    # Sequence number of the first unseen message when opened (SELECT's [UNSEEN n]).
    first_unseen: int | None = None

    @classmethod
    def open(cls, folder: Folder, readonly: bool, claim: ClaimRecent) -> SelectedView:
        """A fresh view of an (already refreshed) folder. Runs in a worker thread."""
        index = folder.index
        with _locked(index):
            uids = list(index.uids)
            first_unseen = next((seq for seq, m in enumerate(index.masks, 1) if not m & SEEN), None)
            view = cls(
                folder=folder,
                readonly=readonly,
                uids=uids,
                flags_modseq=index.highestmodseq,
                expunge_modseq=index.highestmodseq,
                uidnext=index.uidnext,
                keywords=index.keywords_in_use(),
                first_unseen=first_unseen,
            )
        recent_from = claim(uids[-1] if uids else 0) + 1
        view.recent = set(uids[bisect.bisect_left(uids, recent_from) :])
        return view

    @property
    def index(self) -> MailIndex:
        return self.folder.index

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        pos = bisect.bisect_left(self.uids, uid)
        if pos < len(self.uids) and self.uids[pos] == uid:
            return pos + 1
        return None

    def resolve(self, seqset: SequenceSet, *, uid: bool) -> list[int]:
        """The UIDs a sequence set names, in ascending order.

        Raises:
            BadSequence: a sequence number (not a UID) beyond the last message.
        """
        if seqset.last_result:
            return sorted(u for u in (self.saved or set()) if self.seq_of(u) is not None)
        if uid:
            star = self.uids[-1] if self.uids else 0
            return sorted(seqset.iter_values(star, self.uids))
        count = len(self.uids)
        for lo, hi in seqset.ranges:
            for value in (lo, hi):
                if value is not None and value > count:
                    raise BadSequence(f"no message {value}; the mailbox has {count}")
        if count == 0:
            return []
        seqs = sorted(seqset.iter_values(count))
        return [self.uids[s - 1] for s in seqs if 1 <= s <= count]

    def metas(self, uids: list[int]) -> list[tuple[int, MessageMeta]]:
        """(sequence number, index entry) of each UID still in the index (worker thread).

        A UID expunged by someone else is left out; it is reported at the next allowed moment.
        """
        seqs: dict[int, int] = {}
        for uid in uids:
            seq = self.seq_of(uid)
            if seq is not None:
                seqs[uid] = seq
        return [(seqs[meta.uid], meta) for meta in self.index.get_many(seqs)]

    def mark_own(self, meta: MessageMeta) -> None:
        """This session answered a change itself; do not report it again."""
        self.own[meta.uid] = meta.modseq

    # -- reconciliation --------------------------------------------------------------------

    def updates(
        self, *, allow_expunge: bool, condstore: bool, qresync: bool, claim: ClaimRecent
    ) -> list[bytes]:
        """Untagged responses bringing the client up to date with the index (worker thread)."""
        index = self.index
        with _locked(index):
            watermark = index.highestmodseq
            # Every change (append, flags, expunge) raises HIGHESTMODSEQ: nothing new, no work.
            if watermark <= self.flags_modseq and (
                not allow_expunge or watermark <= self.expunge_modseq
            ):
                return []
            out: list[bytes] = []
            if allow_expunge and watermark > self.expunge_modseq:
                gone = [u for u in index.vanished_since(self.expunge_modseq) if self.seq_of(u)]
                out += self.forget(gone, qresync=qresync)
                self.expunge_modseq = watermark
            if watermark > self.flags_modseq:
                out += self._new_and_changed(condstore=condstore, qresync=qresync, claim=claim)
                self.flags_modseq = watermark
                self.own.clear()
            return out

    def _new_and_changed(
        self, *, condstore: bool, qresync: bool, claim: ClaimRecent
    ) -> list[bytes]:
        """FLAGS, EXISTS/RECENT and FETCH FLAGS since the flags watermark (index locked)."""
        index = self.index
        out: list[bytes] = []
        keywords = index.keywords_in_use()
        if not keywords <= self.keywords:
            self.keywords |= keywords
            out.append(self.flags_response())
        last = self.uids[-1] if self.uids else 0
        fresh = list(index.uids[bisect.bisect_right(index.uids, last) :])
        if fresh:
            recent_from = claim(fresh[-1]) + 1
            self.uids.extend(fresh)
            self.recent.update(u for u in fresh if u >= recent_from)
            self.uidnext = max(self.uidnext, fresh[-1] + 1)
            out.append(responses.untagged(b"%d EXISTS" % len(self.uids)))
            out.append(responses.untagged(b"%d RECENT" % len(self.recent)))
        reported = self.flags_modseq
        for pos, modseq in enumerate(index.modseqs):
            uid = index.uids[pos]
            # New messages were announced with EXISTS; the client fetches their flags.
            if modseq <= reported or uid > last or self.own.get(uid) == modseq:
                continue
            seq = self.seq_of(uid)
            if seq is not None:
                meta = index.meta_at(pos)
                out.append(self.fetch_flags(seq, meta, uid=qresync, modseq=condstore))
        return out

    def qresync(self, modseq: int, known_uids: SequenceSet | None) -> list[bytes]:
        """RFC 7162 §3.2.5.1: VANISHED (EARLIER) and FETCH of what changed since ``modseq``.

        Only messages outside the view are reported vanished: one expunged after the view
        was opened still has its number and is reported at the next allowed moment.
        (Worker thread.)
        """
        index = self.index
        top = max(self.uidnext - 1, 1)
        out: list[bytes] = []
        with _locked(index):
            gone = [
                u
                for u in index.vanished_since(modseq)
                if self.seq_of(u) is None and (known_uids is None or known_uids.contains(u, top))
            ]
            if gone:
                out.append(
                    responses.untagged(b"VANISHED (EARLIER) " + responses.sequence_set(gone))
                )
            for pos, changed in enumerate(index.modseqs):
                seq = self.seq_of(index.uids[pos])
                if changed > modseq and seq is not None:
                    out.append(self.fetch_flags(seq, index.meta_at(pos), uid=True, modseq=True))
        return out

    def forget(self, uids: list[int], *, qresync: bool) -> list[bytes]:
        """Remove messages from the view; the EXPUNGE or VANISHED responses that say so."""
        if not uids:
            return []
        out: list[bytes] = []
        if qresync:
            out.append(responses.untagged(b"VANISHED " + responses.sequence_set(uids)))
            for uid in uids:
                self._drop(uid)
            return out
        # Highest first, so the numbers of the ones still to report do not move.
        for uid in sorted(uids, reverse=True):
            seq = self.seq_of(uid)
            if seq is not None:
                out.append(responses.untagged(b"%d EXPUNGE" % seq))
                self._drop(uid)
        return out

    def _drop(self, uid: int) -> None:
        pos = bisect.bisect_left(self.uids, uid)
        if pos < len(self.uids) and self.uids[pos] == uid:
            del self.uids[pos]
        self.recent.discard(uid)

    def flags_response(self) -> bytes:
        system = [rb"\Answered", rb"\Flagged", rb"\Deleted", rb"\Seen", rb"\Draft"]
        keywords = [k.encode() for k in sorted(self.keywords)]
        return responses.untagged(b"FLAGS " + responses.imap_list([*system, *keywords]))

    def fetch_flags(self, seq: int, meta: MessageMeta, *, uid: bool, modseq: bool) -> bytes:
        """``* seq FETCH (FLAGS (...) [UID n] [MODSEQ (m)])``."""
        flags = list(meta.flags)
        if meta.uid in self.recent:
            flags.append("\\Recent")
        items = [b"FLAGS " + responses.flags_list(flags)]
        if uid:
            items.append(b"UID %d" % meta.uid)
        if modseq:
            items.append(b"MODSEQ (%d)" % meta.modseq)
        return responses.untagged(b"%d FETCH (" % seq + b" ".join(items) + b")")

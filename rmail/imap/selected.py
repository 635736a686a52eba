"""The selected mailbox as one session sees it: sequence numbers, and what it has been told.

A client numbers messages by position (sequence numbers). Those numbers may change only
when the server says so (EXISTS, EXPUNGE, VANISHED), so each session keeps its own list of
UIDs and reconciles it with the folder's index at the moments RFC 3501 allows:

- new messages (UIDs at or above the UIDNEXT it last reported) -> ``* n EXISTS``;
- flag changes (MODSEQ above its flags watermark, not its own) -> ``* n FETCH (FLAGS ...)``;
- expunges (the index's expunge log above its expunge watermark) -> ``* n EXPUNGE`` or
  ``* VANISHED`` (QRESYNC), but never while answering FETCH, STORE or SEARCH
  (RFC 3501 §7.4.1); until then the message keeps its number.

Nothing here does I/O: the session refreshes the index (off the loop) before asking.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from rmail.imap import responses
from rmail.imap.parser.types import SequenceSet
from rmail.store.maildir import Folder
from rmail.store.mailindex import MailIndex, MessageMeta

__all__ = ["BadSequence", "SelectedView"]


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

    @classmethod
    def open(cls, folder: Folder, readonly: bool, recent_from: int) -> SelectedView:
        """A fresh view of an (already refreshed) folder; UIDs >= recent_from are \\Recent."""
        index = folder.index
        uids = list(index.uids)
        return cls(
            folder=folder,
            readonly=readonly,
            uids=uids,
            recent={u for u in uids[bisect.bisect_left(uids, recent_from) :]},
            flags_modseq=index.highestmodseq,
            expunge_modseq=index.highestmodseq,
            uidnext=index.uidnext,
            keywords=index.keywords_in_use(),
        )

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
        """(sequence number, index entry) of each UID still in the index."""
        out = []
        index = self.index
        for uid in uids:
            seq = self.seq_of(uid)
            pos = index.position(uid)
            if seq is not None and pos is not None:
                out.append((seq, index.meta_at(pos)))
        return out

    def mark_own(self, meta: MessageMeta) -> None:
        """This session answered a change itself; do not report it again."""
        self.own[meta.uid] = meta.modseq

    # -- reconciliation --------------------------------------------------------------------

    def updates(self, *, allow_expunge: bool, condstore: bool, qresync: bool) -> list[bytes]:
        """Untagged responses bringing the client up to date with the index."""
        index = self.index
        out: list[bytes] = []
        if allow_expunge and index.highestmodseq > self.expunge_modseq:
            gone = [u for u in index.vanished_since(self.expunge_modseq) if self.seq_of(u)]
            out += self.forget(gone, qresync=qresync)
            self.expunge_modseq = index.highestmodseq
        new_keywords = index.keywords_in_use() - self.keywords
        if new_keywords:
            self.keywords |= new_keywords
            out.append(self.flags_response())
        fresh: list[int] = []
        if index.uidnext > self.uidnext:
            start = bisect.bisect_left(index.uids, self.uidnext)
            fresh = [u for u in index.uids[start:] if u > (self.uids[-1] if self.uids else 0)]
            self.uids.extend(fresh)
            self.uidnext = index.uidnext
            if fresh:
                out.append(responses.untagged(b"%d EXISTS" % len(self.uids)))
                out.append(responses.untagged(b"%d RECENT" % len(self.recent)))
        if index.highestmodseq > self.flags_modseq:
            watermark = self.flags_modseq
            fresh_set = set(fresh)
            for pos, modseq in enumerate(index.modseqs):
                if modseq <= watermark:
                    continue
                uid = index.uids[pos]
                seq = self.seq_of(uid)
                # New messages were announced with EXISTS; the client fetches their flags.
                if seq is None or self.own.get(uid) == modseq or uid in fresh_set:
                    continue
                meta = index.meta_at(pos)
                out.append(self.fetch_flags(seq, meta, uid=qresync, modseq=condstore))
            self.flags_modseq = index.highestmodseq
            self.own.clear()
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

"""The store under real concurrency: OS processes and threads on one folder, and SIGKILL.

Children are separate interpreters (``sys.executable -c WORKER``) that share nothing with the
test but the directory, like ``rmail deliver`` beside a running server. They report over a
pipe, one line per event; the test waits on those lines (with deadlines), never on sleeps.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

from rmail.store import fsio
from rmail.store.maildir import Folder, Mailbox
from rmail.store.mailindex import SEEN

HOST = "mx.example.test"
REPO = Path(__file__).resolve().parents[2]
READ_TIMEOUT = 20.0  # seconds for one line from a child; far above what any step takes


def message(tag: str, i: int) -> bytes:
    """The message a child sends: a unique Message-ID and a size that varies (LF endings)."""
    body = "".join(f"line {k} of {tag}-{i}\n" for k in range(i % 7))
    return f"Message-ID: <{tag}-{i}@test>\nSubject: {tag} {i}\n\n{body}".encode()


def stored(tag: str, i: int) -> bytes:
    return message(tag, i).replace(b"\n", b"\r\n")


_WORKER_BODY = """
import hashlib, json, os, random, select, sys
from pathlib import Path

from rmail.errors import NotFound
from rmail.store.maildir import Mailbox

mode = sys.argv[1]
a = json.loads(sys.argv[2])
if "cpu" in a:
    os.sched_setaffinity(0, {a["cpu"]})  # a core of its own: truly at the same time
mb = Mailbox(Path(a["dir"]), hostname="mx.example.test", fsync=a["fsync"],
             journal_max=a["journal_max"])
folder = mb.folder(a["folder"])


def stop_requested():
    return bool(select.select([sys.stdin], [], [], 0)[0])


print("ready", flush=True)
if a.get("wait_go"):
    sys.stdin.readline()

if mode == "append":
    for i in range(a["count"]):
        meta = folder.append(message(a["tag"], i))
        print(meta.uid, i, flush=True)
    print("done", flush=True)
elif mode == "append_each":
    # Batches of 7 with one shared commit, as local delivery writes them.
    for start in range(0, a["count"], 7):
        batch = range(start, start + 7)
        metas = folder.append_each([message(a["tag"], i) for i in batch])
        for meta, i in zip(metas, batch):
            print(meta.uid, i, flush=True)
    print("done", flush=True)
elif mode == "flag":
    # "UID OP FLAG..." lines from the test, so that both children work on a UID at once
    for line in sys.stdin:
        if line.strip() == "stop":
            break
        uid, op, *flags = line.split()
        folder.change_flags(int(uid), op, flags)
        print("ok", flush=True)
    print("done", flush=True)
elif mode == "churn":
    rng = random.Random(a["seed"])
    expunged = []
    ops = 0
    while ops < a["max_ops"] and not stop_requested():
        uids = list(folder.refresh().uids)
        ops += 1
        if not uids:
            continue
        uid = rng.choice(uids)
        r = rng.random()
        if r < 0.5:
            flag = rng.choice(["\\\\Seen", "\\\\Flagged", "\\\\Answered", "$Work"])
            folder.change_flags(uid, "add", [flag])
        elif r < 0.75:
            folder.change_flags(uid, "add", ["\\\\Deleted"])
        elif r < 0.9:
            folder.change_flags(uid, "remove", ["\\\\Seen", "$Work"])
        else:
            expunged += [m.uid for m in folder.expunge()]
    expunged += [m.uid for m in folder.expunge()]
    print(json.dumps({"ops": ops, "expunged": expunged}), flush=True)
elif mode == "verify":
    index = folder.refresh()
    out = {"uids": list(index.uids), "total_size": index.total_size, "files": 0, "sha": {}}
    for meta in index.messages():
        data = folder.read(meta.uid)
        out["files"] += len(data)
        out["sha"][meta.uid] = hashlib.sha256(data).hexdigest()
    out["appended"] = folder.append(message("verify", 0)).uid
    print(json.dumps(out), flush=True)
"""
WORKER = textwrap.dedent(inspect.getsource(message)) + _WORKER_BODY


class Child:
    """A worker process whose stdout is read line by line with a deadline."""

    def __init__(self, mode: str, args: dict[str, Any], stderr: IO[bytes]) -> None:
        path = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, mode, json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
        self._stderr = stderr
        self._buf = b""

    def readline(self, timeout: float = READ_TIMEOUT) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line from the child in {timeout}s")
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    self.proc.wait(timeout=READ_TIMEOUT)
                    raise AssertionError(f"child exited {self.proc.returncode}: {self.errors()}")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def errors(self) -> str:
        self._stderr.flush()
        with open(self._stderr.name, "rb") as f:
            return f.read().decode(errors="replace")[-3000:]

    def finish(self) -> None:
        """Wait for a clean exit."""
        assert self.proc.wait(timeout=READ_TIMEOUT) == 0, self.errors()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=READ_TIMEOUT)


@contextmanager
def children(tmp_path: Path) -> Iterator[list[Child]]:
    """Spawned children are killed and reaped whatever happens to the test."""
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in started:
            child.kill()
            for pipe in (child.proc.stdin, child.proc.stdout):
                if pipe is not None:
                    pipe.close()


def spawn(started: list[Child], tmp_path: Path, mode: str, args: dict[str, Any]) -> Child:
    err = open(tmp_path / f"child-{len(started)}.err", "wb")  # noqa: SIM115 - closed below
    try:
        child = Child(mode, args, err)
    finally:
        err.close()  # the child has its own copy of the descriptor
    started.append(child)
    return child


def new_mailbox(tmp_path: Path, *, journal_max: int = 5000) -> Mailbox:
    mb = Mailbox(tmp_path / "mail", hostname=HOST, fsync=False, journal_max=journal_max)
    mb.initialize()
    return mb


def worker_args(
    mb: Mailbox,
    *,
    fsync: bool = False,
    journal_max: int = 5000,
    cpu: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON argument of a child; ``cpu`` pins it to one CPU."""
    args = {"dir": str(mb.dir), "folder": "INBOX", "fsync": fsync, "journal_max": journal_max}
    if cpu is not None:
        args["cpu"] = cpu
    return args | extra


def two_cpus() -> list[int | None]:
    """Two different CPUs for two children, so that they really run at the same moment."""
    cpus = sorted(os.sched_getaffinity(0))
    return [cpus[0], cpus[1]] if len(cpus) >= 2 else [None, None]


def read_appends(child: Child, tag: str) -> dict[int, bytes]:
    """UID -> expected stored bytes, from an append child's report lines, up to "done"."""
    reported: dict[int, bytes] = {}
    while (line := child.readline()) != "done":
        uid, i = map(int, line.split())
        assert uid not in reported
        reported[uid] = stored(tag, int(i))
    return reported


def assert_consistent(folder: Folder, *, orphans_allowed: bool = False) -> dict[int, bytes]:
    """The index agrees with itself and with the files; returns UID -> message bytes."""
    index = folder.refresh()
    uids = list(index.uids)
    assert all(a < b for a, b in itertools.pairwise(uids)), "UIDs strictly increase"
    assert not uids or index.uidnext > uids[-1]
    assert len(set(index.bases)) == len(index.bases), "no file indexed twice"
    contents: dict[int, bytes] = {}
    for meta in index.messages():
        data = folder.read(meta.uid)
        assert len(data) == meta.size, f"UID {meta.uid}: size in index differs from the file"
        contents[meta.uid] = data
    assert index.total_size == sum(len(d) for d in contents.values())
    assert index.unseen == sum(1 for m in index.masks if not m & SEEN)
    complete, _, tail = (folder.dir / "index.journal").read_bytes().rpartition(b"\n")
    records = [json.loads(line) for line in complete.splitlines()]
    assert records[0][0] == "h", "the journal starts with its header"
    assert not tail or orphans_allowed, "no half-written record after a clean run"
    on_disk = {
        name.split(":", 1)[0] for sub in ("new", "cur") for name in os.listdir(folder.dir / sub)
    }
    if orphans_allowed:
        assert set(index.bases) <= on_disk
    else:
        assert set(index.bases) == on_disk, "every file indexed, every indexed file there"
    return contents


def fresh_folder(mb: Mailbox, name: str = "INBOX") -> Folder:
    return Mailbox(mb.dir, hostname=HOST, fsync=False).folder(name)


# -- processes appending -----------------------------------------------------------------


@pytest.mark.parametrize(("count", "fsync"), [(300, False), (40, True)])
def test_two_processes_appending_never_share_a_uid(tmp_path: Path, count: int, fsync: bool) -> None:
    mb = new_mailbox(tmp_path)
    with children(tmp_path) as started:
        procs = {
            tag: spawn(
                started,
                tmp_path,
                "append",
                worker_args(mb, fsync=fsync, count=count, tag=tag, wait_go=True, cpu=cpu),
            )
            for tag, cpu in zip(("p1", "p2"), two_cpus(), strict=True)
        }
        for child in procs.values():
            assert child.readline() == "ready"
        for child in procs.values():
            child.send("go")
        reports = {tag: read_appends(child, tag) for tag, child in procs.items()}
        for child in procs.values():
            child.finish()

    assert not reports["p1"].keys() & reports["p2"].keys()
    expected = reports["p1"] | reports["p2"]
    assert len(expected) == 2 * count
    for report in reports.values():
        assert list(report) == sorted(report), "each process sees its own UIDs increase"
    folder = fresh_folder(mb)
    contents = assert_consistent(folder)
    assert contents == expected
    assert folder.index.uidnext == max(expected) + 1
    assert folder.index.total_size == sum(
        (folder.message_path(m)).stat().st_size for m in folder.index.messages()
    )


def test_appends_racing_flag_changes_and_expunges_stay_consistent(tmp_path: Path) -> None:
    mb = new_mailbox(tmp_path, journal_max=50)
    with children(tmp_path) as started:
        pins = two_cpus()
        appender = spawn(
            started,
            tmp_path,
            "append",
            worker_args(mb, journal_max=50, count=250, tag="a", wait_go=True, cpu=pins[0]),
        )
        churner = spawn(
            started,
            tmp_path,
            "churn",
            worker_args(mb, journal_max=50, seed=7, max_ops=50_000, wait_go=True, cpu=pins[1]),
        )
        for child in (appender, churner):
            assert child.readline() == "ready"
            child.send("go")
        appended = read_appends(appender, "a")
        appender.finish()
        churner.send("stop")
        result = json.loads(churner.readline())
        churner.finish()

    expunged = set(result["expunged"])
    assert result["ops"] > 10
    assert expunged, "the churn expunged something"
    assert expunged <= appended.keys()
    folder = fresh_folder(mb)
    contents = assert_consistent(folder)
    assert contents.keys() == appended.keys() - expunged
    assert all(contents[uid] == appended[uid] for uid in contents)
    assert sorted(folder.index.vanished_since(0)) == sorted(expunged)
    for meta in folder.index.messages():
        assert (folder.dir / meta.relpath).exists(), f"file name of UID {meta.uid} mirrors flags"
    assert folder.index.uidnext == max(appended) + 1


def flag_in_lockstep(tmp_path: Path, mb: Mailbox, steps: list[tuple[str, str]]) -> None:
    """Two children (on two CPUs if there are two) get one "UID OP FLAG..." line each per
    step at the same moment; both answer before the next step, so each step is a race."""
    with children(tmp_path) as started:
        flaggers = [
            spawn(started, tmp_path, "flag", worker_args(mb, cpu=cpu)) for cpu in two_cpus()
        ]
        for child in flaggers:
            assert child.readline() == "ready"
        for n, lines in enumerate(steps):
            # alternate who is told first, so neither settles into always being ahead
            pairs = list(zip(flaggers, lines, strict=True))
            for child, line in pairs[:: 1 if n % 2 else -1]:
                child.send(line)
            for child in flaggers:
                assert child.readline() == "ok"
        for child in flaggers:
            child.send("stop")
            assert child.readline() == "done"
            child.finish()


def test_racing_flag_changes_leave_one_winner_and_every_file_readable(tmp_path: Path) -> None:
    mb = new_mailbox(tmp_path)
    inbox = mb.folder("INBOX")
    uids = [m.uid for m in inbox.append_many([(stored("m", i), (), None) for i in range(300)])]
    one, two = "\\Seen", "\\Flagged \\Answered $Two"
    flag_in_lockstep(
        tmp_path, mb, [(f"{uid} set {one}", f"{uid} set {two}") for _ in range(2) for uid in uids]
    )

    folder = fresh_folder(mb)
    contents = assert_consistent(folder)
    assert contents == {uid: stored("m", i) for i, uid in enumerate(uids)}
    outcomes = {m.flags for m in folder.index.messages()}
    assert outcomes <= {("\\Seen",), ("\\Answered", "\\Flagged", "$Two")}, "never a mix"


def in_lock_wait(thread: threading.Thread) -> bool:
    """Whether ``thread`` is inside the lock code of fsio (waiting: the test holds the lock)."""
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_filename == fsio.__file__:
            return True
        frame = frame.f_back
    return False


def test_flags_added_while_another_writer_holds_the_lock_are_all_kept(tmp_path: Path) -> None:
    mb = new_mailbox(tmp_path)
    uid = mb.folder("INBOX").append(stored("m", 0)).uid
    # two sessions, as two server processes would have them: nothing shared in memory
    sessions = [Mailbox(mb.dir, hostname=HOST, fsync=False).folder("INBOX") for _ in range(2)]
    errors: list[BaseException] = []

    def add(folder: Folder, flag: str) -> None:
        try:
            folder.change_flags(uid, "add", [flag])
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=add, args=(folder, flag))
        for folder, flag in zip(sessions, ("\\Seen", "\\Flagged"), strict=True)
    ]
    fd = os.open(sessions[0].dir / "index.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a third writer is in the middle of an update
        for thread in threads:
            thread.start()
        # No pipe can say "blocked on the lock", so look at the stacks, with a deadline.
        deadline = time.monotonic() + 10
        while not all(in_lock_wait(t) for t in threads):
            if time.monotonic() > deadline:
                raise TimeoutError("the sessions never reached the index lock")
            time.sleep(0.001)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        for thread in threads:
            thread.join(timeout=READ_TIMEOUT)
    assert not errors
    assert not any(t.is_alive() for t in threads)

    assert fresh_folder(mb).index.get(uid).flags == ("\\Seen", "\\Flagged")


# -- threads -----------------------------------------------------------------------------


@pytest.mark.parametrize("journal_max", [5000, 20])
def test_eight_threads_appending_through_one_mailbox_never_share_a_uid(
    tmp_path: Path, journal_max: int
) -> None:
    mb = new_mailbox(tmp_path, journal_max=journal_max)

    def work(t: int) -> list[tuple[int, bytes]]:
        folder = mb.folder("INBOX")
        return [(folder.append(message(f"t{t}", i)).uid, stored(f"t{t}", i)) for i in range(60)]

    with ThreadPoolExecutor(8) as pool:
        results = [pair for batch in pool.map(work, range(8)) for pair in batch]

    uids = [uid for uid, _ in results]
    assert len(set(uids)) == len(uids) == 480
    contents = assert_consistent(fresh_folder(mb))
    assert contents == dict(results)
    assert assert_consistent(mb.folder("INBOX")) == contents


# -- SIGKILL -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("journal_max", "fsync", "mode"),
    [
        (5000, False, "append"),
        (20, False, "append"),
        (20, True, "append"),
        (20, True, "append_each"),
    ],
)
def test_a_writer_killed_mid_append_loses_nothing_it_reported(
    tmp_path: Path, journal_max: int, fsync: bool, mode: str
) -> None:
    """Three kills in a row on one folder; with journal_max=20 some land in a compaction.
    ``append_each`` is the batch of local delivery: several messages, one commit."""
    mb = new_mailbox(tmp_path, journal_max=journal_max)
    reported: dict[int, bytes] = {}
    with children(tmp_path) as started:
        for round_, threshold in enumerate((50, 83, 131)):
            tag = f"k{round_}"
            writer = spawn(
                started,
                tmp_path,
                mode,
                worker_args(mb, fsync=fsync, journal_max=journal_max, count=100_000, tag=tag),
            )
            assert writer.readline() == "ready"
            got = 0
            while got < threshold:
                uid, i = map(int, writer.readline().split())
                assert uid not in reported, f"UID {uid} handed out twice"
                reported[uid] = stored(tag, i)
                got += 1
            writer.kill()
            assert writer.proc.returncode == -signal.SIGKILL

            verifier = spawn(started, tmp_path, "verify", worker_args(mb, journal_max=journal_max))
            assert verifier.readline() == "ready"
            seen = json.loads(verifier.readline())
            verifier.finish()
            assert seen["total_size"] == seen["files"]
            assert len(set(seen["uids"])) == len(seen["uids"])
            assert reported.keys() <= set(seen["uids"])
            assert seen["appended"] > max(seen["uids"])
            assert seen["appended"] > max(reported)
            for uid, data in reported.items():
                assert seen["sha"][str(uid)] == hashlib.sha256(data).hexdigest(), f"UID {uid}"
            reported[seen["appended"]] = stored("verify", 0)

    folder = fresh_folder(mb)
    contents = assert_consistent(folder, orphans_allowed=True)
    assert all(contents[uid] == data for uid, data in reported.items())
    assert folder.append(b"Subject: last\r\n\r\n").uid > max(contents)

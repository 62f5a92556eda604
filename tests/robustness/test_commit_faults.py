"""Faults injected into UPDATE: a commit interrupted at any point never loses mail.

RFC 1939 §6 (STATE-07): in UPDATE the server removes exactly the messages marked
deleted, never any other, and releases the lock whether or not removal succeeded;
QUIT answers ``-ERR`` when some could not be removed (STATE-08, ``[SYS/TEMP]``).

Faults: ``unlink`` failing after k successes (EIO, EACCES, EPERM, EROFS, EBUSY, and
ENOENT = "already gone"), ``fsync`` of the directory failing, files removed or moved
by another program between LIST and QUIT, a generic ``Mailbox.remove`` that raises
half-way (OSError, MailboxError, RuntimeError), a commit slower than the cleanup
deadline, a cancellation (server shutdown) during the commit, and a process killed
with SIGKILL at every point of the remove.  After each: exactly the deleted-and-removed
messages are gone, all others are intact, and the next session logs in (the lock was
released or, for a killed process, dropped by the kernel) and sees a consistent
LIST/UIDL/RETR.
"""

from __future__ import annotations

import errno
import functools
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
from pop3_support import ForwardingMailbox, memory_session
from robust_support import MaildirFixture, OsProxy, unlink_faults, wire_form

import trio_pop3.mailbox._maildir as maildir_module
from trio_pop3 import MailboxError
from trio_pop3.mailbox import (
    Mailbox,
    MailboxHandler,
    MaildirStore,
    MailStore,
    MemoryAuthenticator,
    MemoryStore,
    MessageInfo,
)

REPO = str(Path(__file__).resolve().parents[2])

MESSAGES = [
    b"Subject: one\n\nfirst\n",
    b"Subject: two\n\n.dot\n",
    b"Subject: three\n\nthird\n",
    b"Subject: four\n\nfourth\n",
    b"Subject: five\n\nfifth\n",
]
#: Message numbers marked deleted in every scenario (unlinked in this order).
DOOMED = (1, 2, 4)

AUTH = MemoryAuthenticator({"alice": "secret"})


def make_maildir(tmp_path: Path) -> tuple[MaildirFixture, list[str]]:
    fixture = MaildirFixture(str(tmp_path), "alice")
    uids = [fixture.add(m) for m in MESSAGES]
    return fixture, uids


def factory(store: MailStore) -> functools.partial[MailboxHandler]:
    return functools.partial(MailboxHandler, store, AUTH)


async def dele_and_quit(store: MailStore, doomed: Sequence[int] = DOOMED) -> str:
    """Log in, LIST, DELE ``doomed``, QUIT; return the QUIT reply."""
    async with memory_session(factory(store)) as s:
        await s.client.login()
        first, _ = await s.client.multi("LIST")
        assert first.startswith("+OK"), first
        for n in doomed:
            assert (await s.client.command(f"DELE {n}")).startswith("+OK")
        reply = await s.client.command("QUIT")
        assert await s.client.read_to_eof() == b""
        await s.done.wait()
    return reply


async def check_next_session(store: MailStore, expected: list[tuple[str, bytes]]) -> None:
    """The next session logs in and LIST/UIDL/RETR agree with ``expected`` (uid, data)."""
    async with memory_session(factory(store)) as s:
        await s.client.login()  # the lock is free (LOCK-03)
        _, lines = await s.client.multi("LIST")
        assert lines == [
            f"{n} {len(wire_form(d))}".encode() for n, (_, d) in enumerate(expected, 1)
        ]
        _first, lines = await s.client.multi("UIDL")
        assert lines == [f"{n} {u}".encode() for n, (u, _) in enumerate(expected, 1)]
        for n, (_, data) in enumerate(expected, 1):
            await s.client.send_line(f"RETR {n}")
            assert (await s.client.reply()).startswith("+OK")
            assert await s.client.data() == wire_form(data)
        assert (await s.client.command("QUIT")).startswith("+OK")


def survivors(uids: list[str], removed: Sequence[int]) -> list[tuple[str, bytes]]:
    return [
        (u, m) for n, (u, m) in enumerate(zip(uids, MESSAGES, strict=True), 1) if n not in removed
    ]


# -- unlink failures ------------------------------------------------------------------------


@pytest.mark.parametrize("error", [errno.EIO, errno.EACCES, errno.EPERM, errno.EROFS, errno.EBUSY])
@pytest.mark.parametrize("succeed", [0, 1, 2])
async def test_unlink_fails_after_k_removals(tmp_path: Path, error: int, succeed: int) -> None:
    # RFC 1939 §6 (STATE-07, STATE-08): partial removal, -ERR [SYS/TEMP], nothing else lost.
    fixture, uids = make_maildir(tmp_path)
    store = MaildirStore(tmp_path)
    with unlink_faults(maildir_module, succeed=succeed, error=error) as done:
        reply = await dele_and_quit(store)
    assert reply.startswith("-ERR [SYS/TEMP]"), reply
    assert len(done) == succeed
    assert not fixture.locked()
    expected = survivors(uids, DOOMED[:succeed])
    assert fixture.contents() == expected
    await check_next_session(store, expected)


async def test_unlink_fails_once_then_recovers(tmp_path: Path) -> None:
    # One failure in the middle: the others are still tried (every message is attempted).
    fixture, uids = make_maildir(tmp_path)
    store = MaildirStore(tmp_path)
    with unlink_faults(maildir_module, succeed=1, error=errno.EIO, fail_all=False):
        reply = await dele_and_quit(store)
    assert reply.startswith("-ERR [SYS/TEMP]"), reply
    expected = survivors(uids, (DOOMED[0], DOOMED[2]))
    assert fixture.contents() == expected
    await check_next_session(store, expected)


async def test_unlink_enoent_counts_as_removed(tmp_path: Path) -> None:
    # ENOENT means another program removed it first: not an error, and nothing is lost
    # (here the "vanished" file is in fact still there: it stays, it is not lost).
    fixture, uids = make_maildir(tmp_path)
    store = MaildirStore(tmp_path)
    with unlink_faults(maildir_module, succeed=1, error=errno.ENOENT):
        reply = await dele_and_quit(store)
    assert reply == "+OK goodbye", reply
    expected = survivors(uids, DOOMED[:1])
    assert fixture.contents() == expected
    await check_next_session(store, expected)


async def test_fsync_failure_after_unlinks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The files are gone but durability is not certain: -ERR [SYS/TEMP], nothing else lost.
    fixture, uids = make_maildir(tmp_path)
    store = MaildirStore(tmp_path, fsync=True)

    def broken_fsync(path: str) -> None:
        raise OSError(errno.EIO, "fsync failed", path)

    monkeypatch.setattr(maildir_module, "_fsync_dir", broken_fsync)
    reply = await dele_and_quit(store)
    assert reply.startswith("-ERR [SYS/TEMP]"), reply
    expected = survivors(uids, DOOMED)
    assert fixture.contents() == expected
    monkeypatch.undo()
    await check_next_session(store, expected)


# -- other programs change the Maildir between LIST and QUIT ----------------------------------


async def test_deleted_message_removed_by_someone_else(tmp_path: Path) -> None:
    fixture, uids = make_maildir(tmp_path)
    store = MaildirStore(tmp_path)
    async with memory_session(factory(store)) as s:
        await s.client.login()
        for n in DOOMED:
            assert (await s.client.command(f"DELE {n}")).startswith("+OK")
        fixture.remove(uids[0])  # an MDA / IMAP server expunged it meanwhile
        assert await s.client.command("QUIT") == "+OK goodbye"
    expected = survivors(uids, DOOMED)
    assert fixture.contents() == expected
    await check_next_session(store, expected)


async def test_undeleted_message_removed_by_someone_else(tmp_path: Path) -> None:
    fixture, uids = make_maildir(tmp_path)
    store = MaildirStore(tmp_path)
    async with memory_session(factory(store)) as s:
        await s.client.login()
        assert (await s.client.command("DELE 1")).startswith("+OK")
        fixture.remove(uids[2])
        reply = await s.client.command("RETR 3")
        assert reply.startswith("-ERR"), reply  # a clean -ERR, the session goes on
        _first, lines = await s.client.multi("LIST")
        assert len(lines) == 4  # the snapshot still lists it (LOCK-05)
        assert await s.client.command("QUIT") == "+OK goodbye"
    expected = survivors(uids, (1, 3))
    assert fixture.contents() == expected
    await check_next_session(store, expected)


async def test_deleted_message_moved_and_flagged_meanwhile(tmp_path: Path) -> None:
    # A client moved it new/ -> cur/ and added flags: found by its base name, removed.
    fixture = MaildirFixture(str(tmp_path), "alice")
    uids = [fixture.add(m, subdir="new") for m in MESSAGES]
    store = MaildirStore(tmp_path)
    async with memory_session(factory(store)) as s:
        await s.client.login()
        assert (await s.client.command("DELE 2")).startswith("+OK")
        os.rename(
            os.path.join(fixture.path, "new", uids[1]),
            os.path.join(fixture.path, "cur", uids[1] + ":2,S"),
        )
        os.rename(
            os.path.join(fixture.path, "new", uids[3]),
            os.path.join(fixture.path, "cur", uids[3] + ":2,RS"),
        )
        assert await s.client.command("QUIT") == "+OK goodbye"
    expected = survivors(uids, (2,))
    assert fixture.contents() == expected
    await check_next_session(store, expected)


# -- a generic Mailbox whose remove() breaks half-way -------------------------------------------


class FlakyMailbox(ForwardingMailbox):
    def __init__(self, inner: Mailbox, succeed: int, error: BaseException) -> None:
        super().__init__(inner)
        self.succeed = succeed
        self.error = error

    async def remove(self, messages: Sequence[MessageInfo]) -> None:
        for message in messages[: self.succeed]:
            await self.inner.remove([message])
        raise self.error


class FlakyStore(MailStore):
    def __init__(self, inner: MemoryStore, succeed: int, error: BaseException) -> None:
        self.inner = inner
        self.succeed = succeed
        self.error = error

    async def open(self, user: str) -> Mailbox:
        return FlakyMailbox(await self.inner.open(user), self.succeed, self.error)


@pytest.mark.parametrize(
    ("error", "expected_reply"),
    [
        (
            OSError(errno.EIO, "I/O error"),
            "-ERR [SYS/TEMP] Some deleted messages were not removed.",
        ),
        (RuntimeError("backend bug"), "-ERR [SYS/TEMP] Some deleted messages were not removed."),
        (MailboxError("Disk quota exceeded."), "-ERR [SYS/TEMP] Disk quota exceeded."),
    ],
)
@pytest.mark.parametrize("succeed", [0, 2])
async def test_generic_remove_raises_half_way(
    error: BaseException, expected_reply: str, succeed: int
) -> None:
    memory = MemoryStore({"alice": MESSAGES})
    uids = [uid for uid, _ in memory.maildrops["alice"]]
    reply = await dele_and_quit(FlakyStore(memory, succeed, error))
    assert reply == expected_reply
    assert not memory.is_locked("alice")  # LOCK-03: released although commit failed
    expected = survivors(uids, DOOMED[:succeed])
    assert memory.maildrops["alice"] == expected
    await check_next_session(memory, expected)


# -- slow commits, cancellation --------------------------------------------------------------


def slow_unlink(delay: float) -> OsProxy:
    def unlink(path: str) -> None:
        time.sleep(delay)
        os.unlink(path)

    return OsProxy(unlink=unlink)


async def test_commit_slower_than_cleanup_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker thread is never abandoned: the commit finishes, the lock is released.
    fixture, uids = make_maildir(tmp_path)
    store = MaildirStore(tmp_path)
    monkeypatch.setattr(maildir_module, "os", slow_unlink(0.1))
    async with memory_session(factory(store), cleanup_timeout=0.05) as s:
        await s.client.login()
        for n in DOOMED:
            await s.client.command(f"DELE {n}")
        reply = await s.client.command("QUIT")
    assert reply.startswith(("+OK", "-ERR [SYS/TEMP]")), reply
    monkeypatch.undo()
    assert not fixture.locked()
    expected = survivors(uids, DOOMED)
    assert fixture.contents() == expected
    await check_next_session(store, expected)


async def test_cancelled_during_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Server shutdown while UPDATE runs: the shielded commit completes (never half a
    # decision taken away), the lock is released, nothing else is removed.
    fixture, uids = make_maildir(tmp_path)
    store = MaildirStore(tmp_path)
    monkeypatch.setattr(maildir_module, "os", slow_unlink(0.05))
    async with memory_session(factory(store)) as s:
        await s.client.login()
        for n in DOOMED:
            await s.client.command(f"DELE {n}")
        await s.client.send_line("QUIT")
        await trio.sleep(0.06)  # the first unlink is under way
        s.cancel_scope.cancel()
        await s.done.wait()
    monkeypatch.undo()
    assert not fixture.locked()
    expected = survivors(uids, DOOMED)
    assert fixture.contents() == expected
    await check_next_session(store, expected)


class StallingMailbox(ForwardingMailbox):
    """Its remove() or list_messages() never finishes; its close() awaits first.

    The close of a remote maildrop (a database, a lock service) may well await before
    the lock is gone: MailboxHandler must give it a scope of its own when the scope
    around it was cancelled already.
    """

    def __init__(self, inner: Mailbox, stall: str, stalled: trio.Event) -> None:
        super().__init__(inner)
        self.stall = stall
        self.stalled = stalled

    async def list_messages(self) -> Sequence[MessageInfo]:
        if self.stall == "list":
            self.stalled.set()
            await trio.sleep_forever()
        return await self.inner.list_messages()

    async def remove(self, messages: Sequence[MessageInfo]) -> None:
        if self.stall == "close":
            await self.inner.remove(messages)
            return
        self.stalled.set()
        await trio.sleep_forever()

    async def close(self) -> None:
        if self.stall == "close":  # releases the lock, then stalls (a slow flush)
            await self.inner.close()
            self.stalled.set()
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()  # Cancelled here in a cancelled scope
        await self.inner.close()


class StallingStore(MailStore):
    def __init__(self, inner: MemoryStore, stall: str) -> None:
        self.inner = inner
        self.stall = stall
        self.stalled = trio.Event()

    async def open(self, user: str) -> Mailbox:
        return StallingMailbox(await self.inner.open(user), self.stall, self.stalled)


@pytest.mark.rfc("1939", "6")
async def test_awaiting_close_releases_lock_after_remove_timed_out() -> None:
    # STATE-07, LOCK-03: remove() used up cleanup_timeout, so QUIT's scope is
    # cancelled; close() still gets to release the lock, and QUIT answers -ERR.
    memory = MemoryStore({"alice": MESSAGES})
    store = StallingStore(memory, "remove")
    async with memory_session(factory(store), cleanup_timeout=0.05) as s:
        await s.client.login()
        assert (await s.client.command("DELE 1")).startswith("+OK")
        reply = await s.client.command("QUIT")
    assert reply == "-ERR [SYS/TEMP] Timed out; deleted messages may not all be removed."
    assert not memory.is_locked("alice")
    assert memory.messages("alice") == MESSAGES


@pytest.mark.rfc("1939", "6")
async def test_close_past_the_deadline_does_not_deny_a_removal() -> None:
    # remove() succeeded, then close() ran out of cleanup_timeout: QUIT must not say
    # that the deleted messages were not removed.
    memory = MemoryStore({"alice": MESSAGES})
    store = StallingStore(memory, "close")
    async with memory_session(factory(store), cleanup_timeout=0.05) as s:
        await s.client.login()
        assert (await s.client.command("DELE 1")).startswith("+OK")
        reply = await s.client.command("QUIT")
    assert store.stalled.is_set()
    assert reply == "-ERR [SYS/TEMP] Timed out; deleted messages may not all be removed."
    assert memory.messages("alice") == MESSAGES[1:]


@pytest.mark.rfc("1939", "4")
async def test_awaiting_close_releases_lock_when_login_is_cancelled() -> None:
    # LOCK-03: a login cancelled while listing the maildrop (server shutdown) closes
    # the maildrop it opened, even if close() awaits.
    memory = MemoryStore({"alice": MESSAGES})
    store = StallingStore(memory, "list")
    async with memory_session(factory(store)) as s:
        await s.client.send_line("USER alice")
        await s.client.reply()
        await s.client.send_line("PASS secret")
        await store.stalled.wait()
        assert memory.is_locked("alice")
        s.cancel_scope.cancel()
        await s.done.wait()
    assert not memory.is_locked("alice")


# -- the process is killed mid-commit ----------------------------------------------------------

KILLER = textwrap.dedent(
    """
    import functools, os, signal, sys
    sys.path.insert(0, sys.argv[1])
    import trio, trio.testing
    import trio_pop3.mailbox._maildir as md
    from trio_pop3 import Limits, POP3Server
    from trio_pop3.mailbox import MailboxHandler, MaildirStore, MemoryAuthenticator

    root, kill_at = sys.argv[2], int(sys.argv[3])
    doomed = [int(n) for n in sys.argv[4].split(",")]
    calls = 0

    def die_at(n):
        global calls
        if calls == n:
            os.kill(os.getpid(), signal.SIGKILL)
        calls += 1

    class Os:
        def __getattr__(self, name):
            return getattr(os, name)

        def unlink(self, path):
            die_at(kill_at)
            os.unlink(path)

    md.os = Os()
    real_fsync = md._fsync_dir

    def fsync(path):
        die_at(kill_at)
        real_fsync(path)

    md._fsync_dir = fsync

    async def main():
        store = MaildirStore(root, fsync=True)
        auth = MemoryAuthenticator({"alice": "secret"})
        server = POP3Server(functools.partial(MailboxHandler, store, auth),
                            limits=Limits(auth_failure_delay=0))
        client, stream = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_stream, stream)
            lines = ["USER alice", "PASS secret", *[f"DELE {n}" for n in doomed], "QUIT"]
            await client.send_all("".join(line + "\\r\\n" for line in lines).encode())
            data = b""
            while chunk := await client.receive_some(65536):
                data += chunk
        sys.stdout.write(data.decode())

    trio.run(main)
    """
)


def test_process_killed_at_every_point_of_the_commit(tmp_path: Path) -> None:
    # kill_at counts unlink and fsync calls: 0..2 = before the 1st..3rd unlink, 3 =
    # after all unlinks, before the directory fsync; 99 = never (a normal QUIT).  The
    # five processes run in parallel.
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    runs = []
    for kill_at in (0, 1, 2, 3, 99):
        root = tmp_path / f"mail{kill_at}"
        root.mkdir()
        fixture, uids = make_maildir(root)
        args = [str(script), REPO, str(root), str(kill_at), ",".join(map(str, DOOMED))]
        proc = subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        runs.append((kill_at, root, fixture, uids, proc))
    for kill_at, root, fixture, uids, proc in runs:
        stdout, stderr = proc.communicate(timeout=60)
        if kill_at == 99:
            assert proc.returncode == 0, stderr
            assert stdout.endswith(b"+OK goodbye\r\n")
        else:
            assert proc.returncode == -9, stderr
        removed = DOOMED[: min(kill_at, len(DOOMED))]
        expected = survivors(uids, removed)
        assert fixture.contents() == expected  # exactly the unlinked ones are gone
        assert not fixture.locked()  # the kernel dropped the dead process's flock
        trio.run(check_next_session, MaildirStore(root), expected)

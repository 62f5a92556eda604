"""Timeouts under a MockClock (pytest-trio's ``autojump_clock``): no real sleeps.

RFC 1939 §3: an inactivity autologout timer, if any, is at least 10 minutes
(TIME-02); any command resets it (TIME-03); on expiry the session closes without
UPDATE and without a response (TIME-04).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import trio
import trio.testing
from pop3_support import ALICE_MESSAGES, Recorder, SkeletonHandler, memory_session

from trio_pop3 import DEFAULT_IDLE_TIMEOUT, Limits
from trio_pop3.mailbox import MailboxHandler, MemoryAuthenticator, MemoryStore


def test_default_idle_timeout_is_at_least_ten_minutes() -> None:
    # RFC 1939 §3 (TIME-02)
    assert DEFAULT_IDLE_TIMEOUT >= 600


@pytest.mark.rfc("1939", "3")
async def test_idle_timeout_closes_silently_without_update(
    autojump_clock: trio.testing.MockClock,
    store: MemoryStore,
    mailbox_factory: Callable[[], MailboxHandler],
) -> None:
    # TIME-04 + STATE-06: DELE, then silence -> closed, no reply, nothing removed.
    async with memory_session(mailbox_factory, timeout=600) as s:
        await s.client.login()
        assert (await s.client.command("DELE 1")).startswith("+OK")
        start = trio.current_time()
        assert await s.client.read_to_eof() == b""  # no "-ERR" goodbye either
        assert trio.current_time() - start == pytest.approx(600)
        await s.done.wait()
    assert store.messages("alice") == list(ALICE_MESSAGES)
    assert not store.is_locked("alice")


@pytest.mark.rfc("1939", "3")
async def test_idle_timeout_counts_from_the_last_reply(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with memory_session(recorder, timeout=600) as s:
        await trio.sleep(599)
        assert await s.client.command("XHELLO") == "+OK hello in AUTHORIZATION"
        start = trio.current_time()
        assert await s.client.read_to_eof() == b""
        assert trio.current_time() - start == pytest.approx(600)
    handler = recorder.last
    assert isinstance(handler, SkeletonHandler)
    assert handler.disconnects == 1
    assert handler.commits == 0


@pytest.mark.rfc("1939", "3")
async def test_any_command_resets_the_timer(autojump_clock: trio.testing.MockClock) -> None:
    # TIME-03: a command every 500 s keeps a 600 s timer from ever firing.
    async with memory_session(SkeletonHandler, timeout=600) as s:
        await s.client.login()
        for command in ["NOOP", "STAT", "XECHO x", "LIST", "FOO", "NOOP"]:
            await trio.sleep(500)
            assert (await s.client.command(command)).startswith(("+OK", "-ERR"))
            if command == "LIST":
                await s.client.data_lines()
        assert trio.current_time() >= 3000
        assert not s.done.is_set()


async def test_partial_line_does_not_dodge_the_timer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Half a command and then silence is still silence.
    async with memory_session(SkeletonHandler, timeout=600) as s:
        await s.client.send(b"NO")
        with trio.fail_after(601):
            assert await s.client.read_to_eof() == b""


async def test_timeout_none_disables(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_session(SkeletonHandler, timeout=None) as s:
        await trio.sleep(10**7)
        assert await s.client.command("XHELLO") == "+OK hello in AUTHORIZATION"
        await s.client.login()
        await trio.sleep(10**7)
        assert await s.client.command("NOOP") == "+OK"
        assert not s.done.is_set()


async def test_login_timeout_is_separate(autojump_clock: trio.testing.MockClock) -> None:
    # Before login: login_timeout (Dovecot: 3 min); after: the idle timeout.
    async with memory_session(SkeletonHandler, timeout=600, login_timeout=30) as s:
        start = trio.current_time()
        assert await s.client.read_to_eof() == b""
        assert trio.current_time() - start == pytest.approx(30)

    async with memory_session(SkeletonHandler, timeout=600, login_timeout=30) as s:
        await trio.sleep(29)
        await s.client.login()
        await trio.sleep(500)  # far past the login timeout, within the idle one
        assert await s.client.command("NOOP") == "+OK"
        start = trio.current_time()
        assert await s.client.read_to_eof() == b""
        assert trio.current_time() - start == pytest.approx(600)


async def test_login_timeout_none_with_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_session(SkeletonHandler, timeout=600, login_timeout=None) as s:
        await trio.sleep(10**6)
        await s.client.login()
        start = trio.current_time()
        assert await s.client.read_to_eof() == b""
        assert trio.current_time() - start == pytest.approx(600)


@pytest.mark.rfc("1939", "3")
async def test_send_timeout_client_stops_reading_mid_retr(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A client that stops reading in the middle of a RETR can't hold the session and
    # its maildrop lock forever (DEFAULT_SEND_TIMEOUT); nothing is removed (STATE-06).
    big = b"Subject: big\n\n" + b"x" * 100 + b"\n" * 40_000
    store = MemoryStore({"alice": [big, b"Subject: small\n\nhi\n"]})
    factory = functools.partial(MailboxHandler, store, MemoryAuthenticator({"alice": "secret"}))
    async with memory_session(factory, lockstep=True, send_timeout=60, timeout=600) as s:
        await s.client.login()
        assert (await s.client.command("DELE 2")).startswith("+OK")
        await s.client.send_line("RETR 1")
        # Read the first line and a little data, then stop reading.
        first = await s.client.reply()
        assert first.startswith("+OK"), first
        start = trio.current_time()
        with trio.fail_after(3600):
            await s.done.wait()
        elapsed = trio.current_time() - start
        assert 60 <= elapsed < 600  # ended by the send timeout, not the idle timer
        assert not store.is_locked("alice")
    assert store.messages("alice") == [big, b"Subject: small\n\nhi\n"]


async def test_send_timeout_spares_a_slow_client_that_keeps_reading(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # send_timeout is for a write that makes no progress: a client that reads a
    # little every 50 s is served in full although the RETR takes half an hour
    # (a stream other than a plain socket, such as TLS: written in 16 KiB pieces).
    big = b"Subject: big\n\n" + (b"x" * 78 + b"\n") * 8000  # 640 KB
    store = MemoryStore({"alice": [big]})
    factory = functools.partial(MailboxHandler, store, MemoryAuthenticator({"alice": "secret"}))
    async with memory_session(factory, lockstep=True, send_timeout=60, timeout=600) as s:
        await s.client.login()
        await s.client.send_line("RETR 1")
        start = trio.current_time()
        received = bytearray()
        while not received.endswith(b"\r\n.\r\n"):
            await trio.sleep(50)
            chunk = await s.client.stream.receive_some(16 * 1024)
            assert chunk, f"dropped after {len(received)} octets"
            received += chunk
        assert trio.current_time() - start > 1800
        assert received.startswith(b"+OK %d octets\r\n" % (len(big) + big.count(b"\n")))
        assert (await s.client.command("QUIT")).startswith("+OK")


async def test_send_timeout_none_waits_for_the_idle_reader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # With send_timeout=None a stalled reader is waited for; once it reads, all is well.
    async with memory_session(SkeletonHandler, lockstep=True, send_timeout=None, timeout=600) as s:
        await s.client.send_line("XHELLO")
        await trio.sleep(10**5)
        assert not s.done.is_set()
        assert await s.client.reply() == "+OK hello in AUTHORIZATION"


async def test_failed_login_delay_doubles_then_drops(
    autojump_clock: trio.testing.MockClock, mailbox_factory: Callable[[], MailboxHandler]
) -> None:
    # SEC-04 (Dovecot: 2 s, doubling, capped at 15 s); the delay is the same for an
    # unknown user and a wrong password (SEC-05), and past max_auth_failures the
    # connection is closed after the reply (STATE-04).
    async with memory_session(mailbox_factory, limits=Limits()) as s:
        for user, expected in [("alice", 2), ("nobody", 4), ("alice", 8), ("nobody", 15)]:
            assert await s.client.command(f"USER {user}") == "+OK Send your password."
            start = trio.current_time()
            assert await s.client.command("PASS wrong") == "-ERR [AUTH] Authentication failed."
            assert trio.current_time() - start == pytest.approx(expected)
        await s.client.command("USER alice")
        assert await s.client.command("PASS wrong") == "-ERR [AUTH] Authentication failed."
        assert await s.client.read_to_eof() == b""
        await s.done.wait()


async def test_successful_login_is_not_delayed(
    autojump_clock: trio.testing.MockClock, mailbox_factory: Callable[[], MailboxHandler]
) -> None:
    async with memory_session(mailbox_factory, limits=Limits()) as s:
        start = trio.current_time()
        await s.client.login()
        assert trio.current_time() == start


async def test_send_timeout_mid_large_retr_ends_cleanly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    big = b"Subject: big\n\n" + b"x" * 100 + b"\n" * 400_000  # > FLUSH_THRESHOLD on the wire
    store = MemoryStore({"alice": [big]})
    factory = functools.partial(MailboxHandler, store, MemoryAuthenticator({"alice": "secret"}))
    error: BaseException | None = None
    elapsed = 0.0
    try:
        async with memory_session(factory, lockstep=True, send_timeout=60, timeout=600) as s:
            await s.client.login()
            await s.client.send_line("RETR 1")
            assert (await s.client.reply()).startswith("+OK")
            start = trio.current_time()
            await s.done.wait()
            elapsed = trio.current_time() - start
    except BaseExceptionGroup as exc:
        error = exc
    assert error is None, f"the session crashed: {error!r}"
    assert not store.is_locked("alice")
    assert store.messages("alice") == [big]
    assert elapsed == pytest.approx(60)  # no second wait in the cleanup flush

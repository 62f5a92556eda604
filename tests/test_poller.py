"""ReadPoller: idle sessions parked on the server's own epoll set (Linux only).

Unit tests use socket pairs; the session tests use real TCP sockets under
``POP3Server.serve()``, the only place sessions use the poller.
"""

from __future__ import annotations

import functools
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
import trio.testing
from pop3_support import Client, StartServer, maildrop_uids

from trio_pop3._poller import TRIO_WAITS, ReadPoller, make_poller
from trio_pop3.mailbox import MailboxHandler, MemoryAuthenticator, MemoryStore

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="epoll is Linux's")


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


@dataclass
class Polled:
    """A ReadPoller, a socket pair with ``ours`` registered, and a nursery to use."""

    poller: ReadPoller
    ours: socket.socket
    theirs: socket.socket
    nursery: trio.Nursery


@asynccontextmanager
async def polled_pair(*, running: bool = True) -> AsyncIterator[Polled]:
    """Yield a :class:`Polled` (its poller's task started unless ``running=False``).

    On exit the nursery is cancelled and everything closed.
    """
    poller = ReadPoller()
    ours, theirs = _pair()
    try:
        with ours, theirs:
            async with trio.open_nursery() as nursery:
                if running:
                    await nursery.start(poller.run)
                poller.register(ours.fileno())
                yield Polled(poller, ours, theirs, nursery)
                nursery.cancel_scope.cancel()
    finally:
        poller.close()


async def _parked_count(poller: ReadPoller) -> int:
    await trio.testing.wait_all_tasks_blocked()
    return len(poller._parked)


async def _send_when_blocked(sock: socket.socket, data: bytes) -> None:
    await trio.testing.wait_all_tasks_blocked()
    sock.send(data)


async def test_a_parked_task_wakes_when_data_arrives() -> None:
    woke = trio.Event()
    async with polled_pair() as p:

        async def reader() -> None:
            with pytest.raises(BlockingIOError):
                p.ours.recv(10)  # the rule: park only after a read found nothing
            await p.poller.wait_readable(p.ours.fileno())
            assert p.ours.recv(10) == b"hello"
            woke.set()

        p.nursery.start_soon(reader)
        assert await _parked_count(p.poller) == 1
        assert not woke.is_set()
        p.theirs.send(b"hello")
        with trio.fail_after(5):
            await woke.wait()
        assert await _parked_count(p.poller) == 0


async def test_end_of_stream_wakes_the_task() -> None:
    async with polled_pair() as p:

        async def close_soon() -> None:
            await trio.testing.wait_all_tasks_blocked()
            p.theirs.close()

        p.nursery.start_soon(close_soon)
        with trio.fail_after(5):
            await p.poller.wait_readable(p.ours.fileno())
        assert p.ours.recv(10) == b""


async def test_wake_ends_the_wait_with_closed_resource_error() -> None:
    async with polled_pair() as p:
        p.poller.wake(p.ours.fileno())  # nobody waiting: harmless

        async def waker() -> None:
            await trio.testing.wait_all_tasks_blocked()
            p.poller.wake(p.ours.fileno())

        p.nursery.start_soon(waker)
        with trio.fail_after(5), pytest.raises(trio.ClosedResourceError):
            await p.poller.wait_readable(p.ours.fileno())
        assert await _parked_count(p.poller) == 0


async def test_a_cancelled_wait_is_forgotten_and_later_data_is_harmless() -> None:
    async with polled_pair() as p:
        with trio.move_on_after(0.05) as scope:
            await p.poller.wait_readable(p.ours.fileno())
        assert scope.cancelled_caught
        assert await _parked_count(p.poller) == 0
        p.theirs.send(b"late")  # an event with nobody parked: ignored
        await trio.testing.wait_all_tasks_blocked()
        # The next wait finds the data with a read first, as the rule says.
        assert p.ours.recv(10) == b"late"


async def test_data_that_comes_before_the_poller_runs_still_wakes_the_task() -> None:
    """Events wait in the kernel until the poller's task collects them."""
    woke = trio.Event()
    async with polled_pair(running=False) as p:

        async def reader() -> None:
            await p.poller.wait_readable(p.ours.fileno())
            woke.set()

        p.nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        p.theirs.send(b"early")
        await trio.testing.wait_all_tasks_blocked()
        assert not woke.is_set()  # nobody has collected the event yet
        await p.nursery.start(p.poller.run)
        with trio.fail_after(5):
            await woke.wait()
        assert p.ours.recv(10) == b"early"


async def test_one_waiter_per_socket() -> None:
    async with polled_pair() as p:
        p.nursery.start_soon(p.poller.wait_readable, p.ours.fileno())
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await p.poller.wait_readable(p.ours.fileno())


async def test_an_unregistered_socket_no_longer_wakes_anyone() -> None:
    async with polled_pair() as p:
        p.poller.unregister(p.ours.fileno())
        p.poller.unregister(p.ours.fileno())  # twice is harmless
        with trio.move_on_after(0.2) as scope:
            p.nursery.start_soon(_send_when_blocked, p.theirs, b"x")
            await p.poller.wait_readable(p.ours.fileno())
        assert scope.cancelled_caught


async def test_trio_waits_fallback_has_the_same_contract() -> None:
    ours, theirs = _pair()
    with ours, theirs:
        TRIO_WAITS.register(ours.fileno())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_send_when_blocked, theirs, b"x")
            with trio.fail_after(5):
                await TRIO_WAITS.wait_readable(ours.fileno())
            assert ours.recv(10) == b"x"

            async def waker() -> None:
                await trio.testing.wait_all_tasks_blocked()
                TRIO_WAITS.wake(ours.fileno())

            nursery.start_soon(waker)
            with trio.fail_after(5), pytest.raises(trio.ClosedResourceError):
                await TRIO_WAITS.wait_readable(ours.fileno())
        TRIO_WAITS.unregister(ours.fileno())


def test_make_poller_on_linux() -> None:
    poller = make_poller()
    assert isinstance(poller, ReadPoller)
    poller.close()


# -- sessions under serve() -----------------------------------------------------------


async def test_idle_sessions_park_on_the_poller_not_on_trio(start_server: StartServer) -> None:
    """Many idle logged-in clients: trio itself sees one reader, the poller's task.

    Each still answers afterwards, and QUIT commits (RFC 1939 section 6).
    """
    users = {f"u{i}": "pw" for i in range(20)}
    store = MemoryStore({user: [b"Subject: x\n\nbody\n"] for user in users})
    factory = functools.partial(MailboxHandler, store, MemoryAuthenticator(users))
    running = await start_server(factory)
    await trio.testing.wait_all_tasks_blocked()
    readers_before = trio.lowlevel.current_statistics().io_statistics.tasks_waiting_read
    clients = [Client(await trio.open_tcp_stream("127.0.0.1", running.port)) for _ in users]
    try:
        for client, user in zip(clients, users, strict=True):
            await client.reply()
            await client.login(user, "pw")
            assert (await client.command("DELE 1")).startswith("+OK")
        await trio.testing.wait_all_tasks_blocked()
        # Nothing per session (the clients' own reads are not waiting either: they
        # have their replies).
        io = trio.lowlevel.current_statistics().io_statistics
        assert io.tasks_waiting_read == readers_before
        for client in clients:
            assert (await client.command("NOOP")).startswith("+OK")
            assert (await client.command("QUIT")).startswith("+OK")
    finally:
        for client in clients:
            await client.aclose()
    for user in users:
        assert await maildrop_uids(store, user) == []


async def test_a_handler_that_closed_the_socket_itself_ends_only_its_session(
    start_server: StartServer,
) -> None:
    """The session's own close then finds nothing to close; the server goes on."""
    store = MemoryStore({"alice": [b"Subject: x\n\nbody\n"]})

    class Closer(MailboxHandler):
        extra_commands = {"XCLOSE": ["trans"]}

        async def pop3_XCLOSE(self, arg: str | None) -> None:
            await self.send_ok("closing")
            await self._s.flush()
            await self._s.stream.aclose()

    factory = functools.partial(Closer, store, MemoryAuthenticator({"alice": "pw"}))
    running = await start_server(factory)
    client = Client(await trio.open_tcp_stream("127.0.0.1", running.port))
    try:
        await client.reply()
        await client.login("alice", "pw")
        assert (await client.command("XCLOSE")).startswith("+OK")
        with trio.fail_after(5):
            assert await client.read_to_eof() == b""
    finally:
        await client.aclose()
    # The server still serves, and the maildrop was not changed.
    client = Client(await trio.open_tcp_stream("127.0.0.1", running.port))
    try:
        await client.reply()
        await client.login("alice", "pw")
        assert (await client.command("STAT")).startswith("+OK 1 ")
        assert (await client.command("QUIT")).startswith("+OK")
    finally:
        await client.aclose()

"""The server's IdleWatch: idle timeouts of direct-socket sessions without a scope each.

Unit tests run under the autojump MockClock; the session tests use real sockets (the
direct path exists only for them) and short real timeouts.

RFC 1939 §3: on autologout the session closes without UPDATE and without a response
(TIME-04); the timer restarts with every command (TIME-03).
"""

from __future__ import annotations

import functools

import pytest
import trio
import trio.testing
from pop3_support import Client, Recorder, SkeletonHandler, StartServer, maildrop_uids

from trio_pop3 import POP3Server
from trio_pop3._idle import IdleWatch
from trio_pop3.mailbox import MailboxHandler, MemoryAuthenticator, MemoryStore

#: Short real-time idle timeout for the socket tests (the CLI warns below RFC 1939's
#: 10 minutes; the library takes any value).
SHORT = 0.3


class Waiter:
    def __init__(self, log: list[tuple[str, float]], name: str) -> None:
        self.log = log
        self.name = name

    def expire(self) -> None:
        self.log.append((self.name, trio.current_time()))


async def test_waits_expire_at_their_deadlines_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    async with trio.open_nursery() as nursery:
        watch = IdleWatch(nursery)
        start = trio.current_time()
        for name, delay in (("c", 5), ("a", 1), ("b", 3)):
            watch.register(Waiter(log, name), start + delay)
    assert [(name, round(when - start, 6)) for name, when in log] == [
        ("a", 1),
        ("b", 3),
        ("c", 5),
    ]
    assert len(watch) == 0


async def test_unregistered_waits_never_expire(autojump_clock: trio.testing.MockClock) -> None:
    log: list[tuple[str, float]] = []
    async with trio.open_nursery() as nursery:
        watch = IdleWatch(nursery)
        start = trio.current_time()
        keep = watch.register(Waiter(log, "kept"), start + 2)
        gone = watch.register(Waiter(log, "gone"), start + 1)
        watch.unregister(gone)
        watch.unregister(gone)  # twice is harmless
        await trio.sleep(3)
        watch.unregister(keep)  # after it expired: harmless
    assert [name for name, _ in log] == ["kept"]


async def test_an_earlier_deadline_wakes_the_timer_sooner(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    async with trio.open_nursery() as nursery:
        watch = IdleWatch(nursery)
        start = trio.current_time()
        late = watch.register(Waiter(log, "late"), start + 100)
        await trio.sleep(1)  # the timer task now sleeps until +100
        watch.register(Waiter(log, "soon"), start + 2)
        await trio.sleep(5)
        assert [name for name, _ in log] == ["soon"]
        assert log[0][1] == pytest.approx(start + 2)
        watch.unregister(late)


async def test_timer_task_ends_when_nothing_is_registered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """It never holds a server's nursery open after the last session."""
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        watch = IdleWatch(nursery)
        wait_id = watch.register(Waiter([], "x"), start + 1000)
        await trio.sleep(1)
        watch.unregister(wait_id)
    assert trio.current_time() - start == pytest.approx(1)
    # And it starts again for the next wait.
    log: list[tuple[str, float]] = []
    async with trio.open_nursery() as nursery:
        watch2 = IdleWatch(nursery)
        watch2.register(Waiter(log, "y"), trio.current_time() + 1)
        await trio.sleep(0.5)
        watch2.register(Waiter(log, "z"), trio.current_time() + 1)
    assert [name for name, _ in log] == ["y", "z"]


async def test_stale_entries_are_pruned() -> None:
    """Waits that end early (the usual case) do not pile up for a whole timeout."""
    async with trio.open_nursery() as nursery:
        watch = IdleWatch(nursery)
        far = trio.current_time() + 600
        live = [watch.register(Waiter([], "live"), far) for _ in range(10)]
        for _ in range(10_000):
            watch.unregister(watch.register(Waiter([], "brief"), far))
        assert len(watch._heap) <= 3 * len(live) + 64
        for wait_id in live:
            watch.unregister(wait_id)


# -- sessions on real sockets ---------------------------------------------------------


async def test_idle_direct_session_times_out_silently_without_update(
    start_server: StartServer,
) -> None:
    # RFC 1939 §3 (TIME-04): no reply, no UPDATE.
    store = MemoryStore({"alice": [b"Subject: a\n\nx\n"]})
    factory = functools.partial(MailboxHandler, store, MemoryAuthenticator({"alice": "secret"}))
    running = await start_server(factory, timeout=SHORT)
    client = Client(await trio.open_tcp_stream("127.0.0.1", running.port))
    try:
        await client.reply()
        await client.login()
        assert (await client.command("DELE 1")).startswith("+OK")
        start = trio.current_time()
        with trio.fail_after(5):
            assert await client.read_to_eof() == b""
        assert trio.current_time() - start >= SHORT
    finally:
        await client.aclose()
    # Not locked any more, and nothing removed.
    assert len(await maildrop_uids(store)) == 1


@pytest.mark.rfc("1939", "3")
async def test_every_command_restarts_the_direct_timer(start_server: StartServer) -> None:
    # TIME-03: commands spaced under the timeout keep the session alive.
    running = await start_server(SkeletonHandler, timeout=SHORT * 2)
    client = Client(await trio.open_tcp_stream("127.0.0.1", running.port))
    try:
        await client.reply()
        for _ in range(4):
            await trio.sleep(SHORT)
            assert (await client.command("NOOP")).startswith("-ERR")  # AUTH: no NOOP
        with trio.fail_after(5):
            assert await client.read_to_eof() == b""
    finally:
        await client.aclose()


async def test_trickled_line_does_not_dodge_the_direct_timer(start_server: StartServer) -> None:
    """The deadline is per command line: a byte now and then does not reset it."""
    running = await start_server(SkeletonHandler, timeout=SHORT * 3)
    client = Client(await trio.open_tcp_stream("127.0.0.1", running.port))
    try:
        await client.reply()
        start = trio.current_time()
        with trio.fail_after(5):
            for byte in b"NOOPNOOPNOOP":
                try:
                    await client.send(bytes([byte]))
                except trio.BrokenResourceError:
                    break
                await trio.sleep(SHORT / 2)
            assert await client.read_to_eof() == b""
        assert trio.current_time() - start < SHORT * 6
    finally:
        await client.aclose()


async def test_shutdown_tells_an_idle_direct_session_at_once(
    nursery: trio.Nursery,
) -> None:
    recorder = Recorder()
    server = POP3Server(recorder, host="127.0.0.1", port=0)
    listeners = await nursery.start(server.serve)
    client = Client(await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1]))
    try:
        await client.reply()
        await client.login()
        server.shutdown(grace=30)
        with trio.fail_after(5):
            assert await client.read_to_eof() == b"-ERR [SYS/TEMP] Server shutting down.\r\n"
    finally:
        await client.aclose()
    handler = recorder.last
    assert isinstance(handler, SkeletonHandler)
    assert handler.disconnects == 1
    assert handler.commits == 0


async def test_handle_stream_alone_still_times_out(nursery: trio.Nursery) -> None:
    """Without serve() there is no IdleWatch: each wait gets a scope, same behaviour."""
    server = POP3Server(SkeletonHandler, timeout=SHORT)
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    ended = trio.Event()

    async def serve_one() -> None:
        async with listener:
            stream = await listener.accept()
        await server.handle_stream(stream)
        ended.set()

    nursery.start_soon(serve_one)
    client = Client(await trio.open_tcp_stream("127.0.0.1", listener.socket.getsockname()[1]))
    try:
        await client.reply()
        with trio.fail_after(5):
            assert await client.read_to_eof() == b""
            await ended.wait()
    finally:
        await client.aclose()

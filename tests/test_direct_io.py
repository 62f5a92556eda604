"""The session's direct socket path and the server's accept loop, over real sockets.

A plain TCP connection is served by non-blocking writes and reads on the socket
itself (``_session._write_some`` / ``_read_now``), waiting with trio's I/O waits only
when the socket is not ready.  These tests check what that path must keep: one write
per reply, few writes for a pipelined burst, the send timeout, fairness between
sessions, and that nothing is lost when a client vanishes.
"""

from __future__ import annotations

import errno
import functools
import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from pop3_support import (
    Client,
    Connect,
    Recorder,
    SkeletonHandler,
    StartServer,
    maildrop_uids,
    pipelined_burst,
)

from trio_pop3 import ClientDisconnected, POP3Server, State, _session
from trio_pop3._idle import IdleWatch
from trio_pop3._server import SESSION_TASK_NAME
from trio_pop3.mailbox import MailboxHandler, MemoryAuthenticator, MemoryStore


def watched_mailbox(store: MemoryStore) -> tuple[Callable[[], MailboxHandler], trio.Event]:
    """A MailboxHandler factory for alice/secret, and an event set when a session ends."""
    ended = trio.Event()

    class Handler(MailboxHandler):
        async def disconnect(self) -> None:
            try:
                await super().disconnect()
            finally:
                ended.set()

    return functools.partial(Handler, store, MemoryAuthenticator({"alice": "secret"})), ended


class WriteCounter:
    """Count the session's direct writes (one per send that did not block)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self._real = _session._write_some
        monkeypatch.setattr(_session, "_write_some", self)

    def __call__(self, fd: int, data: Any) -> int:
        self.calls += 1
        return self._real(fd, data)


async def test_plain_tcp_sessions_use_the_direct_path(
    start_server: StartServer, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = WriteCounter(monkeypatch)
    recorder = Recorder()
    running = await start_server(recorder)
    client = await connect(running.port)
    assert writes.calls == 1  # the greeting
    await client.login()
    # One write per reply, never more (a reply split into pieces would meet Nagle's
    # algorithm and delayed ACKs) and never fewer (each reply must leave at once).
    for _ in range(50):
        assert await client.command("NOOP") == "+OK"
    assert writes.calls == 1 + 2 + 50
    first, lines = await client.multi("LIST")
    assert first.startswith("+OK")
    assert len(lines) == 3
    assert writes.calls == 1 + 2 + 50 + 1


@pytest.mark.rfc("2449", "6.6")
async def test_pipelined_burst_in_few_direct_writes(
    start_server: StartServer, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RFC 2449 §6.6 (CAP-PIPE): replies in order, batched into large writes.
    writes = WriteCounter(monkeypatch)
    running = await start_server(SkeletonHandler)
    client = await connect(running.port)
    await client.login()
    before = writes.calls
    await pipelined_burst(client, 10_000)
    assert writes.calls - before < 100, writes.calls - before


async def test_send_timeout_on_a_real_socket_drops_a_client_that_stops_reading(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply bigger than the socket buffers waits for the client, up to send_timeout."""
    big = b"x" * 1000 + b"\n"
    message = big * 16_000  # 16 MB: far more than loopback socket buffers hold
    store = MemoryStore({"alice": [message, b"Subject: small\n\nx\n"]})
    factory, ended = watched_mailbox(store)
    running = await start_server(factory, send_timeout=0.5)
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", running.port))
    client = Client(trio.SocketStream(sock))
    assert (await client.reply()).startswith("+OK")
    await client.login()
    await client.send_line("DELE 2")
    assert (await client.reply()).startswith("+OK")
    await client.send_line("RETR 1")
    # Stop reading: the server's write blocks, then times out and drops us.
    try:
        with trio.fail_after(10):
            await ended.wait()
    finally:
        await client.aclose()
    # Dropped without UPDATE: the message is still there.
    assert len(await maildrop_uids(store)) == 2


async def test_send_timeout_spares_a_slow_client_that_keeps_reading(
    nursery: trio.Nursery,
) -> None:
    """send_timeout is for a write that makes no progress, not for a slow one.

    A client reading 8 KiB every 20 ms takes about 0.8 s for this RETR, longer than
    the 0.3 s send_timeout, but never stalls for that long: it gets all of it.
    (Before, the deadline covered a whole 256 KiB flush: an audit's client reading
    2 KB/s was dropped after 60 s with the message half sent.)  A Unix socket pair
    with small buffers, so the writes really wait; the direct-write path.
    """
    message = b"Subject: big\r\n\r\n" + b"y" * 78 + b"\r\n" * 1
    message += (b"z" * 78 + b"\r\n") * 4000  # 320 KB: more than one flush
    store = MemoryStore({"alice": [message]})
    factory, ended = watched_mailbox(store)
    server = POP3Server(factory, send_timeout=0.3)
    server_end, client_end = socket.socketpair()
    server_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client_end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(server_end))
    assert _session._direct_fd(stream) is not None
    nursery.start_soon(server.handle_stream, stream)
    client_sock = trio.socket.from_stdlib_socket(client_end)
    client = Client(trio.SocketStream(client_sock))
    try:
        assert (await client.reply()).startswith("+OK")
        await client.login()
        await client.send_line("RETR 1")
        received = bytearray()
        with trio.fail_after(30):
            while not received.endswith(b"\r\n.\r\n"):
                await trio.sleep(0.02)
                chunk = await client_sock.recv(8192)
                assert chunk, f"dropped after {len(received)} octets"
                received += chunk
        assert received.startswith(b"+OK %d octets\r\n" % len(message))
        assert len(received) > len(message)
        await client.send_line("QUIT")
        assert (await client.reply()).startswith("+OK")
        with trio.fail_after(10):
            await ended.wait()
    finally:
        await client.aclose()


def flood_in_threads(port: int, stop: threading.Event) -> list[threading.Thread]:
    """Log in and pipeline NOOPs nonstop from threads (outside the event loop)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"USER alice\r\nPASS secret\r\n")

    def send() -> None:
        chunk = b"NOOP\r\n" * 5000
        try:
            while not stop.is_set():
                sock.sendall(chunk)
        except OSError:
            pass

    def receive() -> None:
        try:
            while sock.recv(1 << 20):
                pass
        except OSError:
            pass

    def stop_and_close() -> None:
        stop.wait()
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    threads = [threading.Thread(target=f, daemon=True) for f in (send, receive, stop_and_close)]
    for thread in threads:
        thread.start()
    return threads


async def test_a_client_that_never_stops_sending_cannot_starve_another(
    start_server: StartServer, connect: Connect
) -> None:
    """Data that is already waiting still passes a checkpoint (fairness)."""
    running = await start_server(SkeletonHandler)
    stop = threading.Event()
    # If the flood did starve the event loop, fail_after() could never fire: this
    # thread ends the flood well after that deadline, so the test fails, not hangs.
    watchdog = threading.Timer(15, stop.set)
    watchdog.start()
    threads: list[threading.Thread] = []
    try:
        with trio.fail_after(5):
            threads = flood_in_threads(running.port, stop)
            await trio.sleep(0.2)  # the flood is under way
            other = await connect(running.port)
            await other.login()
            assert (await other.command("STAT")).startswith("+OK 3 ")
            assert await other.command("QUIT") == "+OK goodbye"
    finally:
        watchdog.cancel()
        stop.set()
        for thread in threads:
            await trio.to_thread.run_sync(thread.join)


async def test_client_vanishing_mid_session_rolls_back(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MemoryStore({"alice": [b"Subject: a\n\nx\n", b"Subject: b\n\ny\n"]})
    factory, ended = watched_mailbox(store)
    running = await start_server(factory)
    stream = await trio.open_tcp_stream("127.0.0.1", running.port)
    client = Client(stream)
    await client.reply()
    await client.login()
    assert (await client.command("DELE 1")).startswith("+OK")
    # Pipelined commands, then a reset: the server must not commit anything.
    await client.send(b"DELE 2\r\nRETR 1\r\nLIST\r\n")
    stream.socket.setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
    )
    await stream.aclose()  # RST, not FIN
    with trio.fail_after(5):
        await ended.wait()
    assert len(await maildrop_uids(store)) == 2


# -- the accept loop ---------------------------------------------------------------------


class FlakyListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose first accepts fail with the given errors."""

    def __init__(self, inner: trio.SocketListener, errors: list[OSError]) -> None:
        self.inner = inner
        self.errors = errors

    async def accept(self) -> trio.abc.Stream:
        if self.errors:
            await trio.lowlevel.checkpoint()
            raise self.errors.pop(0)
        return await self.inner.accept()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_accept_capacity_errors_are_logged_and_retried(
    nursery: trio.Nursery, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    (inner,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = inner.socket.getsockname()[1]
    flaky = FlakyListener(inner, [OSError(errno.EMFILE, "Too many open files")])
    server = POP3Server(SkeletonHandler)
    with caplog.at_level(logging.ERROR, logger="trio_pop3"):
        await nursery.start(server.serve_listeners, [flaky])
        client = await connect(port)
    await client.login()
    assert await client.command("QUIT") == "+OK goodbye"
    assert any("accept() failed" in r.getMessage() for r in caplog.records)


async def test_repeated_accept_capacity_errors_are_logged_once_per_interval(
    nursery: trio.Nursery, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    # At the descriptor limit accept() fails every ACCEPT_RETRY_DELAY: one line per
    # ACCEPT_ERROR_LOG_INTERVAL, not ten a second, and serving resumes after.
    (inner,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = inner.socket.getsockname()[1]
    errors = [OSError(errno.EMFILE, "Too many open files") for _ in range(8)]
    server = POP3Server(SkeletonHandler)
    with caplog.at_level(logging.ERROR, logger="trio_pop3"):
        await nursery.start(server.serve_listeners, [FlakyListener(inner, errors)])
        client = await connect(port)
        await client.login()
    assert await client.command("QUIT") == "+OK goodbye"
    logged = [r.getMessage() for r in caplog.records if "accept() failed" in r.getMessage()]
    assert len(logged) == 1, logged


async def test_other_accept_errors_end_serving() -> None:
    (inner,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    flaky = FlakyListener(inner, [OSError(errno.EINVAL, "Invalid argument")])
    server = POP3Server(SkeletonHandler)
    with pytest.RaisesGroup(
        pytest.RaisesExc(OSError, check=lambda e: e.errno == errno.EINVAL), flatten_subgroups=True
    ):
        with trio.fail_after(5):
            await server.serve_listeners([flaky])


# -- a session told to drain never starts a wait -----------------------------------------


@pytest.mark.parametrize("kind", ["socket", "memory"])
async def test_draining_session_does_not_start_a_wait(
    kind: str, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """shutdown() may come while a session is busy (or yielding before its wait).

    drain() can only wake a wait that has started; a session that finds itself
    draining must not start one, or it would sit there until the grace ran out.
    """
    config = POP3Server(SkeletonHandler).config
    if kind == "socket":
        a, b = trio.socket.socketpair()
        stream: trio.abc.Stream = trio.SocketStream(a)
        peer: trio.abc.Stream = trio.SocketStream(b)
    else:
        stream, peer = trio.testing.memory_stream_pair()
    # On a socket, with the server's IdleWatch as under serve().
    session = _session.Session(stream, config, peer=None, watch=IdleWatch(nursery))
    assert (session._fd is not None) == (kind == "socket")
    session.drain()  # not waiting yet: nothing to wake
    start = trio.current_time()
    with trio.fail_after(60):  # the idle timeout is 600 s: this must not wait at all
        assert await session._receive(trio.current_time() + 600, False) is None
    assert trio.current_time() - start < 1
    # The line reader turns that into "shutting down".
    with pytest.raises(_session._ShuttingDown):
        await session.read_line(State.AUTHORIZATION)
    await stream.aclose()
    await peer.aclose()


# -- handle_stream closes its stream on every path -----------------------------------------


async def _closed(client: trio.abc.Stream) -> bytes:
    """Everything the server sent until it closed the connection."""
    data = b""
    with trio.fail_after(5):
        while chunk := await client.receive_some():
            data += chunk
    return data


async def test_handle_stream_closes_when_handler_factory_raises() -> None:
    def factory() -> SkeletonHandler:
        raise RuntimeError("no handler")

    server = POP3Server(factory, catch_errors=False)
    server_end, client_end = trio.testing.memory_stream_pair()
    with pytest.raises(RuntimeError, match="no handler"):
        await server.handle_stream(server_end)
    assert await _closed(client_end) == b""


async def test_handle_stream_closes_when_cancelled_in_the_tls_handshake() -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("localhost").configure_cert(context)
    server = POP3Server(SkeletonHandler, ssl_context=context)
    server_end, client_end = trio.testing.memory_stream_pair()
    with trio.move_on_after(0.2):  # the client never starts the handshake
        await server.handle_stream(server_end, implicit_tls=True)
    assert await _closed(client_end) == b""
    assert server.active_connections == 0


async def test_handle_stream_refusal_closes_after_its_reply() -> None:
    server = POP3Server(SkeletonHandler)
    server.shutdown()
    server_end, client_end = trio.testing.memory_stream_pair()
    await server.handle_stream(server_end)
    assert await _closed(client_end) == b"-ERR [SYS/TEMP] Server shutting down.\r\n"


async def test_a_late_reply_after_the_session_never_reaches_another_connection(
    start_server: StartServer, connect: Connect
) -> None:
    """Descriptor numbers are reused at once: the session must forget its socket's.

    A handler task that outlives its session (a bug in user code, but a possible one)
    and sends must get ClientDisconnected, not write into whichever connection now
    has that descriptor number.
    """
    recorder = Recorder()
    running = await start_server(recorder)
    first = await connect(running.port)
    assert await first.command("QUIT") == "+OK goodbye"
    assert await first.read_to_eof() == b""  # the server has closed that socket
    old = recorder.handlers[0]
    second = await connect(running.port)  # likely gets the same descriptor number
    with pytest.raises(ClientDisconnected):  # its command was answered long ago
        await old.send_ok("leaked into another connection")
    await old.send_raw("+OK leaked into another connection")  # only queued
    with pytest.raises(ClientDisconnected):
        await old._s.flush()
    reply = await second.command("NOOP")  # the next thing it reads is its own reply
    assert reply.startswith("-ERR")
    assert "leaked" not in reply


async def test_session_tasks_share_one_fixed_name(
    start_server: StartServer, connect: Connect
) -> None:
    """trio would otherwise build a name string per connection (memory per idle one)."""
    names: list[str] = []

    class Handler(SkeletonHandler):
        async def on_connect(self) -> None:
            names.append(trio.lowlevel.current_task().name)

    running = await start_server(Handler)
    for _ in range(2):
        client = await connect(running.port)
        assert await client.command("QUIT") == "+OK goodbye"
    assert names == [SESSION_TASK_NAME, SESSION_TASK_NAME]
    assert names[0] is names[1]


async def test_cancelled_in_the_yield_before_a_wait_tells_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The yield before a wait counts as waiting for a command.

    Cancellation there (the server stopping) is answered like cancellation of the wait
    itself: ``-ERR [SYS/TEMP] Server shutting down.`` (RFC 2449 section 8), not a
    silent close.
    """
    real_checkpoint = trio.lowlevel.checkpoint
    scope = trio.CancelScope()

    async def cancelling_checkpoint() -> None:
        # Only the yield in _receive, and only once: cancel the server right there.
        if sys._getframe(1).f_code.co_name == "_receive" and not scope.cancel_called:
            scope.cancel()
        await real_checkpoint()

    monkeypatch.setattr(trio.lowlevel, "checkpoint", cancelling_checkpoint)
    ours, theirs = trio.socket.socketpair()
    server = POP3Server(SkeletonHandler)
    with scope:
        await server.handle_stream(trio.SocketStream(ours))
    assert scope.cancelled_caught
    received = b""
    with theirs:
        while chunk := await theirs.recv(4096):
            received += chunk
    assert received == (b"+OK POP3 trio_pop3 ready.\r\n-ERR [SYS/TEMP] Server shutting down.\r\n")


async def test_quit_committing_when_the_server_is_cancelled_still_answers() -> None:
    """RFC 1939 §6: a QUIT whose commit is under way finishes it and says +OK.

    The commit runs shielded; on a plain socket the reply queued after it is written
    without a checkpoint, so cancelling serve() meanwhile does not swallow it.
    """
    store = MemoryStore({"alice": [b"Subject: a\n\nx\n", b"Subject: b\n\ny\n"]})
    entered, release = trio.Event(), trio.Event()

    class SlowCommit(MailboxHandler):
        async def commit(self) -> None:
            entered.set()
            await release.wait()
            await super().commit()

    server = POP3Server(
        functools.partial(SlowCommit, store, MemoryAuthenticator({"alice": "secret"})),
        host="127.0.0.1",
        port=0,
    )
    server_scope = trio.CancelScope()

    async def run_server(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        with server_scope:
            await server.serve(task_status=task_status)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(run_server)
        port = listeners[0].socket.getsockname()[1]
        client = Client(await trio.open_tcp_stream("127.0.0.1", port))
        try:
            await client.reply()
            await client.login()
            kept = (await client.command("UIDL 2")).split()[2]
            assert (await client.command("DELE 1")).startswith("+OK")
            await client.send_line("QUIT")
            with trio.fail_after(5):
                await entered.wait()
            server_scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            release.set()
            with trio.fail_after(5):
                assert (await client.reply()).startswith("+OK")
                assert await client.read_to_eof() == b""
        finally:
            await client.aclose()
    assert await maildrop_uids(store) == [kept]

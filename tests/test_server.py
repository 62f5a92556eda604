"""POP3Server over real loopback sockets: stdlib poplib, curl, concurrency, options."""

from __future__ import annotations

import base64
import functools
import inspect
import logging
import os
import poplib
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
from pop3_support import (
    ALICE_MESSAGES,
    FAST_LIMITS,
    MAILBOX_USERS,
    MESSAGES,
    Client,
    Connect,
    Recorder,
    SkeletonHandler,
    StartServer,
    memory_session,
    open_client,
    pipelined_burst,
)

from trio_pop3 import Limits, POP3Server, wire_size
from trio_pop3.mailbox import MailboxHandler, MemoryAuthenticator, MemoryStore

CURL = shutil.which("curl") or "/usr/bin/curl"


def handlers(recorder: Recorder) -> list[SkeletonHandler]:
    out = []
    for handler in recorder.handlers:
        assert isinstance(handler, SkeletonHandler)
        out.append(handler)
    return out


def normalised(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n").rstrip(b"\n").replace(b"\n", b"\r\n") + b"\r\n"


# -- serve() --------------------------------------------------------------------------------


async def test_nursery_start_returns_listeners(
    start_server: StartServer, connect: Connect
) -> None:
    running = await start_server(SkeletonHandler)
    assert len(running.listeners) == 1
    listener = running.listeners[0]
    assert isinstance(listener, trio.SocketListener)
    host, port = listener.socket.getsockname()[:2]
    assert host == "127.0.0.1"
    assert port != 0
    client = await connect(port)
    assert await client.command("QUIT") == "+OK goodbye"


def test_serve_signature_fits_trio_run() -> None:
    # trio.run(server.serve) needs an async function whose parameters all have defaults.
    server = POP3Server(SkeletonHandler)
    assert inspect.iscoroutinefunction(server.serve)
    params = inspect.signature(server.serve).parameters
    assert list(params) == ["task_status"]
    assert all(p.default is not inspect.Parameter.empty for p in params.values())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Fatal(Exception):
    pass


def test_trio_run_server_serve() -> None:
    # The documented shape: trio.run(server.serve).  It stops here because a handler
    # raises with catch_errors=False, which propagates out of serve() and trio.run().
    def factory() -> SkeletonHandler:
        handler = SkeletonHandler()
        handler.boom = Fatal("stop the server")
        return handler

    server = POP3Server(factory, host="127.0.0.1", port=free_port(), catch_errors=False)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            trio.run(server.serve)
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    for _ in range(1000):  # wait until the server listens (readiness, not timing)
        try:
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            break
        except ConnectionRefusedError:
            thread.join(0.01)
    else:  # pragma: no cover
        pytest.fail("server never listened")
    with sock, sock.makefile("rwb") as f:
        assert f.readline().startswith(b"+OK")
        f.write(b"CAPA\r\n")
        f.flush()
        assert f.readline().startswith(b"+OK")
        while f.readline() != b".\r\n":
            pass
        f.write(b"XBOOM\r\n")
        f.flush()
        assert f.read() == b""  # the connection ends without a reply
    thread.join(10)
    assert not thread.is_alive()
    assert len(outcome) == 1
    error = outcome[0]
    assert isinstance(error, BaseExceptionGroup)
    assert error.subgroup(Fatal) is not None


# -- stdlib poplib ---------------------------------------------------------------------------


async def test_poplib_skeleton(start_server: StartServer) -> None:
    running = await start_server(SkeletonHandler)

    def session() -> None:
        pop = poplib.POP3("127.0.0.1", running.port, timeout=10)
        try:
            assert pop.getwelcome() == b"+OK POP3 trio_pop3 ready."
            assert pop.user("alice").startswith(b"+OK")
            assert pop.pass_("secret") == b"+OK logged in"
            assert pop.stat() == (3, sum(wire_size(m) for m in MESSAGES))
            _, listing, _ = pop.list()
            assert listing == [b"%d %d" % (n, wire_size(m)) for n, m in enumerate(MESSAGES, 1)]
            for number, message in enumerate(MESSAGES, 1):
                _, lines, octets = pop.retr(number)
                assert b"".join(line + b"\r\n" for line in lines) == normalised(message)
                assert octets == wire_size(message)
            with pytest.raises(poplib.error_proto, match="no such message"):
                pop.retr(9)
            assert pop.noop() == b"+OK"
            assert pop.quit() == b"+OK goodbye"
        finally:
            pop.close()

    await trio.to_thread.run_sync(session)


async def test_poplib_mailbox(mailbox_port: int, store: MemoryStore) -> None:
    def session() -> None:
        pop = poplib.POP3("127.0.0.1", mailbox_port, timeout=10)
        try:
            assert "<" not in pop.getwelcome().decode()  # GREET-05: APOP off
            caps = pop.capa()
            assert {"USER", "TOP", "UIDL", "PIPELINING", "RESP-CODES"} <= set(caps)
            pop.user("alice")
            with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
                pop.pass_("wrong")
            pop.user("alice")
            pop.pass_("secret")
            sizes = [wire_size(m) for m in ALICE_MESSAGES]
            assert pop.stat() == (3, sum(sizes))
            _, listing, _ = pop.list()
            assert listing == [b"%d %d" % (n, s) for n, s in enumerate(sizes, 1)]
            _, uidls, _ = pop.uidl()
            assert [u.split()[0] for u in uidls] == [b"1", b"2", b"3"]
            for number, message in enumerate(ALICE_MESSAGES, 1):
                _, lines, octets = pop.retr(number)
                assert b"".join(line + b"\r\n" for line in lines) == normalised(message)
                assert octets == sizes[number - 1]
            _, top, _ = pop.top(2, 1)
            assert top == [b"From: b@example.org", b"Subject: LF only", b"", b"body a"]
            assert pop.dele(1).startswith(b"+OK")
            assert pop.stat() == (2, sum(sizes[1:]))
            assert pop.rset().startswith(b"+OK")
            pop.dele(3)
            pop.quit()
        finally:
            pop.close()

    await trio.to_thread.run_sync(session)
    assert store.messages("alice") == list(ALICE_MESSAGES[:2])


async def test_poplib_apop(start_server: StartServer, store: MemoryStore) -> None:
    # RFC 1939 §7 (GREET-03, APOP-01): poplib computes the digest from our timestamp.
    running = await start_server(
        functools.partial(
            MailboxHandler, store, MemoryAuthenticator({"alice": "secret"}), apop=True
        )
    )

    def session() -> None:
        pop = poplib.POP3("127.0.0.1", running.port, timeout=10)
        try:
            with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
                pop.apop("alice", "wrong")
            assert pop.apop("alice", "secret").startswith(b"+OK")
            assert pop.stat()[0] == 3
            pop.quit()
        finally:
            pop.close()

    await trio.to_thread.run_sync(session)


# -- curl -------------------------------------------------------------------------------------


async def curl(port: int, *args: str, path: str = "/") -> bytes:
    result = await trio.run_process(
        [
            CURL,
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "20",
            "-u",
            "alice:secret",
            *args,
            f"pop3://127.0.0.1:{port}{path}",
        ],
        capture_stdout=True,
        capture_stderr=True,
    )
    return result.stdout


@pytest.mark.interop
async def test_curl_list_uidl_retr_top(mailbox_port: int, store: MemoryStore) -> None:
    sizes = [wire_size(m) for m in ALICE_MESSAGES]
    listing = await curl(mailbox_port)
    assert listing == b"".join(b"%d %d\r\n" % (n, s) for n, s in enumerate(sizes, 1))
    uidl = await curl(mailbox_port, "-X", "UIDL")
    uids = [uid for uid, _ in store.maildrops["alice"]]
    assert uidl == b"".join(b"%d %s\r\n" % (n, u.encode()) for n, u in enumerate(uids, 1))
    for number, message in enumerate(ALICE_MESSAGES, 1):
        body = await curl(mailbox_port, path=f"/{number}")
        assert body == normalised(message)  # curl un-stuffs what we stuffed (DOT-02)
    top = await curl(mailbox_port, "-X", "TOP 1 0")
    assert top == b"From: a@example.org\r\nSubject: first\r\n\r\n"
    # Nothing was deleted by those sessions.
    assert store.messages("alice") == list(ALICE_MESSAGES)
    assert not store.is_locked("alice")


@pytest.mark.interop
async def test_curl_dele_then_quit_removes(mailbox_port: int, store: MemoryStore) -> None:
    # curl ends every session with QUIT, so DELE + QUIT removes the message (STATE-07).
    await curl(mailbox_port, "-X", "DELE 1", "-I")
    assert store.messages("alice") == list(ALICE_MESSAGES[1:])
    # The numbering starts again from 1 in the next session (TRANS-01).
    body = await curl(mailbox_port, path="/1")
    assert body == normalised(ALICE_MESSAGES[1])


@pytest.mark.interop
async def test_curl_skeleton(start_server: StartServer) -> None:
    running = await start_server(SkeletonHandler)
    body = await curl(running.port, path="/2")
    assert body == normalised(MESSAGES[1])


# -- concurrency -------------------------------------------------------------------------


async def test_many_concurrent_clients(start_server: StartServer, connect: Connect) -> None:
    recorder = Recorder()
    running = await start_server(recorder)
    done = 0

    async def one(i: int) -> None:
        nonlocal done
        client = await connect(running.port)
        await client.login()
        assert await client.command(f"XECHO {i}") == f"+OK {i}"
        first, lines = await client.multi("RETR 2")
        assert first.endswith(" octets")
        assert len(lines) == 6
        assert await client.command("QUIT") == "+OK goodbye"
        assert await client.read_to_eof() == b""
        await client.aclose()
        done += 1

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i in range(60):
                nursery.start_soon(one, i)
    assert done == 60
    while running.server.active_connections:
        await trio.lowlevel.checkpoint()  # let the server tasks finish their cleanup
    assert len(recorder.handlers) == 60
    assert all(h.disconnects == 1 and h.commits == 1 for h in handlers(recorder))


async def test_silent_client_delays_nobody(start_server: StartServer, connect: Connect) -> None:
    running = await start_server(SkeletonHandler)
    silent = await trio.open_tcp_stream("127.0.0.1", running.port)  # never reads or writes
    half = await trio.open_tcp_stream("127.0.0.1", running.port)
    await half.send_all(b"USER alice\r\nPASS sec")  # stops mid-line
    with trio.fail_after(5):
        client = await connect(running.port)
        await client.login()
        assert await client.command("STAT") == f"+OK 3 {sum(wire_size(m) for m in MESSAGES)}"
        assert await client.command("QUIT") == "+OK goodbye"
    assert running.server.active_connections >= 2
    await silent.aclose()
    await half.aclose()


async def test_max_connections(start_server: StartServer, connect: Connect) -> None:
    running = await start_server(SkeletonHandler, limits=Limits(max_connections=1))
    first = await connect(running.port)
    second = Client(await trio.open_tcp_stream("127.0.0.1", running.port))
    refusal = b"-ERR [SYS/TEMP] Too many connections, try again later.\r\n"
    assert await second.read_to_eof() == refusal
    await second.aclose()
    assert await first.command("QUIT") == "+OK goodbye"


async def test_cancel_serve_runs_every_disconnect() -> None:
    # STATE-06 / LOCK-03: cancelling serve() ends each session through disconnect().
    recorder = Recorder()
    clients: list[Client] = []
    server = POP3Server(recorder, host="127.0.0.1", port=0, limits=FAST_LIMITS)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            port = listeners[0].socket.getsockname()[1]
            for i in range(6):
                client = await open_client(port)
                if i % 2:
                    await client.login()
                clients.append(client)
            await clients[0].send_line("XSLEEP")  # mid-command
            await handlers(recorder)[0].entered.wait()
            assert server.active_connections == 6
            nursery.cancel_scope.cancel()
    assert len(recorder.handlers) == 6
    for handler in handlers(recorder):
        assert handler.disconnects == 1
        assert handler.commits == 0
        assert handler.disconnect_state == "DISCONNECT"
    assert server.active_connections == 0
    for i, client in enumerate(clients):
        try:
            data = await client.read_to_eof()
        except trio.BrokenResourceError:
            data = None
        if i == 0:  # cancelled mid-command: no reply at all
            assert data in (b"", None)
        else:  # cancelled while idle: told why (nothing like "+OK" or a commit)
            assert data in (b"-ERR [SYS/TEMP] Server shutting down.\r\n", None)
        await client.aclose()


# -- errors in handlers ------------------------------------------------------------------


async def test_catch_errors_default_hides_text(
    start_server: StartServer, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start_server(SkeletonHandler)
    client = await connect(running.port)
    with caplog.at_level(logging.ERROR, logger="trio_pop3"):
        reply = await client.command("XBOOM")
    assert reply == "-ERR [SYS/TEMP] Internal error."
    assert "secret detail" not in reply
    # The session goes on.
    await client.login()
    assert await client.command("XBOOM") == "-ERR [SYS/TEMP] Internal error."
    assert await client.command("NOOP") == "+OK"
    # The error is logged with its traceback, for the operator.
    assert "secret detail 42" in caplog.text


async def test_send_errors_to_client(start_server: StartServer, connect: Connect) -> None:
    running = await start_server(SkeletonHandler, send_errors_to_client=True)
    client = await connect(running.port)
    assert await client.command("XBOOM") == "-ERR [SYS/TEMP] RuntimeError: secret detail 42"
    assert await client.command("XHELLO") == "+OK hello in AUTHORIZATION"


async def test_catch_errors_false_propagates() -> None:
    recorder = Recorder()
    server = POP3Server(recorder, host="127.0.0.1", port=0, catch_errors=False, limits=FAST_LIMITS)
    client: Client | None = None
    with (
        trio.fail_after(10),
        pytest.RaisesGroup(
            pytest.RaisesExc(RuntimeError, match="secret detail 42"), flatten_subgroups=True
        ),
    ):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            client = await open_client(listeners[0].socket.getsockname()[1])
            await client.login()
            await client.send_line("XBOOM")
            await trio.sleep_forever()
    assert client is not None
    assert await client.read_to_eof() == b""  # the connection ended without a reply
    await client.aclose()
    assert handlers(recorder)[0].disconnects == 1


async def test_catch_errors_false_over_memory() -> None:
    recorder = Recorder()
    with pytest.RaisesGroup(RuntimeError, flatten_subgroups=True):
        async with memory_session(recorder, catch_errors=False) as s:
            await s.client.send_line("XBOOM")
            await s.done.wait()
    assert handlers(recorder)[0].disconnects == 1


# -- debug transcript ------------------------------------------------------------------------


async def test_debug_masks_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_pop3")
    async with memory_session(SkeletonHandler, debug=True) as s:
        await s.client.login("dave", "hunter2-xyzzy")
        assert await s.client.command("XECHO visible") == "+OK visible"
        assert (await s.client.command("pass hunter2-xyzzy")).startswith("-ERR")
    assert "USER dave" in caplog.text
    assert "PASS ***" in caplog.text
    assert "XECHO visible" in caplog.text
    assert "hunter2" not in caplog.text


async def test_no_transcript_without_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_pop3")
    async with memory_session(SkeletonHandler) as s:
        assert (await s.client.command("XHELLO")).startswith("+OK")
    assert "XHELLO" not in caplog.text


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("PASS\thunter2-xyzzy", "+OK logged in"),
        (" PASS hunter2-xyzzy", "+OK logged in"),
        # WIRE-11: the password is " hunter2-xyzzy" here, so wrong, but still masked.
        ("pass  hunter2-xyzzy", "-ERR [AUTH] invalid username or password"),
    ],
)
async def test_debug_masks_password_whatever_the_separator(
    line: str, reply: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_pop3")
    # Regression: log_received used to split at the first b" " only, so a TAB or a
    # leading space left the password in the log.
    async with memory_session(SkeletonHandler, debug=True) as s:
        assert await s.client.command("USER dave") == "+OK username accepted, send password"
        assert await s.client.command(line) == reply
    assert "hunter2" not in caplog.text
    assert "***" in caplog.text


async def test_debug_shows_the_sasl_mechanism_not_the_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The mechanism tells which one a client chose; the initial response and the
    # continuation lines carry the password.
    caplog.set_level(logging.DEBUG, logger="trio_pop3")
    plain = base64.b64encode(b"\0alice\0secret").decode()
    login_user, login_password = (base64.b64encode(t).decode() for t in (b"alice", b"secret"))
    factory = functools.partial(
        MailboxHandler, MemoryStore({"alice": []}), MemoryAuthenticator(MAILBOX_USERS)
    )
    for lines in ([f"AUTH PLAIN {plain}"], ["AUTH login", login_user, login_password]):
        async with memory_session(factory, debug=True) as s:
            replies = [await s.client.command(line) for line in lines]
            assert replies[-1].startswith("+OK"), replies
    assert "C: b'AUTH PLAIN ***'" in caplog.text
    assert "C: b'AUTH login'" in caplog.text
    for secret in (plain, login_user, login_password):
        assert secret not in caplog.text


async def test_debug_transcript_includes_replies(caplog: pytest.LogCaptureFixture) -> None:
    # debug=True logs a wire transcript: the server's replies too (they were missing).
    caplog.set_level(logging.DEBUG, logger="trio_pop3")
    async with memory_session(SkeletonHandler, debug=True) as s:
        assert await s.client.command("XHELLO") == "+OK hello in AUTHORIZATION"
    assert "hello in AUTHORIZATION" in caplog.text


# -- a pipelined burst over a socket -------------------------------------------------------


class CountingStream(trio.abc.Stream):
    """Forwards to a stream and counts send_all calls."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sends = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sends += 1
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


class CountingListener(trio.abc.Listener[trio.abc.Stream]):
    def __init__(self, inner: trio.SocketListener) -> None:
        self.inner = inner
        self.streams: list[CountingStream] = []

    async def accept(self) -> trio.abc.Stream:
        stream = CountingStream(await self.inner.accept())
        self.streams.append(stream)
        return stream

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.rfc("2449", "6.6")
async def test_pipelined_burst_few_sends(nursery: trio.Nursery, connect: Connect) -> None:
    # RFC 2449 §6.6 (CAP-PIPE): 10,000 pipelined commands, answered in order, in a few
    # large writes rather than one per reply.
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    counting = CountingListener(listeners[0])
    server = POP3Server(SkeletonHandler)
    await nursery.start(server.serve_listeners, [counting])
    client = await connect(listeners[0].socket.getsockname()[1])
    await client.login()
    await pipelined_burst(client, 10_000)
    (stream,) = counting.streams
    # greeting + USER + PASS + the burst: the burst must not cost one send per reply.
    assert stream.sends < 100, stream.sends
    # The contrast: commands sent one at a time are answered one write each (never
    # more: a reply is never split into small writes that meet Nagle and delayed ACK).
    before = stream.sends
    for _ in range(100):
        assert await client.command("NOOP") == "+OK"
    assert stream.sends - before == 100
    assert await client.command("QUIT") == "+OK goodbye"


def test_callable_type() -> None:
    # POP3Server takes any zero-argument factory (class, partial, closure).
    factory: Callable[[], SkeletonHandler] = functools.partial(SkeletonHandler)
    assert POP3Server(factory).handler_factory is factory


async def test_tcp_nodelay_on_accepted_connections(nursery: trio.Nursery) -> None:
    """Replies must not wait for the client's delayed ACK (Nagle): TCP_NODELAY is on."""
    import socket

    seen: list[int] = []

    class Probe(SkeletonHandler):
        async def on_connect(self) -> None:
            stream = self._s.stream
            assert isinstance(stream, trio.SocketStream)
            seen.append(stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    server = POP3Server(Probe, host="127.0.0.1", port=0)
    listeners: list[trio.SocketListener] = await nursery.start(server.serve)
    stream = await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
    client = Client(stream)
    assert (await client.reply()).startswith("+OK")
    assert seen == [1]
    await client.aclose()


@pytest.mark.parametrize(
    "option",
    [
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": float("nan")},
        {"login_timeout": 0},
        {"send_timeout": 0.0},
        {"tls_handshake_timeout": -5},
        {"cleanup_timeout": 0},
        {"cleanup_timeout": None},
        {"timeout": "60"},
    ],
    ids=repr,
)
def test_a_timeout_must_be_positive_or_none(option: dict[str, Any]) -> None:
    """The Perl original's timeout 0 meant "none"; here it would drop every client."""
    name = next(iter(option))
    with pytest.raises(ValueError, match=f"{name} must be a positive number of seconds"):
        POP3Server(SkeletonHandler, **option)


def test_none_disables_a_timeout() -> None:
    server = POP3Server(SkeletonHandler, timeout=None, send_timeout=None)
    assert server.config.idle_timeout is None
    assert server.config.login_timeout is None  # follows timeout by default
    assert POP3Server(SkeletonHandler, timeout=None, login_timeout=30).config.login_timeout == 30


#: A debug=True session over memory streams in a fresh interpreter; ``{setup}`` runs
#: after the server is built and before the session (logging configured, or not).
DEBUG_SESSION = """
import logging, sys, trio, trio.testing, trio_pop3
from pop3_support import SkeletonHandler

async def main():
    server_end, client_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, server_end)
        await client_end.send_all(b"USER alice\\r\\nQUIT\\r\\n")
        while await client_end.receive_some():
            pass

server = trio_pop3.POP3Server(SkeletonHandler, debug=True)
{setup}
trio.run(main)
"""

DEBUG_WITHOUT_LOGGING = DEBUG_SESSION.format(setup="")


def run_script(script: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``script`` in a fresh interpreter (its own logging set-up), with tests/ on the path."""
    tests = str(Path(__file__).resolve().parent)
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(tests).parent), tests])},
    )


def test_debug_without_logging_configured_goes_to_stderr() -> None:
    """The Perl original's debug printed to STDERR; without logging set up, so do we."""
    result = run_script(DEBUG_WITHOUT_LOGGING)
    assert b"C: b'USER alice'" in result.stderr, result.stderr
    assert b"S: b'+OK goodbye'" in result.stderr


DEBUG_THEN_LOGGING = DEBUG_SESSION.format(
    setup='logging.basicConfig(stream=sys.stdout, level=logging.DEBUG, format="ROOT %(message)s")'
)


def test_debug_then_logging_configured_prints_each_record_once() -> None:
    """A program that configures logging after building its server (a common order)
    gets the transcript through its own logging only, not a second copy on stderr."""
    result = run_script(DEBUG_THEN_LOGGING)
    assert result.stdout.count(b"C: b'USER alice'") == 1, result.stdout
    assert b"USER alice" not in result.stderr, result.stderr


async def test_a_login_by_assigning_the_state_forgets_the_address_failures(
    start_server: StartServer, connect: Connect
) -> None:
    """A handler that never calls note_login_success() still resets the failed-login
    delay of its client's address when it assigns TRANSACTION (a login)."""
    running = await start_server(SkeletonHandler, limits=Limits(auth_failure_delay=0))
    client = await connect(running.port)
    running.server.addresses.record_failure("127.0.0.1", trio.current_time())
    assert running.server.addresses.failures("127.0.0.1", trio.current_time()) == 1
    assert (await client.command("USER alice")).startswith("+OK")
    assert (await client.command("PASS secret")).startswith("+OK")
    assert running.server.addresses.failures("127.0.0.1", trio.current_time()) == 0

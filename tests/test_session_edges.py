"""Edge cases of the session loop: idle mid-SASL, log injection, serve_listeners shutdown."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from pop3_support import FAST_LIMITS, MAILBOX_USERS, Client, memory_session, walk_tasks

import trio_pop3
from trio_pop3.mailbox import Authenticator, MailboxHandler, MemoryAuthenticator, MemoryStore
from trio_pop3.testing import MemoryListener


def factory(store: MemoryStore) -> functools.partial[MailboxHandler]:
    return functools.partial(MailboxHandler, store, MemoryAuthenticator(MAILBOX_USERS))


@pytest.mark.rfc("1939", "3")
async def test_idle_in_the_middle_of_sasl_closes_without_reply(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """TIME-04: an idle client mid-AUTH is logged out silently, not told "Internal error"."""
    store = MemoryStore({"alice": [b"Subject: x\n\nbody\n"]})
    async with memory_session(factory(store), timeout=600) as session:
        assert await session.client.command("AUTH PLAIN") == "+ "
        start = trio.current_time()
        assert await session.client.read_to_eof() == b""
        assert 600 <= trio.current_time() - start < 601
    assert not any(record.levelno >= logging.ERROR for record in caplog.records)
    assert not store.is_locked("alice")


async def test_failed_login_log_line_cannot_be_forged(caplog: pytest.LogCaptureFixture) -> None:
    """A user name with spaces cannot add a field to the fail2ban line (SEC-06)."""
    store = MemoryStore()
    with caplog.at_level(logging.WARNING, logger="trio_pop3"):
        async with memory_session(factory(store)) as session:
            assert (await session.client.command("USER x rip=10.9.9.9")).startswith("+OK")
            assert (await session.client.command("PASS nope")).startswith("-ERR [AUTH]")
    lines = [r.getMessage() for r in caplog.records if "authentication failure" in r.getMessage()]
    assert lines == ["authentication failure: user=x?rip=10.9.9.9 rip=-"]


def test_log_name() -> None:
    assert trio_pop3._handler.log_name("alice") == "alice"
    assert trio_pop3._handler.log_name("a\tb c") == "a?b?c"
    assert len(trio_pop3._handler.log_name("x" * 500)) == 64


async def test_serve_listeners_honours_shutdown() -> None:
    """serve_listeners() stops accepting and returns after shutdown(), like serve()."""
    store = MemoryStore({"alice": [b"Subject: x\n\nbody\n"]})
    server = trio_pop3.POP3Server(factory(store), limits=FAST_LIMITS)
    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, [listener])
        client = Client(await listener.connect())
        assert (await client.reply()).startswith("+OK")
        await client.login()
        assert (await client.command("DELE 1")).startswith("+OK")
        server.shutdown(grace=5)
        # The idle, logged-in session is told why and closed; nothing is removed.
        assert await client.reply() == "-ERR [SYS/TEMP] Server shutting down."
        assert await client.read_to_eof() == b""
    # serve_listeners returned on its own: the nursery exited without a cancel.
    assert store.messages("alice") == [b"Subject: x\n\nbody\n"]
    assert server.active_connections == 0


async def test_send_after_disconnect_raises_public_exception() -> None:
    """send_* raise ClientDisconnected (public) once the client is gone."""
    seen: list[BaseException] = []

    class Handler(trio_pop3.POP3Handler):
        extra_commands = {"NOOP": ["AUTH"]}

        async def pop3_NOOP(self, arg: str | None) -> None:
            try:
                for _ in range(10_000):
                    await self.send_raw(b"x" * 1000)
            except trio_pop3.ClientDisconnected as exc:
                seen.append(exc)
                raise

    server = trio_pop3.POP3Server(Handler, limits=FAST_LIMITS)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, server_stream)
        client = Client(client_stream)
        await client.reply()
        await client.send_line("NOOP")
        await client.aclose()
    assert len(seen) == 1


@pytest.mark.rfc("1939", "3")
async def test_trickling_client_is_logged_out(autojump_clock: trio.testing.MockClock) -> None:
    """TIME-03: only a whole command resets the idle timer, so slowloris ends too."""
    store = MemoryStore({"alice": [b"Subject: x\n\nbody\n"]})
    async with memory_session(factory(store), timeout=600, login_timeout=600) as session:
        start = trio.current_time()
        for _ in range(100):  # one byte every 500 s: each well within the timeout
            await trio.sleep(500)
            try:
                await session.client.send(b"N")
            except trio.BrokenResourceError:
                break
        assert await session.client.read_to_eof() == b""
        assert 600 <= trio.current_time() - start < 1100


async def test_error_mid_body_closes_instead_of_injecting_err() -> None:
    """An exception after part of a multi-line reply is sent ends the connection."""

    class Handler(trio_pop3.POP3Handler):
        extra_commands = {"XBODY": ["AUTH"], "XEARLY": ["AUTH"]}

        async def pop3_XBODY(self, arg: str | None) -> None:
            async def lines() -> AsyncIterator[bytes]:
                for _ in range(10_000):  # past the flush threshold: on the wire
                    yield b"x" * 100
                raise RuntimeError("backend broke")

            await self.send_data("here it comes", lines())

        async def pop3_XEARLY(self, arg: str | None) -> None:
            async def lines() -> AsyncIterator[bytes]:
                yield b"first line"
                raise RuntimeError("backend broke")

            await self.send_data("here it comes", lines())

    async with memory_session(Handler) as session:
        # Nothing of the reply was sent yet: it is withdrawn and answered -ERR.
        assert await session.client.command("XEARLY") == "-ERR [SYS/TEMP] Internal error."
        assert await session.client.command("XBODY") == "+OK here it comes"
        rest = await session.client.read_to_eof()
        assert b"-ERR" not in rest
        assert not rest.endswith(b"\r\n.\r\n")  # never a terminator after a broken body


async def test_on_connect_error_is_contained(nursery: trio.Nursery) -> None:
    """catch_errors=True: a failing on_connect() costs that client, not the server."""

    class Handler(trio_pop3.POP3Handler):
        async def on_connect(self) -> None:
            raise RuntimeError("database down")

    server = trio_pop3.POP3Server(Handler, host="127.0.0.1", port=0, limits=FAST_LIMITS)
    listeners: list[trio.SocketListener] = await nursery.start(server.serve)
    port = listeners[0].socket.getsockname()[1]
    for _ in range(2):  # the server survives the first failure
        client = Client(await trio.open_tcp_stream("127.0.0.1", port))
        assert await client.reply() == "-ERR [SYS/TEMP] Internal error."
        assert await client.read_to_eof() == b""
        await client.aclose()


async def test_handler_factory_error_is_contained(nursery: trio.Nursery) -> None:
    def factory() -> trio_pop3.POP3Handler:
        raise RuntimeError("no handler today")

    server = trio_pop3.POP3Server(factory, host="127.0.0.1", port=0, limits=FAST_LIMITS)
    listeners: list[trio.SocketListener] = await nursery.start(server.serve)
    port = listeners[0].socket.getsockname()[1]
    for _ in range(2):
        client = Client(await trio.open_tcp_stream("127.0.0.1", port))
        assert (await client.reply()).startswith("-ERR [SYS/TEMP]")
        await client.aclose()


async def test_authenticator_raising_authentication_failed_is_throttled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An authenticator that raises AuthenticationFailed gets the same delay as False."""

    class Raising(Authenticator):
        async def check_password(self, user: str, password: str) -> bool:
            raise trio_pop3.AuthenticationFailed()

    store = MemoryStore({"alice": [b"Subject: x\n\nbody\n"]})
    factory_ = functools.partial(MailboxHandler, store, Raising())
    async with memory_session(factory_, limits=trio_pop3.Limits()) as session:
        await session.client.command("USER alice")
        start = trio.current_time()
        assert (await session.client.command("PASS secret")).startswith("-ERR [AUTH]")
        assert trio.current_time() - start >= 2.0  # Limits().auth_failure_delay


async def test_mailbox_read_error_after_first_chunk() -> None:
    """A MailboxError from a later chunk: -ERR if nothing was sent yet, else a close."""
    from trio_pop3 import MailboxError
    from trio_pop3.mailbox import Mailbox, MailStore, MessageInfo

    class Broken(Mailbox):
        def __init__(self, chunks_before_error: int) -> None:
            self.n = chunks_before_error

        async def list_messages(self) -> list[MessageInfo]:
            return [MessageInfo("u1", 10_000_000)]

        async def read_message(self, message: MessageInfo) -> AsyncIterator[bytes]:
            yield b"Subject: x\n\n"
            for _ in range(self.n):
                yield b"y" * 99 + b"\n"
            raise MailboxError("disk went away")

        async def remove(self, messages: object) -> None:
            raise AssertionError("never called")

    class Store(MailStore):
        def __init__(self, n: int) -> None:
            self.n = n

        async def open(self, user: str) -> Mailbox:
            return Broken(self.n)

    auth = MemoryAuthenticator(MAILBOX_USERS)
    # Small: the whole partial reply is still in the output buffer -> withdrawn.
    async with memory_session(functools.partial(MailboxHandler, Store(3), auth)) as session:
        await session.client.login()
        assert await session.client.command("RETR 1") == "-ERR [SYS/TEMP] disk went away"
        assert (await session.client.command("NOOP")).startswith("+OK")
    # Large: part of the reply is on the wire -> the connection is closed.
    async with memory_session(functools.partial(MailboxHandler, Store(10_000), auth)) as session:
        await session.client.login()
        assert (await session.client.command("RETR 1")).startswith("+OK")
        rest = await session.client.read_to_eof()
        assert not rest.endswith(b"\\r\\n.\\r\\n")


def _frame_values(task: trio.lowlevel.Task) -> list[object]:
    """The local variables of every frame in ``task``'s await chain."""
    values: list[object] = []
    awaitable: object = task.coro
    while awaitable is not None:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is not None:
            values.extend(frame.f_locals.values())
        awaitable = getattr(awaitable, "cr_await", None) or getattr(
            awaitable, "gi_yieldfrom", None
        )
    return values


async def test_idle_session_holds_no_password() -> None:
    """A session waiting for its next command keeps no reference to the PASS line.

    The command loop drops the last command's line and argument before it waits, so a
    logged-in idle session (which may wait for minutes) neither keeps the password
    reachable nor pays idle memory for it.
    """
    password = "Tr0ub4dor&3-only-here"
    store = MemoryStore({"dave": [b"Subject: x\n\nbody\n"]})
    handlers = functools.partial(MailboxHandler, store, MemoryAuthenticator({"dave": password}))
    async with memory_session(handlers) as session:
        assert (await session.client.command("USER dave")).startswith("+OK")
        assert (await session.client.command(f"PASS {password}")).startswith("+OK")
        await trio.testing.wait_all_tasks_blocked()
        root = trio.lowlevel.current_root_task()
        assert root is not None
        values = [
            value
            for task in walk_tasks(root)
            if task is not trio.lowlevel.current_task()  # this test holds the password
            for value in _frame_values(task)
        ]
        assert len(values) > 10  # the walk did reach the session's frames
        held = [
            value
            for value in values
            if isinstance(value, (str, bytes, bytearray, memoryview))
            and password.encode() in (value.encode() if isinstance(value, str) else bytes(value))
        ]
        assert held == []
        assert (await session.client.command("QUIT")).startswith("+OK")

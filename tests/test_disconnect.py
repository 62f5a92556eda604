"""disconnect() runs exactly once however a session ends, and only QUIT removes mail.

RFC 1939 §6 (STATE-06, STATE-07) and §4 (LOCK-03): a session that ends other than by
QUIT does not enter UPDATE and removes nothing; the maildrop lock is released on every
exit path.  Each scenario logs in as alice, marks message 1 deleted where it can, ends
the session its own way, and then checks the hook count, the lock and the maildrop.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence

import pytest
import trio
import trio.testing
from pop3_support import (
    ALICE_MESSAGES,
    FAST_LIMITS,
    Client,
    ForwardingMailbox,
    MemorySession,
    Recorder,
    memory_session,
)

from trio_pop3 import Limits, MailboxError, POP3Error, POP3Server, ResponseCode, State
from trio_pop3.mailbox import (
    Authenticator,
    Mailbox,
    MailboxHandler,
    MailStore,
    MemoryAuthenticator,
    MemoryStore,
    MessageInfo,
)


class Boom(Exception):
    pass


class CountingHandler(MailboxHandler):
    """MailboxHandler that counts its hooks and has commands that misbehave."""

    extra_commands = {"XBOOM": ["AUTH", "TRANS"], "XSLEEP": ["AUTH", "TRANS"]}

    def __init__(
        self,
        store: MailStore,
        authenticator: Authenticator,
        *,
        refuse: bool = False,
        fail_disconnect: bool = False,
    ) -> None:
        super().__init__(store, authenticator)
        self.refuse = refuse
        self.fail_disconnect = fail_disconnect
        self.disconnects = 0
        self.commits = 0
        self.states_at_disconnect: list[State] = []
        self.entered = trio.Event()

    async def on_connect(self) -> None:
        if self.refuse:
            raise POP3Error("Not today.", ResponseCode.SYS_TEMP)

    async def pop3_XBOOM(self, arg: str | None) -> None:
        raise Boom("kaboom")

    async def pop3_XSLEEP(self, arg: str | None) -> None:
        self.entered.set()
        await trio.sleep_forever()

    async def commit(self) -> None:
        self.commits += 1
        await super().commit()

    async def disconnect(self) -> None:
        self.disconnects += 1
        self.states_at_disconnect.append(self.state)
        await super().disconnect()
        if self.fail_disconnect:
            raise Boom("disconnect failed")


def counting_factory(store: MemoryStore, **kwargs: bool) -> Recorder:
    auth = MemoryAuthenticator({"alice": "secret", "bob": "hunter2"})
    return Recorder(functools.partial(CountingHandler, store, auth, **kwargs))


def only_handler(recorder: Recorder) -> CountingHandler:
    (handler,) = recorder.handlers
    assert isinstance(handler, CountingHandler)
    return handler


def check_ending(recorder: Recorder, store: MemoryStore, *, removed: Sequence[int] = ()) -> None:
    handler = only_handler(recorder)
    assert handler.disconnects == 1
    assert handler.states_at_disconnect == [State.DISCONNECT]
    assert handler.state is State.DISCONNECT
    assert handler.commits == (1 if removed else 0)  # STATE-05, STATE-06
    assert not store.is_locked("alice")  # LOCK-03
    kept = [m for i, m in enumerate(ALICE_MESSAGES, 1) if i not in removed]
    assert store.messages("alice") == kept  # STATE-06 / STATE-07


async def login_and_dele(s: MemorySession) -> None:
    await s.client.login()
    assert await s.client.command("DELE 1") == "+OK Message 1 deleted."


# -- scenarios over memory streams -------------------------------------------------------

Scenario = Callable[[MemorySession, Recorder], Awaitable[None]]


async def quit_from_authorization(s: MemorySession, recorder: Recorder) -> None:
    assert (await s.client.command("USER alice")).startswith("+OK")
    assert await s.client.command("QUIT") == "+OK goodbye"
    assert await s.client.read_to_eof() == b""


async def drop_in_authorization(s: MemorySession, recorder: Recorder) -> None:
    assert (await s.client.command("USER alice")).startswith("+OK")
    await s.client.aclose()


async def drop_in_transaction(s: MemorySession, recorder: Recorder) -> None:
    await login_and_dele(s)
    await s.client.aclose()


async def drop_mid_command_line(s: MemorySession, recorder: Recorder) -> None:
    await login_and_dele(s)
    await s.client.send(b"QU")  # half a QUIT is not a QUIT
    await s.client.aclose()


async def drop_mid_retr(s: MemorySession, recorder: Recorder) -> None:
    await login_and_dele(s)
    await s.client.send_line("RETR 2")
    await s.client.aclose()


async def error_then_drop(s: MemorySession, recorder: Recorder) -> None:
    await login_and_dele(s)
    reply = await s.client.command("XBOOM")
    assert reply.startswith("-ERR [SYS/TEMP] ")
    assert await s.client.command("NOOP") == "+OK"  # the session survived
    await s.client.aclose()


async def cancel_mid_command(s: MemorySession, recorder: Recorder) -> None:
    await login_and_dele(s)
    await s.client.send_line("XSLEEP")
    await only_handler(recorder).entered.wait()
    s.cancel_scope.cancel()
    await s.done.wait()


async def cancel_while_idle(s: MemorySession, recorder: Recorder) -> None:
    await login_and_dele(s)
    await trio.testing.wait_all_tasks_blocked()
    s.cancel_scope.cancel()
    await s.done.wait()
    # Cancelled while waiting for a command: told why, and nothing else.
    assert await s.client.read_to_eof() == b"-ERR [SYS/TEMP] Server shutting down.\r\n"


async def bad_command_budget(s: MemorySession, recorder: Recorder) -> None:
    await login_and_dele(s)
    await s.client.send(b"FOO\r\n" * 25)
    data = await s.client.read_to_eof()
    assert data.endswith(b"-ERR Too many bad commands.\r\n")


async def huge_line(s: MemorySession, recorder: Recorder) -> None:
    await login_and_dele(s)
    await s.client.send(b"QUIT" + b"x" * 300_000)
    assert await s.client.read_to_eof() == b"-ERR Line too long; closing the connection.\r\n"


@pytest.mark.rfc("1939", "6")
@pytest.mark.parametrize(
    "scenario",
    [
        quit_from_authorization,
        drop_in_authorization,
        drop_in_transaction,
        drop_mid_command_line,
        drop_mid_retr,
        error_then_drop,
        cancel_mid_command,
        cancel_while_idle,
        bad_command_budget,
        huge_line,
    ],
    ids=lambda f: f.__name__,
)
@pytest.mark.parametrize("send_errors", [False, True], ids=["generic-err", "errors-sent"])
async def test_ending_without_quit_in_transaction(
    scenario: Scenario, send_errors: bool, store: MemoryStore
) -> None:
    # RFC 1939 §6 (STATE-05, STATE-06), §4 (LOCK-03)
    recorder = counting_factory(store)
    with trio.fail_after(10):
        async with memory_session(
            recorder,
            send_errors_to_client=send_errors,
            limits=Limits(max_bad_commands=20, auth_failure_delay=0),
        ) as s:
            await scenario(s, recorder)
            await s.done.wait()
    check_ending(recorder, store)


@pytest.mark.rfc("1939", "6")
async def test_quit_from_transaction_removes(store: MemoryStore) -> None:
    # RFC 1939 §6 (STATE-07): exactly the messages marked deleted are removed.
    recorder = counting_factory(store)
    async with memory_session(recorder) as s:
        await login_and_dele(s)
        assert await s.client.command("DELE 3") == "+OK Message 3 deleted."
        assert await s.client.command("QUIT") == "+OK goodbye"
        assert await s.client.read_to_eof() == b""
        await s.done.wait()
    check_ending(recorder, store, removed=[1, 3])
    assert only_handler(recorder).commits == 1


@pytest.mark.rfc("1939", "6")
async def test_idle_timeout_ending(
    store: MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    # RFC 1939 §3 (TIME-04) + §6 (STATE-06)
    recorder = counting_factory(store)
    async with memory_session(recorder, timeout=600) as s:
        await login_and_dele(s)
        assert await s.client.read_to_eof() == b""
        await s.done.wait()
    check_ending(recorder, store)
    assert only_handler(recorder).commits == 0


async def test_login_timeout_ending(
    store: MemoryStore, autojump_clock: trio.testing.MockClock
) -> None:
    recorder = counting_factory(store)
    async with memory_session(recorder, timeout=600, login_timeout=60) as s:
        assert (await s.client.command("USER alice")).startswith("+OK")
        assert await s.client.read_to_eof() == b""
        await s.done.wait()
    check_ending(recorder, store)


@pytest.mark.parametrize("send_errors", [False, True])
async def test_uncaught_error_ending(send_errors: bool, store: MemoryStore) -> None:
    # catch_errors=False: the exception ends the connection and propagates, but the
    # disconnect hook still runs and nothing is removed.
    recorder = counting_factory(store)
    eof: bytes | None = None
    with pytest.RaisesGroup(pytest.RaisesExc(Boom, match="kaboom"), flatten_subgroups=True):
        async with memory_session(
            recorder, catch_errors=False, send_errors_to_client=send_errors
        ) as s:
            await login_and_dele(s)
            await s.client.send_line("XBOOM")
            eof = await s.client.read_to_eof()
            await s.done.wait()
    assert eof == b""  # no reply; the connection was closed
    check_ending(recorder, store)


async def test_on_connect_refusal_ending(store: MemoryStore) -> None:
    recorder = counting_factory(store, refuse=True)
    async with memory_session(recorder, read_greeting=False) as s:
        assert await s.client.read_to_eof() == b"-ERR [SYS/TEMP] Not today.\r\n"
        await s.done.wait()
    check_ending(recorder, store)
    assert only_handler(recorder).states_at_disconnect == [State.DISCONNECT]


async def test_failing_disconnect_hook_is_contained(
    store: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = counting_factory(store, fail_disconnect=True)
    with caplog.at_level(logging.ERROR, logger="trio_pop3"):
        async with memory_session(recorder) as s:
            await login_and_dele(s)
            await s.client.aclose()
            await s.done.wait()
    check_ending(recorder, store)
    assert "disconnect() hook failed" in caplog.text


class FailingRemoveStore(MailStore):
    """Wraps a MemoryStore; removal fails after removing the first doomed message."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner

    async def open(self, user: str) -> Mailbox:
        return FailingRemoveMailbox(await self.inner.open(user))


class FailingRemoveMailbox(ForwardingMailbox):
    async def remove(self, messages: Sequence[MessageInfo]) -> None:
        await self.inner.remove(messages[:1])
        raise MailboxError("Some deleted messages were not removed.")


@pytest.mark.rfc("1939", "6")
async def test_commit_failure_ending(store: MemoryStore) -> None:
    # STATE-07/08: removal failed -> -ERR, the lock is still released, the connection
    # closes, and messages that were not marked are never lost.
    auth = MemoryAuthenticator({"alice": "secret"})
    recorder = Recorder(functools.partial(CountingHandler, FailingRemoveStore(store), auth))
    async with memory_session(recorder) as s:
        await login_and_dele(s)
        assert await s.client.command("DELE 2") == "+OK Message 2 deleted."
        assert await s.client.command("QUIT") == (
            "-ERR [SYS/TEMP] Some deleted messages were not removed."
        )
        assert await s.client.read_to_eof() == b""
        await s.done.wait()
    handler = only_handler(recorder)
    assert handler.disconnects == 1
    assert handler.commits == 1
    assert not store.is_locked("alice")
    assert store.messages("alice") == list(ALICE_MESSAGES[1:])  # message 3 never touched


# -- cancellation of serve() over real sockets -------------------------------------------


@pytest.mark.rfc("1939", "6")
async def test_cancel_serve_mid_command(store: MemoryStore) -> None:
    # Server shutdown while one session awaits inside a command and another is idle in
    # TRANSACTION with a DELE pending: both disconnect once, nothing is removed.
    recorder = counting_factory(store)
    server = POP3Server(recorder, host="127.0.0.1", port=0, limits=FAST_LIMITS)
    streams: list[trio.SocketStream] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            port = listeners[0].socket.getsockname()[1]
            busy = Client(await trio.open_tcp_stream("127.0.0.1", port))
            idle = Client(await trio.open_tcp_stream("127.0.0.1", port))
            for client in (busy, idle):
                assert isinstance(client.stream, trio.SocketStream)
                streams.append(client.stream)
                assert (await client.reply()).startswith("+OK")
            await idle.login("bob", "hunter2")
            assert (await idle.command("DELE 1")).startswith("+OK")
            await busy.login()
            assert (await busy.command("DELE 2")).startswith("+OK")
            await busy.send_line("XSLEEP")
            busy_handler = recorder.handlers[0]
            assert isinstance(busy_handler, CountingHandler)
            await busy_handler.entered.wait()
            nursery.cancel_scope.cancel()
    for stream in streams:
        await stream.aclose()
    assert len(recorder.handlers) == 2
    for handler in recorder.handlers:
        assert isinstance(handler, CountingHandler)
        assert handler.disconnects == 1
        assert handler.commits == 0
    assert not store.is_locked("alice")
    assert not store.is_locked("bob")
    assert store.messages("alice") == list(ALICE_MESSAGES)
    assert len(store.messages("bob")) == 1

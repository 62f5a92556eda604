"""Shared fixtures: a tiny POP3 client, memory-stream sessions, real-socket servers, stores.

Top-level test modules import the helper types from here (``from pop3_support import
...``); the fixtures hand out the matching callables.

* :class:`Client` speaks the client side of POP3 over any ``trio.abc.Stream``: send a
  line, read one reply line, read a multi-line body up to ``.\\r\\n``, read to EOF.
  Every line it reads is checked to end in CRLF (WIRE-09: the server never sends a
  bare LF).
* :func:`memory_session` runs one connection of a handler factory through
  ``POP3Server(...).handle_stream`` over ``trio.testing.memory_stream_pair()`` (or a
  lockstep pair) in a nursery and yields a :class:`Client` for it.
* The ``start_server`` fixture starts ``POP3Server(..., host="127.0.0.1", port=0)``
  with ``await nursery.start(server.serve)`` in the test's nursery and returns the
  port; ``mailbox_port`` does that for a :class:`MailboxHandler` over the ``store``.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest
import trio
import trio.testing

from trio_pop3 import (
    AuthenticationFailed,
    Limits,
    POP3Error,
    POP3Handler,
    POP3Server,
    wire_size,
)
from trio_pop3.mailbox import (
    Mailbox,
    MailboxHandler,
    MailStore,
    MemoryAuthenticator,
    MemoryStore,
    MessageInfo,
)

__all__ = [
    "ForwardingMailbox",
    "MESSAGES",
    "USERS",
    "Client",
    "Connect",
    "FAST_LIMITS",
    "MemorySession",
    "Recorder",
    "RunningServer",
    "SkeletonHandler",
    "StartServer",
    "memory_session",
    "open_client",
    "unstuff",
]

CRLF = b"\r\n"

# -- a skeleton handler like the seed's synopsis ---------------------------------------

#: Users of :class:`SkeletonHandler`; bob's password has inner and trailing spaces.
USERS = {"alice": "secret", "bob": "two  words ", "dave": "hunter2-xyzzy"}

#: The messages :class:`SkeletonHandler` serves (generated content, fixed here).
MESSAGES: tuple[bytes, ...] = (
    b"Subject: one\r\n\r\nHello, world.\r\n",
    b"Subject: two\n\n.starts with a dot\n.\n..two dots\nno final newline",
    b".first line is a dot\nSubject: three\n\nbody\n",
)


class SkeletonHandler(POP3Handler):
    """A handler written the way the seed's synopsis writes one.

    USER/PASS against :data:`USERS`, ``self.state = "TRANS"`` on success, STAT and
    RETR over :data:`MESSAGES`, LIST and NOOP, plus a few extras that tests use.
    Every command method records its name in :attr:`calls`; the hooks count calls.
    """

    extra_commands = {
        "XECHO": ["TRANS"],
        "XBOOM": ["AUTH", "TRANS"],
        "XSLEEP": ["AUTH", "TRANS"],
    }

    def __init__(self) -> None:
        super().__init__()
        self.add_command("xhello", ["auth", "trans"])
        self.user: str | None = None
        self.calls: list[str] = []
        self.commits = 0
        self.commit_state: str | None = None
        self.disconnects = 0
        self.disconnect_state: str | None = None
        self.fail_commit: BaseException | None = None
        self.boom: BaseException = RuntimeError("secret detail 42")
        self.entered: trio.Event = trio.Event()

    async def pop3_USER(self, arg: str | None) -> None:
        self.calls.append("USER")
        if arg is None:
            raise POP3Error("missing argument")
        self.user = arg
        await self.send_ok("username accepted, send password")

    async def pop3_PASS(self, arg: str | None) -> None:
        self.calls.append("PASS")
        if self.user is None or arg is None or USERS.get(self.user) != arg:
            raise AuthenticationFailed("invalid username or password")
        self.state = "TRANS"
        await self.send_ok("logged in")

    async def pop3_STAT(self, arg: str | None) -> None:
        self.calls.append("STAT")
        await self.send_ok(f"{len(MESSAGES)} {sum(wire_size(m) for m in MESSAGES)}")

    async def pop3_LIST(self, arg: str | None) -> None:
        self.calls.append("LIST")
        lines = [f"{n} {wire_size(m)}" for n, m in enumerate(MESSAGES, 1)]
        await self.send_data(f"{len(MESSAGES)} messages", lines)

    async def pop3_RETR(self, arg: str | None) -> None:
        self.calls.append("RETR")
        if arg is None or not arg.isdigit() or not 1 <= int(arg) <= len(MESSAGES):
            raise POP3Error("no such message")
        message = MESSAGES[int(arg) - 1]
        await self.send_message(f"{wire_size(message)} octets", [message])

    async def pop3_NOOP(self, arg: str | None) -> None:
        self.calls.append("NOOP")
        await self.send_ok()

    async def pop3_XECHO(self, arg: str | None) -> None:
        self.calls.append("XECHO")
        await self.send_ok(arg or "")

    async def pop3_XHELLO(self, arg: str | None) -> None:
        self.calls.append("XHELLO")
        await self.send_ok(f"hello in {self.state.name}")

    async def pop3_XBOOM(self, arg: str | None) -> None:
        self.calls.append("XBOOM")
        raise self.boom

    async def pop3_XSLEEP(self, arg: str | None) -> None:
        # A command that never finishes: for cancellation tests.
        self.calls.append("XSLEEP")
        self.entered.set()
        await trio.sleep_forever()

    async def pop3_XSECRET(self, arg: str | None) -> None:
        # Never registered as a command: a client must not be able to reach it.
        self.calls.append("XSECRET")
        await self.send_ok("you should not see this")

    async def commit(self) -> None:
        self.commits += 1
        self.commit_state = self.state.name
        if self.fail_commit is not None:
            raise self.fail_commit

    async def disconnect(self) -> None:
        self.disconnects += 1
        self.disconnect_state = self.state.name


class Recorder:
    """A handler factory that remembers every handler it made."""

    def __init__(self, factory: Callable[[], POP3Handler] = SkeletonHandler) -> None:
        self.factory = factory
        self.handlers: list[POP3Handler] = []

    def __call__(self) -> POP3Handler:
        handler = self.factory()
        self.handlers.append(handler)
        return handler

    @property
    def last(self) -> POP3Handler:
        return self.handlers[-1]


# -- the client ----------------------------------------------------------------------


def unstuff(lines: Iterable[bytes]) -> bytes:
    """Undo byte-stuffing of data lines (without line ends) and join them with CRLF."""
    return b"".join((line[1:] if line.startswith(b".") else line) + CRLF for line in lines)


class Client:
    """The client end of a POP3 connection, for tests."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._buf = bytearray()
        self._eof = False

    async def send(self, data: bytes | str) -> None:
        """Send raw bytes (a str is UTF-8 encoded); no line end is added."""
        await self.stream.send_all(data.encode("utf-8") if isinstance(data, str) else data)

    async def send_line(self, line: bytes | str) -> None:
        """Send one command line followed by CRLF."""
        await self.send((line.encode("utf-8") if isinstance(line, str) else line) + CRLF)

    async def _fill(self) -> bool:
        if self._eof:
            return False
        data = await self.stream.receive_some(65536)
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    async def raw_line(self) -> bytes:
        """Return the next line including its line end.

        Raises:
            EOFError: the server closed the connection before a whole line arrived.
        """
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[: nl + 1])
                del self._buf[: nl + 1]
                return line
            if not await self._fill():
                raise EOFError(f"connection closed; partial line {bytes(self._buf)!r}")

    async def line(self) -> bytes:
        """Return the next line without its CRLF; assert it ended in CRLF."""
        raw = await self.raw_line()
        assert raw.endswith(CRLF), f"line does not end in CRLF: {raw!r}"
        body = raw[:-2]
        assert b"\r" not in body, f"stray CR in line: {raw!r}"
        return body

    async def reply(self) -> str:
        """Return the next reply line as text (without CRLF)."""
        return (await self.line()).decode("utf-8", "surrogateescape")

    async def command(self, line: bytes | str) -> str:
        """Send a command line and return the first line of its reply."""
        await self.send_line(line)
        return await self.reply()

    async def data_lines(self) -> list[bytes]:
        """Read the data lines of a multi-line reply up to ``.``; stuffing left in."""
        lines: list[bytes] = []
        while True:
            line = await self.line()
            if line == b".":
                return lines
            lines.append(line)

    async def data(self) -> bytes:
        """Read a multi-line body and return it un-stuffed, lines joined with CRLF."""
        return unstuff(await self.data_lines())

    async def multi(self, line: bytes | str) -> tuple[str, list[bytes]]:
        """Send a command; return its first line and, if ``+OK``, its data lines."""
        first = await self.command(line)
        if not first.startswith("+OK"):
            return first, []
        return first, await self.data_lines()

    async def login(self, user: str = "alice", password: str = "secret") -> None:
        """USER and PASS; assert both succeed."""
        reply = await self.command(f"USER {user}")
        assert reply.startswith("+OK"), reply
        reply = await self.command(f"PASS {password}")
        assert reply.startswith("+OK"), reply

    async def read_to_eof(self) -> bytes:
        """Return everything the server sends until it closes the connection."""
        while await self._fill():
            pass
        data = bytes(self._buf)
        del self._buf[:]
        return data

    async def aclose(self) -> None:
        await self.stream.aclose()


# -- sessions over memory streams -------------------------------------------------------

#: The limits the helpers use unless a test passes ``limits=``: the defaults, except
#: that a failed login is answered at once (the default 2 s doubling delay would
#: make the suite slow; ``test_timeouts.py`` checks the delay under a MockClock).
FAST_LIMITS = Limits(auth_failure_delay=0)


def _with_fast_limits(options: dict[str, Any]) -> dict[str, Any]:
    options.setdefault("limits", FAST_LIMITS)
    return options


@dataclass
class MemorySession:
    """What :func:`memory_session` yields."""

    client: Client
    server: POP3Server
    #: Set when ``handle_stream`` has returned (the session is over).
    done: trio.Event = field(default_factory=trio.Event)
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)


@asynccontextmanager
async def memory_session(
    factory: Callable[[], POP3Handler],
    *,
    lockstep: bool = False,
    read_greeting: bool = True,
    **server_options: Any,
) -> AsyncIterator[MemorySession]:
    """Run one connection of ``factory`` over an in-memory stream pair.

    Yields a :class:`MemorySession` whose client has already read the greeting (unless
    ``read_greeting=False``); ``limits`` defaults to :data:`FAST_LIMITS`.  On exit the
    client closes its end and the session is awaited; an exception from the server
    side propagates out of the ``async with`` (as an exception group, from the nursery).
    """
    server = POP3Server(factory, **_with_fast_limits(server_options))
    client_stream: trio.abc.Stream
    server_stream: trio.abc.Stream
    if lockstep:
        client_stream, server_stream = trio.testing.lockstep_stream_pair()
    else:
        client_stream, server_stream = trio.testing.memory_stream_pair()
    session = MemorySession(Client(client_stream), server)

    async def run_server() -> None:
        try:
            with session.cancel_scope:
                await server.handle_stream(server_stream)
        finally:
            session.done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_server)
        if read_greeting:
            reply = await session.client.reply()
            assert reply.startswith("+OK"), reply
        yield session
        await session.client.aclose()


@pytest.fixture
def pop3_session() -> Callable[..., AbstractAsyncContextManager[MemorySession]]:
    """Return :func:`memory_session` (for tests that prefer a fixture to an import)."""
    return memory_session


# -- real sockets ------------------------------------------------------------------------


@dataclass
class RunningServer:
    """A server started by the ``start_server`` fixture."""

    server: POP3Server
    listeners: Sequence[trio.SocketListener]
    port: int


class StartServer(Protocol):
    async def __call__(
        self, factory: Callable[[], POP3Handler], **server_options: Any
    ) -> RunningServer: ...


async def open_client(port: int) -> Client:
    """Connect to 127.0.0.1:``port`` and read the greeting."""
    client = Client(await trio.open_tcp_stream("127.0.0.1", port))
    greeting = await client.reply()
    assert greeting.startswith("+OK"), greeting
    return client


class Connect(Protocol):
    async def __call__(self, port: int) -> Client: ...


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Return ``await connect(port)``: a :class:`Client` that has read the greeting.

    Every client opened this way is closed when the test ends.
    """
    clients: list[Client] = []

    async def connect_(port: int) -> Client:
        client = await open_client(port)
        clients.append(client)
        return client

    yield connect_
    for client in clients:
        await client.aclose()


@pytest.fixture
def start_server(nursery: trio.Nursery) -> StartServer:
    """Return ``await start(factory, **options)``: serve on 127.0.0.1, a free port.

    The server runs in the test's nursery and is cancelled when the test ends.
    """

    async def start(factory: Callable[[], POP3Handler], **server_options: Any) -> RunningServer:
        server = POP3Server(factory, host="127.0.0.1", port=0, **_with_fast_limits(server_options))
        listeners: list[trio.SocketListener] = await nursery.start(server.serve)
        port = listeners[0].socket.getsockname()[1]
        return RunningServer(server, listeners, port)

    return start


# -- the mailbox layer ----------------------------------------------------------------

#: Users of the ``authenticator`` fixture.
MAILBOX_USERS = {"alice": "secret", "bob": "hunter2", "carol": "pass word "}

#: alice's maildrop in the ``store`` fixture.
ALICE_MESSAGES: tuple[bytes, ...] = (
    b"From: a@example.org\r\nSubject: first\r\n\r\nline 1\r\nline 2\r\nline 3\r\n",
    b"From: b@example.org\nSubject: LF only\n\nbody a\n.dotted\n.\nbody d\n",
    b".From a dot\nSubject: third\n\nno final newline",
)


@pytest.fixture
def store() -> MemoryStore:
    """alice has :data:`ALICE_MESSAGES`; bob has one message; carol has none."""
    return MemoryStore(
        {
            "alice": ALICE_MESSAGES,
            "bob": [b"Subject: bob\n\nhi bob\n"],
        }
    )


@pytest.fixture
def authenticator() -> MemoryAuthenticator:
    return MemoryAuthenticator(MAILBOX_USERS)


@pytest.fixture
def mailbox_factory(
    store: MemoryStore, authenticator: MemoryAuthenticator
) -> Callable[[], MailboxHandler]:
    """A factory of :class:`MailboxHandler` over ``store`` and ``authenticator``."""
    return functools.partial(MailboxHandler, store, authenticator)


@pytest.fixture
async def mailbox_port(
    start_server: StartServer, mailbox_factory: Callable[[], MailboxHandler]
) -> int:
    """The port of a real-socket server running :class:`MailboxHandler` over ``store``.

    The server runs in the test's nursery and stops when the test ends.
    """
    running = await start_server(mailbox_factory)
    return running.port


class ForwardingMailbox(Mailbox):
    """A Mailbox that passes every call to ``inner``: subclass it to inject a fault."""

    def __init__(self, inner: Mailbox) -> None:
        self.inner = inner

    async def list_messages(self) -> Sequence[MessageInfo]:
        return await self.inner.list_messages()

    def read_message(self, message: MessageInfo) -> AsyncIterator[bytes]:
        return self.inner.read_message(message)

    async def remove(self, messages: Sequence[MessageInfo]) -> None:
        await self.inner.remove(messages)

    async def close(self) -> None:
        await self.inner.close()


async def maildrop_uids(store: MailStore, user: str = "alice") -> list[str]:
    """Return the uids in ``user``'s maildrop (open, list, close: it must be unlocked)."""
    mailbox = await store.open(user)
    try:
        return [message.uid for message in await mailbox.list_messages()]
    finally:
        await mailbox.close()


async def pipelined_burst(client: Client, n: int = 10_000) -> None:
    """Send ``n`` commands in one write (NOOP, every 1000th an XECHO) and check each reply.

    RFC 2449 section 6.6: pipelined commands are answered in order.  Needs a handler
    with XECHO (:class:`SkeletonHandler`).
    """
    lines = [b"XECHO %d\r\n" % i if i % 1000 == 999 else b"NOOP\r\n" for i in range(n)]
    with trio.fail_after(20):
        async with trio.open_nursery() as inner:
            inner.start_soon(client.send, b"".join(lines))
            for i in range(n):
                assert await client.reply() == (f"+OK {i}" if i % 1000 == 999 else "+OK")


def walk_tasks(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
    """Yield ``task`` and every task below it in the nursery tree."""
    yield task
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            yield from walk_tasks(child)

"""Helpers for testing POP3 servers built on trio_pop3: the counterpart of trio.testing.

Theory of operation
-------------------
* :class:`POP3TestClient` is the client side of a POP3 connection over any
  ``trio.abc.Stream``.  It parses every reply into a :class:`Reply` (status, response
  code, text, and for multi-line replies the un-stuffed data lines) and, in strict
  mode, checks the wire format as it reads: every line ends in CRLF, a status line
  starts with ``+OK``, ``-ERR`` or ``+`` and is at most 512 octets.  A server that
  breaks those rules raises :class:`ProtocolViolation`.
* :func:`open_memory_session` runs one connection of a handler through
  :meth:`~trio_pop3.POP3Server.handle_stream` over ``trio.testing.memory_stream_pair()``: no
  sockets and no real time, so it works under pytest-trio's ``autojump_clock`` and
  an idle timeout of ten minutes is tested in microseconds.
* :class:`MemoryListener` is a ``trio.abc.Listener`` of memory streams for
  :meth:`~trio_pop3.POP3Server.serve_listeners`, and :func:`serve_on_loopback` serves a server
  on a free port of 127.0.0.1 for clients that need a real socket (``poplib``,
  ``curl``).
* :func:`check_handler` and :func:`check_mailbox_backend` are a conformance suite,
  like trio's ``check_two_way_stream``: point them at your handler or your
  :class:`~trio_pop3.mailbox.MailStore` and they run the RFC 1939 and RFC 2449 rules
  of ``RFC-CHECKLIST.md`` against it, collect every broken rule, and raise one
  :class:`ConformanceError` naming them all.

Helpers that build the :class:`~trio_pop3.POP3Server` themselves use
:data:`TEST_LIMITS` unless given ``limits=``: failed logins are answered at once
instead of after the production delay of two seconds.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Final, Literal, final

import trio
import trio.testing

from ._config import Limits
from ._handler import POP3Handler
from ._mailbox import Authenticator, MailStore
from ._server import POP3Server

__all__ = [
    "CONFORMANCE_MESSAGES",
    "CONFORMANCE_RULES",
    "TEST_LIMITS",
    "ConformanceError",
    "ConformanceReport",
    "MemoryListener",
    "POP3TestClient",
    "ProtocolViolation",
    "Reply",
    "RuleFailure",
    "UnexpectedReply",
    "check_handler",
    "check_mailbox_backend",
    "open_memory_session",
    "serve_on_loopback",
]

CRLF: Final = b"\r\n"

#: RFC 2449 section 4 (RESP-03): the first line of a reply is at most 512 octets
#: including CRLF.
MAX_REPLY_LINE: Final = 512

#: Receive size of the test client; one read takes a whole reply of a small message.
_RECEIVE_SIZE: Final = 65536

#: The limits of servers the helpers build: the defaults, except that a failed login
#: is answered at once (the production delay of 2 s, doubling, would make every test
#: of a wrong password slow).  Pass ``limits=`` to test the delay itself, under
#: ``autojump_clock``.
TEST_LIMITS: Final = Limits(auth_failure_delay=0)

#: A unique-id: 1 to 70 characters in 0x21 to 0x7E (RFC 1939 section 7, UIDL-02).
_UID_RE: Final = re.compile(r"[\x21-\x7e]{1,70}")
_NUMBER_PAIR_RE: Final = re.compile(r"([0-9]+) ([0-9]+)")
_UIDL_LINE_RE: Final = re.compile(r"([0-9]+) (.*)")
_MARKER_RE: Final = re.compile(rb"^X-Conformance-Id: ([0-9]+)\r?$", re.MULTILINE)


# -- replies -------------------------------------------------------------------------


class ProtocolViolation(AssertionError):
    """The server broke the POP3 wire format (raised by a strict :class:`POP3TestClient`).

    Attributes:
        rule: The ``RFC-CHECKLIST.md`` rule ID the server broke, e.g. ``"RESP-02"``.

    Example::

        with pytest.raises(ProtocolViolation):
            await client.command("STAT")  # the server answered "OK 1 2"
    """

    def __init__(self, message: str, rule: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule


@final
@dataclass(frozen=True, slots=True)
class Reply:
    """One server reply, parsed.

    Attributes:
        status: ``"+OK"``, ``"-ERR"``, or ``"+"`` for a SASL challenge.
        text: The text after the status and the response code (a challenge's base64).
        code: The response code without brackets (``"IN-USE"``, ``"SYS/TEMP"``), or
            None (RFC 2449 section 8).
        lines: For a multi-line reply, its data lines without CRLF, byte-stuffing
            removed; empty otherwise.
        line: The first line exactly as received, without CRLF.

    Example::

        reply = await client.command("PASS wrong")
        assert not reply.ok and reply.code == "AUTH"
        listing = await client.multiline("LIST")
        assert listing.lines == (b"1 120", b"2 4711")
    """

    status: Literal["+OK", "-ERR", "+"]
    text: str
    code: str | None = None
    lines: tuple[bytes, ...] = ()
    line: bytes = b""

    @property
    def ok(self) -> bool:
        """Whether the status is ``+OK``."""
        return self.status == "+OK"

    @property
    def body(self) -> bytes:
        """The data lines joined with CRLF, each line ended: a message as sent."""
        return b"".join(line + CRLF for line in self.lines)

    def __str__(self) -> str:
        return self.line.decode("utf-8", "replace")

    @classmethod
    def parse(cls, line: bytes) -> Reply:
        """Parse a status line (without CRLF).

        Example::

            reply = Reply.parse(b"-ERR [IN-USE] Mailbox is locked")
            assert (reply.status, reply.code) == ("-ERR", "IN-USE")

        Raises:
            ProtocolViolation: the line starts with none of ``+OK``, ``-ERR`` or ``+``
                followed by a space or the end of the line (RESP-01).
        """
        status: Literal["+OK", "-ERR", "+"]
        for status in ("+OK", "-ERR", "+"):
            prefix = status.encode("ascii")
            if line == prefix or line.startswith(prefix + b" "):
                break
        else:
            raise ProtocolViolation(
                f"reply does not start with +OK, -ERR or '+ ': {line[:80]!r}", "RESP-01"
            )
        text = line[len(status) + 1 :].decode("utf-8", "surrogateescape")
        code = None
        if status != "+" and text.startswith("["):
            end = text.find("]")
            if end > 0:
                code = text[1:end]
                text = text[end + 1 :].removeprefix(" ")
        return cls(status, text, code, (), line)


class UnexpectedReply(AssertionError):
    """A helper of :class:`POP3TestClient` needed ``+OK`` and got something else.

    Attributes:
        command: The command line that was sent (a password is masked).
        reply: The reply.

    Example::

        with pytest.raises(UnexpectedReply) as info:
            await client.retr(99)
        assert info.value.reply.status == "-ERR"
    """

    def __init__(self, command: str, reply: Reply) -> None:
        super().__init__(f"{command!r} answered {str(reply)!r}")
        self.command = command
        self.reply = reply


def _unstuff(line: bytes) -> bytes:
    return line[1:] if line.startswith(b".") else line


# -- the client --------------------------------------------------------------------------


@final
class POP3TestClient:
    """The client end of a POP3 connection, for tests.

    Wraps any ``trio.abc.Stream``: a memory stream from :func:`open_memory_session`
    or :meth:`MemoryListener.open_client`, or a TCP stream from :meth:`connect`.

    Args:
        stream: The connection to the server.
        strict: Check the wire format of everything read (CRLF line ends, status
            lines, the 512-octet limit) and raise :class:`ProtocolViolation`.  Turn it
            off to look at a broken server's bytes with :meth:`read_line`.

    Example::

        async with open_memory_session(MyHandler) as client:
            assert client.greeting is not None and client.greeting.ok
            await client.login("alice", "secret")
            assert await client.stat() == (2, 4711)
            message = await client.retr(1)
            await client.quit()

    Error handling:
        Reading after the server closed the connection raises :class:`EOFError`;
        :attr:`closed` tells whether that has happened.  Helpers that need ``+OK``
        (:meth:`login`, :meth:`retr`, ...) raise :class:`UnexpectedReply` otherwise.

    Cancellation:
        Safe to cancel between calls; a call cancelled in the middle of a reply
        leaves the rest of that reply unread, so later replies are out of step.
    """

    def __init__(self, stream: trio.abc.Stream, *, strict: bool = True) -> None:
        #: The underlying stream.
        self.stream = stream
        #: Whether the wire format is checked (see the class docstring).
        self.strict = strict
        #: The greeting, once :meth:`read_greeting` has read it.
        self.greeting: Reply | None = None
        self._buffer = bytearray()
        self._searched = 0
        self._eof = False
        self._closed_here = False

    @classmethod
    async def connect(
        cls, host: str, port: int, *, read_greeting: bool = True, strict: bool = True
    ) -> POP3TestClient:
        """Open a TCP connection to ``host``:``port`` and read the greeting.

        Example::

            async with serve_on_loopback(server) as (host, port):
                async with await POP3TestClient.connect(host, port) as client:
                    await client.login("alice", "secret")
        """
        client = cls(await trio.open_tcp_stream(host, port), strict=strict)
        if read_greeting:
            try:
                await client.read_greeting()
            except BaseException:
                await client.aclose()
                raise
        return client

    @property
    def closed(self) -> bool:
        """Whether the connection is over: the server closed it, or :meth:`aclose` ran.

        Example::

            await client.quit()
            await client.read_until_closed()
            assert client.closed
        """
        return self._eof or self._closed_here

    # -- bytes --------------------------------------------------------------------
    async def send_raw(self, data: bytes | str) -> None:
        """Send bytes exactly as given (a str is UTF-8 encoded); no CRLF is added.

        Example::

            await client.send_raw(b"STAT\\r\\nLIST\\r\\n")  # pipelined
        """
        await self.stream.send_all(data.encode("utf-8") if isinstance(data, str) else data)

    async def send_line(self, line: bytes | str) -> None:
        """Send one command line followed by CRLF.

        Example::

            await client.send_line("NOOP")
        """
        await self.send_raw((line.encode("utf-8") if isinstance(line, str) else line) + CRLF)

    async def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            data = await self.stream.receive_some(_RECEIVE_SIZE)
        except trio.BrokenResourceError:
            data = b""
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    async def read_line(self) -> bytes:
        """Return the next line from the server, without its line end.

        Example::

            assert await client.read_line() == b"+OK Logged in."

        Raises:
            EOFError: the server closed the connection before a whole line arrived.
            ProtocolViolation: (strict) the line ended in a bare LF (RESP-02).
        """
        end = self._buffer.find(b"\n", self._searched)
        while end < 0:
            self._searched = len(self._buffer)
            if not await self._fill():
                partial = bytes(self._buffer[:80])
                raise EOFError(f"the server closed the connection (partial line {partial!r})")
            end = self._buffer.find(b"\n", self._searched)
        line = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        self._searched = 0
        if line.endswith(CRLF):
            return line[:-2]
        if self.strict:
            raise ProtocolViolation(f"line ends in a bare LF: {line[:80]!r}", "RESP-02")
        return line[:-1]

    async def read_until_closed(self) -> bytes:
        """Wait until the server closes the connection; return what it sent meanwhile.

        Example::

            async with open_memory_session(MyHandler, timeout=600) as client:
                assert await client.read_until_closed() == b""  # silent autologout
        """
        while await self._fill():
            pass
        data = bytes(self._buffer)
        del self._buffer[:]
        self._searched = 0
        return data

    # -- replies ------------------------------------------------------------------
    async def read_reply(self) -> Reply:
        """Read one status line and parse it (a multi-line body is left unread).

        Example::

            await client.send_line("STAT")
            reply = await client.read_reply()

        Raises:
            EOFError: the connection closed first.
            ProtocolViolation: (strict) not a status line, or longer than 512 octets.
        """
        line = await self.read_line()
        if self.strict and len(line) + 2 > MAX_REPLY_LINE:
            raise ProtocolViolation(
                f"reply line of {len(line) + 2} octets (limit {MAX_REPLY_LINE})", "RESP-03"
            )
        return Reply.parse(line)

    async def read_greeting(self) -> Reply:
        """Read the greeting and remember it in :attr:`greeting`.

        A server may refuse a client with ``-ERR`` instead, so no status is required.

        Example::

            client = POP3TestClient(stream)
            greeting = await client.read_greeting()
        """
        self.greeting = await self.read_reply()
        return self.greeting

    async def read_data_lines(self, *, unstuff: bool = True) -> list[bytes]:
        """Read the data lines of a multi-line reply, through the ``.`` line.

        Args:
            unstuff: Remove byte-stuffing (a leading ``.``); False gives the lines as
                sent, to test the stuffing itself.

        Example::

            await client.send_line("UIDL")
            if (await client.read_reply()).ok:
                lines = await client.read_data_lines()
        """
        lines: list[bytes] = []
        while True:
            line = await self.read_line()
            if line == b".":
                return lines
            lines.append(_unstuff(line) if unstuff else line)

    async def command(self, line: bytes | str) -> Reply:
        """Send a command and return its (single-line) reply.

        Example::

            reply = await client.command("DELE 1")
            assert reply.ok
        """
        await self.send_line(line)
        return await self.read_reply()

    async def multiline(self, line: bytes | str) -> Reply:
        """Send a command whose ``+OK`` reply is multi-line; return the whole reply.

        The data lines are in :attr:`Reply.lines`, byte-stuffing removed.  A ``-ERR``
        reply has none.

        Example::

            capa = await client.multiline("CAPA")
            assert b"UIDL" in capa.lines
        """
        reply = await self.command(line)
        if not reply.ok:
            return reply
        lines = tuple(await self.read_data_lines())
        return Reply(reply.status, reply.text, reply.code, lines, reply.line)

    async def _require(self, line: str, *, multiline: bool = False) -> Reply:
        reply = await (self.multiline(line) if multiline else self.command(line))
        if not reply.ok:
            raise UnexpectedReply(line, reply)
        return reply

    # -- commands ------------------------------------------------------------------
    async def login(self, user: str, password: str) -> Reply:
        """Log in with USER and PASS; return the reply to PASS.

        Example::

            await client.login("alice", "secret")

        Raises:
            UnexpectedReply: USER or PASS was answered ``-ERR``.
        """
        await self._require(f"USER {user}")
        reply = await self.command(f"PASS {password}")
        if not reply.ok:
            raise UnexpectedReply("PASS ***", reply)
        return reply

    async def stat(self) -> tuple[int, int]:
        """Return STAT's (message count, size in octets).

        Example::

            count, octets = await client.stat()

        Raises:
            UnexpectedReply: ``-ERR``, or not ``+OK count octets``.
        """
        reply = await self._require("STAT")
        match = _NUMBER_PAIR_RE.fullmatch(reply.text)
        if match is None:
            raise UnexpectedReply("STAT", reply)
        return int(match[1]), int(match[2])

    async def list_sizes(self) -> dict[int, int]:
        """Return LIST's scan listing as {message number: size}.

        Example::

            assert await client.list_sizes() == {1: 120, 3: 4711}  # 2 is deleted
        """
        reply = await self._require("LIST", multiline=True)
        sizes: dict[int, int] = {}
        for line in reply.lines:
            match = _NUMBER_PAIR_RE.fullmatch(line.decode("ascii", "replace"))
            if match is None:
                raise UnexpectedReply("LIST", reply)
            sizes[int(match[1])] = int(match[2])
        return sizes

    async def uidl(self) -> dict[int, str]:
        """Return UIDL's listing as {message number: unique-id}.

        Example::

            before = await client.uidl()
        """
        reply = await self._require("UIDL", multiline=True)
        uids: dict[int, str] = {}
        for line in reply.lines:
            match = _UIDL_LINE_RE.fullmatch(line.decode("utf-8", "surrogateescape"))
            if match is None:
                raise UnexpectedReply("UIDL", reply)
            uids[int(match[1])] = match[2]
        return uids

    async def retr(self, number: int) -> bytes:
        """Return message ``number`` as sent: CRLF line ends, byte-stuffing removed.

        Example::

            assert await client.retr(1) == b"Subject: hi\\r\\n\\r\\nHello\\r\\n"

        Raises:
            UnexpectedReply: ``-ERR`` (no such message, deleted, ...).
        """
        return (await self._require(f"RETR {number}", multiline=True)).body

    async def top(self, number: int, lines: int) -> bytes:
        """Return TOP's header, blank line and ``lines`` body lines of a message.

        Example::

            header = await client.top(1, 0)
        """
        return (await self._require(f"TOP {number} {lines}", multiline=True)).body

    async def quit(self) -> Reply:
        """Send QUIT and return the reply (``-ERR`` if the removal failed).

        The server closes the connection next; :meth:`read_until_closed` waits for it.

        Example::

            assert (await client.quit()).ok
        """
        return await self.command("QUIT")

    # -- closing ---------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the client's end of the connection (a drop, not a QUIT).

        Example::

            await client.aclose()  # the server rolls back: nothing is removed
        """
        self._closed_here = True
        await self.stream.aclose()

    async def __aenter__(self) -> POP3TestClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


# -- running servers ------------------------------------------------------------------------


def _as_server(
    server: POP3Server | Callable[[], POP3Handler], options: Mapping[str, Any]
) -> POP3Server:
    if isinstance(server, POP3Server):
        if options:
            raise TypeError("server options given with a ready-made POP3Server")
        return server
    return POP3Server(server, **{"limits": TEST_LIMITS, **options})


@contextmanager
def _single_exception() -> Iterator[None]:
    """Let one exception out of a nursery as itself, not in an exception group."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        exc = group.exceptions[0]
        context = exc.__context__
        try:
            raise exc
        finally:
            exc.__context__ = context
            del exc, context, group


@asynccontextmanager
async def open_memory_session(
    server: POP3Server | Callable[[], POP3Handler],
    /,
    *,
    read_greeting: bool = True,
    lockstep: bool = False,
    strict: bool = True,
    **server_options: Any,
) -> AsyncIterator[POP3TestClient]:
    """Run one connection of a handler over memory streams; yield its client.

    The server side is :meth:`~trio_pop3.POP3Server.handle_stream` in a nursery of this context.
    No sockets or real time are involved, so timeouts are tested instantly under
    pytest-trio's ``autojump_clock`` (or a :class:`trio.testing.MockClock`).

    Args:
        server: A handler factory (a :class:`~trio_pop3.POP3Handler` subclass or a
            ``functools.partial`` of one), or a ready-made :class:`~trio_pop3.POP3Server`
            (to look at ``active_connections`` or share one among sessions).
        read_greeting: Read the greeting first (into :attr:`POP3TestClient.greeting`).
        lockstep: Use ``trio.testing.lockstep_stream_pair()``, which has no buffer:
            a server that writes while the client is not reading blocks, which
            exposes backpressure bugs.
        strict: See :class:`POP3TestClient`.
        **server_options: Options of :class:`~trio_pop3.POP3Server` when ``server`` is a
            factory, e.g. ``timeout=600``; ``limits`` defaults to :data:`TEST_LIMITS`.

    Example::

        async def test_idle_timeout(autojump_clock):
            async with open_memory_session(MyHandler, timeout=600) as client:
                start = trio.current_time()
                assert await client.read_until_closed() == b""
                assert trio.current_time() - start == 600

    Resource handling:
        On exit the client's end is closed (unless it was already) and the context
        waits for the session to end, so the handler's ``disconnect()`` hook has run:
        a maildrop lock is free again afterwards.

    Error handling:
        An exception in the body cancels the session and propagates as itself (not
        inside an exception group); so does an exception that escapes the server
        (only with ``catch_errors=False``).
    """
    pop3 = _as_server(server, server_options)
    client_stream: trio.abc.Stream
    server_stream: trio.abc.Stream
    if lockstep:
        client_stream, server_stream = trio.testing.lockstep_stream_pair()
    else:
        client_stream, server_stream = trio.testing.memory_stream_pair()
    client = POP3TestClient(client_stream, strict=strict)
    with _single_exception():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pop3.handle_stream, server_stream)
            if read_greeting:
                await client.read_greeting()
            yield client
            if not client._closed_here:
                await client.aclose()


@final
class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """A ``trio.abc.Listener`` whose connections are in-memory stream pairs.

    :meth:`connect` makes a pair, queues the server end for :meth:`accept` and returns
    the client end.  Use it with :meth:`~trio_pop3.POP3Server.serve_listeners` to test a whole
    server (connection limits, shutdown) without sockets.

    Args:
        lockstep: Make unbuffered pairs (``trio.testing.lockstep_stream_pair``).

    Example::

        listener = MemoryListener()
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve_listeners, [listener])
            async with await listener.open_client() as client:
                await client.login("alice", "secret")
            nursery.cancel_scope.cancel()

    Resource handling:
        :meth:`aclose` closes the queued connections nobody accepted; afterwards
        :meth:`connect` raises ``trio.BrokenResourceError`` (connection refused) and
        :meth:`accept` raises ``trio.ClosedResourceError``.
    """

    def __init__(self, *, lockstep: bool = False) -> None:
        #: Whether connections are unbuffered lockstep pairs.
        self.lockstep = lockstep
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](float("inf"))
        #: How many connections were accepted so far.
        self.accepted = 0

    async def connect(self) -> trio.abc.Stream:
        """Open a connection and return the client's end.

        Example::

            stream = await listener.connect()
        """
        client: trio.abc.Stream
        server: trio.abc.Stream
        if self.lockstep:
            client, server = trio.testing.lockstep_stream_pair()
        else:
            client, server = trio.testing.memory_stream_pair()
        await self._send.send(server)
        return client

    async def open_client(
        self, *, read_greeting: bool = True, strict: bool = True
    ) -> POP3TestClient:
        """Open a connection and return a :class:`POP3TestClient` on it.

        Example::

            client = await listener.open_client()
            assert client.greeting is not None and client.greeting.ok
        """
        client = POP3TestClient(await self.connect(), strict=strict)
        if read_greeting:
            try:
                await client.read_greeting()
            except BaseException:
                await client.aclose()
                raise
        return client

    async def accept(self) -> trio.abc.Stream:
        """Return the server end of the next connection (waits for :meth:`connect`).

        Example::

            stream = await listener.accept()
        """
        stream = await self._receive.receive()
        self.accepted += 1
        return stream

    async def aclose(self) -> None:
        """Stop listening; connections not yet accepted are closed.

        Example::

            await listener.aclose()
        """
        while True:
            try:
                stream = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.ClosedResourceError):
                break
            await trio.aclose_forcefully(stream)
        self._receive.close()
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def serve_on_loopback(
    server: POP3Server | Callable[[], POP3Handler],
    /,
    *,
    host: str = "127.0.0.1",
    **server_options: Any,
) -> AsyncIterator[tuple[str, int]]:
    """Serve on a free port of the loopback interface; yield ``(host, port)``.

    The server's own ``port`` and ``host`` are not used: the listener is opened here on
    port 0 and handed to :meth:`~trio_pop3.POP3Server.serve_listeners`.  Use it for clients that
    need a real socket, such as :mod:`poplib` in a worker thread.

    Args:
        server: A :class:`~trio_pop3.POP3Server`, or a handler factory to build one
            with ``server_options`` (``limits`` defaults to :data:`TEST_LIMITS`).
        host: The address to bind, e.g. ``"::1"``.
        **server_options: See :class:`~trio_pop3.POP3Server`.

    Example::

        async with serve_on_loopback(MyHandler) as (host, port):
            def fetch() -> int:
                pop = poplib.POP3(host, port)
                pop.user("alice")
                pop.pass_("secret")
                count = pop.stat()[0]
                pop.quit()
                return count

            assert await trio.to_thread.run_sync(fetch) == 2

    Resource handling:
        On exit the server is cancelled: open sessions end without UPDATE and run
        their ``disconnect()`` hooks; the listener is closed.

    Error handling:
        An exception from the body, or one that escapes the server, propagates as
        itself (not in an exception group).
    """
    pop3 = _as_server(server, server_options)
    listeners = await trio.open_tcp_listeners(0, host=host)
    sockname = listeners[0].socket.getsockname()
    with _single_exception():
        async with trio.open_nursery() as nursery:
            await nursery.start(pop3.serve_listeners, listeners)
            yield str(sockname[0]), int(sockname[1])
            nursery.cancel_scope.cancel()


# -- conformance ----------------------------------------------------------------------------

#: The rules :func:`check_handler` and :func:`check_mailbox_backend` check, by their
#: ``RFC-CHECKLIST.md`` ID.  Pass IDs in ``skip`` to leave rules out, for example
#: ``skip={"LOCK-02"}`` for a server that allows concurrent sessions on purpose.
CONFORMANCE_RULES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "GREET-01": "the greeting is a single +OK line",
        "RESP-01": "every reply starts with +OK or -ERR",
        "RESP-02": "every line the server sends ends in CRLF",
        "RESP-03": "the first line of a reply is at most 512 octets",
        "CAPA-01": "CAPA answers in AUTHORIZATION and in TRANSACTION",
        "CAPA-03": "capabilities announced before login are announced after it too",
        "WIRE-07": "an unknown or malformed command gets -ERR",
        "WIRE-08": "a command that is not valid in the current state gets -ERR",
        "USER-04": "a wrong password gets -ERR; the client may then log in",
        "CODE-07": "with AUTH-RESP-CODE, a wrong password gets -ERR [AUTH]",
        "STATE-05": "QUIT in AUTHORIZATION answers +OK and closes, without UPDATE",
        "STATE-02": "after login every message is there, none marked deleted",
        "STAT-01": "STAT is '+OK count octets' over the messages not marked deleted",
        "LIST-01": "LIST gives 'number size' for each message not marked deleted",
        "LIST-02": "LIST n answers '+OK n size'",
        "UIDL-01": "UIDL gives 'number unique-id' lines; UIDL n answers '+OK n unique-id'",
        "UIDL-02": "a unique-id is 1 to 70 characters in 0x21 to 0x7E",
        "UIDL-03": "unique-ids persist across sessions, with or without UPDATE",
        "UIDL-04": "different messages have different unique-ids",
        "RETR-01": "RETR n sends the message as stored, with CRLF line ends",
        "DOT-02": "a line starting with '.' is byte-stuffed, the first line included",
        "DOT-07": "an empty maildrop: STAT '+OK 0 0', LIST and UIDL '+OK' then '.'",
        "SIZE-01": "a message's LIST size is the octet count RETR sends (CRLF, unstuffed)",
        "TOP-01": "TOP n k sends the header, the blank line and k body lines",
        "TOP-02": "TOP n 0 sends the header and the blank line; a huge k the whole message",
        "TRANS-01": "message numbers do not change within a session (DELE renumbers nothing)",
        "TRANS-02": "any reference to a message marked deleted gets -ERR",
        "TRANS-03": "message number 0, past the end, or not a number gets -ERR",
        "DELE-01": "DELE n answers +OK and only marks the message",
        "NOOP-01": "NOOP answers +OK in TRANSACTION",
        "RSET-01": "RSET unmarks every message; DELE, RSET, QUIT removes nothing",
        "STATE-06": "a session that ends without QUIT removes nothing",
        "STATE-07": "QUIT removes exactly the messages marked deleted, answers, and closes",
        "LOCK-01": "the lock covers one maildrop: another user can log in meanwhile",
        "LOCK-02": "a second login to a maildrop in use gets -ERR [IN-USE]",
        "LOCK-03": "the lock is released after QUIT and after a dropped connection",
    }
)

#: Rules only :func:`check_mailbox_backend` checks (it knows a second, empty maildrop).
_MAILBOX_ONLY_RULES: Final = frozenset({"DOT-07", "LOCK-01"})


def _large_message() -> bytes:
    lines = [b"From: big@example.org", b"X-Conformance-Id: 5", b"Subject: large", b""]
    for n in range(4000):
        prefix = b"." if n % 7 == 0 else b""
        lines.append(prefix + b"line %05d " % n + b"x" * 40)
    return b"\n".join(lines) + b"\n"


#: The messages :func:`check_mailbox_backend` stores (and :func:`check_handler`'s
#: default): CRLF and LF line ends, lines that need byte-stuffing (``.x``, ``.``,
#: ``..``), a first line that starts with ``.``, no final line end, an 8-bit body,
#: and a message of about 200 KB that crosses every chunk boundary.  Each carries
#: an ``X-Conformance-Id`` header so the check finds it whatever the numbering.
CONFORMANCE_MESSAGES: Final[tuple[bytes, ...]] = (
    b"From: a@example.org\r\nX-Conformance-Id: 0\r\nSubject: CRLF\r\n\r\nline 1\r\nline 2\r\n",
    b"From: b@example.org\nX-Conformance-Id: 1\nSubject: dots\n\n.dotted\n.\n..two\nend\n",
    b".First-Line: starts with a dot\nX-Conformance-Id: 2\nSubject: dot first\n\nbody\n",
    b"From: c@example.org\nX-Conformance-Id: 3\nSubject: no final newline\n\nlast line",
    b"From: d@example.org\nX-Conformance-Id: 4\nSubject: 8-bit\nMIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
    b"Gr\xc3\xbc\xc3\x9fe\n\n\nafter two blank lines\n",
    _large_message(),
)


@final
@dataclass(frozen=True, slots=True)
class RuleFailure:
    """One broken rule, with what was seen.

    Attributes:
        rule: The ``RFC-CHECKLIST.md`` ID, e.g. ``"SIZE-01"``.
        title: What the rule says (:data:`CONFORMANCE_RULES`).
        details: One entry per failed observation.

    Example::

        failure = RuleFailure("SIZE-01", CONFORMANCE_RULES["SIZE-01"], ("...",))
    """

    rule: str
    title: str
    details: tuple[str, ...]

    def __str__(self) -> str:
        lines = [f"{self.rule} ({self.title}):"]
        lines += [f"    {detail}" for detail in self.details]
        return "\n".join(lines)


@final
@dataclass(frozen=True, slots=True)
class ConformanceReport:
    """What a conformance check checked.

    Attributes:
        passed: IDs of the rules checked and found kept.
        failed: The rules broken (empty in a report returned normally).
        not_checked: Rule ID -> why it was not checked (skipped by the caller, the
            command is not implemented, or an earlier failure ended that part).

    Example::

        report = await check_mailbox_backend(make_store)
        assert "UIDL-03" in report.passed
    """

    passed: tuple[str, ...]
    failed: tuple[RuleFailure, ...] = ()
    not_checked: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [f"{len(self.passed)} rules kept: {', '.join(self.passed)}"]
        parts += [str(failure) for failure in self.failed]
        parts += [f"not checked: {rule} ({why})" for rule, why in self.not_checked.items()]
        return "\n".join(parts)


class ConformanceError(AssertionError):
    """The server broke one or more rules; the message lists every one.

    Attributes:
        report: The full :class:`ConformanceReport`.

    Example::

        with pytest.raises(ConformanceError) as info:
            await check_mailbox_backend(make_broken_store)
        assert "SIZE-01" in info.value.rules
    """

    def __init__(self, report: ConformanceReport) -> None:
        lines = [f"{len(report.failed)} POP3 conformance rules broken:"]
        lines += [str(failure) for failure in report.failed]
        if report.not_checked:
            lines.append("not checked: " + ", ".join(report.not_checked))
        super().__init__("\n".join(lines))
        self.report = report

    @property
    def failures(self) -> tuple[RuleFailure, ...]:
        """The broken rules."""
        return self.report.failed

    @property
    def rules(self) -> frozenset[str]:
        """The IDs of the broken rules."""
        return frozenset(failure.rule for failure in self.report.failed)


class _Abort(Exception):
    """Ends one part of the check after a failure that leaves the session unusable."""


def _wire_form(message: bytes) -> bytes:
    data = message.replace(CRLF, b"\n").replace(b"\n", CRLF)
    if data and not data.endswith(CRLF):
        data += CRLF
    return data


def _split_lines(data: bytes) -> list[bytes]:
    """Split CRLF-ended wire data into lines without line ends."""
    return data.split(CRLF)[:-1] if data else []


def _top_form(lines: list[bytes], body_lines: int) -> list[bytes]:
    """The lines TOP sends: the header, the blank line, ``body_lines`` body lines."""
    if b"" not in lines:
        return lines
    blank = lines.index(b"")
    return lines[: blank + 1 + body_lines]


def _is_multiline(line: str) -> bool:
    """Whether ``line`` is a command whose +OK reply has data lines."""
    words = line.split()
    verb = words[0].upper() if words else ""
    return verb in ("RETR", "TOP", "CAPA") or (verb in ("LIST", "UIDL") and len(words) == 1)


def _not_stuffed(raw: Iterable[bytes]) -> list[bytes]:
    """Data lines as sent that start with one "." only: a line that was not stuffed."""
    return [line for line in raw if line.startswith(b".") and line[1:2] != b"."]


def _cap_tags(lines: Iterable[bytes]) -> set[str]:
    return {line.split(b" ", 1)[0].decode("ascii", "replace").upper() for line in lines}


class _Checker:
    """Runs the conformance rules over one server and collects what breaks."""

    def __init__(
        self,
        server: POP3Server,
        user: str,
        password: str,
        messages: Sequence[bytes] | None,
        count: int,
        skip: Iterable[str],
    ) -> None:
        self.server = server
        self.user = user
        self.password = password
        self.expected = [_wire_form(m) for m in messages] if messages is not None else None
        self.count = count
        if count < 3:
            raise ValueError("the conformance check needs a maildrop of at least 3 messages")
        self.skip = frozenset(skip)
        unknown = self.skip - CONFORMANCE_RULES.keys()
        if unknown:
            raise ValueError(f"unknown rules in skip: {sorted(unknown)}")
        self.passed: set[str] = set()
        self.failed: dict[str, list[str]] = {}
        self.not_checked: dict[str, str] = dict.fromkeys(self.skip, "skipped by the caller")
        self.current = "STATE-02"
        self.capa_auth: set[str] | None = None
        self.has_uidl = True
        self.has_top = True

    # -- bookkeeping ---------------------------------------------------------------
    def check(self, rule: str, ok: bool, detail: str) -> bool:
        if rule in self.skip:
            return ok
        if ok:
            self.passed.add(rule)
        else:
            self.failed.setdefault(rule, []).append(detail)
        return ok

    def at(self, rule: str) -> None:
        """Name the rule the next steps check, for errors nobody expected."""
        self.current = rule

    def not_reached(self, rules: Iterable[str], why: str) -> None:
        for rule in rules:
            if rule not in self.passed and rule not in self.failed:
                self.not_checked.setdefault(rule, why)

    async def part(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        try:
            await body()
        except _Abort:
            pass
        except ProtocolViolation as exc:
            self.check(exc.rule, False, f"{name}: {exc}")
        except UnexpectedReply as exc:
            self.check(self.current, False, f"{name}: {exc}")
        except (EOFError, trio.BrokenResourceError) as exc:
            self.check(self.current, False, f"{name}: connection lost: {exc}")

    def report(self, rules: Iterable[str]) -> ConformanceReport:
        failed = tuple(
            RuleFailure(rule, CONFORMANCE_RULES[rule], tuple(details))
            for rule, details in sorted(self.failed.items())
        )
        for rule in ("RESP-01", "RESP-02", "RESP-03"):
            # Every reply went through the strict client, which raises on a violation.
            self.check(rule, True, "")
        self.not_reached(rules, "not reached: an earlier failure ended that part")
        passed = tuple(sorted(self.passed - self.failed.keys()))
        not_checked = {r: w for r, w in sorted(self.not_checked.items()) if r not in self.failed}
        return ConformanceReport(passed, failed, MappingProxyType(not_checked))

    # -- sessions --------------------------------------------------------------------
    @asynccontextmanager
    async def session(self) -> AsyncIterator[POP3TestClient]:
        async with open_memory_session(self.server, read_greeting=False) as client:
            self.at("GREET-01")
            greeting = await client.read_greeting()
            if not self.check("GREET-01", greeting.ok, f"greeting {str(greeting)!r}"):
                raise _Abort
            yield client

    async def login(self, client: POP3TestClient, user: str | None = None) -> None:
        self.at("STATE-02")
        user = self.user if user is None else user
        reply = await client.command(f"USER {user}")
        if reply.ok:
            reply = await client.command(f"PASS {self.password}")
        if not self.check("STATE-02", reply.ok, f"login as {user!r}: {str(reply)!r}"):
            raise _Abort

    async def expect_err(self, client: POP3TestClient, rule: str, line: str, why: str) -> None:
        self.at(rule)
        reply = await client.command(line)
        if reply.ok and _is_multiline(line):
            await client.read_data_lines()  # stay in step with the server
        self.check(rule, not reply.ok, f"{line!r} {why}: answered {str(reply)!r}")

    async def stat(self, client: POP3TestClient, when: str) -> tuple[int, int]:
        self.at("STAT-01")
        reply = await client.command("STAT")
        match = _NUMBER_PAIR_RE.fullmatch(reply.text) if reply.ok else None
        if not self.check("STAT-01", match is not None, f"STAT {when}: {str(reply)!r}"):
            raise _Abort
        assert match is not None
        return int(match[1]), int(match[2])

    async def listing(self, client: POP3TestClient, when: str) -> dict[int, int]:
        self.at("LIST-01")
        reply = await client.multiline("LIST")
        if not self.check("LIST-01", reply.ok, f"LIST {when}: {str(reply)!r}"):
            raise _Abort
        sizes: dict[int, int] = {}
        for line in reply.lines:
            match = _NUMBER_PAIR_RE.fullmatch(line.decode("ascii", "replace"))
            if not self.check("LIST-01", match is not None, f"LIST {when}: line {line!r}"):
                raise _Abort
            assert match is not None
            sizes[int(match[1])] = int(match[2])
        return sizes

    async def unique_ids(self, client: POP3TestClient, when: str) -> dict[int, str] | None:
        if not self.has_uidl:
            self.not_reached(("UIDL-01", "UIDL-02", "UIDL-03", "UIDL-04"), "UIDL not announced")
            return None
        self.at("UIDL-01")
        reply = await client.multiline("UIDL")
        if not self.check("UIDL-01", reply.ok, f"UIDL {when}: {str(reply)!r}"):
            raise _Abort
        uids: dict[int, str] = {}
        for line in reply.lines:
            match = _UIDL_LINE_RE.fullmatch(line.decode("utf-8", "surrogateescape"))
            if not self.check("UIDL-01", match is not None, f"UIDL {when}: line {line!r}"):
                raise _Abort
            assert match is not None
            uid = match[2]
            self.check(
                "UIDL-02",
                _UID_RE.fullmatch(uid) is not None,
                f"UIDL {when}: unique-id {uid!r} of message {match[1]}",
            )
            uids[int(match[1])] = uid
        return uids

    @staticmethod
    def identify(body: bytes) -> int | None:
        match = _MARKER_RE.search(body)
        return int(match[1]) if match else None

    # -- the parts -------------------------------------------------------------------
    async def check_authorization(self) -> None:
        async with self.session() as client:
            self.at("CAPA-01")
            capa = await client.multiline("CAPA")
            if self.check("CAPA-01", capa.ok, f"CAPA before login: {str(capa)!r}"):
                self.capa_auth = _cap_tags(capa.lines)
                self.has_top = "TOP" in self.capa_auth
                self.has_uidl = "UIDL" in self.capa_auth
                if not self.has_top:
                    self.not_reached(("TOP-01", "TOP-02"), "TOP not announced")
            for line in ("STAT", "LIST", "RETR 1", "DELE 1", "RSET", "NOOP", "UIDL", "TOP 1 0"):
                await self.expect_err(client, "WIRE-08", line, "before login")
            await self.expect_err(client, "WIRE-07", "XYZZY", "(unknown command)")
            await self.expect_err(client, "WIRE-07", "", "(empty line)")
            self.at("USER-04")
            reply = await client.command(f"USER {self.user}")
            if reply.ok:
                reply = await client.command(f"PASS {self.password}-wrong")
                self.check("USER-04", not reply.ok, f"PASS with a wrong password: {reply}")
                if reply.ok:
                    raise _Abort
                if self.capa_auth is not None and "AUTH-RESP-CODE" in self.capa_auth:
                    self.check(
                        "CODE-07",
                        (reply.code or "").upper() == "AUTH",
                        f"wrong password answered {str(reply)!r}",
                    )
                else:
                    self.not_reached(["CODE-07"], "AUTH-RESP-CODE not announced")
            await self.login(client)
            for line in (f"USER {self.user}", f"PASS {self.password}"):
                await self.expect_err(client, "WIRE-08", line, "after login")
            self.at("CAPA-01")
            capa = await client.multiline("CAPA")
            after_ok = self.check("CAPA-01", capa.ok, f"CAPA after login: {str(capa)!r}")
            if after_ok and self.capa_auth is not None:
                lost = self.capa_auth - _cap_tags(capa.lines) - {"STLS"}
                self.check("CAPA-03", not lost, f"gone after login: {sorted(lost)}")
            self.at("NOOP-01")
            reply = await client.command("NOOP")
            self.check("NOOP-01", reply.ok, f"NOOP after login: {str(reply)!r}")
            await client.quit()
        async with self.session() as client:
            self.at("STATE-05")
            await client.command(f"USER {self.user}")
            reply = await client.quit()
            self.check("STATE-05", reply.ok, f"QUIT before login: {str(reply)!r}")
            rest = await client.read_until_closed()
            self.check("STATE-05", rest == b"", f"after QUIT before login: {rest[:80]!r}")

    async def check_listing(self) -> None:
        n = self.count
        async with self.session() as client:
            await self.login(client)
            count, octets = await self.stat(client, "after login")
            self.check("STATE-02", count == n, f"STAT after login: {count} messages, not {n}")
            sizes = await self.listing(client, "after login")
            self.check(
                "LIST-01",
                sorted(sizes) == list(range(1, n + 1)),
                f"LIST numbers {sorted(sizes)}, expected 1 to {n}",
            )
            self.check(
                "STAT-01",
                sum(sizes.values()) == octets,
                f"STAT says {octets} octets, LIST sizes add up to {sum(sizes.values())}",
            )
            if self.expected is not None:
                want = sorted(len(m) for m in self.expected)
                self.check(
                    "SIZE-01",
                    sorted(sizes.values()) == want,
                    f"LIST sizes {sorted(sizes.values())}, the messages have {want}",
                )
            for number, size in sizes.items():
                self.at("LIST-02")
                reply = await client.command(f"LIST {number}")
                self.check(
                    "LIST-02",
                    reply.ok and reply.text.split()[:2] == [str(number), str(size)],
                    f"LIST {number}: {str(reply)!r}, the listing said {size}",
                )
            uids = await self.unique_ids(client, "after login")
            if uids is not None:
                self.check(
                    "UIDL-01",
                    sorted(uids) == list(range(1, n + 1)),
                    f"UIDL numbers {sorted(uids)}, expected 1 to {n}",
                )
                if self.expected is not None:
                    self.check(
                        "UIDL-04",
                        len(set(uids.values())) == len(uids),
                        f"one unique-id for different messages: {sorted(uids.values())}",
                    )
                for number, uid in uids.items():
                    self.at("UIDL-01")
                    reply = await client.command(f"UIDL {number}")
                    self.check(
                        "UIDL-01",
                        reply.ok and reply.text == f"{number} {uid}",
                        f"UIDL {number}: {str(reply)!r}, the listing said {uid!r}",
                    )
            for line in ("LIST 0", f"LIST {n + 1}", "RETR abc", "RETR -1", "DELE 0", "LIST 1x"):
                await self.expect_err(client, "TRANS-03", line, "(no such message)")
            await self.expect_err(client, "WIRE-07", "TOP 1", "(no line count)")
            await client.quit()

    async def check_retrieval(self) -> None:
        async with self.session() as client:
            await self.login(client)
            sizes = await self.listing(client, "after login")
            seen: set[int] = set()
            for number, size in sorted(sizes.items()):
                self.at("RETR-01")
                reply = await client.command(f"RETR {number}")
                if not self.check("RETR-01", reply.ok, f"RETR {number}: {str(reply)!r}"):
                    continue
                raw = await client.read_data_lines(unstuff=False)
                bad = _not_stuffed(raw)
                if not self.check("DOT-02", not bad, f"RETR {number}: {bad[:1]!r} not stuffed"):
                    raise _Abort
                lines = [_unstuff(line) for line in raw]
                body = b"".join(line + CRLF for line in lines)
                self.check(
                    "SIZE-01",
                    len(body) == size,
                    f"message {number}: LIST size {size}, RETR sent {len(body)} octets",
                )
                expected = self.expected_for(number, body, seen)
                if expected is not None:
                    self.compare(number, lines, _split_lines(expected))
                if self.has_top:
                    await self.check_top(client, number, _split_lines(expected or body))
            await client.quit()

    def expected_for(self, number: int, body: bytes, seen: set[int]) -> bytes | None:
        if self.expected is None:
            return None
        index = self.identify(body)
        ok = index is not None and 0 <= index < len(self.expected) and index not in seen
        if not self.check("RETR-01", ok, f"RETR {number}: not one of the stored messages"):
            return None
        assert index is not None
        seen.add(index)
        return self.expected[index]

    def compare(self, number: int, got: list[bytes], want: list[bytes]) -> None:
        if got == want:
            self.check("RETR-01", True, "")
            self.check("DOT-02", True, "")
            return
        pairs = zip(got, want, strict=False)
        index = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(got), len(want)))
        line_got = got[index] if index < len(got) else None
        line_want = want[index] if index < len(want) else None
        # A lone "." sent unstuffed ends the reply early: the stored line starts with ".".
        unstuffed_dot = line_want is not None and line_want.startswith(b".")
        self.check(
            "DOT-02" if unstuffed_dot else "RETR-01",
            False,
            f"RETR {number} line {index + 1}: got {line_got!r}, stored {line_want!r}",
        )
        if unstuffed_dot:
            raise _Abort

    async def check_top(self, client: POP3TestClient, number: int, lines: list[bytes]) -> None:
        for body_lines, rule in ((0, "TOP-02"), (1, "TOP-01"), (10**6, "TOP-02")):
            self.at(rule)
            reply = await client.command(f"TOP {number} {body_lines}")
            if not self.check(rule, reply.ok, f"TOP {number} {body_lines}: {str(reply)!r}"):
                continue
            raw = await client.read_data_lines(unstuff=False)
            bad = _not_stuffed(raw)
            if not self.check("DOT-02", not bad, f"TOP {number}: {bad[:1]!r} not stuffed"):
                raise _Abort
            got = [_unstuff(line) for line in raw]
            want = _top_form(lines, body_lines)
            first = next(
                (f"{a!r} != {b!r}" for a, b in zip(got, want, strict=False) if a != b), "none"
            )
            self.check(
                rule,
                got == want,
                f"TOP {number} {body_lines}: {len(got)} lines, expected {len(want)}"
                f" (first difference: {first})",
            )

    async def check_locking(self) -> None:
        async with self.session() as first:
            await self.login(first)
            async with self.session() as second:
                self.at("LOCK-02")
                reply = await second.command(f"USER {self.user}")
                if reply.ok:
                    reply = await second.command(f"PASS {self.password}")
                self.check(
                    "LOCK-02",
                    not reply.ok and (reply.code or "").upper() == "IN-USE",
                    f"second login while the first session is open: {str(reply)!r}",
                )
                if reply.ok:
                    await second.quit()
            self.at("LOCK-03")
            reply = await first.quit()
            self.check("LOCK-03", reply.ok, f"QUIT: {str(reply)!r}")
            await first.read_until_closed()
        for after in ("a QUIT", "a dropped session"):
            async with self.session() as client:
                self.at("LOCK-03")
                reply = await client.command(f"USER {self.user}")
                reply = await client.command(f"PASS {self.password}")
                self.check("LOCK-03", reply.ok, f"login after {after}: {str(reply)!r}")
                # The first round leaves without QUIT: a dropped connection.
                if reply.ok and after != "a QUIT":
                    await client.quit()

    async def check_deletion(self) -> None:
        async with self.session() as client:
            await self.login(client)
            count0, octets0 = await self.stat(client, "after login")
            sizes0 = await self.listing(client, "after login")
            uids0 = await self.unique_ids(client, "after login")
            if not self.check("LIST-01", {1, 2} <= sizes0.keys(), f"LIST: {sizes0}"):
                raise _Abort
            self.at("DELE-01")
            reply = await client.command("DELE 1")
            if not self.check("DELE-01", reply.ok, f"DELE 1: {str(reply)!r}"):
                raise _Abort
            for line in ("DELE 1", "RETR 1", "LIST 1", "TOP 1 0", "UIDL 1"):
                if (line.startswith("TOP") and not self.has_top) or (
                    line.startswith("UIDL") and uids0 is None
                ):
                    continue
                await self.expect_err(client, "TRANS-02", line, "after DELE 1")
            count, octets = await self.stat(client, "after DELE 1")
            want = (count0 - 1, octets0 - sizes0[1])
            self.check(
                "STAT-01",
                (count, octets) == want,
                f"STAT after DELE 1: {count} {octets}, expected {want[0]} {want[1]}",
            )
            sizes = await self.listing(client, "after DELE 1")
            self.check(
                "TRANS-01",
                sizes == {k: v for k, v in sizes0.items() if k != 1},
                f"LIST after DELE 1: {sizes}, before: {sizes0}",
            )
            uids = await self.unique_ids(client, "after DELE 1")
            if uids is not None and uids0 is not None:
                self.check(
                    "TRANS-01",
                    uids == {k: v for k, v in uids0.items() if k != 1},
                    f"UIDL after DELE 1: {uids}, before: {uids0}",
                )
            self.at("TRANS-01")
            reply = await client.command("LIST 2")
            self.check("TRANS-01", reply.ok, f"LIST 2 after DELE 1: {str(reply)!r}")
            self.at("RSET-01")
            reply = await client.command("RSET")
            self.check("RSET-01", reply.ok, f"RSET: {str(reply)!r}")
            count, octets = await self.stat(client, "after RSET")
            self.check(
                "RSET-01",
                (count, octets) == (count0, octets0),
                f"STAT after RSET: {count} {octets}, expected {count0} {octets0}",
            )
            reply = await client.command("LIST 1")
            self.check("RSET-01", reply.ok, f"LIST 1 after RSET: {str(reply)!r}")
            self.at("DELE-01")
            for number in (1, 2):
                reply = await client.command(f"DELE {number}")
                self.check("DELE-01", reply.ok, f"DELE {number}: {str(reply)!r}")
            # Leave without QUIT: the connection drops.
        async with self.session() as client:
            await self.login(client)
            count, octets = await self.stat(client, "after a dropped session")
            self.check(
                "STATE-06",
                (count, octets) == (count0, octets0),
                f"DELE 1, DELE 2, connection dropped: now {count} messages ({octets} octets),"
                f" was {count0} ({octets0})",
            )
            uids = await self.unique_ids(client, "in a new session")
            if uids is not None and uids0 is not None:
                self.check("UIDL-03", uids == uids0, f"UIDL changed: {uids0} -> {uids}")
            self.at("RSET-01")
            await client.command("DELE 1")
            await client.command("RSET")
            reply = await client.quit()
            self.check("RSET-01", reply.ok, f"QUIT after DELE 1, RSET: {str(reply)!r}")
        async with self.session() as client:
            await self.login(client)
            count, octets = await self.stat(client, "after DELE, RSET, QUIT")
            self.check(
                "RSET-01",
                (count, octets) == (count0, octets0),
                f"DELE 1, RSET, QUIT removed something: {count} messages, was {count0}",
            )
            self.at("STATE-07")
            # RETR is safe only if the server byte-stuffs (else the session desyncs).
            readable = self.expected is not None and "DOT-02" not in self.failed
            victim = self.identify(await client.retr(2)) if readable else None
            await client.command("DELE 2")
            reply = await client.quit()
            self.check("STATE-07", reply.ok, f"QUIT after DELE 2: {str(reply)!r}")
            rest = await client.read_until_closed()
            self.check("STATE-07", rest == b"", f"data after the QUIT reply: {rest[:80]!r}")
        async with self.session() as client:
            await self.login(client)
            count, octets = await self.stat(client, "after DELE 2, QUIT")
            want = (count0 - 1, octets0 - sizes0[2])
            self.check(
                "STATE-07",
                (count, octets) == want,
                f"DELE 2, QUIT: {count} messages ({octets} octets) left, "
                f"expected {want[0]} ({want[1]})",
            )
            sizes = await self.listing(client, "after DELE 2, QUIT")
            self.check(
                "STATE-07",
                sorted(sizes) == list(range(1, count0)),
                f"messages are numbered {sorted(sizes)} in the next session",
            )
            uids = await self.unique_ids(client, "after DELE 2, QUIT")
            if uids is not None and uids0 is not None:
                left = set(uids0.values()) - {uids0[2]}
                self.check(
                    "STATE-07",
                    set(uids.values()) == left,
                    f"unique-ids left {sorted(uids.values())}, expected {sorted(left)}",
                )
                self.check(
                    "UIDL-03",
                    set(uids.values()) <= set(uids0.values()),
                    f"new unique-ids after a QUIT: {sorted(set(uids.values()) - left)}",
                )
            if self.expected is not None and readable:
                remaining = [self.identify(await client.retr(n)) for n in sorted(sizes)]
                kept = sorted(i for i in range(len(self.expected)) if i != victim)
                self.check(
                    "STATE-07",
                    sorted(i for i in remaining if i is not None) == kept,
                    f"messages left: {remaining}, expected {kept}",
                )
            await client.quit()

    async def check_empty(self, user: str) -> None:
        async with self.session() as client:
            await self.login(client, user)
            self.at("DOT-07")
            reply = await client.command("STAT")
            self.check("DOT-07", reply.text == "0 0", f"STAT of an empty maildrop: {reply}")
            for line in ("LIST", "UIDL") if self.has_uidl else ("LIST",):
                reply = await client.multiline(line)
                self.check(
                    "DOT-07",
                    reply.ok and not reply.lines,
                    f"{line} of an empty maildrop: {reply} {list(reply.lines)[:3]}",
                )
            await client.quit()

    async def check_other_user(self, user: str) -> None:
        async with self.session() as first:
            await self.login(first)
            async with self.session() as second:
                self.at("LOCK-01")
                reply = await second.command(f"USER {user}")
                reply = await second.command(f"PASS {self.password}")
                self.check(
                    "LOCK-01", reply.ok, f"{user!r} logging in while {self.user!r} is: {reply}"
                )
                if reply.ok:
                    await second.quit()
            await first.quit()


_Part = tuple[str, Callable[[], Awaitable[None]]]


async def _run(checker: _Checker, extra: Sequence[_Part]) -> ConformanceReport:
    parts: list[_Part] = [
        ("authorization", checker.check_authorization),
        ("listing", checker.check_listing),
        ("retrieval", checker.check_retrieval),
        ("locking", checker.check_locking),
        *extra,
        ("deletion", checker.check_deletion),  # last: it removes a message
    ]
    for name, body in parts:
        await checker.part(name, body)
    rules = CONFORMANCE_RULES.keys() - (set() if extra else _MAILBOX_ONLY_RULES)
    report = checker.report(sorted(rules))
    if report.failed:
        raise ConformanceError(report)
    return report


async def check_handler(
    server: POP3Server | Callable[[], POP3Handler],
    /,
    *,
    user: str,
    password: str,
    messages: Sequence[bytes] | int = CONFORMANCE_MESSAGES,
    skip: Iterable[str] = (),
    **server_options: Any,
) -> ConformanceReport:
    """Run the RFC 1939 / RFC 2449 conformance rules against a handler.

    The handler must serve a world in which ``user`` logs in with ``password`` (USER
    and PASS) to a maildrop holding ``messages``, in any order.  The check logs in
    many times over memory streams, retrieves everything, tries commands in the wrong
    state, holds the maildrop from two sessions at once, and at the very end deletes
    one message with DELE and QUIT: afterwards the maildrop holds one message fewer.

    Args:
        server: A handler factory, or a :class:`~trio_pop3.POP3Server` built on one.
        user: A user whose maildrop holds ``messages``.
        password: That user's password.
        messages: The stored messages (LF or CRLF line ends), compared byte for byte
            after CRLF normalisation; each must carry the ``X-Conformance-Id`` header
            of :data:`CONFORMANCE_MESSAGES` (use those).  For a backend that makes up
            its own content, the number of messages it holds (at least 3): then the
            content is checked for structure only (stuffing, sizes, TOP).
        skip: IDs of :data:`CONFORMANCE_RULES` to leave out.
        **server_options: Options for the :class:`~trio_pop3.POP3Server` built from a
            factory; ``limits`` defaults to :data:`TEST_LIMITS`.

    Returns:
        A :class:`ConformanceReport` of the rules checked, if none was broken.

    Raises:
        ConformanceError: rules were broken; its message lists each rule ID, what the
            rule says and what was seen.  Every rule is checked before it is raised.
        ValueError: fewer than 3 messages, or an unknown rule in ``skip``.

    Example::

        factory = functools.partial(MyHandler, db=make_test_db(CONFORMANCE_MESSAGES))
        report = await check_handler(factory, user="alice", password="secret")

    Cancellation:
        Under ``autojump_clock`` a backend that blocks in a worker thread lets the
        clock jump; run backends that use threads with the real clock.  The check has
        no timeout of its own: wrap it in ``trio.fail_after`` to bound a hang.
    """
    pop3 = _as_server(server, server_options)
    expected = None if isinstance(messages, int) else list(messages)
    count = messages if isinstance(messages, int) else len(messages)
    checker = _Checker(pop3, user, password, expected, count, skip)
    return await _run(checker, ())


async def check_mailbox_backend(
    store_factory: Callable[[Mapping[str, Sequence[bytes]]], MailStore | Awaitable[MailStore]],
    /,
    *,
    handler_class: Callable[[MailStore, Authenticator], POP3Handler] | None = None,
    verbatim: bool = True,
    skip: Iterable[str] = (),
    **server_options: Any,
) -> ConformanceReport:
    """Run the conformance rules against a :class:`~trio_pop3.mailbox.MailStore`.

    ``store_factory`` is called once with ``{user: [message, ...]}`` for two users:
    ``"alice"`` with :data:`CONFORMANCE_MESSAGES` and ``"bob"`` with none, and returns
    a store holding exactly those (it may be a coroutine function).  The store is
    served by :class:`~trio_pop3.mailbox.MailboxHandler` (or ``handler_class``) with
    a :class:`~trio_pop3.mailbox.MemoryAuthenticator`, and the rules of
    :func:`check_handler` run against it, plus DOT-07 (bob's empty maildrop) and
    LOCK-01 (bob logs in while alice's maildrop is locked).

    Args:
        store_factory: Makes a store pre-loaded with the given maildrops.
        handler_class: Called as ``handler_class(store, authenticator)`` for each
            connection; a :class:`~trio_pop3.mailbox.MailboxHandler` subclass.
        verbatim: Whether the store keeps the given bytes.  False for a backend that
            generates its messages: it must then hold as many messages as it was given
            (their content is ignored), and content is checked for structure only.
        skip: IDs of :data:`CONFORMANCE_RULES` to leave out.
        **server_options: See :func:`check_handler`.

    Returns:
        A :class:`ConformanceReport`, if no rule was broken.

    Raises:
        ConformanceError: rules were broken (all of them are listed).

    Example::

        def make_store(maildrops):
            root = tmp_path / "maildirs"
            for user, messages in maildrops.items():
                for message in messages:
                    deliver(root / user, message)
            return MaildirStore(root)

        report = await check_mailbox_backend(make_store)

    Cancellation:
        As for :func:`check_handler`.
    """
    from .mailbox import MailboxHandler, MemoryAuthenticator

    password = "conformance-secret"
    maildrops: dict[str, Sequence[bytes]] = {"alice": CONFORMANCE_MESSAGES, "bob": ()}
    made = store_factory(maildrops)
    store = await made if inspect.isawaitable(made) else made
    if not isinstance(store, MailStore):
        raise TypeError(f"store_factory returned {store!r}, not a MailStore")
    authenticator = MemoryAuthenticator({"alice": password, "bob": password})
    make_handler = handler_class if handler_class is not None else MailboxHandler
    pop3 = _as_server(functools.partial(make_handler, store, authenticator), server_options)
    expected = list(CONFORMANCE_MESSAGES) if verbatim else None
    checker = _Checker(pop3, "alice", password, expected, len(CONFORMANCE_MESSAGES), skip)
    extra: list[_Part] = [
        ("empty maildrop", functools.partial(checker.check_empty, "bob")),
        ("another user", functools.partial(checker.check_other_user, "bob")),
    ]
    return await _run(checker, extra)

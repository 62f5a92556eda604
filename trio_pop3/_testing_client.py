"""The test client of :mod:`trio_pop3.testing`: :class:`POP3TestClient` and its replies.

The names are public through :mod:`trio_pop3.testing`; see its docstring.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal, final

import trio

__all__ = ["POP3TestClient", "ProtocolViolation", "Reply", "UnexpectedReply"]


CRLF: Final = b"\r\n"

#: RFC 2449 section 4 (RESP-03): the first line of a reply is at most 512 octets
#: including CRLF.
MAX_REPLY_LINE: Final = 512

#: Receive size of the test client; one read takes a whole reply of a small message.
_RECEIVE_SIZE: Final = 65536

_NUMBER_PAIR_RE: Final = re.compile(r"([0-9]+) ([0-9]+)")
_UIDL_LINE_RE: Final = re.compile(r"([0-9]+) (.*)")


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
        Sending after the server closed the connection raises
        ``trio.BrokenResourceError``; any call after :meth:`aclose` raises
        ``trio.ClosedResourceError``.

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

        Raises:
            OSError: the connection cannot be made (refused, unreachable).
            EOFError: (``read_greeting``) the server closed the connection first.
            ProtocolViolation: (``read_greeting``, strict) a malformed greeting.

        Cancellation:
            If reading the greeting is cancelled or fails, the connection is closed
            before the exception propagates.
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

        Raises:
            trio.BrokenResourceError: the server closed the connection.
            trio.ClosedResourceError: :meth:`aclose` was called.
        """
        await self.stream.send_all(data.encode("utf-8") if isinstance(data, str) else data)

    async def send_line(self, line: bytes | str) -> None:
        """Send one command line followed by CRLF.

        Example::

            await client.send_line("NOOP")

        Raises:
            trio.BrokenResourceError: the server closed the connection.
            trio.ClosedResourceError: :meth:`aclose` was called.
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

        Cancellation:
            It has no timeout of its own: against a server that never closes, it
            waits until cancelled (wrap it in ``trio.fail_after``).  Bytes read
            before a cancellation stay buffered for the next read.
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

        Raises:
            EOFError: the connection closed first.
            ProtocolViolation: (strict) not a status line, or longer than 512 octets.
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

        Raises:
            EOFError: the connection closed before the ``.`` line.
            ProtocolViolation: (strict) a line ended in a bare LF.
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

        Raises:
            EOFError: the connection closed before the reply.
            ProtocolViolation: (strict) a malformed reply.
            trio.BrokenResourceError: the server closed the connection.
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

        Raises:
            EOFError: the connection closed before the end of the reply.
            ProtocolViolation: (strict) a malformed reply.
            trio.BrokenResourceError: the server closed the connection.
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

        Raises:
            UnexpectedReply: ``-ERR``, or a line that is not ``number size``.
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

        Raises:
            UnexpectedReply: ``-ERR``, or a line that is not ``number unique-id``.
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

        Raises:
            UnexpectedReply: ``-ERR`` (no such message, TOP not supported, ...).
        """
        return (await self._require(f"TOP {number} {lines}", multiline=True)).body

    async def quit(self) -> Reply:
        """Send QUIT and return the reply (``-ERR`` if the removal failed).

        The server closes the connection next; :meth:`read_until_closed` waits for it.

        Example::

            assert (await client.quit()).ok

        Raises:
            EOFError: the server closed the connection without a reply.
            trio.BrokenResourceError: the server had already closed the connection.
        """
        return await self.command("QUIT")

    # -- closing ---------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the client's end of the connection (a drop, not a QUIT).

        Example::

            await client.aclose()  # the server rolls back: nothing is removed

        Calling it again does nothing more.  Like any ``aclose()``, it closes the
        stream even when cancelled.
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

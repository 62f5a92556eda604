"""Arbitrary bytes against the protocol core and against whole sessions.

The sans-I/O pieces (``LineBuffer``, ``parse_command``, ``MessageWriter``,
``format_reply``) chained the way the session chains them: only the documented errors
(``LineTooLong`` in place of a line, ``BufferOverflow``, ``CommandSyntaxError``,
``ValueError`` for a bad response code), never a crash, and memory bounded by the
configured limits (SEC-04, WIRE-06).  Then full sessions of :class:`MailboxHandler`
over memory streams fed arbitrary byte streams (sometimes after a valid login, mixed
with real commands): ``handle_stream`` never raises, always returns, every reply line
ends in CRLF and is at most 512 octets (RESP-03), and the maildrop is unchanged
unless a QUIT was sent (STATE-06).
"""

from __future__ import annotations

import functools
import os
import re

import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings, strategies as st
from robust_support import top_form, wire_form

from trio_pop3 import Limits, MessageWriter, POP3Server, WireSizeCounter
from trio_pop3._proto._commands import (
    MAX_COMMAND_NAME,
    MAX_REPLY_LINE,
    CommandSyntaxError,
    format_reply,
    parse_command,
)
from trio_pop3._proto._receivebuffer import BufferOverflow, LineBuffer, LineTooLong
from trio_pop3.mailbox import MailboxHandler, MemoryAuthenticator, MemoryStore

EXAMPLES = int(os.environ.get("ROBUST_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

LIMIT = 300
MAX_DISCARD = 2000

cuts_st = st.lists(st.integers(min_value=0, max_value=5000), max_size=20)

#: Bytes that tend to matter: line ends, dots, spaces, NUL, high octets, letters.
byte_soup = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b".", b" ", b"\t", b"\x00", b"\xff", b"\xc3\xa9"])
    | st.binary(max_size=40)
    | st.sampled_from([b"USER alice", b"PASS secret", b"STAT", b"RETR 1", b"LIST", b"x" * 400]),
    max_size=60,
).map(b"".join)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


@FUZZ
@given(byte_soup | st.binary(max_size=5000), cuts_st)
@example(b"x" * (MAX_DISCARD + 1) + b"\n", [])
@example(b"\n" * 5 + b"\r" * (LIMIT + 3) + b"\n", [1, 2])
def test_line_buffer_and_parser_chain(data: bytes, cuts: list[int]) -> None:
    # WIRE-06 / SEC-04: the chain raises only documented errors, memory stays bounded,
    # and the lines that come out are exactly the reference split of the stream.
    buf = LineBuffer(limit=LIMIT, max_discard=MAX_DISCARD)
    out: list[bytes | LineTooLong] = []
    overflow = False
    try:
        for piece in split_at(data, cuts):
            buf.feed(piece)
            while (line := buf.next_line()) is not None:
                out.append(line)
                if isinstance(line, bytes):
                    assert b"\n" not in line
                    assert len(line) < LIMIT
                    try:
                        command = parse_command(line)
                    except CommandSyntaxError as exc:
                        format_reply(False, str(exc))  # its text is safe to send
                        continue
                    assert 0 < len(command.name) <= MAX_COMMAND_NAME
                    assert command.name == command.name.upper()
                    assert all(0x21 <= ord(c) <= 0x7E for c in command.name)
                    assert command.arg is None or command.arg
            # Memory bounded: a partial line of at most the limit is kept.
            assert len(buf) <= LIMIT
    except BufferOverflow:
        overflow = True
    # The reference: split at LF; too long -> LineTooLong; past the cap -> overflow.
    expected: list[bytes | LineTooLong] = []
    ref_overflow = False
    *complete, tail = data.split(b"\n")
    for raw in complete:
        size = len(raw) + 1
        if size > MAX_DISCARD:
            ref_overflow = True
            break
        if size > LIMIT:
            expected.append(LineTooLong(size))
        else:
            expected.append(raw[:-1] if raw.endswith(b"\r") else raw)
    else:
        ref_overflow = len(tail) > MAX_DISCARD
    assert overflow == ref_overflow
    if not overflow:
        assert out == expected
    else:
        assert out == expected[: len(out)]


@FUZZ
@given(st.text(), st.booleans(), st.none() | st.text(max_size=30))
@example("[IN-USE] fake code\r\n+OK injected", False, None)
@example("x" * 600, True, "SYS/TEMP")
def test_format_reply_never_breaks_the_wire(text: str, ok: bool, code: str | None) -> None:
    # RESP-01/02/03/06, SEC-06: one CRLF-terminated line of at most 512 octets, no
    # injected line end, never a fake response code.
    try:
        line = format_reply(ok, text, code)
    except ValueError:
        assert code is not None  # only an invalid response code is refused
        return
    assert line.endswith(b"\r\n")
    assert len(line) <= MAX_REPLY_LINE
    assert b"\r" not in line[:-2]
    assert b"\n" not in line[:-2]
    head = b"+OK" if ok else b"-ERR"
    assert line.startswith(head)
    rest = line[len(head) :]
    if code is None:
        assert not rest.startswith(b" [")
    else:
        assert rest.startswith(b" [" + code.encode() + b"]")
    line.decode("utf-8")  # still valid UTF-8 after truncation


@FUZZ
@given(
    st.binary(max_size=3000) | byte_soup,
    cuts_st,
    st.none() | st.integers(min_value=0, max_value=30),
)
@example(b".\r\n.\n\r.", [1, 2, 3], None)
@example(b"a\r", [1], 0)
@example(b"H: x\n\n.\n..\nb\n", [4], 1)
def test_message_writer_chain(message: bytes, cuts: list[int], body_lines: int | None) -> None:
    # DOT-01..05, SIZE-01, TOP-01/02: any stored bytes, chunked anywhere, become
    # CRLF lines, stuffed, terminated; the size counter agrees; TOP cuts correctly.
    writer = MessageWriter(body_lines)
    counter = WireSizeCounter()
    parts = []
    for chunk in split_at(message, cuts):
        counter.feed(chunk)
        parts.append(writer.feed(chunk))
        if writer.done:
            break
    parts.append(writer.finish())
    wire = b"".join(parts)
    assert wire.endswith(b".\r\n")
    assert re.search(rb"(?<!\r)\n", wire) is None  # never a bare LF (WIRE-09)
    body = wire[:-3]
    assert body == b"" or body.endswith(b"\r\n")
    lines = body.split(b"\r\n")[:-1]
    assert all(not line.startswith(b".") or line.startswith(b"..") for line in lines)
    unstuffed = b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)
    if body_lines is None:
        assert unstuffed == wire_form(message)
        assert counter.finish() == len(wire_form(message))
    else:
        assert unstuffed == top_form(message, body_lines)


# -- whole sessions fed arbitrary bytes ------------------------------------------------------

STORED = (b"Subject: a\n\nhello\n", b".dot\r\n..\r\n", b"x" * 70000)


async def _session(stream_data: list[bytes], close: bool, login: bool) -> tuple[bytes, bool]:
    store = MemoryStore({"alice": STORED})
    server = POP3Server(
        functools.partial(MailboxHandler, store, MemoryAuthenticator({"alice": "secret"})),
        timeout=600,
        limits=Limits(auth_failure_delay=0.5, max_discard=16384, max_auth_line=8192),
    )
    client, server_stream = trio.testing.memory_stream_pair()
    received = bytearray()
    raised: list[BaseException] = []

    async def serve() -> None:
        try:
            await server.handle_stream(server_stream)
        except BaseException as exc:
            raised.append(exc)

    async def read() -> None:
        while data := await client.receive_some(65536):
            received.extend(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        nursery.start_soon(read)
        try:
            if login:
                await client.send_all(b"USER alice\r\nPASS secret\r\nDELE 1\r\n")
            for piece in stream_data:
                await client.send_all(piece)
                await trio.sleep(0.001)
            if close:
                await client.send_eof()
        except trio.BrokenResourceError:
            pass  # the server hung up first (budget exceeded, overflow)
    # The server never raises out of handle_stream and the session is over.
    assert not raised, raised
    assert server.active_connections == 0
    assert not store.is_locked("alice")
    everything = b"".join(stream_data)
    quit_sent = b"quit" in everything.lower()
    if not quit_sent:
        assert store.messages("alice") == list(STORED)  # STATE-06
    else:
        assert set(store.messages("alice")) <= set(STORED)
    return bytes(received), quit_sent


@settings(
    max_examples=max(EXAMPLES // 3, 20), deadline=None, suppress_health_check=list(HealthCheck)
)
@given(
    st.lists(byte_soup | st.binary(max_size=600), max_size=12),
    st.booleans(),
    st.booleans(),
)
@example([b"\x00" * 20000], True, False)
@example([b"RETR 3\r\n", b"QUIT\r\n"], False, True)
def test_session_survives_arbitrary_bytes(stream: list[bytes], close: bool, login: bool) -> None:
    # Without EOF the login/idle timer ends the session (MockClock jumps over it).
    received, _ = trio.run(
        _session, stream, close, login, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    assert received.startswith(b"+OK")
    # Replies, data lines included, are CRLF lines; status lines are <= 512 octets.
    assert re.search(rb"(?<!\r)\n", received) is None
    assert received == b"" or received.endswith(b"\r\n")
    for line in received.split(b"\r\n"):
        if line.startswith((b"+OK", b"-ERR")):
            assert len(line) + 2 <= MAX_REPLY_LINE

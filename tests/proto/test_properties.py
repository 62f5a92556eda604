"""Hypothesis properties of the sans-I/O core (RFC-CHECKLIST Appendix B, item 1).

1. Chunking invariance: a command stream fed whole or split anywhere gives the same
   lines and commands.
2. Robustness: arbitrary bytes through LineBuffer + parse_command raise only
   CommandSyntaxError / BufferOverflow, and the buffer stays bounded.
3. Byte-stuffing round trip: MessageWriter output, fed in any chunks and un-stuffed by
   a reference decoder, is the CRLF-normalised input; it has no bare LF, ends with
   CRLF.CRLF and its size is wire_size().
4. Chunk-split invariance of MessageWriter (RETR and TOP) and WireSizeCounter.
5. format_reply: always at most 512 octets, exactly one CRLF, at the end.
6. header_needs_utf8 agrees with a reference that first turns every line end into
   CRLF, as the wire does, and then cuts the header at the first empty line; and
   HeaderEndFinder, fed any chunks, finds the header's end where header_complete
   finds it in the chunks joined.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings, strategies as st

from trio_pop3._proto._commands import (
    MAX_REPLY_LINE,
    Command,
    CommandSyntaxError,
    format_reply,
    parse_command,
)
from trio_pop3._proto._receivebuffer import BufferOverflow, LineBuffer, LineTooLong
from trio_pop3._proto._wire import (
    HeaderEndFinder,
    MessageWriter,
    WireSizeCounter,
    header_complete,
    header_needs_utf8,
    wire_size,
)

LIMIT = 64
MAX_DISCARD = 256


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """Split ``data`` at the given positions (taken modulo its length, sorted)."""
    if not data:
        return [data]
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


cuts_st = st.lists(st.integers(min_value=0, max_value=10_000), max_size=20)

Event = bytes | LineTooLong | Command | str


def run_lines(pieces: list[bytes], events: list[Event] | None = None) -> list[Event]:
    """Feed pieces into a LineBuffer; return lines, LineTooLong and parse results.

    Events are appended to ``events`` as they happen (so they survive an exception).
    """
    buf = LineBuffer(limit=LIMIT, max_discard=MAX_DISCARD)
    if events is None:
        events = []
    for piece in pieces:
        buf.feed(piece)
        while (line := buf.next_line()) is not None:
            events.append(line)
            if isinstance(line, bytes):
                try:
                    events.append(parse_command(line))
                except CommandSyntaxError as exc:
                    events.append(f"error: {exc}")
        assert len(buf) <= LIMIT
    return events


keyword_st = st.sampled_from(
    ["USER", "pass", "Stat", "LIST", "RETR", "TOP", "uidl", "NOOP", "QUIT", "CAPA", "XHELLO"]
)
arg_st = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from(["\t", "\u00e9"]),
    max_size=80,
)
command_line_st = st.builds(
    lambda kw, arg, sep, end: (kw + (sep + arg if arg else "")).encode() + end,
    keyword_st,
    arg_st,
    st.sampled_from([" ", "  ", "\t"]),
    st.sampled_from([b"\r\n", b"\n"]),
)


@given(st.lists(command_line_st, max_size=30), cuts_st)
def test_chunking_invariance(lines: list[bytes], cuts: list[int]) -> None:
    # RFC 2449 §6.6 (CAP-PIPE): the same commands however the stream was split.
    stream = b"".join(lines)
    whole = run_lines([stream])
    assert run_lines(split_at(stream, cuts)) == whole
    assert run_lines([bytes([b]) for b in stream]) == whole
    # Every line came out, in order (over-long ones as LineTooLong).
    assert sum(1 for e in whole if isinstance(e, (bytes, LineTooLong))) == len(lines)


def run_lines_to_overflow(pieces: list[bytes]) -> list[Event]:
    events: list[Event] = []
    try:
        run_lines(pieces, events)
    except BufferOverflow:
        events.append("overflow")
    return events


long_line_st = st.builds(
    lambda n, end: b"x" * n + end,
    st.integers(min_value=0, max_value=MAX_DISCARD + 40),
    st.sampled_from([b"\r\n", b"\n"]),
)


@given(st.lists(command_line_st | long_line_st, max_size=12), cuts_st)
@example([b"x" * (MAX_DISCARD + 1) + b"\n"], [])
@example([b"x" * (MAX_DISCARD - 1) + b"\n"], [100])
def test_chunking_invariance_with_overflow(lines: list[bytes], cuts: list[int]) -> None:
    # The same lines, LineTooLong and BufferOverflow, however the stream was split.
    stream = b"".join(lines)
    whole = run_lines_to_overflow([stream])
    assert run_lines_to_overflow(split_at(stream, cuts)) == whole
    assert run_lines_to_overflow([bytes([b]) for b in stream]) == whole


@given(st.binary(max_size=2000), cuts_st)
@example(b"\x00" * 300 + b"\n", [])
@example(b"\xff\xfe\n\r\r\n", [1])
def test_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    # SEC-04 / WIRE-02: arbitrary input raises only the two documented errors and the
    # buffer stays bounded.
    buf = LineBuffer(limit=LIMIT, max_discard=MAX_DISCARD)
    try:
        for piece in split_at(data, cuts):
            buf.feed(piece)
            while (line := buf.next_line()) is not None:
                assert isinstance(line, (bytes, LineTooLong))
                if isinstance(line, bytes):
                    assert len(line) < LIMIT
                    assert b"\n" not in line
                    try:
                        command = parse_command(line)
                    except CommandSyntaxError:
                        continue
                    assert command.name == command.name.upper()
                    assert command.name.isascii()
            assert len(buf) <= LIMIT
    except BufferOverflow:
        pass


# -- messages ---------------------------------------------------------------------------

message_st = st.lists(
    st.sampled_from(
        [b".", b"..", b"\r", b"\n", b"\r\n", b"x", b"\x00", b"\xff", b"From: a", b" "]
    ),
    max_size=60,
).map(b"".join) | st.binary(max_size=300)


def normalise(message: bytes) -> bytes:
    """Reference CRLF normalisation (RFC 1939 §3, DOT-05)."""
    data = re.sub(rb"\r?\n", b"\r\n", message)
    if data and not data.endswith(b"\n"):
        data += b"\r\n"
    return data


def reference_top(message: bytes, n: int) -> bytes:
    """Reference TOP: header lines, the blank line, then n body lines (RFC 1939 §7)."""
    data = normalise(message)
    if not data:
        return data
    lines = data[:-2].split(b"\r\n")
    if b"" in lines:
        lines = lines[: lines.index(b"") + 1 + n]
    return b"".join(line + b"\r\n" for line in lines)


def decode(wire: bytes) -> bytes:
    """Reference decoder of a multi-line body (RFC 1939 §3): un-stuff up to ``.``."""
    assert wire.endswith(b".\r\n")
    out: list[bytes] = []
    pos = 0
    while True:
        end = wire.index(b"\r\n", pos)
        line = wire[pos:end]
        pos = end + 2
        if line == b".":
            assert pos == len(wire), "terminator before the end"
            return b"".join(out)
        out.append((line[1:] if line.startswith(b".") else line) + b"\r\n")


def write_chunks(pieces: list[bytes], body_lines: int | None = None) -> bytes:
    writer = MessageWriter(body_lines)
    out = [writer.feed(p) for p in pieces]
    return b"".join(out) + writer.finish()


def check_wire(wire: bytes) -> None:
    # DOT-01: ends with CRLF.CRLF (after the +OK line when the body is empty).
    assert (b"\r\n" + wire).endswith(b"\r\n.\r\n")
    # WIRE-09: never a bare LF.
    assert re.search(rb"(?<!\r)\n", wire) is None
    # DOT-02: no data line is a lone "." or starts with an unstuffed "." .
    lines = wire.split(b"\r\n")[:-2]
    assert all(
        line == b"" or not line.startswith(b".") or line.startswith(b"..") for line in lines
    )


@given(message_st, cuts_st)
@example(b".", [])
@example(b"a\r", [1])
@example(b"\r\n.\r\n", [1, 2])
def test_stuffing_round_trip(message: bytes, cuts: list[int]) -> None:
    # RFC 1939 §3, §11 (DOT-01..DOT-05, SIZE-01)
    wire = write_chunks(split_at(message, cuts))
    check_wire(wire)
    body = decode(wire)
    assert body == normalise(message)
    assert len(body) == wire_size(message)


@given(message_st, cuts_st, st.integers(min_value=0, max_value=8))
@example(b"H: 1\n\r\n.\n", [2], 0)
def test_top_round_trip(message: bytes, cuts: list[int], n: int) -> None:
    # RFC 1939 §7 (TOP-01, TOP-02)
    wire = write_chunks(split_at(message, cuts), n)
    check_wire(wire)
    assert decode(wire) == reference_top(message, n)


@given(message_st, cuts_st, cuts_st, st.none() | st.integers(min_value=0, max_value=5))
def test_writer_chunk_invariance(
    message: bytes, cuts1: list[int], cuts2: list[int], n: int | None
) -> None:
    a = write_chunks(split_at(message, cuts1), n)
    b = write_chunks(split_at(message, cuts2), n)
    assert a == b == write_chunks([message], n)
    assert write_chunks([bytes([x]) for x in message], n) == a


@given(message_st, cuts_st)
def test_size_counter_chunk_invariance(message: bytes, cuts: list[int]) -> None:
    # RFC 1939 §11 (SIZE-01, DOT-03): the size never depends on how the store chunks.
    counter = WireSizeCounter()
    for piece in split_at(message, cuts):
        counter.feed(piece)
    assert counter.finish() == wire_size(message) == len(normalise(message))


header_st = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b": ", "ü".encode(), b"\xc3", b"\xbc", b"\xe9"]),
    max_size=40,
).map(b"".join)


def reference_needs_utf8(data: bytes) -> bool:
    """Reference UTF8 check (RFC 6856 §2.1) on the first chunk of a stored message.

    Line ends become CRLF first (as on the wire, a lone CR is content); the header is
    the lines before the first empty one (RFC 5322 §2.1).
    """
    lines = re.sub(rb"\r?\n", b"\r\n", data).split(b"\r\n")
    ended = lines[:-1]  # the last piece has no line end yet: never an empty line
    complete = b"" in ended
    header = b"\r\n".join(ended[: ended.index(b"")] if complete else lines)
    if header.isascii():
        return False
    try:
        header.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Only a header without its empty line yet may go on past the chunk's end.
        return not complete and exc.reason == "unexpected end of data"
    return True


@pytest.mark.rfc("6856", "2.1")
@given(header_st | st.binary(max_size=200))
@example(b"a\n\r\n\xc3\xbc")
@example(b"a\r\n\n\xc3\xbc")
@example(b"\r\n\xc3\xbc")
@example(b"a\xe9\n\nb")
def test_header_needs_utf8_matches_reference(data: bytes) -> None:
    # RFC 6856 §2.1 (UTF8-02), RFC 5322 §2.1: the header ends at the first empty line.
    assert header_needs_utf8(data) == reference_needs_utf8(data)


@given(header_st | st.binary(max_size=200), cuts_st)
@example(b"\n", [0, 0])
@example(b"a\n\r\nb", [2, 3])
@example(b"\r\nX", [1])
def test_header_end_finder_chunk_invariance(data: bytes, cuts: list[int]) -> None:
    # RFC 6856 §2.1 (UTF8-02): a header yielded in several chunks is still checked whole.
    finder = HeaderEndFinder()
    seen = b""
    for piece in split_at(data, cuts):
        seen += piece
        assert finder.feed(piece) == header_complete(seen)


# -- replies -----------------------------------------------------------------------------

code_char = st.characters(codec="ascii", min_codepoint=0x21, max_codepoint=0x7E).filter(
    lambda c: c not in "/]"
)
code_st = st.none() | st.lists(
    st.text(code_char, min_size=1, max_size=12), min_size=1, max_size=3
).map("/".join)


@given(st.booleans(), st.text(max_size=700), code_st)
@settings(max_examples=300)
@example(True, "[", None)
@example(False, "\u00e9" * 600, "SYS/TEMP")
@example(False, "\r\n" * 300, None)
def test_format_reply_bounded(ok: bool, text: str, code: str | None) -> None:
    # RFC 2449 §4 (RESP-03), SEC-06, RESP-01, RESP-06
    raw = format_reply(ok, text, code)
    assert len(raw) <= MAX_REPLY_LINE
    assert raw.endswith(b"\r\n")
    assert raw.count(b"\r\n") == 1
    assert raw.count(b"\r") == 1
    assert raw.count(b"\n") == 1
    line = raw[:-2].decode("utf-8")
    status, _, rest = line.partition(" ")
    assert status == ("+OK" if ok else "-ERR")
    if code is None:
        assert not rest.startswith("[")
    else:
        assert rest.startswith(f"[{code}]")


@given(keyword_st, arg_st.filter(lambda a: a.strip(" \t") == a and a != ""))
def test_parse_command_round_trip(keyword: str, arg: str) -> None:
    # WIRE-01: the keyword is upper-cased, the argument kept as sent.
    assert parse_command(f"{keyword} {arg}".encode()) == Command(keyword.upper(), arg)


@pytest.mark.parametrize("text", ["\udcff", "a\ud800b"])
def test_format_reply_lone_surrogate(text: str) -> None:
    # Text that is not encodable (e.g. a surrogate-escaped file name) is still a
    # well-formed reply or a clean ValueError, never a half-written line.
    try:
        raw = format_reply(False, text)
    except ValueError:
        return
    assert raw.endswith(b"\r\n")

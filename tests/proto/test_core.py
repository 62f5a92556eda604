"""Table-driven tests of the sans-I/O core: commands, replies, lines, wire format, state.

Synchronous; no trio.  Each test cites the RFC-CHECKLIST rule it checks.
"""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, strategies as st

from trio_pop3._proto import _commands
from trio_pop3._proto._commands import (
    MAX_COMMAND_NAME,
    MAX_REPLY_LINE,
    Command,
    CommandSyntaxError,
    format_reply,
    parse_command,
)
from trio_pop3._proto._lang import choose_language
from trio_pop3._proto._maildrop import (
    MAX_MESSAGE_NUMBER_DIGITS,
    Maildrop,
    NoSuchMessage,
    parse_message_number,
)
from trio_pop3._proto._receivebuffer import BufferOverflow, LineBuffer, LineTooLong
from trio_pop3._proto._state import STANDARD_COMMANDS, State, normalize_command_name, states_of
from trio_pop3._proto._wire import (
    MessageWriter,
    WireSizeCounter,
    header_needs_utf8,
    stuff_lines,
    wire_size,
)
from trio_pop3.mailbox import MessageInfo

# -- parse_command ---------------------------------------------------------------------


@pytest.mark.rfc("1939", "3")
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # WIRE-01: keywords are case-insensitive.
        (b"STAT", Command("STAT", None)),
        (b"stat", Command("STAT", None)),
        (b"StAt", Command("STAT", None)),
        (b"capa", Command("CAPA", None)),
        # Split at the first run of white space; the argument keeps its case.
        (b"USER Alice", Command("USER", "Alice")),
        (b"user  Alice", Command("USER", "Alice")),
        (b"USER\tAlice", Command("USER", "Alice")),
        (b"TOP 1 10", Command("TOP", "1 10")),
        (b"list 2", Command("LIST", "2")),
        # WIRE-02 pick: a trailing space is tolerated (no argument).
        (b"STAT ", Command("STAT", None)),
        (b"STAT \t ", Command("STAT", None)),
        # Leading white space is ignored.
        (b"  NOOP", Command("NOOP", None)),
        # WIRE-11: PASS keeps inner and trailing spaces.
        (b"PASS two  words ", Command("PASS", "two  words ")),
        (b"PASS  leading", Command("PASS", " leading")),  # a space may start it
        (b"pass a\tb", Command("PASS", "a\tb")),
        # UTF-8 arguments are allowed (RFC 6856 UTF8 USER).
        ("USER jos\u00e9".encode(), Command("USER", "jos\u00e9")),
        # Extension keywords may be longer than 4 characters (add_command).
        (b"X-TRIO-HELLO arg", Command("X-TRIO-HELLO", "arg")),
        (b"A" * MAX_COMMAND_NAME, Command("A" * MAX_COMMAND_NAME, None)),
    ],
)
def test_parse_command(line: bytes, expected: Command) -> None:
    # RFC 1939 §3 (WIRE-01, WIRE-02, WIRE-11)
    assert parse_command(line) == expected


@pytest.mark.rfc("1939", "3")
@pytest.mark.parametrize(
    "line",
    [
        b"",
        b" ",
        b"\t \t",
        b"ST\x00AT",
        b"STAT\x00",
        b"USER a\x00b",
        b"USER a\rb",
        b"USER a\nb",
        b"USER \x1b[31m",
        b"NOOP\x7f",
        b"STAT\r",
        b"USER \xff\xfe",
        b"\xc3\x28",
        b"USER \xed\xa0\x80",  # an encoded surrogate is not UTF-8
        b"A" * (MAX_COMMAND_NAME + 1),
        "ST\u00c4T".encode(),  # non-ASCII keyword
        "\u00a0STAT".encode(),  # NBSP is not white space here: non-ASCII keyword
    ],
)
def test_parse_command_rejects(line: bytes) -> None:
    # RFC 1939 §3 (WIRE-02 pick: NUL/controls/invalid UTF-8 get -ERR, never a crash;
    # WIRE-07: an empty line is not a command).
    with pytest.raises(CommandSyntaxError) as info:
        parse_command(line)
    # The error text is safe to send: it never echoes the client's bytes.
    text = str(info.value)
    assert text.isascii()
    assert "\r" not in text
    assert "\n" not in text


def test_parse_command_shares_one_name_string() -> None:
    """Command names are interned: lines never cached (PASS) still share the name.

    Every idle session keeps its last command's name as previous_command; without
    interning each one would hold a copy of "PASS".
    """
    first = parse_command(b"PASS one")
    second = parse_command(b"pass two")
    assert first.name == "PASS"
    assert first.name is second.name


# -- format_reply ------------------------------------------------------------------------


@pytest.mark.rfc("1939", "3")
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((True,), b"+OK\r\n"),
        ((False,), b"-ERR\r\n"),
        ((True, "2 320"), b"+OK 2 320\r\n"),
        ((False, "no such message"), b"-ERR no such message\r\n"),
        ((False, "Mailbox in use.", "IN-USE"), b"-ERR [IN-USE] Mailbox in use.\r\n"),
        ((False, "", "AUTH"), b"-ERR [AUTH]\r\n"),
        ((False, "oops", "SYS/TEMP"), b"-ERR [SYS/TEMP] oops\r\n"),
        ((True, "ok", "X/Y/Z"), b"+OK [X/Y/Z] ok\r\n"),
        # RESP-06: free text never starts with "[" (it would read as a response code).
        ((True, "[not a code]"), b"+OK (not a code]\r\n"),
        ((False, "[IN-USE] fake"), b"-ERR (IN-USE] fake\r\n"),
        # After a real code, the text may contain "[".
        ((False, "[x]", "AUTH"), b"-ERR [AUTH] [x]\r\n"),
        # SEC-06: CR, LF, NUL, TAB and other controls become spaces.
        ((False, "a\r\n+OK injected"), b"-ERR a  +OK injected\r\n"),
        ((True, "tab\there"), b"+OK tab here\r\n"),
        ((True, "nul\x00del\x7f"), b"+OK nul del \r\n"),
        ((True, "caf\u00e9"), "+OK caf\u00e9\r\n".encode()),
    ],
)
def test_format_reply(
    args: tuple[bool] | tuple[bool, str] | tuple[bool, str, str], expected: bytes
) -> None:
    # RFC 1939 §3 (RESP-01, RESP-02), RFC 2449 §3, §8 (RESP-06, CODE-09), SEC-06
    assert format_reply(*args) == expected


@pytest.mark.parametrize("code", ["", "IN USE", "A]B", "A//B", "/A", "A/", "A\r\n", "\u00e9"])
def test_format_reply_rejects_bad_codes(code: str) -> None:
    # RFC 2449 §8: resp-code = "[" resp-level *("/" resp-level) "]"
    with pytest.raises(ValueError, match="response code"):
        format_reply(False, "x", code)


@pytest.mark.rfc("2449", "4")
@pytest.mark.parametrize(
    ("ok", "text", "code"),
    [
        (True, "x" * 10_000, None),
        (False, "y" * 508, None),
        (False, "y" * 507, None),
        (False, "\u00e9" * 1000, None),  # cut at a character boundary
        (False, "\U0001f600" * 300, "SYS/TEMP"),
        (True, "\r\n" * 1000, None),
    ],
)
def test_format_reply_caps_at_512_octets(ok: bool, text: str, code: str | None) -> None:
    # RFC 2449 §4 (RESP-03): a reply's first line is at most 512 octets with CRLF.
    raw = format_reply(ok, text, code)
    assert len(raw) <= MAX_REPLY_LINE
    assert raw.endswith(b"\r\n")
    assert raw.count(b"\r") == 1
    assert raw.count(b"\n") == 1
    raw.decode("utf-8")  # never cut inside a character


def test_format_reply_exact_fit() -> None:
    # RESP-03 boundary: "-ERR " + 505 octets + CRLF == 512 is kept whole.
    raw = format_reply(False, "z" * 505)
    assert len(raw) == 512
    assert raw == b"-ERR " + b"z" * 505 + b"\r\n"
    assert len(format_reply(False, "z" * 506)) == 512


# -- LineBuffer -------------------------------------------------------------------------


def drain(buf: LineBuffer) -> list[bytes | LineTooLong]:
    out: list[bytes | LineTooLong] = []
    while (line := buf.next_line()) is not None:
        out.append(line)
    return out


@pytest.mark.rfc("1939", "3")
@pytest.mark.parametrize(
    ("data", "lines", "rest"),
    [
        (b"STAT\r\n", [b"STAT"], 0),
        (b"STAT\n", [b"STAT"], 0),  # WIRE-09 pick: bare LF accepted
        (b"STAT\r\nLIST\nRETR 1\r\n", [b"STAT", b"LIST", b"RETR 1"], 0),
        (b"\r\n\n", [b"", b""], 0),
        (b"STAT\r\r\n", [b"STAT\r"], 0),  # only one CR before LF is dropped
        (b"ST\rAT\n", [b"ST\rAT"], 0),
        (b"STAT\r\nLI", [b"STAT"], 2),
        (b"STAT", [], 4),
    ],
)
def test_linebuffer_splits(data: bytes, lines: list[bytes], rest: int) -> None:
    # RFC 1939 §3 (WIRE-09)
    buf = LineBuffer(limit=255, max_discard=1000)
    buf.feed(data)
    assert drain(buf) == lines
    assert len(buf) == rest


def test_linebuffer_limit_is_inclusive_of_crlf() -> None:
    # RFC 2449 §4 (WIRE-04): the limit counts the line end.
    buf = LineBuffer(limit=10, max_discard=100)
    buf.feed(b"x" * 8 + b"\r\n")
    assert drain(buf) == [b"x" * 8]
    buf.feed(b"x" * 9 + b"\r\n")
    assert drain(buf) == [LineTooLong(11)]


def test_linebuffer_line_too_long_then_continues() -> None:
    # WIRE-06 pick: an over-long line becomes LineTooLong in order, then lines go on.
    buf = LineBuffer(limit=10, max_discard=100)
    buf.feed(b"STAT\r\n" + b"y" * 30 + b"\r\nNOOP\r\n")
    assert drain(buf) == [b"STAT", LineTooLong(32), b"NOOP"]


def test_linebuffer_discards_while_trickling() -> None:
    # WIRE-06: memory stays bounded while an over-long line arrives in pieces.
    buf = LineBuffer(limit=10, max_discard=1000)
    for _ in range(50):
        buf.feed(b"z" * 7)
        assert buf.next_line() is None
        assert len(buf) <= 10
    buf.feed(b"\r\nQUIT\r\n")
    assert drain(buf) == [LineTooLong(352), b"QUIT"]


def test_linebuffer_overflow_past_max_discard() -> None:
    # SEC-04: one line past max_discard means the peer is dropped.
    buf = LineBuffer(limit=10, max_discard=100)
    with pytest.raises(BufferOverflow):  # noqa: PT012 - the overflow comes mid-stream
        for _ in range(20):
            buf.feed(b"q" * 10)
            buf.next_line()
    assert len(buf) == 0


def test_linebuffer_overflow_when_line_end_arrives_late() -> None:
    buf = LineBuffer(limit=10, max_discard=100)
    buf.feed(b"q" * 60)
    assert buf.next_line() is None
    buf.feed(b"q" * 60 + b"\n")
    with pytest.raises(BufferOverflow):
        buf.next_line()


@pytest.mark.parametrize("length", [101, 102, 200])
def test_linebuffer_overflow_does_not_depend_on_chunking(length: int) -> None:
    # Regression: a line past max_discard fed in one piece used to come back as
    # LineTooLong (the session answered -ERR and went on) while the same line fed in
    # pieces raised BufferOverflow.
    line = b"q" * (length - 1) + b"\n"
    split = LineBuffer(limit=10, max_discard=100)
    split.feed(line[:60])
    assert split.next_line() is None
    split.feed(line[60:])
    with pytest.raises(BufferOverflow):
        split.next_line()
    whole = LineBuffer(limit=10, max_discard=100)
    whole.feed(line)
    with pytest.raises(BufferOverflow):
        whole.next_line()


def test_linebuffer_line_of_exactly_max_discard_is_too_long_not_overflow() -> None:
    for pieces in ([b"q" * 99 + b"\n"], [b"q" * 50, b"q" * 49 + b"\n"]):
        buf = LineBuffer(limit=10, max_discard=100)
        out = []
        for piece in pieces:
            buf.feed(piece)
            out += drain(buf)
        assert out == [LineTooLong(100)]


def test_linebuffer_per_call_limit() -> None:
    # A SASL response may be longer than a command line (RFC 5034 §4, SASL-11).
    buf = LineBuffer(limit=10, max_discard=1000)
    buf.feed(b"a" * 50 + b"\r\n")
    assert buf.next_line(limit=100) == b"a" * 50


def test_linebuffer_has_line_and_clear() -> None:
    buf = LineBuffer(limit=100, max_discard=1000)
    buf.feed(b"STLS\r\nUSER evil")
    assert buf.has_line()
    assert buf.next_line() == b"STLS"
    assert not buf.has_line()
    buf.feed(b"\r\n")
    assert buf.has_line()
    # TLS-04: what was pipelined after STLS is dropped and returned.
    assert buf.clear() == b"USER evil\r\n"
    assert len(buf) == 0
    assert buf.next_line() is None


def test_linebuffer_trickle_is_linear() -> None:
    # A line trickling in byte by byte is scanned once (O(n)), not O(n^2).
    n = 200_000
    buf = LineBuffer(limit=n + 10, max_discard=n + 10)
    start = time.perf_counter()
    for _ in range(n):
        buf.feed(b"a")
        assert buf.next_line() is None
    buf.feed(b"\n")
    assert buf.next_line() == b"a" * n
    # Quadratic rescanning would touch ~2e10 bytes; linear finishes in well under 1 s.
    assert time.perf_counter() - start < 5
    # White box: the scan resumes where it stopped.
    buf.feed(b"xyz")
    assert buf.next_line() is None
    assert buf._scanned == 3


# -- MessageWriter, stuffing, sizes ------------------------------------------------------


def write(message: bytes, body_lines: int | None = None, chunk: int | None = None) -> bytes:
    writer = MessageWriter(body_lines)
    step = chunk or max(len(message), 1)
    out = [writer.feed(message[i : i + step]) for i in range(0, len(message), step)]
    return b"".join(out) + writer.finish()


@pytest.mark.rfc("1939", "3")
@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (b"", b".\r\n"),
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
        # DOT-05: LF becomes CRLF; a missing final line end is added.
        (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
        (b"a\nb", b"a\r\nb\r\n.\r\n"),
        (b"no newline", b"no newline\r\n.\r\n"),
        # DOT-02: every line starting with "." gets one more, the first line included.
        (b".first\n", b"..first\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b".\n", b"..\r\n.\r\n"),
        (b"a\n.\nb\n", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\n..x\n", b"a\r\n...x\r\n.\r\n"),
        (b"a\r\n.\r\n", b"a\r\n..\r\n.\r\n"),
        (b"x. not at start\n", b"x. not at start\r\n.\r\n"),
        # Lone CR is content; CR CR LF keeps the first CR.
        (b"a\rb\n", b"a\rb\r\n.\r\n"),
        (b"a\r\r\n", b"a\r\r\n.\r\n"),
        (b"a\r", b"a\r\r\n.\r\n"),
        # 8-bit clean (DOT-06).
        (b"\xff\x00\x80\n", b"\xff\x00\x80\r\n.\r\n"),
        (b"\n\n", b"\r\n\r\n.\r\n"),
    ],
)
@pytest.mark.parametrize("chunk", [None, 1, 2, 3])
def test_message_writer(message: bytes, wire: bytes, chunk: int | None) -> None:
    # RFC 1939 §3 (DOT-01, DOT-02, DOT-05)
    assert write(message, chunk=chunk) == wire


@pytest.mark.rfc("1939", "7")
@pytest.mark.parametrize(
    ("message", "n", "wire"),
    [
        # TOP-01: header, blank line, then n body lines.
        (b"H: 1\nH: 2\n\nb1\nb2\nb3\n", 0, b"H: 1\r\nH: 2\r\n\r\n.\r\n"),
        (b"H: 1\nH: 2\n\nb1\nb2\nb3\n", 1, b"H: 1\r\nH: 2\r\n\r\nb1\r\n.\r\n"),
        (b"H: 1\nH: 2\n\nb1\nb2\nb3\n", 2, b"H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\n.\r\n"),
        # TOP-02: n past the end sends the whole message.
        (b"H: 1\n\nb1\nb2\n", 99, b"H: 1\r\n\r\nb1\r\nb2\r\n.\r\n"),
        (b"H: 1\n\nb1\nb2", 99, b"H: 1\r\n\r\nb1\r\nb2\r\n.\r\n"),
        (b"H: 1\n\nb1\nb2", 2, b"H: 1\r\n\r\nb1\r\nb2\r\n.\r\n"),
        # A message without a blank line: just the header.
        (b"H: 1\nH: 2\n", 0, b"H: 1\r\nH: 2\r\n.\r\n"),
        (b"H: 1", 0, b"H: 1\r\n.\r\n"),
        # Stuffing applies to TOP output too (DOT-02).
        (b".H: 1\n\n.b1\n.b2\n", 1, b"..H: 1\r\n\r\n..b1\r\n.\r\n"),
        # An empty header: the first line is the blank line.
        (b"\nb1\nb2\n", 1, b"\r\nb1\r\n.\r\n"),
        (b"", 0, b".\r\n"),
        # CRLF input.
        (b"H: 1\r\n\r\nb1\r\nb2\r\n", 1, b"H: 1\r\n\r\nb1\r\n.\r\n"),
    ],
)
@pytest.mark.parametrize("chunk", [None, 1, 2, 5])
def test_message_writer_top(message: bytes, n: int, wire: bytes, chunk: int | None) -> None:
    # RFC 1939 §7 (TOP-01, TOP-02)
    assert write(message, n, chunk) == wire


def test_message_writer_top_stops_early() -> None:
    writer = MessageWriter(0)

    def done() -> bool:  # a function, so mypy does not narrow writer.done
        return writer.done

    assert writer.feed(b"H: 1\n\n") == b"H: 1\r\n\r\n"
    assert not done()
    assert writer.feed(b"body\n") == b""
    assert done()
    assert writer.feed(b"more\n") == b""
    assert writer.finish() == b".\r\n"


def test_message_writer_rejects_negative_lines() -> None:
    with pytest.raises(ValueError, match="body_lines"):
        MessageWriter(-1)


@pytest.mark.rfc("1939", "11")
@pytest.mark.parametrize(
    ("message", "size"),
    [
        (b"", 0),
        (b"a\r\nb\r\n", 6),
        (b"a\nb\n", 6),  # SIZE-01: each stored LF counts 2
        (b"a\nb", 6),  # a missing final line end is counted
        (b".\n..\n", 7),  # DOT-03: stuffing dots are not counted
        (b"a\r", 4),
        (b"\n", 2),
    ],
)
def test_wire_size(message: bytes, size: int) -> None:
    # RFC 1939 §5, §11 (SIZE-01, DOT-03)
    assert wire_size(message) == size
    counter = WireSizeCounter()
    for byte in message:
        counter.feed(bytes([byte]))
    assert counter.finish() == size
    # The size is what RETR sends minus the stuffing and the terminator.
    assert len(unstuff_wire(write(message))) == size


def unstuff_wire(wire: bytes) -> bytes:
    assert wire.endswith(b".\r\n")
    lines = wire[:-3].split(b"\r\n")
    assert lines[-1] == b""
    return b"".join((line[1:] if line[:1] == b"." else line) + b"\r\n" for line in lines[:-1])


@pytest.mark.rfc("1939", "3")
@pytest.mark.parametrize(
    ("lines", "wire"),
    [
        ([], b".\r\n"),  # DOT-07: an empty listing
        ([b"1 120", b"2 200"], b"1 120\r\n2 200\r\n.\r\n"),
        ([b".hidden", b".", b""], b"..hidden\r\n..\r\n\r\n.\r\n"),
    ],
)
def test_stuff_lines(lines: list[bytes], wire: bytes) -> None:
    # RFC 1939 §3 (DOT-02, DOT-04, DOT-07)
    assert stuff_lines(lines) == wire


GRUSS = "Grüße".encode()


@pytest.mark.rfc("6856", "2.1")
@pytest.mark.parametrize(
    ("message", "needs"),
    [
        # The header ends at the first empty line, whatever mix of LF and CRLF ends the
        # line before it and the empty line itself (RFC 5322 §2.1): UTF-8 after it is body.
        (b"Subject: ascii\n\n" + GRUSS + b"\n", False),  # LF LF
        (b"Subject: ascii\r\n\r\n" + GRUSS + b"\r\n", False),  # CRLF CRLF
        (b"Subject: ascii\n\r\n" + GRUSS + b"\n", False),  # LF CRLF
        (b"Subject: ascii\r\n\n" + GRUSS + b"\n", False),  # CRLF LF
        (b"Subject: " + GRUSS + b"\n\n" + b"body\n", True),
        (b"Subject: " + GRUSS + b"\r\n\r\n" + b"body\r\n", True),
        (b"Subject: " + GRUSS + b"\n\r\n" + b"body\n", True),
        (b"Subject: " + GRUSS + b"\r\n\n" + b"body\n", True),
        # A header that is the whole message.
        (b"Subject: ascii\n", False),
        (b"Subject: " + GRUSS, True),
        (b"Subject: " + GRUSS + b"\r\n", True),
        # A message that starts with the empty line has no header at all.
        (b"\n" + GRUSS + b"\n", False),
        (b"\r\n" + GRUSS + b"\r\n", False),
        # A lone CR is content, as on the wire: "\r\r\n" and "\n\r\r\n" end no header.
        (b"Subject: ascii\r\r\nX-Greeting: " + GRUSS + b"\n\nbody\n", True),
        (b"Subject: ascii\n\r\r\nX-Greeting: " + GRUSS + b"\n\nbody\n", True),
        # Legacy 8-bit headers that are not UTF-8 do not count.
        (b"Subject: caf\xe9 au lait\n\nbody\n", False),
        # ... also when its last byte before the empty line starts a UTF-8 sequence.
        (b"Subject: caf\xe9\n\nbody\n", False),
        (b"Subject: caf\xe9\r\n\r\nbody\r\n", False),
        # Cut at the end of the first chunk, the header may go on with the character.
        (b"Subject: Gr\xc3", True),
        (b"", False),
    ],
)
def test_header_needs_utf8(message: bytes, needs: bool) -> None:
    # RFC 6856 §2.1 (UTF8-02): only a UTF-8 header needs UTF8 mode.
    assert header_needs_utf8(message) is needs


# -- State -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "state"),
    [
        ("AUTHORIZATION", State.AUTHORIZATION),
        ("authorization", State.AUTHORIZATION),
        ("Auth", State.AUTHORIZATION),
        ("auth", State.AUTHORIZATION),
        ("TRANS", State.TRANSACTION),
        ("trans", State.TRANSACTION),
        ("Transaction", State.TRANSACTION),
        (" update ", State.UPDATE),
        ("connect", State.CONNECT),
        ("DISCONNECT", State.DISCONNECT),
        (State.TRANSACTION, State.TRANSACTION),
    ],
)
def test_state_parse(value: State | str, state: State) -> None:
    assert State.parse(value) is state


@pytest.mark.parametrize("value", ["", "AUTHORISATION", "TRAN", "AUTHX", "quit", "0"])
def test_state_parse_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="unknown POP3 state"):
        State.parse(value)


def test_states_of() -> None:
    assert states_of("auth") == {State.AUTHORIZATION}
    assert states_of(["auth", State.TRANSACTION]) == {State.AUTHORIZATION, State.TRANSACTION}


@pytest.mark.parametrize(("name", "norm"), [("xhello", "XHELLO"), ("X-Foo", "X-FOO")])
def test_normalize_command_name(name: str, norm: str) -> None:
    assert normalize_command_name(name) == norm


@pytest.mark.parametrize("name", ["", "X Y", "X\r\n", "\u00e9t\u00e9"])
def test_normalize_command_name_rejects(name: str) -> None:
    with pytest.raises(ValueError, match="invalid command name"):
        normalize_command_name(name)


@pytest.mark.rfc("1939", "3")
def test_standard_command_table() -> None:
    # WIRE-08: the table that decides where a command may run.
    auth, trans = State.AUTHORIZATION, State.TRANSACTION
    for name in ("USER", "PASS", "APOP", "AUTH", "STLS"):
        assert STANDARD_COMMANDS[name] == {auth}
    for name in ("STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL"):
        assert STANDARD_COMMANDS[name] == {trans}
    for name in ("CAPA", "QUIT"):  # CAPA-01
        assert STANDARD_COMMANDS[name] == {auth, trans}
    assert all(
        State.UPDATE not in s and State.CONNECT not in s for s in STANDARD_COMMANDS.values()
    )
    with pytest.raises(TypeError):
        STANDARD_COMMANDS["XEVIL"] = frozenset({auth})  # type: ignore[index]


@pytest.mark.rfc("1939", "7")
@pytest.mark.parametrize(
    ("line", "arg"),
    [
        (b"PASS  secret", " secret"),
        (b"pass   two words ", "  two words "),
        (b"PASS ", None),
        (b"USER  alice", "alice"),
        (b"LIST   2", "2"),
    ],
)
def test_pass_argument_keeps_leading_spaces(line: bytes, arg: str | None) -> None:
    # RFC 1939 §7 (WIRE-11): PASS takes everything after the first space; other
    # commands' arguments lose their leading spaces.
    assert parse_command(line).arg == arg


# -- Maildrop ----------------------------------------------------------------------------


def make_drop(*sizes: int) -> Maildrop[MessageInfo]:
    return Maildrop([MessageInfo(uid=f"u{i}", size=s) for i, s in enumerate(sizes, 1)])


@pytest.mark.rfc("1939", "5")
def test_maildrop_pristine_only_without_deletion_marks() -> None:
    # RFC 1939 §5 (TRANS-02, RSET-01): the shared snapshot stands for the listing only
    # while nothing is marked deleted.
    messages = tuple(MessageInfo(uid=f"u{i}", size=i) for i in (1, 2))
    drop = Maildrop(messages)
    assert drop.pristine() is messages  # shared, not copied
    drop.delete(2)
    assert drop.pristine() is None
    drop.reset()
    assert drop.pristine() is messages
    # A list is copied into a tuple of its own.
    assert make_drop(5).pristine() == (MessageInfo(uid="u1", size=5),)


@pytest.mark.rfc("1939", "4")
@pytest.mark.parametrize(
    ("arg", "number"),
    [("1", 1), ("12", 12), ("007", 7), ("9" * MAX_MESSAGE_NUMBER_DIGITS, 10**18 - 1)],
)
def test_parse_message_number(arg: str, number: int) -> None:
    # RFC 1939 §4 (WIRE-10)
    assert parse_message_number(arg) == number


@pytest.mark.rfc("1939", "4")
@pytest.mark.parametrize(
    "arg",
    [
        "",
        "+1",
        "-1",
        " 1",
        "1 ",
        "1 2",
        "1.0",
        "0x1",
        "abc",
        "1e3",
        "\u0661",
        "\uff11",
        "9" * (MAX_MESSAGE_NUMBER_DIGITS + 1),
        "1" * 10_000,
    ],
)
def test_parse_message_number_rejects(arg: str) -> None:
    # RFC 1939 §4 (WIRE-10 pick: 1*DIGIT, no sign, bounded)
    with pytest.raises(NoSuchMessage):
        parse_message_number(arg)


@pytest.mark.rfc("1939", "5")
def test_maildrop_stat_and_delete() -> None:
    drop = make_drop(100, 200, 300)
    assert len(drop) == 3
    assert drop.stat() == (3, 600)  # STAT-01
    drop.delete(2)
    assert drop.stat() == (2, 400)  # STAT-01: deleted excluded from both numbers
    assert [n for n, _ in drop.visible()] == [1, 3]  # LIST-01
    assert drop.get(3).uid == "u3"  # TRANS-01: no renumbering
    with pytest.raises(NoSuchMessage):
        drop.get(2)  # TRANS-02
    with pytest.raises(NoSuchMessage):
        drop.delete(2)  # TRANS-02: DELE twice
    with pytest.raises(NoSuchMessage):
        drop.lookup("2")
    assert [m.uid for m in drop.deleted()] == ["u2"]
    assert len(drop) == 3


@pytest.mark.rfc("1939", "5")
def test_maildrop_reset() -> None:
    drop = make_drop(10, 20, 30)
    drop.delete(3)
    drop.delete(1)
    assert [m.uid for m in drop.deleted()] == ["u1", "u3"]
    drop.reset()  # RSET-01
    assert drop.stat() == (3, 60)
    assert drop.deleted() == []
    assert [n for n, _ in drop.visible()] == [1, 2, 3]


def test_maildrop_retrieved_marks() -> None:
    drop = make_drop(10, 20, 30, 40)
    assert drop.retrieved() == []
    for number in (3, 1, 4, 3):
        drop.mark_retrieved(number)
    drop.delete(4)
    # Kept messages only, in number order; RSET unmarks deletions, not retrievals.
    assert [m.uid for m in drop.retrieved()] == ["u1", "u3"]
    drop.reset()
    assert [m.uid for m in drop.retrieved()] == ["u1", "u3", "u4"]


@given(st.lists(st.tuples(st.sampled_from(["RETR", "DELE", "RSET"]), st.integers(1, 6))))
def test_maildrop_retrieved_property(actions: list[tuple[str, int]]) -> None:
    drop = make_drop(*range(1, 7))
    retrieved: set[int] = set()
    deleted: set[int] = set()
    for action, number in actions:
        if action == "RSET":
            drop.reset()
            deleted.clear()
        elif number in deleted:
            continue
        elif action == "RETR":
            drop.mark_retrieved(number)
            retrieved.add(number)
        else:
            drop.delete(number)
            deleted.add(number)
    assert [m.uid for m in drop.retrieved()] == [f"u{n}" for n in sorted(retrieved - deleted)]
    assert not {m.uid for m in drop.retrieved()} & {m.uid for m in drop.deleted()}


@pytest.mark.rfc("1939", "5")
@pytest.mark.parametrize("number", [0, 4, -1, 10**18])
def test_maildrop_no_such_message(number: int) -> None:
    # RFC 1939 §5 (TRANS-03)
    drop = make_drop(1, 2, 3)
    with pytest.raises(NoSuchMessage):
        drop.get(number)
    with pytest.raises(NoSuchMessage):
        drop.delete(number)
    assert drop.stat() == (3, 6)


def test_maildrop_lookup() -> None:
    drop = make_drop(5, 6)
    number, message = drop.lookup("2")
    assert (number, message.size) == (2, 6)
    with pytest.raises(NoSuchMessage):
        drop.lookup("2 ")


def test_empty_maildrop() -> None:
    drop = make_drop()
    assert drop.stat() == (0, 0)
    assert list(drop.visible()) == []
    drop.reset()
    assert drop.deleted() == []


@given(st.lists(st.tuples(st.booleans(), st.text(max_size=40)), max_size=700))
def test_format_reply_cache_never_changes_a_reply(replies: list[tuple[bool, str]]) -> None:
    """Cached replies equal fresh ones, also across the cache being emptied when full."""
    fresh = []
    for ok, text in replies:
        _commands._OK_REPLIES.clear()
        _commands._ERR_REPLIES.clear()
        fresh.append(format_reply(ok, text))
    for _ in range(2):  # second pass: mostly cache hits
        assert [format_reply(ok, text) for ok, text in replies] == fresh
    assert len(_commands._OK_REPLIES) <= _commands._REPLY_CACHE_SIZE
    assert len(_commands._ERR_REPLIES) <= _commands._REPLY_CACHE_SIZE
    assert format_reply(True) == b"+OK\r\n"
    assert format_reply(False) == b"-ERR\r\n"


@given(st.text(max_size=24))
def test_parse_message_number_accepts_exactly_ascii_digit_strings(arg: str) -> None:
    """RFC 1939 §4: 1 to MAX_MESSAGE_NUMBER_DIGITS ASCII digits, nothing else."""
    valid = re.fullmatch(f"[0-9]{{1,{MAX_MESSAGE_NUMBER_DIGITS}}}", arg) is not None
    try:
        number = parse_message_number(arg)
    except NoSuchMessage:
        assert not valid
    else:
        assert valid
        assert number == int(arg)


def test_linebuffer_lets_a_consumed_burst_go() -> None:
    # An idle session must not keep its last pipelined burst (up to 64 KiB) alive:
    # once every line is taken, the buffer holds nothing (white box).
    buf = LineBuffer(limit=255, max_discard=1024)
    buf.feed(b"NOOP\r\n" * 10_000)
    assert [buf.next_line() for _ in range(10_000)] == [b"NOOP"] * 10_000
    assert buf.next_line() is None
    assert len(buf) == 0
    assert buf._buf == b""


# -- LANG language ranges (RFC 6856 section 3, RFC 4647) ---------------------------------


@pytest.mark.rfc("6856", "3")
@pytest.mark.parametrize(
    ("language_range", "expected"),
    [
        ("en", "en"),
        ("EN", "en"),
        ("en-US", "en"),  # RFC 4647 section 3.4 lookup: en-US, then en
        ("de-CH-1996", "de-CH"),
        ("de-CH-x-private", "de-CH"),  # a trailing singleton goes with its subtag
        ("*", "en"),  # the default
        ("de", "de-CH"),  # no plain de: the first tag it is a prefix of
        ("fr", None),
        ("e", None),
        ("", None),
        ("en_US", None),  # not a basic language range
        ("en-", None),
        ("toolonglanguage", None),
        ("*-US", None),
    ],
)
def test_choose_language(language_range: str, expected: str | None) -> None:
    assert choose_language(language_range, ["en", "de-CH"], "en") == expected


@given(st.text(max_size=30), st.lists(st.from_regex(r"[a-z]{2}(-[A-Z]{2})?", fullmatch=True)))
def test_choose_language_picks_an_offered_tag(language_range: str, tags: list[str]) -> None:
    chosen = choose_language(language_range, [*tags, "en"], "en")
    assert chosen is None or chosen in [*tags, "en"]
    if language_range.lower() in {tag.lower() for tag in tags}:
        assert chosen is not None
        assert chosen.lower() == language_range.lower()

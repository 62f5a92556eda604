"""The message corpus of the end-to-end tests, and what a client must receive.

Messages are stored with LF line ends unless their name says otherwise.  Each one
exercises a corner of RFC 1939's wire format:

* dot lines: byte-stuffing (RFC 1939 §3, DOT-02), including a line that is only ".";
* a first line starting with "." (DOT-02: Dovecot gets this one wrong);
* 8-bit Latin-1 and UTF-8 bodies, a raw UTF-8 header (DOT-06: passed through untouched);
* a line of 998 octets, RFC 5322's limit;
* a message stored with CRLF (no doubled CR on the wire, SIZE-01);
* no final newline (DOT-05: the server adds CRLF before the terminator);
* NUL octets (sent raw, as Dovecot does);
* headers only, without the blank line;
* :func:`big_message`: 5 MiB, generated deterministically, with dot lines throughout.

:func:`expected_wire` is what a client reassembles from a RETR response; it is computed
here from the definition, not with trio_pop3's own writer.
"""

from __future__ import annotations

import functools

from trio_pop3._proto._wire import header_needs_utf8
from trio_pop3.mailbox._surrogates import surrogate

__all__ = [
    "BIG_SIZE",
    "CORPUS",
    "big_message",
    "expected_size",
    "expected_top",
    "expected_wire",
    "full_corpus",
]

CRLF = b"\r\n"

#: Size of :func:`big_message` in octets (as stored, LF line ends).
BIG_SIZE = 5 * 1024 * 1024

#: Name -> message, in delivery order.
CORPUS: dict[str, bytes] = {
    "dot-lines": (
        b"From: sender@example.org\n"
        b"To: rcpt@example.org\n"
        b"Subject: dot lines\n"
        b"\n"
        b".a line starting with one dot\n"
        b"..a line starting with two dots\n"
        b".\n"
        b"...\n"
        b"a line with a . inside\n"
        b". \n"
        b"last line\n"
    ),
    "first-line-dot": (
        b".This first line starts with a dot (RFC 1939 section 3, DOT-02)\n"
        b"Subject: first line dot\n"
        b"\n"
        b"body\n"
    ),
    "latin-1": (
        b"Subject: Latin-1 body\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=iso-8859-1\n"
        b"Content-Transfer-Encoding: 8bit\n"
        b"\n"
        b"Gr\xfc\xdfe aus K\xf6ln, \xe7a va, \xa9 \xbd \xff\n"
        b"\xe9t\xe9\n"
    ),
    "utf-8": (
        "Subject: Grüße, 日本語のメール ✉\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n"
        "\n"
        "Grüße aus Köln — ça va? 𝄞 emoji: 📬\n"
        "Ελληνικά, русский, עברית\n"
    ).encode(),
    "998-octet-line": (
        b"Subject: a 998-octet line\n\n" + b"x" * 990 + b"-998-end\n" + b"short line\n"
    ),
    "crlf-stored": (
        b"Subject: stored with CRLF\r\n"
        b"From: crlf@example.org\r\n"
        b"\r\n"
        b"line one\r\n"
        b".dotted line in a CRLF message\r\n"
        b"\r\n"
        b"line three\r\n"
    ),
    "no-final-newline": (
        b"Subject: no final newline\n\nfirst body line\nthe last line has no newline"
    ),
    "nul-bytes": (b"Subject: NUL octets\n\nbefore\x00after\n\x00\n\x00\x00\x00 three NULs\nend\n"),
    "headers-only": (
        b"From: headers@example.org\nTo: rcpt@example.org\nSubject: headers only, no body\n"
    ),
}


def _check_corpus() -> None:
    line = CORPUS["998-octet-line"].split(b"\n")[2]
    assert len(line) == 998, len(line)


_check_corpus()


@functools.cache
def big_message() -> bytes:
    """Return a :data:`BIG_SIZE`-octet message, the same on every call and every run.

    Lines of varying length (10 to 200 octets); every 37th line starts with "." and
    every 101st is only ".", so stuffing is exercised all through the message.
    """
    parts = [b"Subject: a big message\nX-Size: 5 MiB\n\n"]
    size = len(parts[0])
    number = 0
    while True:
        number += 1
        if number % 101 == 0:
            line = b".\n"
        else:
            width = 10 + (number * 7919) % 191
            text = f"{number:07d} ".encode() + (b"abcdefghijklmnopqrstuvwxyz0123456789" * 6)
            line = text[:width] + b"\n"
            if number % 37 == 0:
                line = b"." + line
        if size + len(line) > BIG_SIZE - 8:
            break
        parts.append(line)
        size += len(line)
    tail = b"x" * (BIG_SIZE - size - 4) + b"end\n"
    parts.append(tail)
    message = b"".join(parts)
    assert len(message) == BIG_SIZE
    return message


def full_corpus() -> dict[str, bytes]:
    """:data:`CORPUS` plus the big message (named ``"big"``)."""
    return {**CORPUS, "big": big_message()}


def _wire_lines(message: bytes) -> list[bytes]:
    """The lines of ``message`` without their line ends (LF or CRLF)."""
    lines = message.split(b"\n")
    if lines[-1] == b"":  # the message ended with a line end
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def expected_wire(message: bytes) -> bytes:
    """What a client reassembles from RETR: every line ends in CRLF, a final CRLF added.

    RFC 1939 §3 (DOT-05): stored LF line ends become CRLF, stored CRLF stay CRLF, and
    a message without a final line end gets one.  Dot-stuffing is not included: this
    is the content after the client removed it.
    """
    return b"".join(line + CRLF for line in _wire_lines(message))


def expected_size(message: bytes) -> int:
    """The size LIST and STAT give for ``message`` to a client that never sent UTF8.

    RFC 1939 §5 (SIZE-01): the exact size of what RETR sends, which for a header
    with raw UTF-8 is the RFC 6857 surrogate of ``serve``'s default
    ``--utf8-legacy downgrade`` (its content is checked by the RETR tests).
    """
    size = len(expected_wire(message))
    if header_needs_utf8(message):
        made = surrogate(message)
        assert made is not None
        size += made[1]
    return size


def expected_top(message: bytes, body_lines: int) -> bytes:
    """What a client reassembles from ``TOP msg body_lines`` (RFC 1939 §7, TOP-01/02).

    The header, the blank line and ``body_lines`` lines of the body; the whole
    message if the body is shorter; just the header lines if there is no blank line.
    """
    lines = _wire_lines(message)
    try:
        blank = lines.index(b"")
    except ValueError:
        return expected_wire(message)
    return b"".join(line + CRLF for line in lines[: blank + 1 + body_lines])

"""Message bodies on the wire: CRLF normalisation, byte-stuffing, sizes and TOP.

Theory of operation
-------------------
A stored message is a byte string that may use LF or CRLF line ends (an MDA writing
Maildir uses LF).  On the wire every line ends in CRLF (RFC 1939 section 3), every line
that begins with "." gets one more "." in front (byte-stuffing, RFC 1939 section 3,
including the very first line of the message), a message that does not end in a line
break gets one, and the response ends with ".\\r\\n".

The size that LIST and STAT report is the number of octets the client receives for
the message with CRLF line ends, *not* counting the stuffing dots and not counting the
terminating ".\\r\\n" (RFC 1939 section 11).  Both the writer and the size counter go
through the same :class:`_Normaliser`, so a size and a RETR can never disagree.

Normalisation rules, applied to a stream of chunks split anywhere:

* ``CRLF`` stays ``CRLF``; a bare ``LF`` becomes ``CRLF``;
* a lone ``CR`` (not followed by ``LF``) is content and passes through unchanged;
* if the message is non-empty and does not end with a line break, ``CRLF`` is added.

Everything else (8-bit bytes, NUL) passes through untouched: the wire is 8-bit clean.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "HeaderEndFinder",
    "MessageWriter",
    "WireSizeCounter",
    "header_complete",
    "header_needs_utf8",
    "stuff_lines",
    "wire_size",
]

_CRLF = b"\r\n"
TERMINATOR = b".\r\n"


def _to_crlf(chunk: bytes) -> bytes:
    """Return ``chunk`` (which holds an LF) with every bare LF turned into CRLF."""
    if b"\r" not in chunk:  # LF-stored, as MDAs write Maildir: one pass
        return chunk.replace(b"\n", _CRLF)
    if chunk.count(b"\n") == chunk.count(_CRLF):  # CRLF-stored: nothing to change
        return chunk
    return chunk.replace(_CRLF, b"\n").replace(b"\n", _CRLF)


class _Normaliser:
    """Turn chunks of a stored message into chunks with CRLF line ends."""

    __slots__ = ("_cr_pending", "at_line_start", "empty")

    def __init__(self) -> None:
        self._cr_pending = False
        # True when the output so far is empty or ends with CRLF.
        self.at_line_start = True
        self.empty = True

    def _take(self, chunk: bytes) -> bytes:
        """Join a CR held back from the last chunk, hold back a final CR; track state."""
        if self._cr_pending:
            chunk = b"\r" + chunk
            self._cr_pending = False
        if chunk.endswith(b"\r"):
            # It may be the first half of a CRLF split across chunks.
            chunk = chunk[:-1]
            self._cr_pending = True
        if chunk:
            self.empty = False
            self.at_line_start = chunk.endswith(b"\n")
        return chunk

    def feed(self, chunk: bytes) -> bytes:
        chunk = self._take(chunk)
        return _to_crlf(chunk) if b"\n" in chunk else chunk

    def feed_size(self, chunk: bytes) -> int:
        """Return ``len(self.feed(chunk))`` without building the normalised copy."""
        chunk = self._take(chunk)
        # Each bare LF gains a CR.  No CR is left at the end of chunk (see _take),
        # so every CRLF of the message is counted whole, in one chunk.
        bare_lf = chunk.count(b"\n")
        if bare_lf and b"\r" in chunk:
            bare_lf -= chunk.count(_CRLF)
        return len(chunk) + bare_lf

    def finish(self) -> bytes:
        """Return what must follow the last chunk to end the message in CRLF."""
        tail = b""
        if self._cr_pending:
            self._cr_pending = False
            tail = b"\r"
            self.at_line_start = False
            self.empty = False
        if not self.at_line_start:
            tail += _CRLF
            self.at_line_start = True
        return tail


class WireSizeCounter:
    """Count a message's size as sent on the wire, chunk by chunk.

    Example::

        counter = WireSizeCounter()
        for chunk in (b"Subject: hi\\n", b"\\nbody"):
            counter.feed(chunk)
        assert counter.finish() == len(b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
    """

    __slots__ = ("_norm", "size")

    def __init__(self) -> None:
        self._norm = _Normaliser()
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        """Count one more chunk of the stored message."""
        self.size += self._norm.feed_size(chunk)

    def finish(self) -> int:
        """Return the total size in octets, including an added final CRLF."""
        self.size += len(self._norm.finish())
        return self.size


def wire_size(message: bytes) -> int:
    """Return the RFC 1939 size of a stored message: octets with CRLF line ends.

    Byte-stuffing is not counted (RFC 1939 section 11).

    >>> wire_size(b"a\\nb")
    6
    """
    counter = WireSizeCounter()
    counter.feed(message)
    return counter.finish()


class MessageWriter:
    """Turn a stored message into the data lines of a RETR or TOP response.

    Feed the stored bytes in chunks of any size; each call returns wire bytes (CRLF
    line ends, byte-stuffed).  :meth:`finish` returns the remainder including the
    terminating ``.\\r\\n``.

    Args:
        body_lines: ``None`` for the whole message (RETR); for TOP, the number of body
            lines to send after the header and the blank line that ends it.

    Attributes:
        done: True once a TOP response is complete: the rest of the message is not
            needed.

    Raises:
        ValueError: ``body_lines`` is negative.

    Pure and synchronous: no I/O, no checkpoints, nothing to cancel.
    """

    __slots__ = ("_body_left", "_in_body", "_norm", "_stuff_next", "done")

    def __init__(self, body_lines: int | None = None) -> None:
        if body_lines is not None and body_lines < 0:
            raise ValueError("body_lines must be >= 0")
        self._norm = _Normaliser()
        self._body_left = body_lines
        self._in_body = False
        self._stuff_next = True  # the next output byte starts a line
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        """Return the wire form of ``chunk`` (may be empty)."""
        if self.done:
            return b""
        data = self._norm.feed(chunk)
        if not data:
            return data
        if self._body_left is not None:
            data = self._limit(data)
            if not data:
                return data
        # b"." is a one-byte search (memchr): base64 and most text have no dot at all.
        if b"." in data and b"\n." in data:
            data = data.replace(b"\n.", b"\n..")
        if self._stuff_next and data[0] == 0x2E:  # "."
            data = b"." + data
        self._stuff_next = data.endswith(b"\n")
        return data

    def _limit(self, data: bytes) -> bytes:
        """Cut normalised data after the header and ``_body_left`` body lines."""
        assert self._body_left is not None
        out = []
        at_start = self._stuff_next
        pos = 0
        end = len(data)
        while pos < end:
            nl = data.find(b"\n", pos)
            stop = end if nl < 0 else nl + 1
            line = data[pos:stop]
            pos = stop
            if self._in_body:
                if self._body_left == 0:
                    self.done = True
                    break
                out.append(line)
                if nl >= 0:
                    self._body_left -= 1
            else:
                out.append(line)
                if at_start and line == _CRLF:
                    self._in_body = True
            at_start = nl >= 0
        return b"".join(out)

    def finish(self) -> bytes:
        """Return the end of the response: a final CRLF if needed, then ``.CRLF``."""
        if self.done:
            return TERMINATOR if self._stuff_next else _CRLF + TERMINATOR
        tail = self._norm.finish()  # CR or CRLF: never starts with "."
        if tail and self._body_left is not None:
            tail = self._limit(tail)  # TOP: the tail may be a body line not wanted
        if not tail:
            return TERMINATOR if self._stuff_next else _CRLF + TERMINATOR
        return tail + TERMINATOR


def stuff_lines(lines: Iterable[bytes]) -> bytes:
    """Format complete lines (without line ends) as a byte-stuffed multi-line body.

    The terminating ``.\\r\\n`` is included.

    >>> stuff_lines([b"1 120", b".hidden"])
    b'1 120\\r\\n..hidden\\r\\n.\\r\\n'
    """
    parts = []
    for line in lines:
        if line[:1] == b".":
            parts.append(b"." + line)
        else:
            parts.append(line)
        parts.append(_CRLF)
    parts.append(TERMINATOR)
    return b"".join(parts)


def header_complete(data: bytes) -> bool:
    """Return whether ``data`` holds a message's whole header (and its empty line).

    That is, whether :func:`header_needs_utf8` can decide from ``data`` alone: the
    header ends at the first empty line, with LF or CRLF line ends as on the wire.

    >>> header_complete(b"Subject: hi\\r\\n\\r\\nbody"), header_complete(b"\\nbody")
    (True, True)
    >>> header_complete(b"Subject: hi\\r\\nTo: al")
    False
    """
    return data[:1] == b"\n" or data[:2] == _CRLF or b"\n\n" in data or b"\n\r\n" in data


class HeaderEndFinder:
    """:func:`header_complete` for a message fed in chunks, without joining them.

    >>> finder = HeaderEndFinder()
    >>> finder.feed(b"Subject: hi\\r\\n\\r"), finder.feed(b"\\nbody")
    (False, True)
    """

    __slots__ = ("_done", "_head", "_tail")

    def __init__(self) -> None:
        self._head = b""  # the first two octets of the message
        self._tail = b""  # the last two octets fed
        self._done = False

    def feed(self, chunk: bytes) -> bool:
        """Take the next chunk; return whether the header has ended by its end."""
        if not self._done:
            # No copy of the chunk: an empty line lies in it, or across the seam.
            if len(self._head) < 2:
                self._head = (self._head + chunk[:2])[:2]
            seam = self._tail + chunk[:2]
            self._tail = chunk[-2:] if len(chunk) >= 2 else (self._tail + chunk)[-2:]
            self._done = (
                header_complete(self._head)
                or b"\n\n" in seam
                or b"\n\r\n" in seam
                or b"\n\n" in chunk
                or b"\n\r\n" in chunk
            )
        return self._done


def header_needs_utf8(data: bytes) -> bool:
    """Return whether the header at the start of ``data`` holds UTF-8 (RFC 6532).

    Such a message needs the client to have sent UTF8 (RFC 6856 section 2.1).  Only
    the header part found in ``data`` is examined: up to the first empty line (RFC 5322
    section 2.1), where a line ends in LF or CRLF, mixed or not, as on the wire (see
    ``_Normaliser``: a lone CR is content).  A message that starts with an empty
    line has no header.  Raw 8-bit bytes that are not valid UTF-8 (legacy Latin-1
    headers) do not count.

    >>> header_needs_utf8("Subject: Grüße\\n\\nbody".encode())
    True
    >>> header_needs_utf8("Subject: ascii\\n\\r\\nGrüße".encode())
    False
    """
    if data[:1] == b"\n" or data[:2] == _CRLF:
        return False  # the first line is the empty line: no header fields
    # A line end followed by an empty line: LF or CRLF, then LF ("\n\n") or CRLF
    # ("\n\r\n").  The header is everything before it.
    ends = [pos for pos in (data.find(b"\n\n"), data.find(b"\n\r\n")) if pos >= 0]
    header = data[: min(ends)] if ends else data
    if header.isascii():
        return False
    try:
        header.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Without an empty line, the header may go on past ``data``: a chunk boundary
        # may cut a character, and what came before it decides.  A header that ends
        # in ``data`` ends with its last line: a cut character there is not UTF-8.
        return not ends and exc.reason == "unexpected end of data"
    return True

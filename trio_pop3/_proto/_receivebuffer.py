"""A bounded line splitter for POP3 command input.

Theory of operation: bytes arrive in arbitrary pieces; :meth:`LineBuffer.next_line`
returns one complete line at a time, without its line end.  A line ends at LF; a CR
right before it is dropped too, so sloppy clients that send bare LF work (RFC 1939
section 3 says CRLF; Dovecot accepts LF as well).

Memory is bounded: at most ``limit`` octets of an unfinished line are kept.  When a
line grows past the limit, its bytes are thrown away as they arrive until its LF
shows up, and then :class:`LineTooLong` is returned in its place, so the session can
answer ``-ERR`` in order and go on.  If a single line keeps going past ``max_discard``
octets, :class:`BufferOverflow` is raised and the session should drop the client.

The search for LF resumes where the last one stopped, so a line trickling in one
byte at a time costs O(n), not O(n^2) (a denial-of-service defence).  Lines are
sliced out of the received bytes, one copy each (a pipelined burst of commands is
split without moving the rest of the burst); a line split across reads is collected
in a bytearray.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BufferOverflow", "LineBuffer", "LineTooLong"]


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """Returned in place of a line that exceeded the limit; its bytes were discarded."""

    length: int


class BufferOverflow(Exception):
    """One line exceeded the hard discard cap; the peer should be disconnected."""


class LineBuffer:
    """Collects received bytes and splits them into lines.

    Args:
        limit: Longest line kept, in octets including the line end.
        max_discard: Longest line tolerated at all; past it :meth:`next_line` raises
            :class:`BufferOverflow`.
    """

    __slots__ = ("_buf", "_discarded", "_discarding", "_pos", "_scanned", "limit", "max_discard")

    def __init__(self, *, limit: int, max_discard: int) -> None:
        # Bytes are kept as they were received and lines are sliced out of them: one
        # copy per line.  Only when a line spans two reads does the buffer become a
        # bytearray that the rest of the line is appended to.  _buf[_pos:] is what is
        # not consumed yet.
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._scanned = 0  # _buf[_pos:_scanned] is known to hold no LF
        self._discarding = False
        self._discarded = 0
        self.limit = limit
        self.max_discard = max_discard

    def __len__(self) -> int:
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray) -> None:
        """Add received bytes."""
        buf, pos = self._buf, self._pos
        if pos == len(buf):
            self._buf = bytes(data)  # no copy of a bytes object
            self._pos = self._scanned = 0
            return
        if type(buf) is bytearray:
            del buf[:pos]  # cheap at the front of a bytearray
            buf += data  # an unfinished line growing: amortised O(1) per byte
        else:
            grown = bytearray(memoryview(buf)[pos:])
            grown += data
            self._buf = grown
        self._scanned -= pos
        self._pos = 0

    def next_line(self, limit: int | None = None) -> bytes | LineTooLong | None:
        """Return the next complete line, :class:`LineTooLong`, or None if more data is needed.

        Args:
            limit: Overrides the buffer's limit for this line (a SASL response may be
                longer than a command).

        Raises:
            BufferOverflow: a line went past ``max_discard`` octets.
        """
        limit = self.limit if limit is None else limit
        buf = self._buf
        pos = self._pos
        nl = buf.find(b"\n", self._scanned)
        if nl < 0:
            pending = len(buf) - pos
            if self._discarding or pending > limit:
                self._discarding = True
                self._discarded += pending
                self._reset()
                if self._discarded > self.max_discard:
                    raise BufferOverflow(f"line longer than {self.max_discard} octets")
            elif pending:
                self._scanned = len(buf)
            else:
                self._reset()  # nothing pending: let the received bytes go
            return None
        self._pos = self._scanned = nl + 1
        length = nl + 1 - pos
        if self._discarding:
            length += self._discarded
            self._discarding = False
            self._discarded = 0
            if length > self.max_discard:
                raise BufferOverflow(f"line longer than {self.max_discard} octets")
            return LineTooLong(length)
        if length > limit:
            if length > self.max_discard:
                raise BufferOverflow(f"line longer than {self.max_discard} octets")
            return LineTooLong(length)
        line = buf[pos : nl - 1 if nl > pos and buf[nl - 1] == 0x0D else nl]
        return line if type(line) is bytes else bytes(line)

    def _reset(self) -> None:
        self._buf = b""
        self._pos = self._scanned = 0

    def has_line(self) -> bool:
        """Return whether a complete line is buffered (without consuming it)."""
        return self._buf.find(b"\n", self._scanned) >= 0

    def clear(self) -> bytes:
        """Drop and return everything buffered (e.g. plaintext pipelined after STLS)."""
        data = bytes(self._buf[self._pos :])
        self._reset()
        self._discarding = False
        self._discarded = 0
        return data

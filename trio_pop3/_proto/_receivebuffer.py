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
byte at a time costs O(n), not O(n^2) (a denial-of-service defence).
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

    __slots__ = ("_buf", "_discarded", "_discarding", "_scanned", "limit", "max_discard")

    def __init__(self, *, limit: int, max_discard: int) -> None:
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf known to hold no LF
        self._discarding = False
        self._discarded = 0
        self.limit = limit
        self.max_discard = max_discard

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray) -> None:
        """Add received bytes."""
        self._buf += data

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
        nl = buf.find(b"\n", self._scanned)
        if nl < 0:
            if self._discarding or len(buf) > limit:
                self._discarding = True
                self._discarded += len(buf)
                del buf[:]
                self._scanned = 0
                if self._discarded > self.max_discard:
                    raise BufferOverflow(f"line longer than {self.max_discard} octets")
            else:
                self._scanned = len(buf)
            return None
        self._scanned = 0
        if self._discarding:
            length = self._discarded + nl + 1
            del buf[: nl + 1]
            self._discarding = False
            self._discarded = 0
            if length > self.max_discard:
                raise BufferOverflow(f"line longer than {self.max_discard} octets")
            return LineTooLong(length)
        if nl + 1 > limit:
            del buf[: nl + 1]
            if nl + 1 > self.max_discard:
                raise BufferOverflow(f"line longer than {self.max_discard} octets")
            return LineTooLong(nl + 1)
        end = nl - 1 if nl > 0 and buf[nl - 1] == 0x0D else nl
        line = bytes(buf[:end])
        del buf[: nl + 1]
        return line

    def has_line(self) -> bool:
        """Return whether a complete line is buffered (without consuming it)."""
        return self._buf.find(b"\n", self._scanned) >= 0

    def clear(self) -> bytes:
        """Drop and return everything buffered (e.g. plaintext pipelined after STLS)."""
        data = bytes(self._buf)
        del self._buf[:]
        self._scanned = 0
        self._discarding = False
        self._discarded = 0
        return data

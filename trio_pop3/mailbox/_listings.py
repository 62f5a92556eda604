"""Wire-ready LIST and UIDL bodies, shared by the sessions that see the same snapshot.

Theory of operation
-------------------
A backend that finds a maildrop unchanged since the last login may return the very
same snapshot tuple again (:class:`~trio_pop3.mailbox.MaildirStore` does).  The full
LIST and UIDL of a session that has marked nothing deleted depend on that snapshot
alone, so they are formatted once and kept here by the snapshot's identity, ready to
write.  A backend that builds a new snapshot for every session only turns the cache
over: each session formats its own listing, as it would without the cache.

Each entry holds a reference to its snapshot, so the ``id()`` it is filed under
cannot be reused by another object while the entry lives, and a snapshot is an
immutable tuple of frozen :class:`~trio_pop3.MessageInfo`.  The cache is bounded in
octets and drops its oldest entries first; a listing too long to be worth keeping
is formatted every time, as before.

Pure and synchronous: no I/O, nothing to cancel.  One cache per process, used only
from the event loop's thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._proto._wire import MessageWriter

__all__ = [
    "LISTING_CACHE_BYTES",
    "LISTING_CACHE_MAX_ENTRY",
    "ListingCache",
    "format_listing",
]

#: Octets of bodies kept per kind (LIST, UIDL).  A Maildir UIDL line is about 50
#: octets, so 1 MiB holds the listings of about a thousand 20-message maildrops;
#: at 100 users the session benchmark needs 90 KiB.
LISTING_CACHE_BYTES = 1 << 20

#: Bodies longer than this are formatted for each command and not kept, so one large
#: maildrop cannot push out every other: 64 KiB is a UIDL of about 1,300 messages.
LISTING_CACHE_MAX_ENTRY = 64 * 1024


def format_listing(lines: Iterable[str]) -> bytes:
    """Return the body of a multi-line reply: CRLF line ends, byte-stuffed, terminated.

    The bytes :meth:`~trio_pop3.POP3Handler.send_data` sends after its status line.

    >>> format_listing(["1 120", "2 .hidden"])
    b'1 120\\r\\n2 .hidden\\r\\n.\\r\\n'
    >>> format_listing([])
    b'.\\r\\n'
    """
    writer = MessageWriter()
    text = "\n".join(lines)
    body = writer.feed(text.encode("utf-8") + b"\n") if text else b""
    return body + writer.finish()


class ListingCache:
    """Formatted bodies by snapshot identity, at most ``max_bytes`` octets in all.

    >>> cache = ListingCache()
    >>> snapshot = ("one", "two")
    >>> cache.get(snapshot) is None
    True
    >>> cache.put(snapshot, b"1 3\\r\\n2 3\\r\\n.\\r\\n")
    >>> cache.get(snapshot)
    b'1 3\\r\\n2 3\\r\\n.\\r\\n'
    >>> cache.get(("one", "two")) is None  # equal, but not the same snapshot
    True
    """

    __slots__ = ("_entries", "_max_bytes", "_max_entry", "_size")

    def __init__(
        self, max_bytes: int = LISTING_CACHE_BYTES, max_entry: int = LISTING_CACHE_MAX_ENTRY
    ) -> None:
        self._entries: dict[int, tuple[Any, bytes]] = {}
        self._size = 0
        self._max_bytes = max_bytes
        self._max_entry = max_entry

    def __len__(self) -> int:
        """Number of bodies kept."""
        return len(self._entries)

    @property
    def size(self) -> int:
        """Octets of bodies kept."""
        return self._size

    def get(self, snapshot: object) -> bytes | None:
        """Return the body kept for this very ``snapshot`` object, or None."""
        entry = self._entries.get(id(snapshot))
        if entry is None or entry[0] is not snapshot:
            return None
        return entry[1]

    def put(self, snapshot: object, body: bytes) -> None:
        """Keep ``body`` for ``snapshot`` unless too long; drop the oldest past the bound."""
        if len(body) > self._max_entry:
            return
        entries = self._entries
        old = entries.pop(id(snapshot), None)
        if old is not None:
            self._size -= len(old[1])
        entries[id(snapshot)] = (snapshot, body)
        self._size += len(body)
        while self._size > self._max_bytes:
            oldest = next(iter(entries))
            self._size -= len(entries.pop(oldest)[1])

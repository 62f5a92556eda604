"""The sizes a client without UTF8 is told when UTF-8 headers are downgraded.

Theory of operation
-------------------
With ``utf8_legacy="downgrade"``, RETR sends a client that never sent UTF8 an
RFC 6857 surrogate of each message whose header holds raw UTF-8: the header is
recoded to ASCII, and the message grows.  RFC 1939 section 5 makes LIST's and STAT's
sizes exact, and clients rely on it (Jakarta Mail computed a negative size, NeoMutt
showed 0 when LIST gave the stored size).  So at login such a session reads the
header of every message once, and a message that will be downgraded is listed as a
:class:`SurrogateInfo`: its surrogate's size, and the backend's own
:class:`~trio_pop3.mailbox.MessageInfo` beside it for every call into the backend.

Reading every header at each login would cost a file read per message, so the size
change of each message is kept per process, keyed by the store, the user and the
backend's (frozen, hashable) ``MessageInfo``: a backend's listing entry for a
message never changes while its bytes stay the same (the Maildir backend's key
holds the file's identity, inode, mtime and size).  A backend that returns the
same snapshot tuple for an unchanged maildrop (the Maildir backend does) also gets
the same surrogate listing back, so the sessions share it and its formatted LIST.
The first login after new mail reads only the new messages' headers.

The scan runs in the event loop's thread and checkpoints after each message, so one
large maildrop does not stall other sessions.  The recoding itself is pure Python
and slow (an audit measured 10 s for a 1 MB header), so :func:`surrogate_in_thread`
runs it in a worker thread, one at a time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from .._errors import MailboxError
from .._proto._downgrade import downgrade_header, split_header
from .._proto._wire import HeaderEndFinder, header_complete, header_needs_utf8, wire_size
from ._base import Mailbox, MailStore, MessageInfo

__all__ = [
    "DOWNGRADE_THREADS",
    "HEADER_SCAN_LIMIT",
    "SIZE_CACHE_ENTRIES",
    "SurrogateInfo",
    "SurrogateSizes",
    "aclose",
    "stored",
    "surrogate",
    "surrogate_in_thread",
    "whole_header",
]

logger = logging.getLogger("trio_pop3")

#: Most octets of a message read before RETR or TOP decides whether its header needs
#: UTF8 mode (RFC 6856 section 2.1), when a backend yields the header in several
#: chunks.  Ten times Postfix's ``header_size_limit`` (102,400), past which Postfix
#: itself takes the rest of a header for body.
HEADER_SCAN_LIMIT = 1024 * 1024

#: Messages whose size change is kept per process: at about 150 octets each, 50,000
#: are 7 MB, a thousand maildrops of 50 messages.  Past it the oldest are dropped
#: and read again at their next login.
SIZE_CACHE_ENTRIES = 50_000

#: Worker threads recoding headers at once.  The recoding holds the interpreter lock
#: (about 10 us per octet of header: 10 s for 1 MB, measured by an audit that froze
#: the event loop with it), so with one thread the event loop keeps at least half of
#: the lock however many clients fetch such messages.
DOWNGRADE_THREADS = 1

_DOWNGRADE_LIMITER: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar(
    "trio_pop3_downgrade_limiter"
)

#: Surrogate listings kept by the identity of the backend's snapshot: one per
#: maildrop that is logged into again while unchanged.
LISTING_MEMO_ENTRIES = 1024


@dataclass(frozen=True, slots=True)
class SurrogateInfo(MessageInfo):
    """A message listed with the size of its RFC 6857 surrogate.

    ``stored`` is the backend's own entry, which every backend call receives.
    """

    stored: MessageInfo | None = None


def stored(message: MessageInfo) -> MessageInfo:
    """The backend's entry for ``message`` (itself unless it is a surrogate's)."""
    if isinstance(message, SurrogateInfo) and message.stored is not None:
        return message.stored
    return message


def surrogate(data: bytes) -> tuple[bytes, int] | None:
    """``data`` with its header downgraded to ASCII (RFC 6857), and the size change.

    None when no surrogate can be made: the header does not end within ``data``
    (past :data:`HEADER_SCAN_LIMIT`) or is not UTF-8 throughout.
    """
    parts = split_header(data)
    if parts is None:
        return None
    header, rest = parts
    ascii_header = downgrade_header(header)
    if ascii_header is None:
        return None
    # The header ends in a line end, so the wire sizes of the parts add up.
    return ascii_header + rest, wire_size(ascii_header) - wire_size(header)


async def surrogate_in_thread(data: bytes) -> tuple[bytes, int] | None:
    """:func:`surrogate`, run in a worker thread so the event loop never waits on it.

    Cancellation:
        Returns at once when cancelled; the thread finishes on its own (it has no
        side effects), still holding its place among :data:`DOWNGRADE_THREADS`.
    """
    try:
        limiter = _DOWNGRADE_LIMITER.get()
    except LookupError:
        limiter = trio.CapacityLimiter(DOWNGRADE_THREADS)
        _DOWNGRADE_LIMITER.set(limiter)
    return await trio.to_thread.run_sync(surrogate, data, limiter=limiter, abandon_on_cancel=True)


async def whole_header(first: bytes, chunks: AsyncIterator[bytes]) -> bytes:
    """Return ``first`` joined with the chunks that follow it up to the header's end.

    Stops at :data:`HEADER_SCAN_LIMIT` octets, or when the message ends first.
    """
    if header_complete(first):  # the usual case: no read-ahead
        return first
    finder = HeaderEndFinder()
    finder.feed(first)
    parts = [first]
    size = len(first)
    while size < HEADER_SCAN_LIMIT:
        try:
            chunk = await chunks.__anext__()
        except StopAsyncIteration:
            break
        parts.append(chunk)
        size += len(chunk)
        if finder.feed(chunk):
            break
    return b"".join(parts)


async def aclose(iterator: AsyncIterator[bytes]) -> None:
    """Close ``iterator`` if it can be closed (an async generator)."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


class SurrogateSizes:
    """Per-process memory of size changes, and the listings built from it."""

    __slots__ = ("_growth", "_listings", "_max_entries")

    def __init__(self, max_entries: int = SIZE_CACHE_ENTRIES) -> None:
        self._growth: dict[tuple[MailStore, str, MessageInfo], int] = {}
        self._listings: dict[int, tuple[Any, ...]] = {}
        self._max_entries = max_entries

    async def listing(
        self, store: MailStore, user: str, mailbox: Mailbox, messages: Sequence[MessageInfo]
    ) -> Sequence[MessageInfo]:
        """Return ``messages`` with a :class:`SurrogateInfo` for each to be downgraded.

        Returns ``messages`` itself when none is, so a shared snapshot stays shared.
        A message that cannot be read now keeps its stored size: RETR answers it.

        Raises:
            trio.Cancelled: the scan is cancellable between and within reads.
        """
        memo = self._listings.get(id(messages))
        if memo is not None and memo[0] is messages and memo[1] is store and memo[2] == user:
            result: Sequence[MessageInfo] = memo[3]
            return result
        listed: list[MessageInfo] = []
        changed = False
        for message in messages:
            growth = await self._growth_of(store, user, mailbox, message)
            if growth:
                changed = True
                message = SurrogateInfo(
                    message.uid, message.size + growth, message.key, stored=message
                )
            listed.append(message)
        result = tuple(listed) if changed else messages
        if isinstance(messages, tuple):
            if len(self._listings) >= LISTING_MEMO_ENTRIES:
                del self._listings[next(iter(self._listings))]
            # The entry holds the snapshot, so its id() cannot be reused meanwhile.
            self._listings[id(messages)] = (messages, store, user, result)
        return result

    async def _growth_of(
        self, store: MailStore, user: str, mailbox: Mailbox, message: MessageInfo
    ) -> int:
        key = (store, user, message)
        try:
            known = self._growth.get(key)
            cacheable = True
        except TypeError:  # a backend key that cannot be hashed: read it each time
            known = None
            cacheable = False
        if known is not None:
            return known
        try:
            growth = await _read_growth(mailbox, message)
        except (MailboxError, OSError) as exc:
            logger.debug("cannot read a header to size its surrogate: %s", exc)
            await trio.lowlevel.checkpoint()
            return 0
        if cacheable:
            if len(self._growth) >= self._max_entries:
                del self._growth[next(iter(self._growth))]
            self._growth[key] = growth
        return growth


async def _read_growth(mailbox: Mailbox, message: MessageInfo) -> int:
    """How much larger the surrogate of ``message`` is (0: sent as stored)."""
    chunks = mailbox.read_message(message)
    try:
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            first = b""
        header = await whole_header(first, chunks)
    finally:
        await aclose(chunks)
    if not header_needs_utf8(header):
        # A read from the page cache need not have waited: let other sessions run.
        await trio.lowlevel.checkpoint()
        return 0
    made = await surrogate_in_thread(header)
    return 0 if made is None else made[1]

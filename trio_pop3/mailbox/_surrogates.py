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
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

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

#: Messages whose size change is kept per process, in the latest listing of each
#: maildrop: 50,000 are about 10 MB (a dict slot, and the backend's entry and
#: surrogate entry, which its own snapshot mostly shares), a thousand maildrops of
#: 50 messages.  Past it the maildrops logged into least recently are dropped and
#: read again at their next login.
SIZE_CACHE_ENTRIES = 50_000

#: Worker threads recoding headers at once.  The recoding holds the interpreter lock
#: (about 10 us per octet of header: 10 s for 1 MB, measured by an audit that froze
#: the event loop with it), so with one thread the event loop keeps at least half of
#: the lock however many clients fetch such messages.
DOWNGRADE_THREADS = 1

_DOWNGRADE_LIMITER: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar(
    "trio_pop3_downgrade_limiter"
)


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


@dataclass(slots=True)
class _Maildrop:
    """What :class:`SurrogateSizes` keeps of one maildrop: its latest listing."""

    #: The backend's snapshot the listing was made from, if it can be reused for the
    #: same snapshot object (a tuple, every header read); else None.
    snapshot: Sequence[MessageInfo] | None
    listing: Sequence[MessageInfo]
    #: The size change of each message of that snapshot whose header was read.
    growth: dict[MessageInfo, int]


class SurrogateSizes:
    """Per-process memory of size changes, and the listings built from it.

    Kept per maildrop (store and user), for its latest listing only: the entries of
    messages that are gone leave with the next login, and a listing made while a
    header could not be read is never reused.  Whole maildrops are dropped, least
    recently logged into first, once the messages remembered pass ``max_messages``;
    the maildrop just listed always stays, however large.
    """

    __slots__ = ("_drops", "_max_messages", "_messages")

    def __init__(self, max_messages: int = SIZE_CACHE_ENTRIES) -> None:
        self._drops: OrderedDict[tuple[MailStore, str], _Maildrop] = OrderedDict()
        self._max_messages = max_messages
        self._messages = 0

    def clear(self) -> None:
        """Forget everything (for tests)."""
        self._drops.clear()
        self._messages = 0

    async def listing(
        self, store: MailStore, user: str, mailbox: Mailbox, messages: Sequence[MessageInfo]
    ) -> Sequence[MessageInfo]:
        """Return ``messages`` with a :class:`SurrogateInfo` for each to be downgraded.

        Returns ``messages`` itself when none is, so a shared snapshot stays shared.
        A message that cannot be read now keeps its stored size: RETR answers it.

        Raises:
            trio.Cancelled: the scan is cancellable between and within reads.
        """
        key = (store, user)
        drop = self._drops.get(key)
        if drop is not None:
            self._drops.move_to_end(key)
            if drop.snapshot is messages:
                return drop.listing
        known = drop.growth if drop is not None else {}
        growth: dict[MessageInfo, int] = {}
        listed: list[MessageInfo] = []
        changed = False
        complete = True
        for index, message in enumerate(messages):
            try:
                size_change = known.get(message)
                hashable = True
            except TypeError:  # a backend key that cannot be hashed: read it each time
                size_change, hashable = None, False
            if size_change is None:
                size_change = await _growth_or_none(mailbox, message)
                if size_change is not None and hashable:
                    growth[message] = size_change
                else:
                    complete = False  # not remembered: the next login reads it again
                    size_change = size_change or 0
            else:
                growth[message] = size_change
                if index % _CHECKPOINT_EVERY == _CHECKPOINT_EVERY - 1:
                    await trio.lowlevel.checkpoint()  # a large maildrop, all remembered
            if size_change:
                changed = True
                message = SurrogateInfo(
                    message.uid, message.size + size_change, message.key, stored=message
                )
            listed.append(message)
        result = tuple(listed) if changed else messages
        reusable = complete and isinstance(messages, tuple)
        self._remember(key, _Maildrop(messages if reusable else None, result, growth))
        return result

    def _remember(self, key: tuple[MailStore, str], drop: _Maildrop) -> None:
        old = self._drops.pop(key, None)
        if old is not None:
            self._messages -= len(old.growth)
        self._drops[key] = drop
        self._messages += len(drop.growth)
        while self._messages > self._max_messages and len(self._drops) > 1:
            _, evicted = self._drops.popitem(last=False)
            self._messages -= len(evicted.growth)


#: While a listing reuses remembered sizes, it lets other sessions run every so many
#: messages, so that a maildrop of 100,000 does not hold the event loop.
_CHECKPOINT_EVERY = 1000


async def _growth_or_none(mailbox: Mailbox, message: MessageInfo) -> int | None:
    """:func:`_read_growth`, or None if the message cannot be read now."""
    try:
        return await _read_growth(mailbox, message)
    except (MailboxError, OSError) as exc:
        logger.debug("cannot read a header to size its surrogate: %s", exc)
        await trio.lowlevel.checkpoint()
        return None


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

"""The TRANSACTION-state view of a maildrop: numbering, deletion marks, RSET.

Invariants (RFC 1939 sections 4-5):

* Messages are numbered 1..n in the order of the snapshot taken at login; DELE never
  renumbers and numbers are never reused within a session (TRANS-01).
* A message marked deleted is invisible: STAT and LIST skip it and every reference
  to its number is an error (TRANS-02).
* Nothing is removed here; :meth:`Maildrop.deleted` is what UPDATE removes, and
  :meth:`Maildrop.retrieved` what it may flag as seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Set as AbstractSet
from typing import Generic, Protocol, TypeVar

__all__ = ["MAX_MESSAGE_NUMBER_DIGITS", "Maildrop", "NoSuchMessage", "parse_message_number"]

#: Message numbers with more digits than this are rejected before int() sees them
#: (WIRE-10: no absurd digit strings); 10**18 messages is beyond any maildrop.
MAX_MESSAGE_NUMBER_DIGITS = 18


class _Sized(Protocol):
    @property
    def size(self) -> int: ...


M = TypeVar("M", bound=_Sized)


class NoSuchMessage(ValueError):
    """The argument is not the number of a message that exists and is not deleted."""


def parse_message_number(arg: str) -> int:
    """Parse a message-number argument: decimal digits only (RFC 1939 section 4).

    >>> parse_message_number("12")
    12

    Raises:
        NoSuchMessage: signs, spaces inside, letters, or too many digits.
    """
    # str methods rather than a regex: this runs for every LIST n, RETR n, DELE n.
    # isascii() first, as isdigit() alone accepts digits of other scripts.
    if not (arg.isascii() and arg.isdigit() and len(arg) <= MAX_MESSAGE_NUMBER_DIGITS):
        raise NoSuchMessage("Invalid message number.")
    return int(arg)


#: The deletion (or retrieval) marks of a maildrop with none: shared, so an idle
#: session owns no set.
_NO_MARKS: frozenset[int] = frozenset()


class Maildrop(Generic[M]):
    """Numbering, deletion and retrieval marks over a snapshot of messages."""

    __slots__ = ("_deleted", "_messages", "_retrieved", "_total")

    def __init__(self, messages: Sequence[M]) -> None:
        # A backend's cached tuple is shared, not copied: an idle session is cheap.
        self._messages = messages if isinstance(messages, tuple) else tuple(messages)
        # No set until the first DELE: most sessions delete nothing, and an empty set
        # is 216 bytes of every idle session.
        self._deleted: AbstractSet[int] = _NO_MARKS
        self._retrieved: AbstractSet[int] = _NO_MARKS  # likewise, until a RETR
        self._total = sum(m.size for m in self._messages)

    def __len__(self) -> int:
        """Number of messages in the snapshot, deleted or not."""
        return len(self._messages)

    def stat(self) -> tuple[int, int]:
        """Return (count, total size) of the messages not marked deleted (STAT-01)."""
        return len(self._messages) - len(self._deleted), self._total

    def get(self, number: int) -> M:
        """Return message ``number`` (1-based).

        Raises:
            NoSuchMessage: out of range or marked deleted.
        """
        if number < 1 or number > len(self._messages):
            raise NoSuchMessage("No such message.")
        if number in self._deleted:
            raise NoSuchMessage("Message is deleted.")
        return self._messages[number - 1]

    def lookup(self, arg: str) -> tuple[int, M]:
        """Parse ``arg`` as a message number and return (number, message)."""
        number = parse_message_number(arg)
        return number, self.get(number)

    def pristine(self) -> tuple[M, ...] | None:
        """Return the snapshot if no message is marked deleted, else None.

        Every listing of a pristine maildrop depends on the snapshot alone, so
        sessions that share a snapshot can share its formatted listings.
        """
        return None if self._deleted else self._messages

    def visible(self) -> Iterator[tuple[int, M]]:
        """Yield (number, message) for every message not marked deleted."""
        deleted = self._deleted
        for index, message in enumerate(self._messages, 1):
            if index not in deleted:
                yield index, message

    def delete(self, number: int) -> None:
        """Mark message ``number`` deleted (DELE-01).

        Raises:
            NoSuchMessage: out of range or already deleted.
        """
        message = self.get(number)
        deleted = self._deleted
        if not isinstance(deleted, set):
            deleted = self._deleted = set()
        deleted.add(number)
        self._total -= message.size

    def reset(self) -> None:
        """Unmark every message (RSET-01)."""
        self._deleted = _NO_MARKS
        self._total = sum(m.size for m in self._messages)

    def deleted(self) -> list[M]:
        """Return the messages marked deleted, in message-number order."""
        return [self._messages[n - 1] for n in sorted(self._deleted)]

    def mark_retrieved(self, number: int) -> None:
        """Note that message ``number`` was sent in full (RETR); RSET keeps the mark."""
        retrieved = self._retrieved
        if not isinstance(retrieved, set):
            retrieved = self._retrieved = set()
        retrieved.add(number)

    def retrieved(self) -> list[M]:
        """Return the messages retrieved and not marked deleted, in number order."""
        deleted = self._deleted
        return [self._messages[n - 1] for n in sorted(self._retrieved) if n not in deleted]

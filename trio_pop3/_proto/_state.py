"""The POP3 session states and the one table that says which command runs where.

Invariants:

* A command is dispatched only if its name is in :data:`STANDARD_COMMANDS` (or a
  handler's additions) for the current state; a client can never reach a method
  that is not a registered command.
* The session starts in CONNECT, moves to AUTHORIZATION after the greeting, to
  TRANSACTION after login, to UPDATE only through QUIT in TRANSACTION, and always
  ends in DISCONNECT (RFC 1939 sections 3-6).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType

__all__ = ["STANDARD_COMMANDS", "State", "normalize_command_name"]


class State(enum.StrEnum):
    """A POP3 session state (RFC 1939 section 3, plus CONNECT and DISCONNECT).

    A member is also the string of its full name, so the comparison a port from
    the Perl original writes works: ``handler.state == "TRANSACTION"``.  (The
    abbreviations are not equal to it: ``State.parse("TRANS")`` reads them.)
    :meth:`parse` accepts any case and the abbreviations ``AUTH`` and ``TRANS``.

    >>> State.TRANSACTION == "TRANSACTION", str(State.AUTHORIZATION)
    (True, 'AUTHORIZATION')
    """

    # str's own hash, a C slot cached in the string (every command looks its state
    # up in a frozenset), and consistent with equality to the plain string.
    CONNECT = "CONNECT"
    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"
    DISCONNECT = "DISCONNECT"

    @classmethod
    def parse(cls, value: State | str) -> State:
        """Return the state named by ``value``.

        >>> State.parse("trans")
        <State.TRANSACTION: 'TRANSACTION'>

        Raises:
            ValueError: ``value`` names no state.
        """
        if isinstance(value, State):
            return value
        name = value.strip().upper()
        name = _ABBREVIATIONS.get(name, name)
        try:
            return cls[name]
        except KeyError:
            raise ValueError(f"unknown POP3 state {value!r}") from None


_ABBREVIATIONS = {"AUTH": "AUTHORIZATION", "TRANS": "TRANSACTION"}

_AUTH = frozenset({State.AUTHORIZATION})
_TRANS = frozenset({State.TRANSACTION})
_BOTH = _AUTH | _TRANS

#: Every standard command and the states in which it may be dispatched:
#: RFC 1939 sections 4-7, RFC 2449 section 5 (CAPA), RFC 2595 section 4 (STLS),
#: RFC 5034 section 4 (AUTH), RFC 6856 sections 2-3 (UTF8, LANG).
STANDARD_COMMANDS: Mapping[str, frozenset[State]] = MappingProxyType(
    {
        "USER": _AUTH,
        "PASS": _AUTH,
        "APOP": _AUTH,
        "AUTH": _AUTH,
        "STLS": _AUTH,
        "UTF8": _AUTH,
        "CAPA": _BOTH,
        "LANG": _BOTH,
        "QUIT": _BOTH,
        "STAT": _TRANS,
        "LIST": _TRANS,
        "RETR": _TRANS,
        "DELE": _TRANS,
        "NOOP": _TRANS,
        "RSET": _TRANS,
        "TOP": _TRANS,
        "UIDL": _TRANS,
    }
)


def normalize_command_name(name: str) -> str:
    """Return the canonical (upper-case) form of a command name.

    Raises:
        ValueError: the name is empty or not made of printable ASCII.
    """
    if not name or not all(0x21 <= ord(ch) <= 0x7E for ch in name):
        raise ValueError(f"invalid command name {name!r}")
    return name.upper()


def states_of(states: Iterable[State | str] | State | str) -> frozenset[State]:
    """Parse one state or an iterable of states into a frozenset."""
    if isinstance(states, (State, str)):
        return frozenset({State.parse(states)})
    return frozenset(State.parse(s) for s in states)

"""Helpers for testing POP3 servers built on trio_pop3: the counterpart of trio.testing.

Theory of operation
-------------------
* :class:`POP3TestClient` is the client side of a POP3 connection over any
  ``trio.abc.Stream``.  It parses every reply into a :class:`Reply` (status, response
  code, text, and for multi-line replies the un-stuffed data lines) and, in strict
  mode, checks the wire format as it reads: every line ends in CRLF, a status line
  starts with ``+OK``, ``-ERR`` or ``+`` and is at most 512 octets.  A server that
  breaks those rules raises :class:`ProtocolViolation`.
* :func:`open_memory_session` runs one connection of a handler through
  :meth:`~trio_pop3.POP3Server.handle_stream` over ``trio.testing.memory_stream_pair()``: no
  sockets and no real time, so it works under pytest-trio's ``autojump_clock`` and
  an idle timeout of ten minutes is tested in microseconds.
* :class:`MemoryListener` is a ``trio.abc.Listener`` of memory streams for
  :meth:`~trio_pop3.POP3Server.serve_listeners`, and :func:`serve_on_loopback` serves a server
  on a free port of 127.0.0.1 for clients that need a real socket (``poplib``,
  ``curl``).
* :func:`check_handler` and :func:`check_mailbox_backend` are a conformance suite,
  like trio's ``check_two_way_stream``: point them at your handler or your
  :class:`~trio_pop3.mailbox.MailStore` and they run the RFC 1939 and RFC 2449 rules
  of ``RFC-CHECKLIST.md`` against it, collect every broken rule, and raise one
  :class:`ConformanceError` naming them all.

Helpers that build the :class:`~trio_pop3.POP3Server` themselves use
:data:`TEST_LIMITS` unless given ``limits=``: failed logins are answered at once
instead of after the production delay of two seconds.
"""

from ._conformance import (
    check_handler as check_handler,
    check_mailbox_backend as check_mailbox_backend,
)
from ._conformance_rules import (
    CONFORMANCE_MESSAGES as CONFORMANCE_MESSAGES,
    CONFORMANCE_RULES as CONFORMANCE_RULES,
    ConformanceError as ConformanceError,
    ConformanceReport as ConformanceReport,
    RuleFailure as RuleFailure,
)
from ._testing_client import (
    # CRLF and MAX_REPLY_LINE are not in __all__, but were importable from here.
    CRLF as CRLF,
    MAX_REPLY_LINE as MAX_REPLY_LINE,
    POP3TestClient as POP3TestClient,
    ProtocolViolation as ProtocolViolation,
    Reply as Reply,
    UnexpectedReply as UnexpectedReply,
)
from ._testing_servers import (
    TEST_LIMITS as TEST_LIMITS,
    MemoryListener as MemoryListener,
    open_memory_session as open_memory_session,
    serve_on_loopback as serve_on_loopback,
)

__all__ = [
    "CONFORMANCE_MESSAGES",
    "CONFORMANCE_RULES",
    "TEST_LIMITS",
    "ConformanceError",
    "ConformanceReport",
    "MemoryListener",
    "POP3TestClient",
    "ProtocolViolation",
    "Reply",
    "RuleFailure",
    "UnexpectedReply",
    "check_handler",
    "check_mailbox_backend",
    "open_memory_session",
    "serve_on_loopback",
]


from ._util import fixup_module_metadata as _fixup_module_metadata

_fixup_module_metadata(__name__, globals())
del _fixup_module_metadata

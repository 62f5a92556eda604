"""Errors that carry a POP3 ``-ERR`` reply, and the extended response codes."""

from __future__ import annotations

import enum
from typing import ClassVar

__all__ = [
    "AuthenticationFailed",
    "ClientDisconnected",
    "MailboxError",
    "MailboxInUse",
    "POP3Error",
    "ResponseCode",
]


class ResponseCode(enum.StrEnum):
    """Extended response codes (RFC 2449 section 8, RFC 3206, RFC 6856 section 5).

    A code is rendered in square brackets right after ``-ERR`` or ``+OK``.
    """

    #: The user logged in too recently (RFC 2449 section 8.1.1).
    LOGIN_DELAY = "LOGIN-DELAY"
    #: Authentication succeeded but the maildrop is locked (RFC 2449 section 8.1.2).
    IN_USE = "IN-USE"
    #: A temporary system problem; retry later (RFC 3206 section 4).
    SYS_TEMP = "SYS/TEMP"
    #: A permanent system problem; tell the user to contact support (RFC 3206 section 4).
    SYS_PERM = "SYS/PERM"
    #: The problem is the user's credentials (RFC 3206 section 5).
    AUTH = "AUTH"
    #: The message needs UTF-8 mode (RFC 6856 section 5).
    UTF8 = "UTF8"


class POP3Error(Exception):
    """Raise from a command method to answer ``-ERR`` with this text and code.

    The session goes on; the exception is not logged as a failure of the server.

    Example::

        async def pop3_XSTATUS(self, arg: str | None) -> None:
            if arg is None:
                raise POP3Error("argument required")
    """

    #: Whether the command also counts towards ``Limits.max_bad_commands``, as an
    #: unknown command does (a subclass sets it; :class:`~trio_pop3.SASLCancelled`
    #: does, so a client cannot start and abort exchanges forever).
    counts_as_bad_command: ClassVar[bool] = False

    def __init__(self, text: str = "", code: ResponseCode | str | None = None) -> None:
        super().__init__(text)
        #: Free text of the ``-ERR`` line.
        self.text = text
        #: Optional response code, e.g. :attr:`ResponseCode.SYS_TEMP`.
        self.code = code


class AuthenticationFailed(POP3Error):
    """The credentials were wrong or the user is unknown (``-ERR [AUTH]``)."""

    def __init__(self, text: str = "Authentication failed.") -> None:
        super().__init__(text, ResponseCode.AUTH)


class MailboxError(POP3Error):
    """The maildrop cannot be opened or changed (``-ERR [SYS/TEMP]`` by default).

    ``code=None`` answers without a response code: for a condition that is neither
    temporary nor the system's, such as a message another program removed.
    """

    def __init__(
        self,
        text: str = "Mailbox unavailable.",
        code: ResponseCode | str | None = ResponseCode.SYS_TEMP,
    ) -> None:
        super().__init__(text, code)


class MailboxInUse(MailboxError):
    """Another session holds the maildrop's exclusive lock (``-ERR [IN-USE]``).

    RFC 1939 section 4: the server acquires an exclusive-access lock on login.
    """

    def __init__(self, text: str = "Mailbox is locked by another POP3 session.") -> None:
        super().__init__(text, ResponseCode.IN_USE)


class ClientDisconnected(Exception):
    """The client is gone: it closed or broke the connection, stopped reading (the
    send timeout passed), idled out, or the server is shutting down.

    Raised by :meth:`POP3Handler.send_ok` and the other ``send_*`` methods and by
    :meth:`POP3Handler.read_line`.  Let it propagate: the session then ends without
    UPDATE and :meth:`POP3Handler.disconnect` runs.  Catching it (for instance with a
    broad ``except Exception``) and carrying on only delays that.
    """

"""The mailbox layer's interfaces: a store of maildrops, an open maildrop, and users.

A :class:`MailStore` opens a user's maildrop, taking its exclusive lock (RFC 1939
section 4) and returning a :class:`Mailbox`: a snapshot of the messages present at
login, each with its wire size and unique id.  The session reads messages from it,
and at UPDATE (after QUIT) asks it to remove the messages marked deleted.  Whatever
way the session ends, :meth:`Mailbox.close` is called exactly once, and releases the
lock.  A :class:`Authenticator` decides who may log in.
"""

from __future__ import annotations

import abc
import hashlib
import hmac
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import trio

__all__ = ["Authenticator", "MailStore", "Mailbox", "MessageInfo", "ScramCredentials"]


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """One message of an open maildrop.

    Attributes:
        uid: The unique id UIDL reports: 1 to 70 characters in the range 0x21 to
            0x7E, stable across sessions (RFC 1939 section 7).
        size: The size in octets as sent on the wire with CRLF line ends, without
            byte-stuffing (RFC 1939 section 11); see :func:`trio_pop3.wire_size`.
        key: Backend-private data that locates the message (a file name, a row id).
    """

    uid: str
    size: int
    key: object = None


class Mailbox(abc.ABC):
    """An open, locked maildrop, for one session.

    Subclass it for your own storage; :class:`~trio_pop3.mailbox.MemoryMailbox` and
    :class:`~trio_pop3.mailbox.MaildirMailbox` are the ready-made ones.
    """

    @abc.abstractmethod
    async def list_messages(self) -> Sequence[MessageInfo]:
        """Return the messages of the maildrop, in the order they are numbered.

        Called once, right after the maildrop is opened; the list is the session's
        snapshot (mail arriving later is seen by the next session).
        """

    @abc.abstractmethod
    def read_message(self, message: MessageInfo) -> AsyncIterator[bytes]:
        """Yield the stored bytes of ``message`` in chunks (LF or CRLF line ends).

        Never hold a large message in memory: yield it piece by piece.  The session
        normalises line ends and byte-stuffs; it may stop iterating early (TOP) and
        then closes the iterator.

        Raises:
            MailboxError: the message cannot be read (answered ``-ERR [SYS/TEMP]``).
        """

    @abc.abstractmethod
    async def remove(self, messages: Sequence[MessageInfo]) -> None:
        """Remove ``messages`` for good; called only in UPDATE, after QUIT.

        Raises:
            MailboxError: some messages could not be removed.  Messages not in
                ``messages`` must never be lost, whatever happens.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release the maildrop lock; called exactly once when the session ends.

        It runs shielded from cancellation with a deadline.  Uncommitted deletions
        are simply forgotten: nothing was removed before :meth:`remove`.
        """


class MailStore(abc.ABC):
    """Opens users' maildrops."""

    @abc.abstractmethod
    async def open(self, user: str) -> Mailbox:
        """Lock and open the maildrop of an authenticated ``user``.

        Raises:
            MailboxInUse: another session holds the lock (``-ERR [IN-USE]``).
            MailboxError: the maildrop cannot be opened.
        """


@dataclass(frozen=True, slots=True)
class ScramCredentials:
    """What a server stores for SCRAM (RFC 5802 section 3), instead of a password.

    Attributes:
        iterations: PBKDF2 iteration count (RFC 7677: at least 4096).
        salt: The random salt.
        stored_key: H(ClientKey).
        server_key: HMAC(SaltedPassword, "Server Key").
    """

    iterations: int
    salt: bytes
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)


class Authenticator(abc.ABC):
    """Decides who may log in.

    Only :meth:`check_password` is required.  Implement :meth:`get_secret` to offer
    APOP and CRAM-MD5, which need the plaintext shared secret.
    """

    @abc.abstractmethod
    async def check_password(self, user: str, password: str) -> bool:
        """Return whether ``password`` is right for ``user``.

        An unknown user returns False, exactly like a wrong password, and should take
        about as long (no user enumeration by timing).  Slow hashes should run in a
        worker thread (:func:`trio.to_thread.run_sync`).
        """

    async def get_secret(self, user: str) -> str | None:
        """Return the plaintext shared secret of ``user``, or None if not available."""
        return None

    async def get_scram_credentials(self, user: str) -> ScramCredentials | None:
        """Return the SCRAM-SHA-256 credentials of ``user``, or None if not available.

        By default they are derived from :meth:`get_secret` when it gives a plaintext
        secret (4096 iterations, RFC 7677; the salt is derived from the user name with
        a per-process random key, so it is stable, as a stored salt would be, without
        revealing which users exist).  Override to return stored credentials.
        """
        secret = await self.get_secret(user)
        if secret is None:
            return None
        return await trio.to_thread.run_sync(_derive_scram, user, secret)


#: Iterations of SCRAM credentials derived from a plaintext secret (RFC 7677 §4: 4096).
DERIVED_SCRAM_ITERATIONS = 4096

_SALT_KEY = os.urandom(32)


def _derive_scram(user: str, secret: str) -> ScramCredentials:
    salt = hmac.digest(_SALT_KEY, user.encode("utf-8"), "sha256")[:16]
    salted = hashlib.pbkdf2_hmac("sha256", secret.encode("utf-8"), salt, DERIVED_SCRAM_ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    return ScramCredentials(
        iterations=DERIVED_SCRAM_ITERATIONS,
        salt=salt,
        stored_key=hashlib.sha256(client_key).digest(),
        server_key=hmac.digest(salted, b"Server Key", "sha256"),
    )

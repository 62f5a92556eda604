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

from ._proto._sasl import password_forms, saslprep, scram_server_keys

__all__ = ["Authenticator", "MailStore", "Mailbox", "MessageInfo", "ScramCredentials"]


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """One message of an open maildrop.

    Attributes:
        uid: The unique id UIDL reports: 1 to 70 characters in the range 0x21 to
            0x7E, stable across sessions, one per message (RFC 1939 section 7).
            :class:`~trio_pop3.mailbox.MailboxHandler` sends any other as its SHA-1
            in hex, and logs it; a repeated one is logged as an error.
        size: The size in octets as sent on the wire with CRLF line ends, without
            byte-stuffing (RFC 1939 section 11); see :func:`trio_pop3.wire_size`.
        key: Backend-private data that locates the message (a file name, a row id).

    Between listings an unchanged message should give an equal entry, and a message
    whose bytes changed (or a new message that took over a row id) a different one:
    :class:`~trio_pop3.mailbox.MailboxHandler` remembers per-message facts by it,
    such as the size of a downgraded header's surrogate.  The Maildir backend's key
    holds the file's inode, mtime and size for this.
    """

    uid: str
    size: int
    key: object = None


class Mailbox(abc.ABC):
    """An open, locked maildrop, for one session.

    Subclass it for your own storage; :class:`~trio_pop3.mailbox.MemoryMailbox` and
    :class:`~trio_pop3.mailbox.MaildirMailbox` are the ready-made ones.
    """

    # No instance dict of its own, so a subclass with ``__slots__`` has none either:
    # every logged-in idle session holds a mailbox.
    __slots__ = ()

    @abc.abstractmethod
    async def list_messages(self) -> Sequence[MessageInfo]:
        """Return the messages of the maildrop, in the order they are numbered.

        Called once, right after the maildrop is opened; the list is the session's
        snapshot (mail arriving later is seen by the next session).

        Raises:
            MailboxError: the maildrop cannot be listed.

        Error handling:
            If it raises, :class:`~trio_pop3.mailbox.MailboxHandler` calls
            :meth:`close` (releasing the lock) and then answers the login: a
            :class:`~trio_pop3.MailboxError` with its text and code (``-ERR
            [SYS/TEMP] ...`` by default), any other exception, logged, with ``-ERR
            [SYS/TEMP] Internal error.`` (``catch_errors``).  The session stays in
            AUTHORIZATION; it is not a failed login (no failure delay).

        Cancellation:
            A cancelled login cancels it; :meth:`close` is then called in the same,
            cancelled, scope (see there).
        """

    @abc.abstractmethod
    def read_message(self, message: MessageInfo) -> AsyncIterator[bytes]:
        """Yield the stored bytes of ``message`` in chunks (LF or CRLF line ends).

        Never hold a large message in memory: yield it piece by piece.  The session
        normalises line ends and byte-stuffs; it may stop iterating early (TOP) and
        then closes the iterator.

        Raises:
            MailboxError: the message cannot be read (answered ``-ERR [SYS/TEMP]``).

        Error handling:
            :class:`~trio_pop3.mailbox.MailboxHandler` reads the first chunk before
            it answers, so an error raised before the first chunk gets a clean
            ``-ERR`` (a :class:`~trio_pop3.MailboxError` with its text and code) and
            the session goes on.  An error from a later chunk is answered the same
            way if nothing of the response has left the server yet (it is withdrawn);
            once part of it was sent, the error is logged and the connection closed
            without UPDATE, so the client sees a truncated response rather than a
            wrong message.

        Cancellation:
            The iterator is driven while the reply is sent, so a cancelled session
            stops it at one of its checkpoints (or at a ``yield``).  It is closed
            (``aclose()``) however the reply ends, after a cancellation in the
            cancelled scope: keep the ``finally`` blocks of a generator free of
            ``await``, or shield them.
        """

    @abc.abstractmethod
    async def remove(self, messages: Sequence[MessageInfo]) -> None:
        """Remove ``messages`` for good; called only in UPDATE, after QUIT.

        Raises:
            MailboxError: some messages could not be removed.  Messages not in
                ``messages`` must never be lost, whatever happens.

        Cancellation:
            :class:`~trio_pop3.mailbox.MailboxHandler` calls it from
            :meth:`~trio_pop3.POP3Handler.commit`, shielded from cancellation under
            the server's ``cleanup_timeout`` (default 10 s): a shutdown never
            interrupts it, but when that deadline passes :class:`trio.Cancelled` is
            raised at its next checkpoint (work in a worker thread runs to
            completion).  Every unlink should be atomic, so that being stopped
            between two of them loses nothing.

        Error handling:
            A :class:`~trio_pop3.MailboxError` is answered to QUIT as ``-ERR`` with
            its text and code; any other exception, or the deadline passing, is
            logged and answered ``-ERR [SYS/TEMP] Some deleted messages were not
            removed.``.  In every case :meth:`close` is called next and the
            connection closes; the client may retry in a new session.
        """

    async def mark_seen(self, messages: Sequence[MessageInfo]) -> None:  # noqa: B027
        """Record that ``messages`` were retrieved (optional; the default does nothing).

        Called in UPDATE, after QUIT and after :meth:`remove`, with the messages the
        client fetched in full with RETR and did not delete, so that mail clients
        sharing the store (an IMAP server, say) show them as read, as Dovecot does.
        A session that ends without QUIT changes nothing.  Override it to set your
        store's "seen" flag; :class:`~trio_pop3.mailbox.MaildirMailbox` adds the
        ``S`` flag (``cur/<base>:2,S``).

        Cancellation:
            As for :meth:`remove`: shielded under the server's ``cleanup_timeout``.

        Error handling:
            The flag is a courtesy, not part of POP3: an exception is logged and
            QUIT still answers ``+OK``.
        """

    def seen(self, message: MessageInfo) -> bool:
        """Return whether ``message`` was flagged seen before this session (optional).

        Only the obsolete LAST command uses it (``MailboxHandler(enable_last=True)``):
        its count starts at the highest-numbered message seen, as in Dovecot.  The
        default says no message was; :class:`~trio_pop3.mailbox.MaildirMailbox`
        reads the ``S`` flag of the listed file name.  It must not block: it runs
        on the event loop, once per message, at login.
        """
        return False

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release the maildrop lock; called exactly once when the session ends.

        It runs shielded from cancellation with a deadline.  Uncommitted deletions
        are simply forgotten: nothing was removed before :meth:`remove`.

        Cancellation:
            Called from :meth:`~trio_pop3.POP3Handler.commit` and
            :meth:`~trio_pop3.POP3Handler.disconnect`, each shielded under the
            server's ``cleanup_timeout``.  It may nevertheless run in a scope that is
            already cancelled: after :meth:`remove` ran out of that time, or when a
            login is cancelled during :meth:`list_messages`.  So release the lock
            before the first checkpoint (as the ready-made mailboxes do, without
            awaiting at all): :class:`~trio_pop3.mailbox.MailboxHandler` does not
            call it a second time.

        Error handling:
            An exception is logged and ignored: QUIT still answers ``+OK`` once
            :meth:`remove` succeeded.  A close that runs past QUIT's clean-up
            deadline makes QUIT answer ``-ERR [SYS/TEMP] Timed out; deleted messages
            may not all be removed.``  During a login (after :meth:`list_messages`
            failed) the login's error is answered.
        """


class MailStore(abc.ABC):
    """Opens users' maildrops."""

    @abc.abstractmethod
    async def open(self, user: str) -> Mailbox:
        """Lock and open the maildrop of an authenticated ``user``.

        Raises:
            MailboxInUse: another session holds the lock (``-ERR [IN-USE]``).
            MailboxError: the maildrop cannot be opened.

        Error handling:
            :class:`~trio_pop3.mailbox.MailboxHandler` calls it after the user
            authenticated and answers an error instead of ``+OK``: a
            :class:`~trio_pop3.MailboxError` (or :class:`~trio_pop3.MailboxInUse`)
            with its text and code, any other exception, logged, with ``-ERR
            [SYS/TEMP] Internal error.`` (``catch_errors``).  The session stays in
            AUTHORIZATION; it is not a failed login (no failure delay).

        Cancellation:
            A cancelled login cancels it.  If it raises, it must not leave the lock
            held: release a lock taken before an ``await`` that is then cancelled.
            A mailbox it returns belongs to the caller, which closes it.
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

        ``password`` is what the client sent.  When its SASLprep form (RFC 4013)
        differs, a failed check is followed by a second one with that form, so a
        login may call this twice; count failed logins elsewhere (the handler
        does), not per call.

        Error handling:
            Return False to refuse; do not raise
            :class:`~trio_pop3.AuthenticationFailed`: from USER/PASS it would be
            answered at once, without the failure delay or the log line a False
            gets.  Any other exception (a database down, say) is logged with its
            traceback and answered ``-ERR [SYS/TEMP] Internal error.`` by the
            command that asked (PASS, AUTH), as ``catch_errors`` says; it does not
            count as a failed login, and the session stays in AUTHORIZATION.  With
            ``catch_errors=False`` it ends the connection and propagates out of the
            server.

        Cancellation:
            It runs inside a command, so :meth:`~trio_pop3.POP3Server.shutdown` lets
            it finish within its ``grace``; after that, or when the server is
            cancelled, :class:`trio.Cancelled` is raised at its next checkpoint and
            the session ends without a reply.  A worker thread of
            :func:`trio.to_thread.run_sync` runs to completion first, and the
            cancellation takes effect at the next checkpoint after it.
        """

    async def get_secret(self, user: str) -> str | None:
        """Return the plaintext shared secret of ``user``, or None if not available.

        Used by APOP, CRAM-MD5 and the default :meth:`get_scram_credentials`.  An
        unknown user returns None.

        Error handling:
            As for :meth:`check_password`: an exception is logged and answered
            ``-ERR [SYS/TEMP] Internal error.`` (``catch_errors``), and is not a
            failed login.

        Cancellation:
            As for :meth:`check_password`.  The default returns None at once,
            without a checkpoint.
        """
        return None

    async def get_scram_credentials(self, user: str) -> ScramCredentials | None:
        """Return the SCRAM-SHA-256 credentials of ``user``, or None if not available.

        By default they are derived from :meth:`get_secret` when it gives a plaintext
        secret, SASLprep'd as RFC 5802 section 3 asks (4096 iterations, RFC 7677; the
        salt is derived from the user name with a per-process random key, so it is
        stable, as a stored salt would be, without revealing which users exist).
        Override to return stored credentials.

        Error handling:
            As for :meth:`check_password`: an exception (here or from
            :meth:`get_secret`) is logged and answered ``-ERR [SYS/TEMP] Internal
            error.`` (``catch_errors``), and is not a failed login.

        Cancellation:
            As for :meth:`check_password`.  The default derives the keys (4096
            rounds of PBKDF2) in a worker thread, which runs to completion even if
            the call is cancelled.
        """
        secret = await self.get_secret(user)
        if secret is None:
            return None
        return await trio.to_thread.run_sync(_derive_scram, user, secret)


async def check_offered_password(authenticator: Authenticator, user: str, password: str) -> bool:
    """Return whether ``password``, as sent or SASLprep'd, is right for ``user``.

    USER/PASS and the SASL mechanisms that carry a password (PLAIN, LOGIN) check it
    through here: :meth:`Authenticator.check_password` is asked about each of
    :func:`~trio_pop3._proto._sasl.password_forms` in turn, the password as sent
    first, and the first match wins.  So a password stored without SASLprep (by
    Dovecot, or by :func:`~trio_pop3._passwd.hash_password`) matches when typed as
    it was stored, and one stored SASLprep'd (RFC 4616 section 2) matches too.  A
    password with a character SASLprep prohibits is refused unchecked (RFC 6856
    section 2.2).

    Timing: how many forms are checked depends only on the offered password, never
    on the user name, and each call takes as long for an unknown user as for a
    known one (the :meth:`~Authenticator.check_password` contract, which
    :class:`~trio_pop3._passwd.PasswdFileAuthenticator` keeps with its dummy
    hash).  A failure therefore costs the same for every user name, whether or not
    it exists; only a success may end after the first form.  A password SASLprep
    leaves as it is (any printable ASCII one) costs one check, as before.

    Error handling and cancellation: as for :meth:`Authenticator.check_password`.
    """
    for form in password_forms(password, offered=True):
        if await authenticator.check_password(user, form):
            return True
    return False


#: Iterations of SCRAM credentials derived from a plaintext secret (RFC 7677 §4: 4096).
DERIVED_SCRAM_ITERATIONS = 4096

_SALT_KEY = os.urandom(32)


def _derive_scram(user: str, secret: str) -> ScramCredentials:
    salt = hmac.digest(_SALT_KEY, user.encode("utf-8"), "sha256")[:16]
    # RFC 5802 section 3: SaltedPassword = Hi(Normalize(password), ...), and clients
    # normalise with SASLprep.  A secret SASLprep refuses no client can normalise
    # either; it is used as it is, as before.
    try:
        prepared = saslprep(secret, allow_unassigned=False)
    except ValueError:
        prepared = secret
    salted = hashlib.pbkdf2_hmac(
        "sha256", prepared.encode("utf-8"), salt, DERIVED_SCRAM_ITERATIONS
    )
    stored_key, server_key = scram_server_keys(salted)
    return ScramCredentials(DERIVED_SCRAM_ITERATIONS, salt, stored_key, server_key)

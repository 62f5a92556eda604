"""SASL mechanisms for the POP3 AUTH command (RFC 5034), and how they meet the handler.

Theory of operation
-------------------
``AUTH mechanism [initial-response]`` hands the exchange to a :class:`SASLMechanism`.
The mechanism never touches the connection: it talks to a :class:`SASLExchange`, which
the POP3 handler implements, through one method, :meth:`SASLExchange.challenge`
(send ``+ base64``, return the client's decoded answer).  The mechanism returns the
authenticated user name or raises; the handler turns that into ``+OK`` or ``-ERR``:

* :class:`~trio_pop3.AuthenticationFailed` (``-ERR [AUTH]``): wrong credentials,
  unknown user or malformed mechanism data, all with the same text, so a client learns
  nothing about which users exist (SEC-05);
* :class:`SASLCancelled`: the client answered ``*`` (SASL-05);
* :class:`SASLDecodeError`: a response was not base64 (SASL-10);
* any other :class:`~trio_pop3.POP3Error`: a protocol problem, answered as it says.

A failed AUTH leaves the session as it was (SASL-14).  Mechanism instances hold
configuration only; all state of one exchange lives in local variables of
:meth:`SASLMechanism.authenticate`, so one instance serves every connection at once.

The grammar and cryptography live in the sans-I/O module :mod:`trio_pop3._proto._sasl`.
"""

from __future__ import annotations

import abc
import hmac
import re
import secrets
from collections.abc import Callable
from typing import ClassVar, Protocol, final

from ._errors import AuthenticationFailed, POP3Error, ResponseCode
from ._mailbox import Authenticator, ScramCredentials, check_offered_password
from ._proto._sasl import (
    SCRAM_DEFAULT_ITERATIONS,
    SASLProtocolError,
    ScramServer,
    cram_md5_challenge,
    cram_md5_digest,
    decode_base64_strict,
    decode_initial_response,
    encode_challenge,
    parse_cram_md5_response,
    parse_plain,
    parse_scram_client_first,
    saslprep,
    scram_salted_password,
    scram_server_keys,
)

__all__ = [
    "DEFAULT_MECHANISMS",
    "CramMD5Mechanism",
    "LoginMechanism",
    "PlainMechanism",
    "SASLCancelled",
    "SASLDecodeError",
    "SASLExchange",
    "SASLMechanism",
    "SASLProtocolError",
    "ScramSHA256Mechanism",
    "decode_client_initial_response",
    "decode_client_response",
    "format_challenge",
    "make_scram_credentials",
]

#: RFC 4422 section 3.1: a mechanism name is 1 to 20 upper-case letters, digits, "-"
#: and "_".
_MECHANISM_NAME_RE = re.compile(r"[A-Z0-9_-]{1,20}")

#: RFC 5034 section 4 (SASL-05): a client response line of exactly "*" cancels.
_CANCEL = b"*"

#: Salt length for :func:`make_scram_credentials`; 16 random octets, as Dovecot uses.
_SCRAM_SALT_OCTETS = 16


class SASLCancelled(POP3Error):
    """The client cancelled the exchange with ``*`` (RFC 5034 section 4, SASL-05).

    Answered ``-ERR Authentication aborted by client.`` (Dovecot's text), without a
    response code and without a failure delay: no credentials were tried.  It
    counts towards ``Limits.max_bad_commands``: each exchange may cost the server a
    password hash, and a client looping ``AUTH`` and ``*`` was not limited.
    """

    counts_as_bad_command = True

    def __init__(self, text: str = "Authentication aborted by client.") -> None:
        super().__init__(text)


class SASLDecodeError(SASLProtocolError, POP3Error):
    """A client response is not valid base64 (RFC 5034 section 4, SASL-10).

    Both a :class:`SASLProtocolError` and a :class:`~trio_pop3.POP3Error`; answered
    ``-ERR [AUTH] Invalid base64 data in ...`` as Dovecot does.
    """

    def __init__(self, text: str = "Invalid base64 data.") -> None:
        POP3Error.__init__(self, text, ResponseCode.AUTH)


def decode_client_response(line: bytes | str) -> bytes:
    """Decode one client response line of an AUTH exchange (CRLF already removed).

    A handler calls this in :meth:`SASLExchange.challenge`.  An empty line is an empty
    response.

    Raises:
        SASLCancelled: the line is ``*`` (SASL-05).
        SASLDecodeError: the line is not strict base64 (SASL-10).
    """
    data = line.encode("utf-8", errors="surrogateescape") if isinstance(line, str) else line
    if data == _CANCEL:
        raise SASLCancelled
    try:
        return decode_base64_strict(data)
    except SASLProtocolError:
        raise SASLDecodeError("Invalid base64 data in continued response") from None


def decode_client_initial_response(argument: bytes | str) -> bytes:
    """Decode the initial-response argument of ``AUTH mechanism initial-response``.

    ``=`` means present but empty (SASL-06).  ``*`` is not a cancel here: it is just
    invalid base64.

    Raises:
        SASLDecodeError: neither ``=`` nor non-empty strict base64 (SASL-10).
    """
    if isinstance(argument, str):
        argument = argument.encode("utf-8", errors="surrogateescape")
    try:
        return decode_initial_response(argument)
    except SASLProtocolError:
        raise SASLDecodeError("Invalid base64 data in initial response") from None


def format_challenge(data: bytes) -> bytes:
    """Return the challenge line ``+ base64(data)`` without CRLF (SASL-04).

    Empty ``data`` gives exactly ``b"+ "``.
    """
    return encode_challenge(data)


def make_scram_credentials(
    password: str, *, iterations: int = SCRAM_DEFAULT_ITERATIONS, salt: bytes | None = None
) -> ScramCredentials:
    """Derive the SCRAM-SHA-256 credentials to store for ``password`` (RFC 5802 section 3).

    The password is prepared with SASLprep (as a stored string) first.  PBKDF2 is slow
    on purpose; in a server, run this in a worker thread.

    Args:
        password: The cleartext password.
        iterations: PBKDF2 iterations; RFC 7677 asks for at least 4096.
        salt: The salt; by default 16 fresh random octets.

    Raises:
        ValueError: SASLprep refuses the password.

    Cancellation:
        Synchronous and CPU-bound (``iterations`` rounds of PBKDF2): no checkpoint.
        From trio, call it through :func:`trio.to_thread.run_sync`, whose thread
        runs to completion even if the call is cancelled.
    """
    if salt is None:
        salt = secrets.token_bytes(_SCRAM_SALT_OCTETS)
    stored_key, server_key = scram_server_keys(scram_salted_password(password, salt, iterations))
    return ScramCredentials(iterations, salt, stored_key, server_key)


class SASLExchange(Protocol):
    """The handler's side of one AUTH exchange, as a mechanism sees it.

    The POP3 handler implements this; attributes may be plain attributes or read-only
    properties.  An exchange may also have a ``username_format`` attribute (a
    callable, or None), as :class:`~trio_pop3.mailbox.MailboxHandler`'s does: an
    authzid then names the authenticated user if the two are equal once formatted.
    """

    @property
    def initial_response(self) -> bytes | None:
        """The decoded initial response of the AUTH command, or None if none was given.

        ``AUTH PLAIN =`` gives ``b""`` (SASL-06).
        """

    @property
    def secure(self) -> bool:
        """Whether the connection is protected by TLS (STLS or implicit)."""

    @property
    def authenticator(self) -> Authenticator:
        """Who checks the credentials."""

    @property
    def hostname(self) -> str:
        """The server's host name, as CRAM-MD5 puts it in its challenge."""

    async def challenge(self, data: bytes) -> bytes:
        """Send ``+ base64(data)`` and return the client's decoded answer.

        Empty ``data`` sends exactly ``"+ "`` (SASL-04).  An empty answer line is ``b""``.

        What follows is what :class:`~trio_pop3.mailbox.MailboxHandler`'s exchange
        does; another implementation should behave alike.

        Raises:
            SASLCancelled: the client answered ``*`` (answered ``-ERR Authentication
                aborted by client.``).
            SASLDecodeError: the answer was not base64 (``-ERR [AUTH] Invalid
                base64 data in continued response``).  It is a
                :class:`~trio_pop3.POP3Error`.
            POP3Error: the answer line was longer than
                :attr:`~trio_pop3.Limits.max_auth_line` (``-ERR Line too long.``).
            ClientDisconnected: the client closed or broke the connection, or sent
                no answer within the login idle timeout (the session ends without a
                reply, RFC 1939 section 3), or :meth:`~trio_pop3.POP3Server.shutdown`
                was called (the client is told ``-ERR [SYS/TEMP] Server shutting
                down.``).  See :meth:`~trio_pop3.POP3Handler.read_line`.

        Cancellation:
            A checkpoint that waits for the client.  A graceful shutdown ends the
            wait at once with :class:`~trio_pop3.ClientDisconnected` (above);
            cancellation of the server raises :class:`trio.Cancelled`.

        Error handling:
            A mechanism should let all of these propagate.  None of them counts as
            a failed login: there is no failure delay, and after ``*``, bad base64
            or a too-long line the session stays in AUTHORIZATION as if AUTH had
            never been sent (SASL-14).
        """


class SASLMechanism(abc.ABC):
    """A SASL mechanism offered by AUTH; subclass it to add one.

    Set the class attributes, implement :meth:`authenticate`, and pass an instance in
    the server's mechanism list.  Keep per-exchange state in local variables: one
    instance serves all connections.

    Example::

        class OAuthBearerMechanism(SASLMechanism):
            '''OAUTHBEARER (RFC 7628), without the error-reporting round trip.'''

            name = "OAUTHBEARER"
            plaintext = True  # a bearer token is as reusable as a password
            initial_response = True

            def __init__(self, verify: Callable[[str, str], Awaitable[bool]]) -> None:
                self.verify = verify  # (user, token) -> valid?

            async def authenticate(self, exchange: SASLExchange) -> str:
                message = await self.first_response(exchange)
                gs2_header, _, rest = message.decode().partition("\\x01")
                user = gs2_header.removeprefix("n,a=").removesuffix(",")
                fields = dict(f.split("=", 1) for f in rest.split("\\x01") if "=" in f)
                token = fields.get("auth", "").removeprefix("Bearer ")
                if not user or not await self.verify(user, token):
                    raise AuthenticationFailed()
                return user

    Attributes:
        name: The mechanism name in upper case, as advertised in ``SASL`` and matched
            case-insensitively in AUTH (SASL-20).
        plaintext: The client sends a reusable secret in the clear (PLAIN, LOGIN).
            By policy the handler hides and refuses such mechanisms without TLS
            (PLAIN-06).
        initial_response: Whether the client may send the first message with the AUTH
            command.  False for mechanisms that start with a server challenge
            (CRAM-MD5): the handler must then answer an AUTH with an initial response
            with ``-ERR`` (SASL-08).
    """

    name: ClassVar[str]
    plaintext: ClassVar[bool] = False
    initial_response: ClassVar[bool] = True

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        name = cls.__dict__.get("name")
        if name is not None and (
            not isinstance(name, str) or _MECHANISM_NAME_RE.fullmatch(name) is None
        ):
            raise TypeError(f"{cls.__qualname__}.name must be an upper-case SASL name")

    @abc.abstractmethod
    async def authenticate(self, exchange: SASLExchange) -> str:
        """Run the exchange and return the name of the authenticated user.

        Raises:
            AuthenticationFailed: the credentials are wrong, the user is unknown, or
                the client's data is malformed; the same text in every case.
            SASLCancelled: the client cancelled (from :meth:`SASLExchange.challenge`).
            POP3Error: any other reason to answer ``-ERR``, such as the
                :class:`SASLDecodeError` of :meth:`SASLExchange.challenge`.
            ClientDisconnected: from :meth:`SASLExchange.challenge`: the client went
                away or idled out, or the server is shutting down.

        Cancellation:
            Every ``await`` (:meth:`SASLExchange.challenge`, the authenticator) is a
            checkpoint.  Cancellation of the server raises :class:`trio.Cancelled`
            there; let it propagate.  A graceful
            :meth:`~trio_pop3.POP3Server.shutdown` lets a running exchange go on for
            its ``grace`` period, except that a wait for the client's next response
            ends at once (:class:`~trio_pop3.ClientDisconnected`).  State kept in
            local variables needs no clean-up.

        Error handling:
            :class:`~trio_pop3.mailbox.MailboxHandler` answers
            :class:`AuthenticationFailed` after logging the failure and waiting
            :meth:`~trio_pop3.POP3Handler.delay_failed_login`; any other
            :class:`~trio_pop3.POP3Error` is answered at once, without a delay.  Any
            other exception (from the authenticator, say) is logged and answered
            ``-ERR [SYS/TEMP] Internal error.`` (``catch_errors``), and does not
            count as a failed login.  In every case the session stays in
            AUTHORIZATION (SASL-14), unless the client is gone or
            :attr:`~trio_pop3.Limits.max_auth_failures` is reached.
        """

    async def first_response(self, exchange: SASLExchange) -> bytes:
        """Return the client's first message, asking with an empty challenge if need be.

        That is the initial response if one was given, else the answer to ``"+ "``
        (SASL-07).

        Raises:
            SASLCancelled: the client answered ``*``.
            POP3Error: see :meth:`SASLExchange.challenge` (bad base64, a line too
                long).
            ClientDisconnected: see :meth:`SASLExchange.challenge` (the client went
                away or idled out, or the server is shutting down).

        Cancellation:
            With an initial response it returns it without a checkpoint; otherwise
            it is :meth:`SASLExchange.challenge`, a checkpoint.
        """
        if exchange.initial_response is not None:
            return exchange.initial_response
        return await exchange.challenge(b"")

    def reject_initial_response(self, exchange: SASLExchange) -> None:
        """Raise if the client sent an initial response to a server-first mechanism.

        The handler should have refused it already (SASL-08); this is the backstop.

        Raises:
            POP3Error: there is an initial response.
        """
        if exchange.initial_response is not None:
            raise POP3Error(f"{self.name} does not take an initial response.")


def _same_user(exchange: SASLExchange, one: str, other: str) -> bool:
    """Whether two prepared user names name one user, after the exchange's format."""
    username_format: Callable[[str], str] | None = getattr(exchange, "username_format", None)
    if username_format is not None:
        return username_format(one) == username_format(other)
    return one == other


def _prepare(text: str) -> str:
    """SASLprep ``text`` for a login; empty output counts as failure (PLAIN-05)."""
    try:
        prepared = saslprep(text)
    except ValueError:
        raise AuthenticationFailed from None
    if not prepared:
        raise AuthenticationFailed
    return prepared


class PlainMechanism(SASLMechanism):
    """PLAIN (RFC 4616): ``[authzid] NUL authcid NUL passwd`` in one message.

    Without an initial response the server sends the empty challenge ``"+ "`` (SASL-07).
    The identities are prepared with SASLprep (PLAIN-05).  The password is checked
    with :meth:`~trio_pop3.mailbox.Authenticator.check_password` as sent, then in its
    SASLprep form if that differs: stored passwords made without SASLprep (Dovecot's)
    match either way, as RFC 4616 section 2 allows for interoperating with them.  A
    non-empty authzid must be allowed by :meth:`authorize`, which by default accepts
    only the authcid itself (PLAIN-04); override it for master users.  Sends the
    password in the clear: offer it only over TLS (PLAIN-06).
    """

    name = "PLAIN"
    plaintext = True
    initial_response = True

    async def authenticate(self, exchange: SASLExchange) -> str:
        """Run PLAIN; see the class docstring.

        Raises:
            AuthenticationFailed: see :meth:`SASLMechanism.authenticate`.

        Errors from the exchange and the authenticator, and cancellation, are as
        described in :meth:`SASLMechanism.authenticate`.
        """
        message = await self.first_response(exchange)
        try:
            authzid, authcid, password = parse_plain(message)
        except SASLProtocolError:
            raise AuthenticationFailed from None
        authcid = _prepare(authcid)
        if authzid:
            authzid = _prepare(authzid)  # SASL-13: only a sent-empty authzid may be empty
        # PLAIN-05: the password as sent, then SASLprep'd (see check_offered_password).
        if not await check_offered_password(exchange.authenticator, authcid, password):
            raise AuthenticationFailed
        if authzid and not await self.authorize(exchange, authcid, authzid):
            raise AuthenticationFailed
        return authzid or authcid

    async def authorize(self, exchange: SASLExchange, authcid: str, authzid: str) -> bool:
        """Return whether ``authcid`` (already authenticated) may act as ``authzid``.

        Called only for a non-empty authzid.  By default only itself (compared after
        the exchange's ``username_format``, if it has one).

        Return False rather than raise to refuse: False is answered ``-ERR [AUTH]``
        after the failure delay.  An exception is handled as in
        :meth:`SASLMechanism.authenticate`.
        """
        return _same_user(exchange, authzid, authcid)


@final
class LoginMechanism(SASLMechanism):
    """LOGIN (non-standard, draft-murchison-sasl-login): user name, then password.

    The challenges are ``Username:`` and ``Password:``.  An initial response is the user
    name, and only ``Password:`` is asked (as Dovecot does).  The user name is prepared
    with SASLprep; the password is checked as sent, then SASLprep'd, as for PLAIN.
    Sends the password in the clear: offer it only over TLS.
    """

    name = "LOGIN"
    plaintext = True
    initial_response = True

    async def authenticate(self, exchange: SASLExchange) -> str:
        """Run LOGIN; see the class docstring.

        Raises:
            AuthenticationFailed: see :meth:`SASLMechanism.authenticate`.

        Errors from the exchange and the authenticator, and cancellation, are as
        described in :meth:`SASLMechanism.authenticate`.
        """
        user_octets = exchange.initial_response
        if user_octets is None:
            user_octets = await exchange.challenge(b"Username:")
        password_octets = await exchange.challenge(b"Password:")
        try:
            user_text = user_octets.decode("utf-8")
            password_text = password_octets.decode("utf-8")
        except UnicodeDecodeError:
            raise AuthenticationFailed from None
        user = _prepare(user_text)
        if not password_text or not await check_offered_password(
            exchange.authenticator, user, password_text
        ):
            raise AuthenticationFailed
        return user


@final
class CramMD5Mechanism(SASLMechanism):
    """CRAM-MD5 (RFC 2195): the client proves it knows the secret with HMAC-MD5.

    Not in :data:`DEFAULT_MECHANISMS`: the server must keep every password in the
    clear (:meth:`~trio_pop3.mailbox.Authenticator.get_secret`), and MD5 is long
    obsolete (CRAM-04).
    There is no initial response (SASL-08, CRAM-03); the challenge is
    ``<random.timestamp@hostname>``.  The digest is compared in constant time and may
    be in upper or lower case.  A user without a secret fails like a wrong digest.
    """

    name = "CRAM-MD5"
    plaintext = False
    initial_response = False

    async def authenticate(self, exchange: SASLExchange) -> str:
        """Run CRAM-MD5; see the class docstring.

        Raises:
            AuthenticationFailed: see :meth:`SASLMechanism.authenticate`.

        Errors from the exchange and the authenticator, and cancellation, are as
        described in :meth:`SASLMechanism.authenticate`.
        """
        self.reject_initial_response(exchange)
        challenge = cram_md5_challenge(exchange.hostname)
        response = await exchange.challenge(challenge)
        try:
            user_text, digest = parse_cram_md5_response(response)
        except SASLProtocolError:
            raise AuthenticationFailed from None
        user = _prepare(user_text)
        secret = await exchange.authenticator.get_secret(user)
        # Unknown user: compute a digest anyway, so both paths do the same work.
        expected = cram_md5_digest(secrets.token_hex(16) if secret is None else secret, challenge)
        if not hmac.compare_digest(expected, digest) or secret is None:
            raise AuthenticationFailed
        return user


@final
class ScramSHA256Mechanism(SASLMechanism):
    """SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel binding.

    The server stores only salted keys
    (:meth:`~trio_pop3.mailbox.Authenticator.get_scram_credentials`, see
    :func:`~trio_pop3.make_scram_credentials`), never the password, and the client never sends
    it.  Four steps in POP3 (SCRAM-10, SASL-12)::

        C: AUTH SCRAM-SHA-256 base64(n,,n=user,r=cnonce)
        S: + base64(r=cnonce snonce,s=salt,i=4096)
        C: base64(c=biws,r=cnonce snonce,p=proof)
        S: + base64(v=signature)
        C: (empty line)
        S: +OK

    An unknown user gets a deterministic fake salt and fails only at the proof, so the
    exchange looks the same (SCRAM-11).  An authzid other than the user fails.

    Args:
        fake_iterations: The iteration count announced for unknown users.  Store real
            credentials with the same count (the default, 4096, is Dovecot's), or the
            difference tells a client which users exist.
    """

    name = "SCRAM-SHA-256"
    plaintext = False
    initial_response = True

    def __init__(self, *, fake_iterations: int = SCRAM_DEFAULT_ITERATIONS) -> None:
        self.fake_iterations = fake_iterations

    async def authenticate(self, exchange: SASLExchange) -> str:
        """Run SCRAM-SHA-256; see the class docstring.

        Raises:
            AuthenticationFailed: see :meth:`SASLMechanism.authenticate`.

        Errors from the exchange and the authenticator, and cancellation, are as
        described in :meth:`SASLMechanism.authenticate`.
        """
        message = await self.first_response(exchange)
        try:
            client_first = parse_scram_client_first(message)
        except SASLProtocolError:
            raise AuthenticationFailed from None
        user = _prepare(client_first.username)  # SCRAM-02: prepared for the lookup only
        authzid = client_first.authzid
        credentials = await exchange.authenticator.get_scram_credentials(user)
        server = ScramServer(client_first, credentials, fake_iterations=self.fake_iterations)
        client_final = await exchange.challenge(server.server_first)
        try:
            server_final = server.verify_client_final(client_final)
        except SASLProtocolError:
            raise AuthenticationFailed from None
        if server_final is None or (authzid and not _same_user(exchange, _prepare(authzid), user)):
            raise AuthenticationFailed
        if await exchange.challenge(server_final):
            # SASL-12: the only acceptable answer to the server-final data is empty.
            raise AuthenticationFailed
        return user


#: The mechanisms a server offers unless told otherwise: PLAIN and LOGIN (over TLS
#: only, by policy) and SCRAM-SHA-256.  :class:`CramMD5Mechanism` is opt-in because it
#: needs plaintext secrets on the server and is built on MD5.
DEFAULT_MECHANISMS: tuple[SASLMechanism, ...] = (
    PlainMechanism(),
    LoginMechanism(),
    ScramSHA256Mechanism(),
)

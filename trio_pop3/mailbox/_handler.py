"""MailboxHandler: all of RFC 1939 on top of a MailStore and an Authenticator."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import string
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NoReturn

import trio

from .._errors import (
    AuthenticationFailed,
    POP3Error,
    ResponseCode,
)
from .._handler import POP3Handler, log_name
from .._mailbox import check_offered_password
from .._proto._commands import fit_greeting
from .._proto._maildrop import Maildrop, NoSuchMessage, parse_message_number
from .._proto._sasl import password_forms, saslprep
from .._proto._state import State
from .._proto._wire import header_needs_utf8
from .._sasl import (
    DEFAULT_MECHANISMS,
    SASLCancelled,
    SASLMechanism,
    decode_client_initial_response,
    decode_client_response,
    format_challenge,
)
from ._base import Authenticator, Mailbox, MailStore, MessageInfo, ScramCredentials
from ._listings import ListingCache, format_listing
from ._surrogates import (
    SurrogateSizes,
    aclose as _aclose,
    stored,
    surrogate_in_thread as _surrogate_in_thread,
    whole_header as _whole_header,
)

__all__ = ["LoginDelay", "MailboxHandler"]

logger = logging.getLogger("trio_pop3")

#: Octets of randomness in an APOP timestamp: RFC 1939 section 7 requires a
#: different timestamp for every greeting; 128 bits make them unguessable (GREET-04).
APOP_RANDOM_BYTES = 16


class MailboxHandler(POP3Handler):
    """A complete RFC 1939 server over a :class:`MailStore` and an :class:`Authenticator`.

    Implements USER, PASS, APOP, STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP and
    QUIT: stable message numbers, deleted messages invisible to every command,
    removal only in UPDATE after QUIT, exact sizes.

    Args:
        store: Opens and locks maildrops.
        authenticator: Checks passwords (and supplies APOP secrets).
        apop: Offer APOP (a timestamp in the greeting).  Off by default: it needs
            plaintext secrets on the server and MD5 (RFC-CHECKLIST APOP-04).  It
            sends no password, so like CRAM-MD5 it is offered with or without TLS
            (as by Dovecot); ``require_tls`` holds it back until STLS.  USER/PASS
            stay available too, as in Dovecot; RFC 1939 section 13 advises against
            both for one mailbox, so a site that wants APOP alone sets ``pop3_USER =
            None`` and ``pop3_PASS = None`` in a subclass (for mypy, with ``# type:
            ignore[assignment]``).
        allow_insecure_auth: Allow USER/PASS and plaintext SASL mechanisms on a
            connection that is not encrypted even though the server offers TLS.
            Without an SSL context on the server, plaintext login is always allowed.
            A client in ``Limits.trusted_networks`` counts as secure (see
            :meth:`secured`).
        require_tls: Refuse every login, whatever the mechanism, until TLS is active
            (RFC 2595 section 2.2's privacy mode, TLS-07; Dovecot's ``ssl =
            required``): USER, PASS, APOP and AUTH get ``-ERR [AUTH] TLS is
            required; send STLS first.``, and CAPA offers neither USER nor SASL
            before STLS.  Trusted clients are exempt.  The server needs an SSL
            context, or only trusted clients can ever log in.
        mechanisms: SASL mechanisms offered by AUTH (RFC 5034), in CAPA order.  Add
            your own :class:`~trio_pop3.SASLMechanism` subclass here.
        login_delay: A shared :class:`LoginDelay`: announce LOGIN-DELAY and refuse
            logins that come too soon (RFC 2449 section 6.5).
        expire: Announce EXPIRE (RFC 2449 section 6.7): days mail may be left on the
            server, or ``"NEVER"``.  Only announced; deleting old mail is the site's job.
        replace_nuls: Send each NUL octet of a message as 0x80, like Dovecot's
            ``pop3_client_workarounds = outlook-no-nuls``: some clients (Outlook)
            stop reading a message at a NUL.  Sizes are unchanged.  Off by default:
            the message is sent exactly as stored.
        username_format: Maps the user name a client sends (after SASLprep) to the
            one used to check its password, open its maildrop and log it, for USER,
            APOP and every SASL mechanism.  Dovecot lowercases it by default
            (``auth_username_format = %Lu``): pass ``ascii_lowercase`` for that, so
            ``USER ALICE`` logs in as ``alice``.  None (default) keeps it as sent.
        utf8_legacy: What RETR and TOP do with a message whose header holds raw UTF-8
            (RFC 6532) when the client has not sent UTF8, as most clients never do
            (curl, fetchmail, mpop).  RFC 6856 section 2.1 allows two answers:
            ``"refuse"`` (default) answers ``-ERR [UTF8]``; ``"downgrade"`` sends a
            surrogate whose header fields are recoded to ASCII as RFC 6857 describes
            (encoded-words, RFC 2231 parameters, ``Downgraded-`` fields; the body
            unchanged), and LIST, STAT and RETR's ``+OK`` give the surrogate's
            size: at login such a session reads the header of each message the
            process has not seen before (kept for the next logins).  ``"send"``
            sends it as stored, like Dovecot, which RFC 6856 forbids.  The whole
            header decides, read ahead across the backend's chunks (up to 1 MiB).
        enable_last: Answer the obsolete LAST command (RFC 1460 section 5; dropped
            by RFC 1725) in TRANSACTION, for old clients that still send it, like
            Dovecot's ``pop3_enable_last``: ``+OK n``, the highest message number
            sent by RETR or TOP in this session, or flagged seen before it
            (:meth:`Mailbox.seen`), 0 for none.  RSET sets it back to 0.  Off by
            default: LAST is then an unknown command, as in Dovecot.

    Example::

        store = MaildirStore("/var/mail")
        users = PasswdFileAuthenticator("/etc/trio-pop3/passwd")
        server = POP3Server(functools.partial(MailboxHandler, store, users))

    Raises:
        ValueError: ``expire`` is neither a number of days >= 0 nor ``"NEVER"``, or
            ``utf8_legacy`` is not ``"refuse"``, ``"downgrade"`` or ``"send"``.

    Error handling:
        The ``pop3_*`` command methods answer a client error by raising
        :class:`~trio_pop3.POP3Error` (``-ERR``, the session goes on).  Wrong
        credentials get ``-ERR [AUTH]`` after :meth:`login_failed`.  Errors of the
        store, the maildrop and the authenticator are answered as described at
        :class:`MailStore`, :class:`Mailbox` and :class:`Authenticator`: a
        :class:`~trio_pop3.MailboxError` with its code, anything else ``-ERR
        [SYS/TEMP] Internal error.`` (``catch_errors``).

    Resource handling:
        The maildrop opened at login stays locked until QUIT (:meth:`commit`
        closes it before ``+OK``) or the end of the session (:meth:`disconnect`).
    """

    def __init__(
        self,
        store: MailStore,
        authenticator: Authenticator,
        *,
        apop: bool = False,
        allow_insecure_auth: bool = False,
        require_tls: bool = False,
        mechanisms: Sequence[SASLMechanism] = DEFAULT_MECHANISMS,
        login_delay: LoginDelay | None = None,
        expire: int | Literal["NEVER"] | None = None,
        utf8_legacy: Literal["refuse", "downgrade", "send"] = "refuse",
        username_format: Callable[[str], str] | None = None,
        replace_nuls: bool = False,
        enable_last: bool = False,
    ) -> None:
        super().__init__()
        self.store = store
        self.authenticator = authenticator
        self.apop_enabled = apop
        self.allow_insecure_auth = allow_insecure_auth
        self.require_tls = require_tls
        self.mechanisms = tuple(mechanisms)
        self.login_delay = login_delay
        if (
            expire is not None
            and expire != "NEVER"
            and (not isinstance(expire, int) or expire < 0)
        ):
            raise ValueError("expire must be a number of days >= 0 or 'NEVER'")
        self.expire = expire
        if utf8_legacy not in ("refuse", "downgrade", "send"):
            raise ValueError("utf8_legacy must be 'refuse', 'downgrade' or 'send'")
        self.utf8_legacy = utf8_legacy
        self.username_format = username_format
        self.replace_nuls = replace_nuls
        self.enable_last = enable_last
        if enable_last:
            self.add_command("LAST", State.TRANSACTION)
        #: Whether the client sent UTF8 (RFC 6856 section 2).
        self.utf8 = False
        #: The authenticated user, once in TRANSACTION.
        self.user: str | None = None
        self.mailbox: Mailbox | None = None
        self.maildrop: Maildrop[MessageInfo] | None = None
        self._pending_user: str | None = None
        self._timestamp: str | None = None
        #: LAST's answer: the highest message number accessed (RFC 1460 section 5).
        self._last = 0

    # -- greeting and capabilities ------------------------------------------------
    def greeting(self) -> str:
        """The server's greeting, plus the APOP timestamp when APOP is on (RFC 1939 §7)."""
        text = super().greeting()
        # GREET-05: the timestamp *is* the APOP advertisement, so it appears only when
        # APOP is on.  It appears whatever the TLS policy: APOP never sends the
        # password (RFC 1939 section 7), and the greeting is the only place for it,
        # so one left out before STLS could never be used after it.  APOP before
        # STLS under ``require_tls`` is refused as AUTH is.
        if self.apop_enabled:
            rand = os.urandom(APOP_RANDOM_BYTES).hex()
            self._timestamp = f"<{os.getpid()}.{time.time_ns()}.{rand}@{self._s.config.hostname}>"
            text = fit_greeting(text, self._timestamp)
        return text

    def secured(self) -> bool:
        """Whether this connection counts as secure: TLS, or a trusted client.

        A client in ``Limits.trusted_networks`` (a webmail front end on the same
        host or network) counts as secure, as in
        Dovecot, whose ``login_trusted_networks`` lift ``disable_plaintext_auth``
        and ``ssl = required`` alike.
        """
        if self.tls:
            return True
        peer = self.peer
        return peer is not None and self._s.config.limits.is_trusted(peer[0])

    def plaintext_allowed(self) -> bool:
        """Whether plaintext logins are allowed on this connection now (RFC 2595 §2.3)."""
        return self.allow_insecure_auth or self._s.config.ssl_context is None or self.secured()

    def login_allowed(self) -> bool:
        """Whether any login is allowed now: always, unless ``require_tls`` (TLS-07)."""
        return not self.require_tls or self.secured()

    def capabilities(self) -> list[str]:
        """CAPA lines: USER only where plaintext login is allowed (TLS-05)."""
        caps = super().capabilities()
        if "USER" in caps and not (self.plaintext_allowed() and self.login_allowed()):
            caps.remove("USER")
        offered = self.offered_mechanisms()
        if offered:
            # RFC 5034 section 3 / SASL-17: announced in both states.
            caps.insert(caps.index("RESP-CODES"), "SASL " + " ".join(m.name for m in offered))
        at = caps.index("PIPELINING") + 1
        if self.login_delay is not None:
            caps.insert(at, f"LOGIN-DELAY {self.login_delay.seconds}")
        if self.expire is not None:
            caps.insert(at, f"EXPIRE {self.expire}")
        # RFC 6856 section 2: UTF8 command; USER: UTF-8 user names and passwords
        # (only where USER is offered).
        caps.insert(at, "UTF8 USER" if "USER" in caps else "UTF8")
        if self.utf8 and "STLS" in caps:
            caps.remove("STLS")  # refused after UTF8 (UTF8-08): not offered either
        caps.insert(caps.index("PIPELINING") + 1, "AUTH-RESP-CODE")
        return caps

    # -- authorization ------------------------------------------------------------------
    def _require_secure_login(self) -> None:
        if not self.login_allowed():
            raise POP3Error("TLS is required; send STLS first.", ResponseCode.AUTH)

    def _require_plaintext(self) -> None:
        self._require_secure_login()
        if not self.plaintext_allowed():
            raise POP3Error(
                "Plaintext authentication disallowed on non-secure connections.",
                ResponseCode.AUTH,
            )

    async def pop3_STLS(self, arg: str | None) -> None:
        """STLS (RFC 2595 section 4), refused after UTF8 (RFC 6856 section 2.1).

        A client must not send STLS after UTF8 (TLS-11); the server may refuse it
        with a plain ``-ERR`` (UTF8-08), so that UTF-8 mode is never something a
        plaintext attacker could have switched on for the encrypted session.
        """
        if self.utf8:
            raise POP3Error("STLS is not allowed after UTF8.")
        await super().pop3_STLS(arg)

    async def on_tls(self) -> None:
        """Forget what the client said before STLS (RFC 2595 section 4)."""
        self._pending_user = None
        self.utf8 = False  # unreachable through pop3_STLS; kept for subclasses

    async def pop3_UTF8(self, arg: str | None) -> None:
        """UTF8 (RFC 6856 section 2.1): serve messages as stored, UTF-8 headers included."""
        if arg is not None and arg.strip():
            raise POP3Error("UTF8 takes no arguments.")
        self.utf8 = True
        await self.send_ok("UTF8 enabled.")

    async def pop3_USER(self, arg: str | None) -> None:
        """USER name (RFC 1939 §7): remember the name; the answer never reveals if it exists."""
        self._require_plaintext()
        if arg is None or not arg.strip():
            raise POP3Error("Missing user name.")
        self._pending_user = self._login_name(arg.strip())
        await self.send_ok("Send your password.")

    async def pop3_PASS(self, arg: str | None) -> None:
        """PASS string (RFC 1939 §7): valid only right after USER."""
        self._require_plaintext()
        user, self._pending_user = self._pending_user, None
        # RFC 1939 section 7 (USER-01): PASS is valid only right after a successful USER.
        if user is None or self.previous_command != "USER":
            raise POP3Error("No user name given.")
        if arg is None:
            await self.login_failed(user)
        try:
            # As sent, then SASLprep'd (UTF8-04): stored passwords made without SASLprep,
            # such as Dovecot's, match too (see check_offered_password).
            ok = await check_offered_password(self.authenticator, user, arg)
        except AuthenticationFailed:  # an authenticator may raise instead of returning
            ok = False
        if not ok:
            await self.login_failed(user)
        await self.login(user)

    async def pop3_APOP(self, arg: str | None) -> None:
        """APOP name digest (RFC 1939 §7)."""
        self._pending_user = None
        if not self.apop_enabled or self._timestamp is None:
            raise POP3Error("APOP is not available.")
        if self.previous_command == "USER":
            # RFC 1939 section 7 (APOP-02): after the greeting or a failed USER or
            # PASS, not right after a successful USER (whose name is now forgotten).
            raise POP3Error("APOP is not allowed after a successful USER.")
        # Not the plaintext policy: the digest is no reusable password, as with
        # CRAM-MD5 and SCRAM (and Dovecot offers APOP without TLS too).
        self._require_secure_login()
        parts = (arg or "").split()
        if len(parts) != 2:
            raise POP3Error("Usage: APOP name digest")
        user, digest = self._login_name(parts[0]), parts[1]
        secret = await self.authenticator.get_secret(user)
        given = digest.lower().encode("utf-8", "replace")
        # RFC 6856 section 2.2 (UTF8-06): the digest is of the SASLprep'd secret.  A
        # secret stored unprepared (as Dovecot stores them) is tried as stored too,
        # as passwords are (password_forms); how many digests are tried depends only
        # on the stored secret, never on what the client sent.
        matched = False
        for form in password_forms(secret or "\x00"):
            expected = hashlib.md5(
                (self._timestamp + form).encode("utf-8", "surrogatepass"),
                usedforsecurity=False,
            ).hexdigest()
            matched |= hmac.compare_digest(expected.encode("ascii"), given)
        if not matched or not secret:  # no secret, or an empty one: never a login
            await self.login_failed(user)
        await self.login(user)

    def offered_mechanisms(self) -> list[SASLMechanism]:
        """The SASL mechanisms usable on this connection now (plaintext ones need TLS)."""
        if not self.login_allowed():
            return []
        plaintext = self.plaintext_allowed()
        return [m for m in self.mechanisms if plaintext or not m.plaintext]

    async def pop3_AUTH(self, arg: str | None) -> None:
        """AUTH mechanism [initial-response] (RFC 5034 section 4).

        ``AUTH`` alone lists the mechanisms (what some Outlook versions send).  A failed
        exchange leaves the session in AUTHORIZATION as it was (SASL-14): another
        mechanism, USER/PASS or APOP may follow.  A USER sent before AUTH must be
        sent again, since PASS may only follow USER directly (RFC 1939 section 7).
        """
        self._pending_user = None
        self._require_secure_login()
        offered = self.offered_mechanisms()
        if arg is None or not arg.strip():
            await self.send_data("", [m.name for m in offered])
            return
        name, _, rest = arg.strip().partition(" ")
        mechanism = next((m for m in self.mechanisms if m.name == name.upper()), None)
        if mechanism is None:
            raise POP3Error("Unsupported authentication mechanism.", ResponseCode.AUTH)
        if mechanism not in offered:
            raise POP3Error(
                "Plaintext authentication disallowed on non-secure connections.",
                ResponseCode.AUTH,
            )
        initial = decode_client_initial_response(rest.strip()) if rest.strip() else None
        if initial is not None and not mechanism.initial_response:
            # RFC 5034 section 4 (SASL-08): this mechanism starts with a server challenge.
            raise POP3Error("This mechanism does not take an initial response.")
        exchange = _Exchange(self, initial)
        try:
            user = await mechanism.authenticate(exchange)
        except SASLCancelled:
            raise
        except AuthenticationFailed:
            await self.login_failed(exchange.recorder.user or "-")
        await self.login(self._formatted(user))

    def _login_name(self, sent: str) -> str:
        """The user name to log in as, from the name the client sent (USER, APOP)."""
        return self._formatted(_prepare(sent))

    def _formatted(self, user: str) -> str:
        """``user`` passed through :attr:`username_format`, if there is one."""
        return user if self.username_format is None else self.username_format(user)

    async def login_failed(self, user: str) -> NoReturn:
        """Log a failed login in a fail2ban-friendly form and answer ``-ERR [AUTH]``.

        Raises:
            AuthenticationFailed: always, after the delay.

        Cancellation:
            Waits in :meth:`~trio_pop3.POP3Handler.delay_failed_login` (see there):
            cancellable.  The warning is logged and the failure counted before the
            wait.
        """
        peer = self.peer
        logger.warning(
            "authentication failure: user=%s rip=%s", log_name(user), peer[0] if peer else "-"
        )
        await self.delay_failed_login()
        raise AuthenticationFailed()

    async def login(self, user: str) -> None:
        """Open and lock ``user``'s maildrop, then enter TRANSACTION (RFC 1939 §4).

        Raises:
            POP3Error: ``[LOGIN-DELAY]`` when :class:`LoginDelay` refuses the login;
                ``[IN-USE]`` or ``[SYS/...]`` when the maildrop can't be opened or
                listed; the lock is released before the reply (STATE-03).
            ClientDisconnected: from sending ``+OK``.

        Cancellation:
            :meth:`MailStore.open` and :meth:`Mailbox.list_messages` are awaited
            unshielded.  If the listing raises or is cancelled, :meth:`Mailbox.close`
            is called at once (in the cancelled scope, if cancelled) and the
            exception propagates; once the maildrop is in ``self.mailbox``,
            :meth:`disconnect` closes it.

        Error handling:
            Any exception from the store or the maildrop propagates unchanged (see
            :meth:`MailStore.open` and :meth:`Mailbox.list_messages` for how it is
            answered); the session stays in AUTHORIZATION.
        """
        if self.login_delay is not None:
            self.login_delay.check(user)
        mailbox = await self.store.open(user)
        try:
            messages = await mailbox.list_messages()
            if not self.utf8 and self.utf8_legacy == "downgrade":
                # RFC 1939 section 5: LIST and STAT give the size RETR will send.
                messages = await _SURROGATE_SIZES.listing(self.store, user, mailbox, messages)
        except BaseException:
            await self._close_quietly(mailbox)
            raise
        self.user = user
        self.mailbox = mailbox
        self.maildrop = Maildrop(messages)
        if self.enable_last:
            self._last = _highest_seen(mailbox, messages)
        self._set_state(State.TRANSACTION)
        self.note_login_success(user)
        if self.login_delay is not None:
            self.login_delay.record(user)
        peer = self.peer
        logger.info("login: user=%s rip=%s", log_name(user), peer[0] if peer else "-")
        count, size = self.maildrop.stat()
        await self.send_ok(f"Logged in, {_count(count)} ({size} octets).")

    # -- transaction ----------------------------------------------------------------
    @property
    def _drop(self) -> Maildrop[MessageInfo]:
        if self.maildrop is None:  # pragma: no cover - the state table prevents it
            raise POP3Error("Not logged in.")
        return self.maildrop

    def _message(self, arg: str | None) -> tuple[int, MessageInfo]:
        if arg is None:
            raise POP3Error("Message number required.")
        try:
            return self._drop.lookup(arg.strip(" \t"))  # ASCII blanks only
        except NoSuchMessage as exc:
            raise POP3Error(str(exc)) from None

    async def pop3_STAT(self, arg: str | None) -> None:
        """STAT (RFC 1939 §5): ``+OK count size`` of undeleted messages."""
        count, size = self._drop.stat()
        await self.send_ok(f"{count} {size}")

    async def pop3_LIST(self, arg: str | None) -> None:
        """LIST [msg] (RFC 1939 §5): scan listings ``number size``."""
        if arg is not None and arg.strip():
            number, message = self._message(arg)
            await self.send_ok(f"{number} {message.size}")
            return
        count, size = self._drop.stat()
        await self._send_listing(f"{_count(count)} ({size} octets)", _LIST_BODIES, _scan_lines)

    async def pop3_UIDL(self, arg: str | None) -> None:
        """UIDL [msg] (RFC 1939 §7): unique-id listings."""
        if arg is not None and arg.strip():
            number, message = self._message(arg)
            await self.send_ok(f"{number} {_wire_uid(message.uid)}")
            return
        await self._send_listing("", _UIDL_BODIES, _uid_lines)

    async def _send_listing(
        self,
        text: str,
        cache: ListingCache,
        lines: Callable[[Maildrop[MessageInfo]], list[str]],
    ) -> None:
        """Send ``+OK text`` and the full listing, formatted once per shared snapshot.

        What :meth:`send_data` would send for ``lines(maildrop)``.  While nothing is
        marked deleted the body depends on the snapshot alone, and sessions that
        got the same snapshot object from the backend share it (see
        :mod:`trio_pop3.mailbox._listings`).
        """
        drop = self._drop
        snapshot = drop.pristine()
        body = None if snapshot is None else cache.get(snapshot)
        if body is None:
            body = format_listing(lines(drop))
            if snapshot is not None:
                cache.put(snapshot, body)
        await self.send_ok(text)
        await self._s.write(body)

    async def pop3_RETR(self, arg: str | None) -> None:
        """RETR msg (RFC 1939 §5): the whole message, byte-stuffed."""
        number, message = self._message(arg)
        await self._send_message(message, None)
        self._drop.mark_retrieved(number)  # for Mailbox.mark_seen at QUIT
        self._last = max(self._last, number)

    async def pop3_TOP(self, arg: str | None) -> None:
        """TOP msg n (RFC 1939 §7): the header, the blank line and n body lines."""
        parts = (arg or "").split()
        if len(parts) != 2:
            raise POP3Error("Usage: TOP message lines")
        number, message = self._message(parts[0])
        try:
            lines = parse_message_number(parts[1])
        except NoSuchMessage:
            raise POP3Error("Invalid number of lines.") from None
        await self._send_message(message, lines)
        self._last = max(self._last, number)

    async def _send_message(self, message: MessageInfo, lines: int | None) -> None:
        """RETR (``lines`` None: ``+OK <size> octets``) or TOP of ``message``."""
        assert self.mailbox is not None
        message = stored(message)  # listed with its surrogate's size, if downgraded
        size = message.size
        chunks = self.mailbox.read_message(message)
        # Read the first chunk before "+OK": a message that can't be opened still
        # gets a clean -ERR.  After "+OK" an error can only end the connection.
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            first = b""
        except BaseException:
            await _aclose(chunks)
            raise
        if not self.utf8 and self.utf8_legacy != "send":
            # RFC 6856 section 2.1 (UTF8-02): as stored only in UTF8 mode.  A backend
            # may yield the header in several chunks: the whole of it decides.
            try:
                first = await _whole_header(first, chunks)
                needs_utf8 = header_needs_utf8(first)
                surrogate = None
                if needs_utf8 and self.utf8_legacy == "downgrade":
                    surrogate = await _surrogate_in_thread(first)
            except BaseException:
                await _aclose(chunks)
                raise
            if needs_utf8:
                if surrogate is None:
                    await _aclose(chunks)
                    raise POP3Error("This message needs UTF8 mode.", ResponseCode.UTF8)
                first, growth = surrogate
                size += growth
        replace = self.replace_nuls
        if replace:
            first = first.replace(b"\0", b"\x80")
        # A MailboxError from a later chunk is the framework's to answer: -ERR if
        # nothing of the reply has been sent yet, else the connection is closed.
        text = f"{size} octets" if lines is None else ""
        await self.send_message(text, _prepend(first, chunks, replace), body_lines=lines)

    async def pop3_DELE(self, arg: str | None) -> None:
        """DELE msg (RFC 1939 §5): mark the message deleted; removed only at UPDATE."""
        number, _ = self._message(arg)
        self._drop.delete(number)
        await self.send_ok(f"Message {number} deleted.")

    async def pop3_RSET(self, arg: str | None) -> None:
        """RSET (RFC 1939 §5): unmark all messages."""
        self._drop.reset()
        self._last = 0  # LAST after RSET, as in Dovecot
        count, size = self._drop.stat()
        await self.send_ok(f"{_count(count)} ({size} octets).")

    async def pop3_LAST(self, arg: str | None) -> None:
        """LAST (RFC 1460 section 5, obsolete): the highest message number accessed.

        Runs only with ``enable_last=True``; see the class docstring.
        """
        await self.send_ok(str(self._last))

    async def pop3_NOOP(self, arg: str | None) -> None:
        """NOOP (RFC 1939 §5)."""
        await self.send_ok()

    # -- update and disconnect ------------------------------------------------------------
    async def commit(self) -> None:
        """Remove the messages marked deleted (RFC 1939 §6, UPDATE state).

        :meth:`Mailbox.remove` is called only if messages were deleted, then
        :meth:`Mailbox.mark_seen` with the messages retrieved with RETR and kept, if
        any; :meth:`Mailbox.close` follows in any case, so the lock is free before
        the reply to QUIT.

        Raises:
            MailboxError: from :meth:`Mailbox.remove` (answered to QUIT as ``-ERR``
                with its code).  Any exception of :meth:`Mailbox.remove` or
                :meth:`Mailbox.close` propagates; see
                :meth:`~trio_pop3.POP3Handler.commit` for the reply.

        Cancellation:
            Shielded under ``cleanup_timeout``, as
            :meth:`~trio_pop3.POP3Handler.commit` says; when that deadline passes,
            :meth:`Mailbox.close` still runs, in the cancelled scope.
        """
        if self.mailbox is None or self.maildrop is None:
            return
        doomed = [stored(m) for m in self.maildrop.deleted()]
        seen = [stored(m) for m in self.maildrop.retrieved()]
        mailbox, self.mailbox = self.mailbox, None
        try:
            if doomed:
                await mailbox.remove(doomed)
                logger.info(
                    "%s user=%s removed %d messages",
                    self._s.label,
                    log_name(self.user or ""),
                    len(doomed),
                )
            if seen:
                try:
                    await mailbox.mark_seen(seen)
                except Exception:  # a courtesy to other mail clients, not POP3's
                    logger.exception("%s cannot flag retrieved messages seen", self._s.label)
        finally:
            # Release the lock before the reply, so a client that reconnects as soon
            # as it reads +OK is not refused with [IN-USE].
            await self._close_quietly(mailbox)

    async def _close_quietly(self, mailbox: Mailbox) -> None:
        """Close ``mailbox`` even in a cancelled scope; log, never raise, its errors.

        A close that fails must not turn a good QUIT into an error, and a close that
        awaits must still release the lock when the surrounding scope was cancelled
        already (:meth:`Mailbox.remove` used up the ``cleanup_timeout`` of QUIT, or
        the login was cancelled): it then gets a shielded ``cleanup_timeout`` of its
        own.  Otherwise it runs in the surrounding scope, as :meth:`Mailbox.close`
        documents; a cancel scope costs about 4 % of a benchmark session's CPU.
        """
        if trio.current_effective_deadline() == -math.inf:  # cancelled already
            with trio.move_on_after(self._s.config.cleanup_timeout, shield=True):
                await self._close_logged(mailbox)
        else:
            await self._close_logged(mailbox)

    async def _close_logged(self, mailbox: Mailbox) -> None:
        try:
            await mailbox.close()
        except Exception:
            logger.exception("%s closing the maildrop failed", self._s.label)

    async def disconnect(self) -> None:
        """Release the maildrop lock; uncommitted deletions are simply forgotten.

        Does nothing if :meth:`commit` already closed the maildrop.

        Cancellation:
            Shielded under ``cleanup_timeout``, as
            :meth:`~trio_pop3.POP3Handler.disconnect` says.

        Error handling:
            An exception of :meth:`Mailbox.close` propagates, and the framework logs
            and ignores it.
        """
        mailbox, self.mailbox = self.mailbox, None
        if mailbox is not None:
            await mailbox.close()


def ascii_lowercase(user: str) -> str:
    """Lowercase the ASCII letters of a user name, as Dovecot's ``%Lu`` does.

    For ``MailboxHandler(username_format=ascii_lowercase)``.  Other letters are
    left as they are, as in Dovecot, so a passwd-file made for Dovecot works
    unchanged.

    >>> ascii_lowercase("Alice.SMITH")
    'alice.smith'
    >>> ascii_lowercase("ÅSA")
    'Åsa'
    """
    return user.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _prepare(text: str) -> str:
    """SASLprep a non-ASCII user name (RFC 6856 section 2.2, UTF8-04/05)."""
    if text.isascii():
        return text
    try:
        prepared = saslprep(text)
    except ValueError:
        raise AuthenticationFailed() from None
    if not prepared:
        raise AuthenticationFailed()
    return prepared


class LoginDelay:
    """Minimum seconds between two logins of the same user (RFC 2449 section 6.5).

    Share one instance between all connections (pass it through the handler factory).
    A login that comes too soon is refused with ``-ERR [LOGIN-DELAY]``.  Times are
    kept in memory, on trio's clock, and forgotten after ``seconds``.

    Example::

        delay = LoginDelay(900)
        factory = functools.partial(MailboxHandler, store, users, login_delay=delay)

    Raises:
        ValueError: ``seconds`` is negative.
    """

    def __init__(self, seconds: int) -> None:
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self.seconds = seconds
        self._last: dict[str, float] = {}

    def check(self, user: str) -> None:
        """Raise ``POP3Error([LOGIN-DELAY])`` if ``user`` logged in too recently.

        :meth:`MailboxHandler.login` calls it after the credentials were checked
        and before the maildrop is opened.

        Raises:
            POP3Error: ``user``'s last login (:meth:`record`) was less than
                ``seconds`` ago: ``-ERR [LOGIN-DELAY] Login delay not yet
                expired.``.  The session stays in AUTHORIZATION; this is not a
                failed login (no failure delay).

        Cancellation:
            Synchronous; must be called from the trio thread (it reads trio's
            clock).
        """
        last = self._last.get(user)
        if last is not None and trio.current_time() - last < self.seconds:
            raise POP3Error("Login delay not yet expired.", ResponseCode.LOGIN_DELAY)

    def record(self, user: str) -> None:
        """Note a successful login of ``user`` now."""
        now = trio.current_time()
        if len(self._last) > 10_000:
            # Forget expired entries so the table stays bounded by active users.
            self._last = {u: t for u, t in self._last.items() if now - t < self.seconds}
        self._last[user] = now


class _RecordingAuthenticator(Authenticator):
    """Delegates to an authenticator and remembers the last user name asked about.

    The name is passed through the handler's ``username_format`` first, so SASL
    mechanisms look users up as USER and APOP do.
    """

    def __init__(self, inner: Authenticator, formatted: Callable[[str], str]) -> None:
        self.inner = inner
        self.formatted = formatted
        self.user: str | None = None

    def _record(self, user: str) -> str:
        self.user = user = self.formatted(user)
        return user

    async def check_password(self, user: str, password: str) -> bool:
        return await self.inner.check_password(self._record(user), password)

    async def get_secret(self, user: str) -> str | None:
        return await self.inner.get_secret(self._record(user))

    async def get_scram_credentials(self, user: str) -> ScramCredentials | None:
        return await self.inner.get_scram_credentials(self._record(user))


@dataclass(slots=True)
class _Exchange:
    """MailboxHandler's side of one SASL exchange (:class:`trio_pop3.SASLExchange`)."""

    handler: MailboxHandler
    initial_response: bytes | None
    recorder: _RecordingAuthenticator = field(init=False)

    def __post_init__(self) -> None:
        handler = self.handler
        self.recorder = _RecordingAuthenticator(handler.authenticator, handler._formatted)

    @property
    def secure(self) -> bool:
        return self.handler.tls

    @property
    def authenticator(self) -> Authenticator:
        # A recording proxy: a failed login is logged with the user name the
        # mechanism asked about, whatever the mechanism (fail2ban, SEC-04).
        return self.recorder

    @property
    def hostname(self) -> str:
        return self.handler._s.config.hostname

    @property
    def username_format(self) -> Callable[[str], str] | None:
        return self.handler.username_format

    async def challenge(self, data: bytes) -> bytes:
        handler = self.handler
        await handler.send_raw(format_challenge(data))
        line = await handler.read_line(limit=handler._s.config.limits.max_auth_line)
        return decode_client_response(line)


#: What sessions without UTF8 are told of downgraded messages' sizes (utf8_legacy).
_SURROGATE_SIZES = SurrogateSizes()

#: Full LIST and UIDL bodies of shared snapshots (see MailboxHandler._send_listing).
_LIST_BODIES = ListingCache()
_UIDL_BODIES = ListingCache()


def _highest_seen(mailbox: Mailbox, messages: Sequence[MessageInfo]) -> int:
    """The highest message number that :meth:`Mailbox.seen` says was seen, or 0."""
    for number in range(len(messages), 0, -1):
        if mailbox.seen(stored(messages[number - 1])):
            return number
    return 0


def _count(messages: int) -> str:
    """``"1 message"``, ``"2 messages"``: for the text of a reply."""
    return "1 message" if messages == 1 else f"{messages} messages"


def _scan_lines(drop: Maildrop[MessageInfo]) -> list[str]:
    """LIST's scan listings (RFC 1939 section 5)."""
    return [f"{n} {m.size}" for n, m in drop.visible()]


def _uid_lines(drop: Maildrop[MessageInfo]) -> list[str]:
    """UIDL's unique-id listings (RFC 1939 section 7)."""
    visible = list(drop.visible())
    uids = [_wire_uid(m.uid) for _, m in visible]
    if len(set(uids)) != len(uids):
        # Nothing here can tell which message a client saw under the repeated id.
        logger.error("the maildrop's backend gave one unique-id to several messages")
    return [f"{n} {uid}" for (n, _), uid in zip(visible, uids, strict=True)]


#: Longest unique-id UIDL may send (RFC 1939 section 7).
MAX_UID_LENGTH = 70


def _wire_uid(uid: str) -> str:
    """``uid`` as UIDL sends it: itself if RFC 1939 section 7 allows it, else a digest.

    A unique-id is 1 to 70 characters from 0x21 to 0x7E.  A backend's that is not
    (a space, a non-ASCII character, too long) is replaced by its SHA-1 in hex, which
    is, and stays the same from session to session, as a unique-id must.
    """
    if 0 < len(uid) <= MAX_UID_LENGTH and uid.isascii() and uid.isprintable() and " " not in uid:
        return uid
    logger.warning("the maildrop's backend gave the unique-id %r, which UIDL cannot send", uid)
    return hashlib.sha1(uid.encode("utf-8", "surrogateescape")).hexdigest()


async def _prepend(
    first: bytes, rest: AsyncIterator[bytes], replace_nuls: bool = False
) -> AsyncIterator[bytes]:
    """``first``, then the chunks of ``rest`` (with NULs as 0x80 if ``replace_nuls``)."""
    try:
        yield first
        async for chunk in rest:
            yield chunk.replace(b"\0", b"\x80") if replace_nuls else chunk
    finally:
        await _aclose(rest)

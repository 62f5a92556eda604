"""POP3Handler: the skeleton a server's commands are written on.

One handler instance serves one connection.  The framework owns the connection,
the state machine and the wire format; a subclass supplies each command as an
``async def pop3_NAME(self, arg)`` method.  See :class:`POP3Handler`.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Final

import trio

from ._errors import ClientDisconnected, POP3Error, ResponseCode
from ._proto._commands import format_reply
from ._proto._lang import choose_language
from ._proto._maildrop import parse_message_number
from ._proto._receivebuffer import LineTooLong
from ._proto._state import STANDARD_COMMANDS, State, normalize_command_name, states_of
from ._proto._wire import MessageWriter
from ._throttle import failure_delay
from ._util import run_protected
from ._version import __version__

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["POP3Handler"]

logger = logging.getLogger("trio_pop3")

Line = str | bytes

#: Name of the implementation in CAPA (RFC 2449 section 6.9).
IMPLEMENTATION = f"trio_pop3 {__version__}"

#: Entries of the two memos below: far more than the command names and command
#: methods of every handler class of a server, yet a bound on their memory.
_MEMO_SIZE = 1024


@functools.lru_cache(maxsize=_MEMO_SIZE)
def _method_name(command: str) -> str:
    """Return the name of the method implementing ``command`` (``pop3_NAME``)."""
    return "pop3_" + command.replace("-", "_")


def _could_be_command_method(name: str) -> bool:
    """Whether ``name`` is one a command is dispatched to: ``pop3_`` and upper case.

    Commands are upper-cased before the lookup, so ``pop3_helper`` never is one.
    """
    return name.startswith("pop3_") and name[5:] == name[5:].upper()


@functools.lru_cache(maxsize=_MEMO_SIZE)
def _is_async(function: object) -> bool:
    # inspect.iscoroutinefunction costs more than a whole NOOP; ask once per function.
    return inspect.iscoroutinefunction(function)


#: Characters of a user name that go into a log line.
LOG_NAME_LENGTH = 64


def log_name(user: str) -> str:
    """Return ``user`` fit for a log line: at most 64 characters, no white space.

    A client chooses its user name; "x rip=10.0.0.1" must not add a field that a
    fail2ban filter would read, so white space and unprintable characters become "?".

    >>> log_name("x rip=10.0.0.1")
    'x?rip=10.0.0.1'
    """
    name = user[:LOG_NAME_LENGTH]
    if name.isprintable() and " " not in name:
        return name
    return "".join(c if c.isprintable() and not c.isspace() else "?" for c in name)


class POP3Handler:
    """Base class for a POP3 server's commands; one instance per connection.

    Write each command as an ``async def pop3_NAME(self, arg)`` method, where ``arg``
    is the rest of the line after the command name (``None`` if there is none).  A
    method is reached only when its command is registered for the current state
    (:data:`~trio_pop3.STANDARD_COMMANDS`, :attr:`extra_commands`,
    :meth:`add_command`); anything else goes to :meth:`unknown`.

    Each method answers its command once (RFC 1939 section 3): with one of the
    ``send_*`` methods, by raising :class:`~trio_pop3.POP3Error` (``-ERR``), or by
    ending the connection with :meth:`close_client`.  One that returns without a
    reply is a bug: it is logged and answered ``-ERR [SYS/TEMP]``, like an exception.

    QUIT, CAPA, STLS and LANG are built in.  Per-connection data lives on the instance.

    Example::

        USERS = {"alice": "secret"}

        class MyHandler(trio_pop3.POP3Handler):
            user = ""

            async def pop3_USER(self, arg: str | None) -> None:
                self.user = arg or ""
                await self.send_ok("send your password")

            async def pop3_PASS(self, arg: str | None) -> None:
                # "PASS" alone is arg None: never the password of an unknown user.
                if arg is None or USERS.get(self.user) != arg:
                    raise trio_pop3.AuthenticationFailed()
                self.state = "TRANS"
                await self.send_ok("logged in")

            async def pop3_STAT(self, arg: str | None) -> None:
                await self.send_ok("0 0")

        trio.run(trio_pop3.POP3Server(MyHandler, port=1110).serve)

    Shared resources reach a handler through its factory, for example
    ``POP3Server(functools.partial(MyHandler, db=pool))``.
    """

    #: Non-standard commands of this class, name -> states, e.g. ``{"XHELLO": ["AUTH"]}``.
    extra_commands: ClassVar[Mapping[str, Iterable[State | str]]] = {}

    #: The languages of the server's human-readable text, tag -> description, for
    #: LANG (RFC 6856 section 3).  A subclass that translates its replies lists its
    #: languages here and reads :attr:`language` when it words a reply.
    languages: ClassVar[Mapping[str, str]] = MappingProxyType({"en": "English"})
    #: The language of this connection's replies: the default (``LANG *``) as a class
    #: attribute, then what LANG chose.
    language: str = "en"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse a command method or hook that is not ``async def``.

        Such a method could never be awaited: a ``pop3_*`` one used to be taken for
        a missing command (``-ERR Unknown command``, left out of CAPA) without a
        word, and a plain ``def commit`` ran, then failed QUIT.  ``pop3_NAME =
        None`` still removes an inherited command.

        Names a command cannot reach (``pop3_helper``, in lower case) are free for
        anything; ``functools.partialmethod`` of an ``async def`` counts as one, and
        mixins listed before the handler base class are checked too.

        Raises:
            TypeError: a ``pop3_NAME`` attribute is neither None nor an ``async
                def``, or a hook the framework awaits (``on_connect``, ``commit``,
                ``disconnect``, ``unknown``, ``on_tls``) is not an ``async def``.
        """
        super().__init_subclass__(**kwargs)
        # This class's own names, and those of mixins before POP3Handler in the MRO
        # (other handler classes were checked when they were defined).
        names: set[str] = set()
        for klass in cls.__mro__:
            if klass is cls or not (klass is object or issubclass(klass, POP3Handler)):
                names.update(vars(klass))
        for name in names:
            if name not in _AWAITED_HOOKS and not _could_be_command_method(name):
                continue
            value = inspect.getattr_static(cls, name)
            if value is None:
                if name in _AWAITED_HOOKS:
                    raise TypeError(f"{cls.__qualname__}.{name} must be an 'async def' method")
                continue  # pop3_NAME = None removes an inherited command
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if isinstance(value, functools.partialmethod):
                value = value.func
            if not inspect.iscoroutinefunction(value):
                raise TypeError(
                    f"{cls.__qualname__}.{name} must be an 'async def' method (or None)"
                )

    def __init__(self) -> None:
        # Shared until add_command() changes it (copy on write): most connections
        # never do, and a private copy per connection costs about 0.5 KB.
        self._commands: Mapping[str, frozenset[State]] = STANDARD_COMMANDS
        for name, states in self.extra_commands.items():
            self.add_command(name, states)
        self._state = State.CONNECT
        self._session: Session | None = None
        self._data: dict[str, Any] | None = None  # made by the first set()
        #: Name of the command before the current one (None at first), e.g. for PASS
        #: which is valid only right after USER.
        self.previous_command: str | None = None

    # -- framework-owned, read-only ------------------------------------------
    def _attach(self, session: Session) -> None:
        self._session = session

    @property
    def _s(self) -> Session:
        if self._session is None:
            raise RuntimeError("handler is not attached to a connection")
        return self._session

    @property
    def peer(self) -> tuple[str, int] | None:
        """The client's (host, port), or None on a non-socket stream."""
        return self._s.peer

    @property
    def tls(self) -> bool:
        """Whether the connection is encrypted (STLS done, or implicit TLS).

        Also True when a load balancer's PROXY protocol header said that it ended
        the client's TLS (see ``POP3Server(proxy_protocol=...)``).
        """
        return self._s.tls

    @property
    def tls_available(self) -> bool:
        """Whether the server can start TLS on this connection (STLS)."""
        return self._s.config.ssl_context is not None and not self._s.tls

    @property
    def state(self) -> State:
        """The session state, always a :class:`State`.

        Assign a :class:`State` or a case-insensitive name; ``"AUTH"`` and ``"TRANS"``
        abbreviate AUTHORIZATION and TRANSACTION (as in the Perl original).  Only
        those two can be assigned: the framework alone enters CONNECT, UPDATE (QUIT)
        and DISCONNECT, and assigning one of them raises :class:`ValueError`, as
        an unknown name does.  Going from AUTHORIZATION to TRANSACTION is a login:
        it calls :meth:`note_login_success` (call it yourself with the user name to
        have it in the session's log line).
        """
        return self._state

    @state.setter
    def state(self, value: State | str) -> None:
        state = State.parse(value)
        if state not in _ASSIGNABLE_STATES:
            raise ValueError(
                f"state {state.name} is entered by the framework only; assign "
                "AUTHORIZATION or TRANSACTION"
            )
        if state is State.TRANSACTION and self._state is State.AUTHORIZATION:
            self.note_login_success()  # a login: forget the address's failures
        self._set_state(state)

    def _set_state(self, state: State) -> None:
        self._state = state

    # -- the seed's set/get ------------------------------------------------------
    def set(self, name: str, value: Any) -> Any:
        """Store per-connection data under ``name`` and return it."""
        if self._data is None:
            self._data = {}
        self._data[name] = value
        return value

    def get(self, name: str, default: Any = None) -> Any:
        """Return per-connection data stored with :meth:`set`."""
        return default if self._data is None else self._data.get(name, default)

    # -- commands ------------------------------------------------------------------
    def add_command(self, name: str, states: Iterable[State | str] | State | str) -> None:
        """Allow command ``name`` (any case) in ``states`` for this connection.

        The command runs ``pop3_NAME`` (upper case, ``-`` replaced by ``_``).

        Example::

            def __init__(self):
                super().__init__()
                self.add_command("xhello", ["auth", "trans"])

        Raises:
            ValueError: ``name`` is empty or not printable ASCII, a state name is
                unknown, ``states`` is empty, or it names a state in which no
                command is read (CONNECT, UPDATE, DISCONNECT).
        """
        key = normalize_command_name(name)
        parsed = states_of(states)
        if not parsed or not parsed <= _ASSIGNABLE_STATES:
            raise ValueError(
                f"command {key} must be allowed in AUTHORIZATION and/or TRANSACTION, "
                f"the states that read commands (got {sorted(s.name for s in parsed)})"
            )
        commands = dict(self._commands)
        commands[key] = commands.get(key, frozenset()) | parsed
        self._commands = commands

    def allowed(self, name: str, state: State | None = None) -> bool:
        """Return whether command ``name`` may run in ``state`` (default: now)."""
        return (state or self._state) in self._commands.get(name.upper(), frozenset())

    def _command_method(self, name: str) -> Callable[[str | None], Awaitable[None]] | None:
        """Return the method for command ``name`` (upper case) if it may run now."""
        states = self._commands.get(name)  # allowed(), inline: this runs per command
        if states is None or self._state not in states:
            return None
        method = getattr(self, _method_name(name), None)
        if method is None or not _is_async(getattr(method, "__func__", method)):
            return None
        return method  # type: ignore[no-any-return]

    def implements(self, name: str) -> bool:
        """Return whether a method for command ``name`` exists (for CAPA)."""
        method = getattr(self, _method_name(name), None)
        return method is not None and _is_async(getattr(method, "__func__", method))

    @staticmethod
    def message_number(arg: str | None, count: int) -> int:
        """Return the message number ``arg`` names, from 1 to ``count``.

        RFC 1939 section 3: a message number is decimal digits.  Only ASCII digits
        count: ``str.isdecimal()`` would take an Arabic-Indic one (U+0661) for 1.

        Example::

            async def pop3_RETR(self, arg):
                number = self.message_number(arg, len(self.messages))
                await self.send_message("", [self.messages[number - 1]])

        Raises:
            POP3Error: ``arg`` is missing, not a number, or not from 1 to ``count``
                (answered ``-ERR No such message.`` when not caught).
        """
        if arg is None:
            raise POP3Error("Message number required.")
        try:
            number = parse_message_number(arg.strip(" \t"))  # ASCII blanks only
        except ValueError:
            raise POP3Error("Invalid message number.") from None
        if not 1 <= number <= count:
            raise POP3Error("No such message.")
        return number

    # -- replies -----------------------------------------------------------------
    async def send_ok(self, text: str = "", code: ResponseCode | str | None = None) -> None:
        """Send ``+OK text`` (with an optional response code).

        Raises:
            ClientDisconnected: the client is gone: the connection broke or was
                closed, a write made no progress for ``send_timeout`` seconds, or an
                earlier write had already failed.  Let it propagate: the session
                ends without UPDATE.
            RuntimeError: the command already has its reply (RFC 1939 section 3:
                one per command; :meth:`send_err`, :meth:`send_data` and
                :meth:`send_message` count too, :meth:`send_raw` does not).  The
                first reply stands, this one is not sent, and the error is logged.

        Cancellation:
            Output is buffered: a reply normally only joins the session's output
            buffer, which is sent when it grows past 256 KiB or before the session
            next waits for the client (the next command, or :meth:`read_line`).
            Such a call returns without blocking and is not a checkpoint, and a
            failure to send surfaces in whichever call flushes, not necessarily the
            one that queued the data.  A call that does flush blocks until the
            client takes the data; if it is cancelled meanwhile,
            :class:`trio.Cancelled` propagates and the connection counts as broken:
            nothing more is sent on it.
        """
        session = self._claim_reply()
        line = format_reply(True, text, None if code is None else str(code))
        if not session.queue_reply(line):  # usually queued: no await at all
            await session.write(line)

    async def send_err(self, text: str = "", code: ResponseCode | str | None = None) -> None:
        """Send ``-ERR text``; ``code`` is a response code such as ``ResponseCode.SYS_TEMP``.

        Raising :class:`~trio_pop3.POP3Error` from a command does the same.

        Raises:
            ClientDisconnected: as for :meth:`send_ok`.

        Cancellation:
            As for :meth:`send_ok`: usually only buffered, not a checkpoint.
        """
        session = self._claim_reply()
        line = format_reply(False, text, None if code is None else str(code))
        if not session.queue_reply(line):  # usually queued: no await at all
            await session.write(line)

    def _claim_reply(self) -> Session:
        """Note that the current command has its status line; refuse a second one.

        RFC 1939 section 3: one reply per command.  A second would be read as the
        reply to the client's next command, and every answer after it too.

        The :meth:`disconnect` hook runs after the last reply: what it sends goes
        out before the connection closes (after an autologout too, though RFC 1939
        section 3 closes without a reply).

        Raises:
            ClientDisconnected: the connection is closed (a task that outlived the
                session).
            RuntimeError: the command (or the greeting) was answered already.
        """
        session = self._s
        if session.replied:
            if self._state is State.DISCONNECT:
                if session.ended:
                    raise ClientDisconnected("the session has ended")
                return session
            raise RuntimeError(
                "a second reply to one command (send_ok, send_err, send_data or "
                "send_message); the first was sent, this one is not"
            )
        session.replied = True
        return session

    async def send_data(
        self,
        text: str,
        lines: Iterable[Line] | AsyncIterable[Line],
        code: ResponseCode | str | None = None,
    ) -> None:
        """Send ``+OK text`` and a multi-line body (RFC 1939 section 3).

        Each line (str or bytes, without its line end) gets CRLF; a line beginning with
        ``.`` is byte-stuffed; the terminating ``.`` is added.  Bytes pass through 8-bit
        clean; str is encoded as UTF-8.  ``lines`` may be an iterable or an async
        iterable, so a large body streams without being built in memory.

        Raises:
            ClientDisconnected: as for :meth:`send_ok`.

        Cancellation:
            As for :meth:`send_ok`; iterating an async ``lines`` adds its own
            checkpoints.  The iterable is not closed when the call ends early.

        Error handling:
            An exception from iterating ``lines`` propagates.  If it reaches the
            framework while nothing of the reply has left the server yet, the reply is
            withdrawn and the command answered ``-ERR`` as usual; if part of it was
            already sent, the connection is closed (a ``-ERR`` would read as data).
        """
        chunks: AsyncIterable[bytes] | Iterable[bytes]
        if isinstance(lines, AsyncIterable):
            chunks = (_line_bytes(line) + b"\n" async for line in lines)
        else:
            chunks = _joined_lines(lines)
        await self._send_body(text, code, chunks, MessageWriter())

    async def send_message(
        self,
        text: str,
        chunks: AsyncIterable[bytes] | Iterable[bytes],
        *,
        body_lines: int | None = None,
    ) -> None:
        """Send ``+OK text`` and a stored message given as chunks of raw bytes.

        Line ends are normalised to CRLF, lines are byte-stuffed, a missing final line
        end is added, and the terminating ``.`` follows.  With ``body_lines`` (TOP)
        only the header, the blank line and that many body lines are sent, and the
        iteration stops early.

        Raises:
            ClientDisconnected: as for :meth:`send_ok`.

        Resource handling:
            An async iterator of ``chunks`` is closed (its ``aclose()``) whenever the
            call ends: finished, stopped early for TOP, failed or cancelled.  When
            cancelled, that ``aclose()`` runs in the cancelled scope, so the
            iterator's ``finally`` blocks should not need to await.

        Cancellation:
            As for :meth:`send_ok`; iterating async ``chunks`` adds its own
            checkpoints.

        Error handling:
            An exception from ``chunks`` propagates.  If it reaches the framework
            while nothing of the reply has left the server yet, the reply is
            withdrawn and the command answered ``-ERR`` as usual; if part of it was
            already sent, the connection is closed (a ``-ERR`` would read as data).
        """
        await self._send_body(text, None, chunks, MessageWriter(body_lines))

    async def _send_body(
        self,
        text: str,
        code: ResponseCode | str | None,
        chunks: AsyncIterable[bytes] | Iterable[bytes],
        writer: MessageWriter,
    ) -> None:
        """Send ``+OK``, then ``chunks`` through ``writer``, then the terminator."""
        session = self._claim_reply()
        session.begin_body()
        line = format_reply(True, text, None if code is None else str(code))
        if not session.queue_reply(line):
            await session.write(line)
        write = session.write
        if isinstance(chunks, AsyncIterable):
            iterator = chunks.__aiter__()
            try:
                async for chunk in iterator:
                    await write(writer.feed(chunk))
                    if writer.done:
                        break
            finally:
                aclose = getattr(iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
        else:
            for chunk in chunks:
                await write(writer.feed(chunk))
                if writer.done:
                    break
        await write(writer.finish())
        session.end_body()

    async def send_raw(self, *lines: Line) -> None:
        """Send lines exactly as given, each followed by CRLF (no stuffing, no checks).

        Raises:
            ClientDisconnected: as for :meth:`send_ok`.

        Cancellation:
            As for :meth:`send_ok`.
        """
        data = b"".join(_line_bytes(line) + b"\r\n" for line in lines)
        self._s.log_sent(data[:200])
        await self._s.write(data)

    def close_client(self) -> None:
        """Close the connection after the current command's reply has been sent."""
        self._s.closing = True

    async def read_line(self, *, limit: int | None = None) -> bytes:
        """Read one more line from the client (e.g. a SASL response), without its end.

        Pending replies are sent first.  The wait is bounded by the idle timeout
        of the current state: ``login_timeout`` in AUTHORIZATION, else ``timeout``.

        Raises:
            POP3Error: the line was longer than ``limit`` (default: the AUTH limit,
                :attr:`Limits.max_auth_line`); the whole line was read and discarded,
                so the session can go on.  Uncaught, it is answered ``-ERR Line too
                long.``.
            ClientDisconnected: the client closed or broke the connection, sent a
                line longer than :attr:`Limits.max_discard`, did not take the pending
                replies (see :meth:`send_ok`), or the idle timeout passed (the session
                then ends without a reply, as RFC 1939 section 3 asks).  Also raised
                when :meth:`POP3Server.shutdown` is called while it waits, or was
                called before; the client is then told ``-ERR [SYS/TEMP] Server
                shutting down.``.

        Cancellation:
            A checkpoint that waits for the client.  If the session is cancelled
            while waiting (the server's ``serve()`` cancelled, or the ``grace`` of
            :meth:`POP3Server.shutdown` over), :class:`trio.Cancelled` propagates and
            the client is told ``-ERR [SYS/TEMP] Server shutting down.`` before the
            connection closes.
        """
        session = self._s
        line = await session.read_line(self._state, limit)
        if line is None:
            raise ClientDisconnected("idle timeout")
        if isinstance(line, LineTooLong):
            raise POP3Error("Line too long.")
        session.log_received(b"*** " if line not in (b"*", b"") else line)
        return line

    # -- login throttling ------------------------------------------------------------
    async def delay_failed_login(self) -> None:
        """Count a failed login and wait before its ``-ERR`` is sent.

        The wait doubles with each failure of this connection or of its client
        address within 15 minutes (:attr:`Limits.auth_failure_delay`, capped at
        :attr:`Limits.auth_failure_delay_max`), so brute force gets slow however many
        connections it opens.  Past :attr:`Limits.max_auth_failures` on this
        connection, the connection is closed after the reply.  Call it for every kind
        of failure alike (unknown user, wrong password), so timing reveals nothing.
        A client in :attr:`Limits.trusted_networks` is not delayed.

        Cancellation:
            It sleeps with :func:`trio.sleep`, a checkpoint: the wait ends at once
            with :class:`trio.Cancelled` if the session is cancelled (``serve()``
            cancelled, or the ``grace`` of :meth:`POP3Server.shutdown` over; a
            shutdown alone does not interrupt it before ``grace`` is over).  The failure
            is counted before the wait, so a cancelled call still counts.

        Error handling:
            Raises nothing of its own.
        """
        session = self._s
        limits = session.config.limits
        session.auth_failures += 1
        count = session.auth_failures
        trusted = session.peer is not None and limits.is_trusted(session.peer[0])
        if session.server is not None and session.peer is not None and not trusted:
            recent = session.server.addresses.record_failure(session.peer[0], trio.current_time())
            count = max(count, recent)
        delay = failure_delay(count, limits.auth_failure_delay, limits.auth_failure_delay_max)
        if delay and not trusted:
            await trio.sleep(delay)
        budget = limits.max_auth_failures
        if budget is not None and session.auth_failures >= budget:
            logger.info("%s disconnected: too many failed logins", session.label)
            session.closing = True

    def note_login_success(self, user: str | None = None) -> None:
        """Forget the client address's recent failures after a successful login.

        ``user``, if given, is named in the line logged when the session ends.
        """
        session = self._s
        if user is not None:
            session.user = log_name(user)
        if session.server is not None and session.peer is not None:
            session.server.addresses.record_success(session.peer[0])

    # -- hooks -------------------------------------------------------------------
    async def on_connect(self) -> None:
        """Called in CONNECT state, before the greeting.

        Raise :class:`~trio_pop3.POP3Error` to refuse the client: its text is sent as
        ``-ERR`` instead of the greeting, and the connection closes.  Calling
        :meth:`close_client` instead closes it without any reply.  A reply it sends
        itself (``send_ok`` or ``send_err``, as a Perl port might print its own
        greeting) takes the greeting's place: :meth:`greeting` is not called, and
        the session goes on unless it also calls :meth:`close_client`.

        Cancellation:
            It runs unshielded: cancellation of the server interrupts it with
            :class:`trio.Cancelled`, the session ends without a greeting and
            :meth:`disconnect` runs.

        Error handling:
            As for a command, except that the connection then closes: any other
            exception is logged and answered ``-ERR [SYS/TEMP]`` instead of the
            greeting (its text only with ``send_errors_to_client``), and
            :meth:`disconnect` runs; other clients are unaffected.  With
            ``catch_errors=False`` it ends the session without a reply and
            propagates out of :meth:`POP3Server.handle_stream` after
            :meth:`disconnect` has run, which stops a server run by
            :meth:`POP3Server.serve`.  :class:`~trio_pop3.ClientDisconnected` just
            ends the session.
        """

    def greeting(self) -> str:
        """Return the text of the ``+OK`` greeting (default: the server's option).

        Error handling:
            As for :meth:`on_connect`: an exception is answered ``-ERR [SYS/TEMP]``
            and the connection closes, or with ``catch_errors=False`` it propagates
            and stops a server run by :meth:`POP3Server.serve`.
        """
        return self._s.config.greeting

    async def commit(self) -> None:
        """Make the session's changes permanent; called in UPDATE after QUIT.

        It runs shielded from cancellation under the cleanup deadline.  If it raises,
        QUIT answers ``-ERR`` (a :class:`~trio_pop3.POP3Error`'s text and code, or
        ``-ERR [SYS/TEMP]``), and the connection closes.

        Cancellation:
            Shielded: neither :meth:`POP3Server.shutdown` nor cancelling ``serve()``
            interrupts it, so a commit is never torn in half by the server.  It
            also runs with trio's KeyboardInterrupt protection: a Ctrl-C under a
            plain ``trio.run(server.serve)`` is raised once it returns.  Only its
            own deadline, ``cleanup_timeout`` seconds (default 10), cancels it:
            :class:`trio.Cancelled` is raised at its next checkpoint, the timeout is
            logged as a warning and QUIT answers ``-ERR [SYS/TEMP] Timed out;
            deleted messages may not all be removed.``.  Work it hands to a worker
            thread runs on to completion after that.

        Error handling:
            A :class:`~trio_pop3.POP3Error` is answered as ``-ERR`` with its text and
            code.  Any other exception is logged with its traceback (whatever
            ``catch_errors`` says) and answered ``-ERR [SYS/TEMP] Some deleted
            messages were not removed.``.  In each case no ``+OK`` is sent, the
            connection closes after the reply, and :meth:`disconnect` runs next.
        """

    async def disconnect(self) -> None:
        """Called exactly once, last, however the session ended (in DISCONNECT state).

        Roll back what :meth:`commit` did not commit and release resources.  It runs
        shielded from cancellation under the cleanup deadline.

        It also runs when the client never got a greeting (:meth:`on_connect`
        refused it) and after a failed :meth:`commit`.

        Cancellation:
            Shielded, and protected from KeyboardInterrupt: it runs to its end even
            when the session ends because the server was cancelled or interrupted,
            and the cancellation propagates only afterwards.
            Only its own deadline, ``cleanup_timeout`` seconds (default 10), cancels
            it (:class:`trio.Cancelled` at its next checkpoint); the timeout is
            logged as a warning.  Pending replies are then sent (under the same
            deadline, if the connection still works) and the stream is closed.

        Error handling:
            An exception is logged with its traceback and otherwise ignored: the
            stream is closed all the same, and nothing reaches the client or the
            server (whatever ``catch_errors`` says).
        """

    async def unknown(self, command: str, arg: str | None) -> None:
        """Answer a command that is unknown or not allowed in this state (``-ERR``).

        Each call the framework makes counts towards :attr:`Limits.max_bad_commands`
        (a command method that calls it for an out-of-sequence command does not).

        Raises:
            ClientDisconnected: from :meth:`send_err`.

        Cancellation:
            As for :meth:`send_ok`.

        Error handling:
            It runs like a command method: a :class:`~trio_pop3.POP3Error` is
            answered ``-ERR``, any other exception is handled as ``catch_errors``
            says.
        """
        if command in self._commands and self.implements(command):
            if self.allowed(command):  # a command method found it out of sequence
                await self.send_err(f"{command} not allowed now.")
            else:
                await self.send_err(f"{command} not allowed in {self._state.name} state.")
        else:
            await self.send_err(f"Unknown command: {command[:40]}")

    def capabilities(self) -> list[str]:
        """Return the CAPA lines for this connection and state (RFC 2449 section 5).

        Computed from what the handler implements; override and extend the list to
        announce more.

        Error handling:
            Called by the CAPA command: an exception is handled as a command's.
        """
        caps = []
        if self.implements("TOP"):
            caps.append("TOP")
        if self.implements("UIDL"):
            caps.append("UIDL")
        if self.implements("USER"):
            caps.append("USER")
        caps += ["RESP-CODES", "PIPELINING"]
        if self.tls_available and self._state is State.AUTHORIZATION:
            caps.append("STLS")
        if self.implements("LANG"):
            caps.append("LANG")  # RFC 6856 section 3.1: in both states
        caps.append(f"IMPLEMENTATION {IMPLEMENTATION}")
        return caps

    async def on_tls(self) -> None:
        """Called after a successful STLS; forget state learned before it (RFC 2595 §4).

        The framework has already reset :attr:`language` to the class default.

        It runs inside the STLS command, after the ``+OK`` and the TLS handshake; a
        failed or timed-out handshake ends the session instead, and it is not
        called.

        Cancellation:
            Part of the STLS command: cancellation of the session interrupts it like
            any command.

        Error handling:
            The client has had STLS's ``+OK`` and cannot be told of a failure, and
            state the hook failed to forget must not outlive the plaintext (RFC
            2595 section 4): any exception (:class:`~trio_pop3.POP3Error` too) is
            logged and the connection closed, or, with ``catch_errors=False``,
            propagates.
        """

    # -- built-in commands ---------------------------------------------------------
    async def pop3_CAPA(self, arg: str | None) -> None:
        """CAPA (RFC 2449 section 5): list capabilities."""
        await self.send_data("Capability list follows", self.capabilities())

    async def pop3_LANG(self, arg: str | None) -> None:
        """LANG [range] (RFC 6856 section 3): list the languages, or choose one.

        ``LANG`` lists :attr:`languages`; ``LANG <range>`` chooses the one the
        range selects (``*``: the default) and answers ``+OK <tag> ...``; a range
        that selects none is ``-ERR``, and the language stays as it was.
        """
        if arg is None or not arg.strip():
            lines = [f"{tag} {description}" for tag, description in self.languages.items()]
            await self.send_data("Language listing follows:", lines)
            return
        tag = choose_language(arg.strip(), self.languages, type(self).language)
        if tag is None:
            raise POP3Error("Unknown language; LANG lists the languages.")
        self.language = tag
        await self.send_ok(f"{tag} Language changed.")

    async def pop3_QUIT(self, arg: str | None) -> None:
        """QUIT (RFC 1939 sections 5 and 6).

        From TRANSACTION: enter UPDATE, run :meth:`commit`, then ``+OK``.  From
        AUTHORIZATION: end without UPDATE.
        """
        session = self._s
        session.closing = True
        if self._state is State.TRANSACTION:
            self._set_state(State.UPDATE)
            error: POP3Error | None = None
            with trio.move_on_after(session.config.cleanup_timeout, shield=True) as scope:
                try:
                    await run_protected(self.commit)
                except POP3Error as exc:
                    error = exc
                except Exception:
                    logger.exception("%s commit() failed", session.label)
                    error = POP3Error("Some deleted messages were not removed.", "SYS/TEMP")
            if scope.cancelled_caught:
                logger.warning("%s commit() timed out", session.label)
                # Perhaps in the clean-up after a removal that succeeded: say only
                # what is known.
                error = POP3Error(
                    "Timed out; deleted messages may not all be removed.", "SYS/TEMP"
                )
            if error is not None:
                await self.send_err(error.text, error.code)
                return
        await self.send_ok(session.config.goodbye)

    async def pop3_STLS(self, arg: str | None) -> None:
        """STLS (RFC 2595 section 4): start TLS; only in AUTHORIZATION, before login."""
        session = self._s
        context = session.config.ssl_context
        if arg is not None:
            raise POP3Error("STLS takes no arguments.")  # RFC 2595 section 4
        if session.tls:
            raise POP3Error("TLS is already active.")
        if context is None:
            raise POP3Error("TLS is not available.")
        await self.send_ok("Begin TLS negotiation now.")
        await session.flush()
        # RFC 2595 section 4 / TLS-04: whatever the client pipelined after STLS was
        # sent in plaintext and could have been injected; it is never executed.
        dropped = session.inbuf.clear()
        if dropped:
            logger.info("%s discarded %d octets pipelined after STLS", session.label, len(dropped))
        await session.start_tls(context)
        # RFC 2595 section 4: forget what the client said in plaintext.  A LANG
        # chosen there could have been injected (RFC 6856 section 7).
        self.language = type(self).language
        try:
            await self.on_tls()
        except ClientDisconnected:
            raise
        except Exception as exc:
            # Its "+OK" is long sent, so the client cannot be told, and whatever the
            # hook failed to forget may outlive the plaintext (RFC 2595 section 4):
            # the connection ends (without UPDATE; STLS comes before login).
            if not session.config.catch_errors:
                raise
            logger.error("%s on_tls() failed; closing the connection", session.label, exc_info=exc)
            self.close_client()


#: The hooks the framework awaits: a subclass must define them with ``async def``.
_AWAITED_HOOKS: Final = frozenset({"on_connect", "commit", "disconnect", "unknown", "on_tls"})

#: The states a handler may assign to :attr:`POP3Handler.state`.
_ASSIGNABLE_STATES: Final = frozenset({State.AUTHORIZATION, State.TRANSACTION})


def _line_bytes(line: Line) -> bytes:
    if isinstance(line, str):
        return line.encode("utf-8")
    if isinstance(line, (bytes, bytearray, memoryview)):
        return bytes(line)
    # Handler code's mistake: bytes(3) would be three NULs on the wire.
    raise TypeError(f"a line must be str or bytes, not {type(line).__name__}")


#: Lines of a synchronous :meth:`POP3Handler.send_data` body are joined into chunks of
#: about this many octets before normalising: one pass over a LIST of a few hundred
#: messages instead of one per line (the per-line passes were the largest cost of
#: LIST and UIDL in the session benchmark's profile).
LINE_BATCH_SIZE = 16 * 1024


def _joined_lines(lines: Iterable[Line]) -> Iterable[bytes]:
    """Yield ``lines`` as LF-terminated chunks of about :data:`LINE_BATCH_SIZE` octets."""
    batch: list[bytes] = []
    size = 0
    for line in lines:
        data = _line_bytes(line)
        batch.append(data)
        size += len(data) + 1
        if size >= LINE_BATCH_SIZE:
            batch.append(b"")
            yield b"\n".join(batch)
            batch.clear()
            size = 0
    if batch:
        batch.append(b"")
        yield b"\n".join(batch)

"""One client connection: moves bytes, runs the command loop, owns cleanup.

Theory of operation
-------------------
The session reads bytes into a bounded :class:`LineBuffer` and dispatches complete
lines one at a time, strictly in order (RFC 2449 section 6.6, PIPELINING).  Replies
go into an output buffer that is flushed when the input holds no further complete
command, or when it grows past :data:`FLUSH_THRESHOLD`: a burst of pipelined
commands is answered in a few large writes, and a single reply leaves in one write,
never split into pieces that meet Nagle's algorithm and delayed ACKs.

On a plain TCP socket (the common case) the session does its own non-blocking
``write``/``read`` calls on the socket and uses trio only to wait: a reply that fits
the socket buffer leaves in one system call, and a read that finds data returns it
at once (after a checkpoint, for fairness).  A read that finds nothing yields once
and reads again before it registers a wait: the client has often answered by then.
trio's ``SocketStream`` would pass every call through the scheduler; for a ping-pong
of one small reply per command that was a fifth of a session's CPU.  TLS and other
streams use the generic stream API.

A wait for the client is bounded by the idle (or login) timeout of the command line:
the session ends quietly when it fires (RFC 1939 section 3).  Waits on a plain
socket under :meth:`POP3Server.serve` are timed by the server's
:class:`~trio_pop3._idle.IdleWatch` (one timer task for all sessions) and parked by
its :class:`~trio_pop3._poller.ReadPoller` (one epoll set for all sessions; an idle
connection then holds two frames of trio's instead of five); every other wait runs
in a cancel scope with that deadline, on trio's own ``wait_readable``.  A write that
cannot finish at once waits under the send timeout (the client is dropped).
Whatever ends the session (QUIT, EOF, a broken socket, a timeout, an exception,
cancellation of the server), the ``finally`` block moves the handler to DISCONNECT
and runs its ``disconnect()`` hook exactly once, shielded from cancellation under a
deadline, then closes the stream.
"""

from __future__ import annotations

import logging
import math
import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

from ._config import Limits
from ._errors import ClientDisconnected, POP3Error, ResponseCode
from ._poller import TRIO_WAITS, Poller
from ._proto._commands import CommandSyntaxError, format_reply, parse_command
from ._proto._receivebuffer import BufferOverflow, LineBuffer, LineTooLong
from ._proto._state import State
from ._util import run_protected

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._handler import POP3Handler
    from ._idle import IdleWatch
    from ._proto._commands import Command
    from ._throttle import AddressTracker


class _Server(Protocol):
    """What a session needs of its server."""

    @property
    def addresses(self) -> AddressTracker: ...


__all__ = ["FLUSH_THRESHOLD", "RECEIVE_SIZE", "SessionConfig"]

logger = logging.getLogger("trio_pop3")

#: Bytes asked of the socket per read: one read takes a whole pipelined burst.
RECEIVE_SIZE = 65536

#: Output is sent once this much is buffered.  256 KiB per send_all keeps a RETR of
#: a large message streaming (measured: larger buffers bought nothing on loopback)
#: while bounding memory per session.
FLUSH_THRESHOLD = 256 * 1024

#: A write through a stream other than a plain socket (TLS) goes in pieces this big,
#: so that ``send_timeout`` measures a stall, not a whole slow flush: a TLS record
#: holds at most 16 KiB (RFC 8446 section 5.1), so no piece adds a record.
STREAM_WRITE_PIECE = 16 * 1024

#: Commands whose arguments are secrets: masked in the debug transcript.
_SECRET_COMMANDS = frozenset({"PASS", "AUTH", "APOP"})

#: Commands that carry credentials may exceed ``max_command_line``, up to
#: ``max_auth_line``: RFC 4616 lets a user name and a password each be 255 octets
#: (PLAIN-03), which USER and PASS must carry too, and Dovecot takes 1 KiB lines
#: before login (an audit's 255-character password failed with PASS only).
_CREDENTIAL_COMMANDS = frozenset({"AUTH", "USER", "PASS", "APOP"})


_ClientGone = ClientDisconnected  # the name used throughout this module


class _ShuttingDown(ClientDisconnected):
    """The server is shutting down gracefully; the session ends before its next command."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    """The options of a :class:`POP3Server` that every session reads: its ``config``.

    Built by :class:`POP3Server` from its arguments (see there); read-only.

    >>> import trio_pop3
    >>> class Handler(trio_pop3.POP3Handler): pass
    >>> trio_pop3.POP3Server(Handler, timeout=300).config.idle_timeout
    300

    Attributes:
        greeting: The greeting's text (``greeting``).
        goodbye: The text of QUIT's ``+OK`` (``goodbye``).
        idle_timeout: Seconds of silence allowed after login (``timeout``), or None.
        login_timeout: The same before login, or None.
        send_timeout: Seconds a write may make no progress, or None.
        tls_handshake_timeout: Seconds allowed for a TLS handshake, or None.
        cleanup_timeout: Deadline of the shielded ``commit()`` and ``disconnect()``.
        debug: Whether a wire transcript is logged.
        send_errors_to_client: Whether an unexpected exception's text is sent.
        catch_errors: Whether an unexpected exception is answered and contained.
        limits: The :class:`Limits` in force.
        ssl_context: The TLS context (STLS and implicit TLS), or None.
        hostname: The name used in APOP timestamps and SASL challenges.
    """

    greeting: str
    goodbye: str
    idle_timeout: float | None
    login_timeout: float | None
    send_timeout: float | None
    tls_handshake_timeout: float | None
    cleanup_timeout: float
    debug: bool
    send_errors_to_client: bool
    catch_errors: bool
    limits: Limits
    ssl_context: ssl.SSLContext | None
    hostname: str


class Session:
    """The I/O side of one connection; the handler's send_* methods call into it."""

    # Slots: every idle connection holds one (no per-instance dict).
    __slots__ = (
        "_expired",
        "_fd",
        "_out",
        "_polled",
        "_poller",
        "_read_scope",
        "_trio_knows_fd",
        "_waiting_directly",
        "_watch",
        "auth_failures",
        "bad_commands",
        "body_start",
        "broken",
        "closing",
        "commands",
        "config",
        "draining",
        "ended",
        "idle",
        "inbuf",
        "label",
        "peer",
        "replied",
        "sends",
        "sent",
        "server",
        "stream",
        "tls",
        "user",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        config: SessionConfig,
        *,
        peer: tuple[str, int] | None,
        tls: bool = False,
        server: _Server | None = None,
        watch: IdleWatch | None = None,
        poller: Poller | None = None,
    ) -> None:
        self.stream = stream
        self.config = config
        self.peer = peer
        self.tls = tls
        self.server = server
        self.closing = False
        self.broken = False  # a send failed or was cancelled: never send again
        self.draining = False
        #: The connection was closed: nothing can be sent any more.
        self.ended = False
        self.idle = False
        self.bad_commands = 0
        self.auth_failures = 0
        #: The current command (or the greeting) has its status line: a second
        #: would answer the client's next command (see POP3Handler._claim_reply).
        self.replied = False
        #: Where the current multi-line reply began: (output buffer length, sends).
        self.body_start: tuple[int, int] | None = None
        self.sends = 0
        # For the session's log line: who logged in, commands run, octets sent.
        self.user: str | None = None
        self.commands = 0
        self.sent = 0
        self._read_scope: trio.CancelScope | None = None
        #: The socket's descriptor when the session talks to it directly.
        self._fd = _direct_fd(stream)
        #: Times the direct path's waits for the client (None: a scope per wait).
        self._watch = watch if self._fd is not None else None
        #: Parks the direct path's timed waits (trio's own waits if none is given).
        self._poller = poller if poller is not None else TRIO_WAITS
        self._polled = False  # the socket has joined the poller's set
        #: trio has waited on the descriptor: closing it must go through trio.
        self._trio_knows_fd = self._poller is TRIO_WAITS
        self._waiting_directly = False
        #: The idle timer fired or shutdown began while waiting directly: the socket
        #: was woken by Poller.wake() and is never waited on again.
        self._expired = False
        self.inbuf = LineBuffer(
            limit=config.limits.max_auth_line, max_discard=config.limits.max_discard
        )
        self._out = bytearray()
        self.label = f"{peer[0]}:{peer[1]}" if peer else "memory"

    # -- output ------------------------------------------------------------
    def queue_reply(self, line: bytes) -> bool:
        """Queue a status line if that needs no send now; return whether it was queued.

        The common case of :meth:`write` (a reply line into a buffer with room),
        without a coroutine; logs the line with ``debug``.
        """
        if self.config.debug:
            self.log_sent(line)
        out = self._out
        if len(out) + len(line) < FLUSH_THRESHOLD:
            out += line
            return True
        return False

    async def write(self, data: bytes) -> None:
        """Queue ``data``; send when the buffer is large."""
        out = self._out
        if len(out) + len(data) < FLUSH_THRESHOLD:
            out += data
            return
        if out:
            out += data
            try:
                await self._send(out)
            finally:
                del out[:]
        else:
            await self._send(data)

    def buffered_line(self) -> bytes | LineTooLong | None:
        """Return a complete line already received, or None (then use :meth:`read_line`)."""
        if self.draining:
            return None
        try:
            return self.inbuf.next_line()
        except BufferOverflow:
            return None  # read_line raises it again and ends the session

    def begin_body(self) -> None:
        """Note that a multi-line reply starts here (before its ``+OK``)."""
        self.body_start = (len(self._out), self.sends)

    def end_body(self) -> None:
        """Note that the multi-line reply is complete."""
        self.body_start = None

    def abandon_body(self) -> bool:
        """Drop an unfinished multi-line reply if none of it was sent yet.

        Returns False if part of it is already on the wire: the only honest way out is
        then to close the connection.
        """
        start, self.body_start = self.body_start, None
        if start is None or start[1] != self.sends:
            return False
        del self._out[start[0] :]
        return True

    def drain(self) -> None:
        """Ask the session to end before its next command (graceful shutdown)."""
        self.draining = True
        if self._waiting_directly:
            self.expire()
        elif self.idle and self._read_scope is not None:
            self._read_scope.cancel()

    def _check_not_expired(self) -> None:
        """Refuse to wait on a socket whose wait was ended by :meth:`expire`."""
        if self._expired:
            raise _ClientGone("timed out")

    def expire(self) -> None:
        """End a direct wait for the client (the idle timer fired, or shutdown).

        Wakes the wait with ``ClosedResourceError`` (:meth:`Poller.wake`); the flag
        set here tells :meth:`_receive` it was not the client.
        """
        if self._waiting_directly and not self._expired and self._fd is not None:
            self._expired = True
            self._poller.wake(self._fd)

    def is_closing(self) -> bool:
        """Whether the session ends after the current command."""
        return self.closing

    def queue(self, data: bytes) -> None:
        """Queue ``data`` without sending (sent at the next flush)."""
        self._out += data

    async def flush(self) -> None:
        """Send everything queued."""
        if self._out:
            try:
                await self._send(self._out)
            finally:
                del self._out[:]

    async def _send(self, data: bytes | bytearray) -> None:
        if self.broken:
            raise _ClientGone("connection already broken")
        self.broken = True  # until the send completes: a cancelled send is final
        self.sends += 1
        sent = 0
        if self._fd is not None:
            # Direct path: a reply usually fits the socket buffer, so one write
            # finishes it without a timeout scope or a trip through the scheduler.
            sent = _write_some(self._fd, data)
            self.sent += sent
            if sent == len(data):
                self.broken = False
                return
        self._check_not_expired()
        timeout = self.config.send_timeout
        # A bare CancelScope, not fail_after(): the wrapper cost more than the scope.
        # send_timeout is for a write that makes no progress: each piece that goes
        # out moves the deadline on, so a slow client that keeps reading is served.
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        try:
            with trio.CancelScope(deadline=deadline) as scope:
                if self._fd is None:
                    for start in range(0, len(data), STREAM_WRITE_PIECE):
                        piece = data[start : start + STREAM_WRITE_PIECE]
                        await self.stream.send_all(piece)
                        self.sent += len(piece)
                        if timeout is not None:
                            scope.deadline = trio.current_time() + timeout
                else:
                    self._trio_knows_fd = True
                    await _write_rest(self, self._fd, data, sent, scope, timeout)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _ClientGone(str(exc) or type(exc).__name__) from None
        if scope.cancelled_caught:
            raise _ClientGone("send timed out")
        self.broken = False

    async def start_tls(self, context: ssl.SSLContext) -> None:
        """Wrap the stream in TLS and complete the handshake under its timeout.

        Raises:
            _ClientGone: the handshake failed or timed out.
        """
        fd, self._fd = self._fd, None  # from now on all bytes go through the TLS stream
        if fd is not None and self._polled:
            self._poller.unregister(fd)
        tls_stream = trio.SSLStream(self.stream, context, server_side=True)
        await self.handshake(tls_stream)
        self.stream = tls_stream
        self.tls = True

    async def handshake(self, tls_stream: trio.SSLStream[trio.abc.Stream]) -> None:
        """Complete a TLS handshake under the handshake timeout."""
        timeout = self.config.tls_handshake_timeout
        try:
            with trio.fail_after(timeout if timeout is not None else float("inf")):
                await tls_stream.do_handshake()
        except trio.TooSlowError:
            raise _ClientGone("TLS handshake timed out") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _ClientGone(f"TLS handshake failed: {exc.__cause__ or exc}") from None

    # -- input -------------------------------------------------------------
    async def read_line(
        self, state: State, limit: int | None = None
    ) -> bytes | LineTooLong | None:
        """Return the next line, :class:`LineTooLong`, or None if the idle timer fired.

        Flushes pending output before waiting for the client.

        Raises:
            _ClientGone: EOF, a broken connection, or a line past the hard cap.
        """
        timeout = (
            self.config.idle_timeout
            if state is not State.AUTHORIZATION
            else self.config.login_timeout
        )
        deadline: float | None = None
        while True:
            if self.draining:
                raise _ShuttingDown("server shutting down")
            try:
                line = self.inbuf.next_line(limit)
            except BufferOverflow as exc:
                # Not a command but an attack or a broken client: say why, then end
                # the connection (as Dovecot does) rather than read on.
                logger.info("%s closed: %s", self.label, exc)
                self.queue(format_reply(False, "Line too long; closing the connection."))
                raise _ClientGone(str(exc)) from None
            if line is not None:
                return line
            replied = bool(self._out)
            await self.flush()
            if deadline is None:
                # One deadline for the whole line (RFC 1939 section 3: a *command*
                # resets the timer), so a client trickling a byte at a time cannot
                # hold the connection open forever.
                deadline = math.inf if timeout is None else trio.current_time() + timeout
            data = await self._receive(deadline, replied)
            if data is not None:
                self.inbuf.feed(data)
            elif not self.draining:
                return None  # the idle timer fired

    async def _receive(self, deadline: float, replied: bool) -> bytes | bytearray | None:
        """Return the next bytes from the client, or None if ``deadline`` passed first.

        ``replied``: a reply was sent just now, so the client cannot have answered it
        yet (its next command may still be there, pipelined).

        Raises:
            _ClientGone: EOF or a broken connection.
        """
        fd = self._fd
        if fd is not None:
            # Direct path: try the socket first; only wait when it has nothing.  Data
            # that was already there still passes a checkpoint, so a client that
            # never stops sending cannot starve the other sessions.
            self._check_not_expired()
            if not replied:
                data = _read_now(fd)
                if data is not None:
                    await trio.lowlevel.checkpoint()
                    return data
            # Nothing yet (or a reply just left): let the other sessions run before
            # registering a wait.  The client has often answered by then, and a wait
            # (epoll registration, sleep, wake-up) costs more than this yield:
            # measured with 1, 16 and 64 clients, 7-45 % less CPU per session and up
            # to 1.5x the sessions/s.
            self.idle = True  # cancelled here = cancelled while waiting for a command
            await trio.lowlevel.checkpoint()
            self.idle = False
            data = _read_now(fd)
            if data is not None:
                return data
            if self.draining:
                # shutdown() came while this session was busy (or in the yield
                # above): it must not start a wait that nothing would end.
                return None
            watch = self._watch
            if watch is not None:
                # Timed by the server's IdleWatch rather than a scope of its own, and
                # parked by its poller (two frames where trio's wait has five).
                poller = self._poller
                if not self._polled:
                    try:
                        poller.register(fd)
                    except OSError as exc:
                        raise _ClientGone(exc.strerror or type(exc).__name__) from None
                    self._polled = True
                wait_id = watch.register(self, deadline) if deadline < math.inf else None
                # Stays True if cancelled here, so run_session can tell the client.
                self.idle = self._waiting_directly = True
                try:
                    while data is None:
                        await poller.wait_readable(fd)
                        data = _read_now(fd)
                except trio.ClosedResourceError:
                    if not self._expired:
                        raise _ClientGone("connection closed") from None
                    self.idle = False
                    return None  # the idle timer fired, or shutdown began
                finally:
                    self._waiting_directly = False
                    if wait_id is not None:
                        watch.unregister(wait_id)
                self.idle = False
                return data
        if self.draining:  # as above: shutdown() came while this session was busy
            return None
        received: bytes | bytearray | None = None
        with trio.CancelScope(deadline=deadline) as self._read_scope:
            # Stays True if cancelled here, so run_session can tell the client.
            self.idle = True
            try:
                if fd is None:
                    received = await self.stream.receive_some(RECEIVE_SIZE)
                else:
                    # Inline rather than a helper: an idle session's memory is
                    # mostly the frames of its await chain.
                    self._trio_knows_fd = True
                    while received is None:
                        await trio.lowlevel.wait_readable(fd)
                        received = _read_now(fd)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self.idle = False
                raise _ClientGone(str(exc) or type(exc).__name__) from None
            if not received:
                self.idle = False
                raise _ClientGone("end of stream")
        self.idle = False
        return received

    def log_received(self, line: bytes) -> None:
        """Log a client line at DEBUG level, secrets masked (``debug=True`` only)."""
        if not self.config.debug:
            return
        # Split exactly as parse_command does, so any spelling of PASS is masked.
        parts = line.lstrip(b" \t").split(None, 1)
        if parts and parts[0].upper().decode("ascii", "replace") in _SECRET_COMMANDS:
            if parts[0].upper() == b"AUTH" and len(parts) > 1:
                # The mechanism is no secret, and tells which one a client chose;
                # the initial response is.
                mechanism, *response = parts[1].split(None, 1)
                line = parts[0] + b" " + mechanism + (b" ***" if response else b"")
            else:
                line = parts[0] + (b" ***" if len(parts) > 1 else b"")
        logger.debug("%s C: %r", self.label, line)

    def log_sent(self, line: bytes) -> None:
        """Log a reply's status line at DEBUG level (``debug=True`` only)."""
        if self.config.debug:
            logger.debug("%s S: %r", self.label, line.rstrip(b"\r\n"))


# -- direct socket I/O ---------------------------------------------------------------
# trio's SocketStream passes every send and receive through the scheduler (a
# checkpoint even when the call completes at once); for one small reply per command
# that was a fifth of a session's CPU (profiled under load).  For a plain TCP socket
# the session calls the non-blocking socket itself and waits with trio's I/O waits
# only when the socket is not ready; TLS and other streams keep the generic path.


def _direct_fd(stream: trio.abc.Stream) -> int | None:
    """Return the descriptor of a plain trio TCP stream on POSIX, else None."""
    if type(stream) is not trio.SocketStream or os.name != "posix":
        return None
    fd = stream.socket.fileno()
    return fd if fd >= 0 else None


def _write_some(fd: int, data: bytes | bytearray | memoryview) -> int:
    """Write what the socket takes now; return the count (0 if it would block)."""
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        raise _ClientGone(exc.strerror or type(exc).__name__) from None


async def _write_rest(
    session: Session,
    fd: int,
    data: bytes | bytearray,
    sent: int,
    scope: trio.CancelScope,
    timeout: float | None,
) -> None:
    """Write ``data[sent:]``, waiting for the socket to drain between writes.

    Each write that makes progress counts in ``session.sent`` and moves ``scope``'s
    deadline ``timeout`` seconds on.
    """
    with memoryview(data) as view:
        while sent < len(view):
            await trio.lowlevel.wait_writable(fd)
            with view[sent:] as rest:
                written = _write_some(fd, rest)
            if written:
                sent += written
                session.sent += written
                if timeout is not None:
                    scope.deadline = trio.current_time() + timeout


def _read_now(fd: int) -> bytes | None:
    """Read what the socket holds now; None if nothing yet.

    Raises:
        _ClientGone: end of stream, or a socket error.
    """
    try:
        data = os.read(fd, RECEIVE_SIZE)
    except BlockingIOError:
        return None
    except OSError as exc:
        raise _ClientGone(exc.strerror or type(exc).__name__) from None
    if not data:
        raise _ClientGone("end of stream")
    return data


async def run_session(handler: POP3Handler, session: Session) -> None:
    """Run one POP3 session to its end; the handler's disconnect() always runs."""
    handler._attach(session)
    try:
        # The command loop is written out here, not in a coroutine of its own: an idle
        # connection holds every frame of its await chain (about 0.3 KB each).
        if await _greet(handler, session):
            limits = session.config.limits
            debug = session.config.debug
            command: Command | None
            arg: str | None
            method: Callable[[str | None], Awaitable[None]] | None
            # The loop runs once per command: attributes, not properties, and no
            # helper coroutines on the way to the command method (each level costs).
            while not session.closing:
                # A pipelined command is usually buffered already: take it without
                # the coroutine round trip of read_line (which also waits, flushes
                # and times).
                line = session.buffered_line()
                if line is None:
                    # Hold nothing of the last command while waiting, perhaps for
                    # minutes: a PASS argument is a password, and every object kept
                    # is idle memory (about 0.2 KB per session).
                    command = arg = method = None
                    line = await session.read_line(handler._state)
                session.replied = False  # whatever comes next answers this line
                if line is None:
                    # RFC 1939 section 3: on autologout, close without UPDATE and
                    # without reply.
                    logger.info("%s idle timeout in %s", session.label, handler._state.name)
                    return
                if isinstance(line, LineTooLong):
                    await _bad_command(handler, session, "Command line too long.")
                    continue
                if debug:
                    session.log_received(line)
                try:
                    command = parse_command(line)
                except CommandSyntaxError as exc:
                    await _bad_command(handler, session, str(exc))
                    continue
                name, arg = command.name, command.arg
                if len(line) + 2 > limits.max_command_line and name not in _CREDENTIAL_COMMANDS:
                    await _bad_command(handler, session, "Command line too long.")
                    continue
                session.commands += 1
                method = handler._command_method(name)
                try:
                    if method is None:
                        await handler.unknown(name, arg)
                        _count_bad(session)
                    else:
                        written = session.sent + len(session._out)  # flushing keeps it
                        await method(arg)
                        if session.sent + len(session._out) == written and not session.closing:
                            # RFC 1939 section 3: every command gets a reply; the
                            # client would wait for one forever.
                            raise RuntimeError(f"pop3_{name} returned without a reply")
                        session.bad_commands = 0  # the budget is for consecutive ones
                except (_ClientGone, trio.Cancelled):
                    raise
                except Exception as exc:
                    await _command_failed(handler, session, name, exc)
                    # RFC 1939 section 7 (USER-01): PASS must follow a *successful* USER.
                    handler.previous_command = None
                    continue
                handler.previous_command = name
        await session.flush()
    except _ShuttingDown:
        session.queue(format_reply(False, "Server shutting down.", "SYS/TEMP"))
        logger.info("%s closed: server shutting down", session.label)
    except _ClientGone as exc:
        logger.debug("%s connection ended: %s", session.label, exc)
    except trio.Cancelled:
        if session.idle:
            # Cancelled while waiting for a command: tell the client why.
            session.queue(format_reply(False, "Server shutting down.", "SYS/TEMP"))
        raise
    finally:
        await _end_session(handler, session)


async def _greet(handler: POP3Handler, session: Session) -> bool:
    """Run ``on_connect()`` and send the greeting; return whether commands may follow.

    A reply that ``on_connect()`` sent itself (a refusal, say) takes the greeting's
    place: one status line opens the session, whoever sends it.
    """
    try:
        await handler.on_connect()
        greeting = None if session.replied else handler.greeting()
    except Exception as exc:
        await _command_failed(handler, session, "on_connect()/greeting()", exc)
        return False
    if session.is_closing():
        return False
    handler._set_state(State.AUTHORIZATION)
    if greeting is not None:
        await handler.send_ok(greeting)
    return True


async def _end_session(handler: POP3Handler, session: Session) -> None:
    """Move to DISCONNECT, run the disconnect() hook shielded, send what is queued, close."""
    handler._set_state(State.DISCONNECT)
    with trio.move_on_after(session.config.cleanup_timeout, shield=True) as scope:
        try:
            await run_protected(handler.disconnect)
        except Exception:
            logger.exception("%s disconnect() hook failed", session.label)
        if not session.broken:
            try:
                await session.flush()
            except _ClientGone:
                pass
    if scope.cancelled_caught:
        logger.warning("%s disconnect() hook timed out", session.label)
    await _close_stream(session)


#: Time given to a TLS close_notify exchange when a session ends cleanly.
TLS_CLOSE_TIMEOUT = 5.0


async def _close_stream(session: Session) -> None:
    """Close the connection; over TLS, say close_notify first (RFC 8314 section 3.4)."""
    session.ended = True
    stream = session.stream
    if isinstance(stream, trio.SSLStream) and not session.broken:
        with trio.move_on_after(TLS_CLOSE_TIMEOUT, shield=True):
            try:
                await stream.aclose()  # SSLStream: sends close_notify, then closes
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
    fd, session._fd = session._fd, None  # the number may be reused at once
    if fd is not None and isinstance(stream, trio.SocketStream):
        # What aclose() does, without its checkpoint.  From now on the session only
        # knows the closed stream: a late send_ok() from a handler's stray task
        # gets ClientDisconnected instead of writing into another connection.
        if session._trio_knows_fd:
            stream.socket.close()  # wakes any trio wait on it (notify_closing)
        else:
            # trio never waited on it, so it has nothing to forget (its
            # notify_closing costs a failing epoll_ctl and an exception); only a
            # wait parked in the poller could be left, and wake() ends it.
            session._poller.wake(fd)
            detached = stream.socket.detach()  # -1 if the handler closed it already
            if detached >= 0:
                try:
                    os.close(detached)
                except OSError:
                    pass  # the descriptor is released all the same
        return
    await trio.aclose_forcefully(stream)


async def _bad_command(handler: POP3Handler, session: Session, text: str) -> None:
    handler.previous_command = None  # a bad line comes between USER and PASS too
    await handler.send_err(text)
    _count_bad(session)


def _count_bad(session: Session) -> None:
    """Count a bad command; past the budget, end the session (like Dovecot).

    The count is of consecutive bad commands: a command that completes resets it.
    Like Dovecot (21 in a row with its limit of 20), the first one past the budget is
    still answered, then ``Too many bad commands.`` follows and the connection closes.
    """
    session.bad_commands += 1
    budget = session.config.limits.max_bad_commands
    if budget is not None and session.bad_commands > budget:
        session.queue(format_reply(False, "Too many bad commands."))
        logger.info("%s disconnected: too many bad commands", session.label)
        session.closing = True


async def _command_failed(
    handler: POP3Handler, session: Session, name: str, exc: Exception
) -> None:
    """Answer a command method's exception, or end the session mid-response."""
    if session.body_start is not None:
        if not session.abandon_body():
            # "+OK" and part of the body are on the wire: a -ERR now would read as
            # data.  Ending the connection is the only honest answer (no UPDATE).
            logger.error(
                "%s %s failed in the middle of its response: %r", session.label, name, exc
            )
            session.broken = True
            raise _ClientGone("error in the middle of a response") from exc
        session.replied = False  # its "+OK" was withdrawn with the body
    elif session.replied:
        # The command was answered before it raised: a -ERR now would be taken for
        # the answer to the client's next command.  Log it; the session goes on.
        if isinstance(exc, POP3Error) or session.config.catch_errors:
            logger.error(
                "%s %s raised after its reply (nothing more sent)",
                session.label,
                name,
                exc_info=exc,
            )
            return
        raise exc
    await _answer_exception(handler, session, exc, f"{name} command")
    if isinstance(exc, POP3Error) and exc.counts_as_bad_command:
        _count_bad(session)


async def _answer_exception(
    handler: POP3Handler, session: Session, exc: Exception, where: str
) -> None:
    """Answer ``-ERR`` for an exception from handler code, or re-raise it.

    A :class:`POP3Error` gives its own text and code.  Anything else is logged with the
    peer and answered ``-ERR [SYS/TEMP]`` (its text only with
    ``send_errors_to_client``), unless ``catch_errors`` is off: then it propagates.
    """
    if isinstance(exc, POP3Error):
        await handler.send_err(exc.text, exc.code)
        return
    config = session.config
    if not config.catch_errors:
        raise exc
    logger.exception("%s error in %s", session.label, where, exc_info=exc)
    text = f"{type(exc).__name__}: {exc}" if config.send_errors_to_client else "Internal error."
    await handler.send_err(text, ResponseCode.SYS_TEMP)

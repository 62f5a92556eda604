"""POP3Server: accepts connections and runs one handler per client."""

from __future__ import annotations

import errno
import logging
import math
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, final

import trio

from ._config import (
    DEFAULT_CLEANUP_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_SEND_TIMEOUT,
    DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    PROXY_HEADER_TIMEOUT,
    Limits,
    Network,
    in_networks,
    parse_networks,
)
from ._errors import ClientDisconnected, ResponseCode
from ._handler import POP3Handler
from ._idle import IdleWatch
from ._poller import ReadPoller, make_poller
from ._proto._commands import format_reply, greeting_text_problem
from ._proto._proxy import PROXY_V2_MAX, ProxyHeader, ProxyHeaderError, parse_proxy_header
from ._session import Session, SessionConfig, run_session
from ._throttle import AddressTracker

__all__ = ["DEFAULT_GREETING", "POP3Server"]

#: accept() errors that mean "out of descriptors or memory for now": log, wait
#: :data:`ACCEPT_RETRY_DELAY` and try again rather than stop serving (the same set and
#: delay as :func:`trio.serve_listeners`).
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})

#: The name of every session task.  Given, so that trio does not build a new name
#: string for each connection (one per idle connection held, and the work to make it).
SESSION_TASK_NAME = "trio_pop3.session"

#: Seconds to wait after a capacity error from accept() (trio.serve_listeners' value).
ACCEPT_RETRY_DELAY = 0.1

#: While accept() keeps failing for capacity, log it at most once per this many
#: seconds (with a count): retried every :data:`ACCEPT_RETRY_DELAY`, it logged 134
#: lines in 13 seconds at the descriptor limit, burying everything else.
ACCEPT_ERROR_LOG_INTERVAL = 10.0

logger = logging.getLogger("trio_pop3")

#: The greeting's default text (the Perl original said "POP3 ... ready").
DEFAULT_GREETING = "POP3 trio_pop3 ready."

_Default = object()


@final
class POP3Server:
    """A POP3 server: listens, and runs a fresh handler for each connection.

    Args:
        handler_factory: Called with no arguments once per connection; returns the
            :class:`POP3Handler` for it (a subclass, or ``functools.partial`` of one).
        port: TCP port for plain POP3 (RFC 1939: 110).  0 picks a free port.
        host: Address to bind; None means every interface.
        greeting: Text of the ``+OK`` greeting (an APOP timestamp is added after it).
        goodbye: Text of the ``+OK`` answering QUIT.
        timeout: Seconds of client silence between commands before the connection
            is closed without UPDATE (RFC 1939 section 3: at least 600 if any); None
            disables it.  A ``trio.move_on_after`` around each read.
        login_timeout: The same before login (AUTHORIZATION state); defaults to
            ``timeout``.  Dovecot uses 180 s.
        debug: Log a wire transcript at DEBUG level on the ``trio_pop3`` logger, with
            PASS, APOP and AUTH arguments masked.  If the program has configured no
            logging at all when the first client connects, it goes to standard
            error (as the Perl original's ``debug`` printed there); otherwise the
            program's logging decides.
        send_errors_to_client: When a command method raises an unexpected exception,
            send its text in the ``-ERR`` (default: a generic text; the text could
            help an attacker).
        catch_errors: When True (default) an unexpected exception in a command
            answers ``-ERR``, is logged with the peer address, and the session goes
            on.  When False it ends that connection and propagates out of
            :meth:`serve`.
        ssl_context: Enables STLS, and implicit TLS when ``pop3s_port`` is set.
        pop3s_port: TCP port for implicit TLS (RFC 8314: 995), or None.
        tls_handshake_timeout: Seconds allowed for a TLS handshake.
        send_timeout: Seconds one write may make no progress before the client is
            dropped (a client that stops reading mid-RETR).
        cleanup_timeout: Deadline of the shielded commit() and disconnect() hooks.
        limits: Line lengths, bad-command budget, login throttling and connection
            limits, see :class:`Limits`.
        hostname: Name used in APOP timestamps and SASL challenges.
        proxy_protocol: Networks of the load balancers (or TLS terminators) in
            front of the server that send HAProxy's PROXY protocol header, version 1
            or 2, like Dovecot's ``haproxy_trusted_networks``.  When given, every
            connection must come from one of them and start with that header within
            3 seconds, on both ports; the client address it carries is then the
            peer for limits, login throttling, logs and :attr:`POP3Handler.peer`.
            A version 2 header that says the client spoke TLS to the proxy (its
            PP2_TYPE_SSL TLV) makes the session count as TLS (:attr:`POP3Handler.tls`:
            no STLS, plaintext logins allowed).  Other connections are closed
            without a reply.  Empty by default.

    Example::

        server = POP3Server(MyHandler, port=1110)
        trio.run(server.serve)

    In tests, ``listeners = await nursery.start(server.serve)`` with ``port=0``.

    Raises:
        ValueError: a timeout is not a positive number of seconds (or None, which
            disables it; ``cleanup_timeout`` cannot be None), ``pop3s_port`` is
            given without an ``ssl_context``, a ``proxy_protocol`` entry is not an
            IP network, or
            ``greeting`` is not a greeting's text (RFC 2449 section 3: ASCII, no
            ``<`` or ``>``, which only the APOP timestamp may use, at most 506
            characters).
    """

    def __init__(
        self,
        handler_factory: Callable[[], POP3Handler],
        *,
        port: int = 110,
        host: str | None = None,
        greeting: str = DEFAULT_GREETING,
        goodbye: str = "goodbye",
        timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        login_timeout: float | Any | None = _Default,
        debug: bool = False,
        send_errors_to_client: bool = False,
        catch_errors: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        pop3s_port: int | None = None,
        tls_handshake_timeout: float | None = DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
        cleanup_timeout: float = DEFAULT_CLEANUP_TIMEOUT,
        limits: Limits | None = None,
        hostname: str | None = None,
        proxy_protocol: Iterable[str | Network] = (),
    ) -> None:
        if pop3s_port is not None and ssl_context is None:
            raise ValueError("pop3s_port needs an ssl_context")
        #: Whether debug output still has to be checked for a destination: at the
        #: first connection, not here, since a program often configures logging
        #: after building its server (records would then be printed twice).
        self._debug_unchecked = debug
        problem = greeting_text_problem(greeting)
        if problem is not None:
            raise ValueError(f"the greeting {problem}")
        if login_timeout is _Default:
            login_timeout = timeout
        for name, value in (
            ("timeout", timeout),
            ("login_timeout", login_timeout),
            ("send_timeout", send_timeout),
            ("tls_handshake_timeout", tls_handshake_timeout),
            ("cleanup_timeout", cleanup_timeout),
        ):
            _check_seconds(name, value, none_allowed=name != "cleanup_timeout")
        if ssl_context is not None and ssl_context.minimum_version < ssl.TLSVersion.TLSv1_2:
            # RFC 8314 section 4.1 / RFC 8997: TLS 1.2 is the minimum.
            ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.handler_factory = handler_factory
        self.port = port
        self.host = host
        self.pop3s_port = pop3s_port
        #: The options every session reads (read-only).
        self.config = SessionConfig(
            greeting=greeting,
            goodbye=goodbye,
            idle_timeout=timeout,
            login_timeout=login_timeout,
            send_timeout=send_timeout,
            tls_handshake_timeout=tls_handshake_timeout,
            cleanup_timeout=cleanup_timeout,
            debug=debug,
            send_errors_to_client=send_errors_to_client,
            catch_errors=catch_errors,
            limits=limits or Limits(),
            ssl_context=ssl_context,
            hostname=hostname or socket.gethostname(),
        )
        #: The ``proxy_protocol`` networks, parsed.
        self.proxy_networks = parse_networks(proxy_protocol)
        self._active = 0
        self._sessions: set[Session] = set()
        self._draining = False
        self._accept_scope: trio.CancelScope | None = None
        self._session_scope: trio.CancelScope | None = None
        #: Times idle sessions of serve()/serve_listeners(); handle_stream() called
        #: on its own gives each wait a cancel scope instead.
        self._watch: IdleWatch | None = None
        #: Parks serve()'s idle sessions (None: trio's own waits).
        self._poller: ReadPoller | None = None
        #: Live connections and recent login failures per client address.
        self.addresses = AddressTracker()

    @property
    def active_connections(self) -> int:
        """Number of connections being served right now."""
        return self._active

    async def serve(
        self, *, task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on ``port`` (and ``pop3s_port``) and serve until cancelled.

        ``task_status.started()`` reports the list of listeners (plain ones first),
        so tests can bind port 0 and read the real port.

        Raises:
            OSError: a port cannot be bound (in use, no permission).

        Cancellation: cancelling ``serve()`` stops accepting and cancels every
        session; each runs its shielded disconnect hook (rolling back uncommitted
        changes) before ``serve()`` exits.

        Error handling: an exception from handler code (``handler_factory``,
        :meth:`POP3Handler.on_connect`, :meth:`POP3Handler.greeting` or a command
        method) is logged, answered ``-ERR [SYS/TEMP]`` and contained to its
        connection, unless ``catch_errors`` is False: then it cancels every session
        and propagates out of ``serve()`` in an exception group, as with
        :func:`trio.serve_listeners`.  See :meth:`serve_listeners`.
        """
        plain, secure = await self._open_listeners()
        await self._serve_on(plain, secure, task_status=task_status)

    async def _open_listeners(self) -> tuple[list[trio.SocketListener], list[trio.SocketListener]]:
        """Bind ``port`` (and ``pop3s_port``); return the plain and implicit-TLS listeners.

        Raises:
            OSError: from binding, its text naming the host and port that failed.
        """
        plain = await self._listen(self.port)
        secure: list[trio.SocketListener] = []
        if self.pop3s_port is not None:
            try:
                secure = await self._listen(self.pop3s_port)
            except BaseException:
                for listener in plain:
                    await trio.aclose_forcefully(listener)
                raise
        return plain, secure

    async def _listen(self, port: int) -> list[trio.SocketListener]:
        try:
            return await trio.open_tcp_listeners(port, host=self.host)
        except OSError as exc:
            # With two ports (and maybe several addresses), say which one failed.
            where = f"{self.host or 'all addresses'} port {port}"
            raise OSError(exc.errno, f"{exc.strerror or exc} ({where})") from exc

    async def _serve_on(
        self,
        plain: Sequence[trio.abc.Listener[Any]],
        secure: Sequence[trio.abc.Listener[Any]] = (),
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Like :meth:`serve`, on listeners bound elsewhere (e.g. by a parent process).

        ``secure`` listeners speak implicit TLS.  :meth:`shutdown` works as with
        :meth:`serve`.
        """
        plain, secure = list(plain), list(secure)
        poller = make_poller()
        try:
            async with trio.open_nursery() as services:
                if poller is not None:
                    await services.start(poller.run)
                self._poller = poller
                async with trio.open_nursery() as sessions:
                    self._session_scope = sessions.cancel_scope
                    self._watch = IdleWatch(sessions)
                    async with trio.open_nursery() as accept:
                        self._accept_scope = accept.cancel_scope
                        if self._draining:
                            accept.cancel_scope.cancel()
                        for group, tls in ((plain, False), (secure, True)):
                            for listener in group:
                                await accept.start(self._accept_loop, listener, tls, sessions)
                        task_status.started(plain + secure)
                    # Accepting stopped (shutdown()); the sessions nursery waits for
                    # the rest.
                services.cancel_scope.cancel()  # every session has ended
        finally:
            # handle_stream() called on its own from now on times its own waits.
            self._watch = self._poller = None
            if poller is not None:
                poller.close()

    def shutdown(self, grace: float = DEFAULT_SHUTDOWN_GRACE) -> None:
        """Stop gracefully: stop accepting, end idle sessions, then cancel the rest.

        Idle sessions (waiting for a command) are told ``-ERR [SYS/TEMP]`` and closed
        at once; a session in the middle of a command finishes it (within ``grace``
        seconds) and is then told the same.  After ``grace`` seconds every remaining
        session is cancelled.  Nothing uncommitted is ever removed: sessions end
        without UPDATE, and each runs its disconnect hook.  :meth:`serve` returns
        when the last session has ended.  Must be called from the trio thread.

        Cancellation:
            ``shutdown()`` is synchronous and returns at once; it only cancels scopes
            and sets a deadline.  The listeners close when their accept loops end.
            A handler waiting for a client line inside a command (a SASL response,
            :meth:`POP3Handler.read_line`) gets
            :class:`~trio_pop3.ClientDisconnected` at once, and so does the next
            :meth:`POP3Handler.read_line` of a command that is still running; the
            client is then told ``-ERR [SYS/TEMP] Server shutting down.``.  When the
            ``grace`` deadline passes, the sessions still running get
            :class:`trio.Cancelled` at their next checkpoint and end without a
            reply.  A QUIT already committing is not cut short: :meth:`~POP3Handler.commit`
            and :meth:`~POP3Handler.disconnect` run shielded, each under
            ``cleanup_timeout``, so :meth:`serve` can take up to ``grace`` plus that
            long to return.

        Error handling:
            Never raises.  Calling it again only shortens the deadline (the smaller
            ``grace`` wins).  Connections accepted after the call are answered
            ``-ERR [SYS/TEMP] Server shutting down.`` and closed.
        """
        self._draining = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        for session in list(self._sessions):
            session.drain()
        if self._session_scope is not None:
            self._session_scope.deadline = min(
                self._session_scope.deadline, trio.current_time() + grace
            )

    @property
    def draining(self) -> bool:
        """Whether :meth:`shutdown` was called."""
        return self._draining

    async def serve_listeners(
        self,
        listeners: Sequence[trio.abc.Listener[Any]],
        *,
        implicit_tls: bool = False,
        task_status: trio.TaskStatus[list[trio.abc.Listener[Any]]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve connections from ready-made listeners (e.g. memory listeners in tests).

        Behaves like :meth:`serve` (``task_status.started()`` reports the listeners;
        :meth:`shutdown` and cancellation work the same), without binding anything.
        With ``implicit_tls`` every connection starts with a TLS handshake.

        Each listener gets an accept loop like that of :func:`trio.serve_listeners`, and
        each connection runs :meth:`handle_stream` in a nursery shared by all sessions.

        Resource handling:
            The listeners are closed when accepting stops (on :meth:`shutdown`,
            cancellation or an error); the call returns only after the last session
            has ended and closed its stream.

        Cancellation:
            Cancelling it stops accepting and cancels every session; each runs its
            shielded :meth:`~POP3Handler.disconnect` hook (under ``cleanup_timeout``)
            and closes its stream before the call exits.

        Error handling:
            As in :func:`trio.serve_listeners`: an ``accept()`` that fails with
            EMFILE, ENFILE, ENOMEM or ENOBUFS is logged and retried after 100 ms;
            any other exception from ``accept()`` ends serving.  An exception that
            escapes :meth:`handle_stream` (see there) also ends serving: every other
            session is cancelled, and the exception propagates out of this call
            wrapped in an exception group.
        """
        if implicit_tls:
            await self._serve_on((), listeners, task_status=task_status)
        else:
            await self._serve_on(listeners, (), task_status=task_status)

    async def _accept_loop(
        self,
        listener: trio.abc.Listener[Any],
        implicit_tls: bool,
        sessions: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections until cancelled; each runs :meth:`handle_stream`.

        Does what :func:`trio.serve_listeners` does for one listener, minus its
        second close of every stream (:meth:`handle_stream` always closes it).
        """
        handle = partial(self.handle_stream, implicit_tls=implicit_tls)
        logged_at = -math.inf  # when a capacity error was last logged
        unlogged = 0  # capacity errors since then
        async with listener:
            task_status.started()
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                        raise
                    now = trio.current_time()
                    if now - logged_at >= ACCEPT_ERROR_LOG_INTERVAL:
                        logger.error(
                            "accept() failed: %s; retrying every %s s%s",
                            exc,
                            ACCEPT_RETRY_DELAY,
                            f" ({unlogged} more failures since the last report)"
                            if unlogged
                            else "",
                        )
                        logged_at, unlogged = now, 0
                    else:
                        unlogged += 1
                    await trio.sleep(ACCEPT_RETRY_DELAY)
                else:
                    sessions.start_soon(handle, stream, name=SESSION_TASK_NAME)

    async def handle_stream(self, stream: trio.abc.Stream, *, implicit_tls: bool = False) -> None:
        """Serve one client on ``stream`` until the session ends; closes the stream.

        A client over the connection limits (:class:`Limits`), or one that arrives
        after :meth:`shutdown`, is answered ``-ERR [SYS/TEMP] ...`` and the stream is
        closed; that reply gets at most 5 seconds.  With ``implicit_tls`` the TLS
        handshake comes first, under ``tls_handshake_timeout``.

        Resource handling:
            The stream is closed however the session ends (after the handler's
            :meth:`~POP3Handler.disconnect` hook has run, if there is a handler),
            also when the client is refused, ``handler_factory`` raises or the
            call is cancelled.

        Cancellation:
            Cancelling it ends the session without UPDATE: uncommitted deletions are
            forgotten.  If the session was waiting for a command the client is told
            ``-ERR [SYS/TEMP] Server shutting down.``.  The shielded
            :meth:`~POP3Handler.disconnect` hook runs (for up to ``cleanup_timeout``
            seconds), pending replies are sent if the connection still works, the
            stream is closed, and :class:`trio.Cancelled` propagates.

        Error handling:
            A client that goes away, stops reading for ``send_timeout`` seconds,
            idles past the idle timeout or fails the TLS handshake ends its session
            quietly: :class:`~trio_pop3.ClientDisconnected` never escapes this method.
            Exceptions from handler code are logged and answered ``-ERR
            [SYS/TEMP]``: from a command method the session goes on; from
            ``handler_factory``, :meth:`~POP3Handler.on_connect` or
            :meth:`~POP3Handler.greeting` the connection then closes (after the
            disconnect hook, which a failed ``handler_factory`` has none of).  With
            ``catch_errors=False`` any of them ends the session and propagates:
            under :meth:`serve` or :meth:`serve_listeners` it stops the whole
            server.
        """
        # trio's SocketStream turns Nagle's algorithm off (TCP_NODELAY) itself: a
        # reply must never wait for the client's delayed ACK (40 ms per command,
        # measured on a peer server; tests/test_server.py checks it stays off).
        try:
            if self._debug_unchecked:
                self._debug_unchecked = False
                if not logger.hasHandlers():
                    _log_to_stderr()
            peer = _peer_of(stream)
            label = f"{peer[0]}:{peer[1]}" if peer else "memory"
            limits = self.config.limits
            address = peer[0] if peer else ""
            if self._draining:
                await _refuse(stream, "Server shutting down.")
                return
            if limits.max_connections is not None and self._active >= limits.max_connections:
                logger.warning("%s refused: %d connections already", label, self._active)
                await _refuse(stream, "Too many connections, try again later.")
                return
            proxied_tls = False
            if self.proxy_networks:
                header = await _proxy_header(stream, address, self.proxy_networks, label)
                if header is None:
                    await trio.aclose_forcefully(stream)
                    return
                proxied_tls = header.tls  # the proxy terminated the client's TLS
                if header.source is not None:
                    logger.debug(
                        "%s proxied for %s:%d%s",
                        label,
                        *header.source,
                        " (TLS)" if proxied_tls else "",
                    )
                    peer = header.source
                    label = f"{peer[0]}:{peer[1]}"
                    address = peer[0]
            per_address = limits.max_connections_per_address
            if (
                per_address is not None
                and self.addresses.connections(address) >= per_address
                and not limits.is_trusted(address)
            ):
                logger.warning("%s refused: too many connections from this address", label)
                await _refuse(stream, "Too many connections from your address.")
                return
            self._active += 1
            self.addresses.connect(address)
            session = Session(
                stream,
                self.config,
                peer=peer,
                tls=proxied_tls,
                server=self,
                watch=self._watch,
                poller=self._poller,
            )
            self._sessions.add(session)
            try:
                if implicit_tls:
                    assert self.config.ssl_context is not None
                    try:
                        await session.start_tls(self.config.ssl_context)
                    except ClientDisconnected as exc:
                        logger.info("%s %s", label, exc)
                        await trio.aclose_forcefully(stream)
                        return
                logger.debug("%s connected%s", label, " (TLS)" if session.tls else "")
                started = trio.current_time()
                try:
                    try:
                        handler = self.handler_factory()
                    except Exception:
                        if not self.config.catch_errors:
                            raise  # the stream is closed below, as on any exception
                        logger.exception("%s handler_factory() failed", label)
                        await _refuse(stream, "Internal error.")
                        return
                    await run_session(handler, session)
                finally:
                    # One INFO line per session, at its end (plus login and failures).
                    logger.info(
                        "%s disconnected: user=%s duration=%.3fs commands=%d sent=%d",
                        label,
                        session.user or "-",
                        trio.current_time() - started,
                        session.commands,
                        session.sent,
                    )
            finally:
                self._sessions.discard(session)
                self.addresses.disconnect(address)
                self._active -= 1
        except BaseException:
            await trio.aclose_forcefully(stream)  # closing twice is harmless
            raise


def _log_to_stderr() -> None:
    """Send the ``trio_pop3`` logger's records, DEBUG included, to standard error.

    For ``debug=True`` in a program that configured no logging: Python would show
    only warnings, so the transcript asked for would never appear.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


def _check_seconds(name: str, value: object, *, none_allowed: bool) -> None:
    """Refuse a timeout that is not a positive number of seconds (or None, if allowed).

    The Perl original took 0 to mean "no timeout"; here 0 would close every
    connection at once, so it is an error that says what to write instead.
    """
    if value is None and none_allowed:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        disable = " (None disables it)" if none_allowed else ""
        raise ValueError(f"{name} must be a positive number of seconds{disable}, not {value!r}")


async def _proxy_header(
    stream: trio.abc.Stream, address: str, networks: tuple[Network, ...], label: str
) -> ProxyHeader | None:
    """Take the PROXY protocol header off the connection; None: refused (logged).

    Only the header's own bytes are read (the rest is peeked at, never taken), so
    what follows it, a command or a TLS ClientHello, stays on the socket.
    """
    sock = getattr(stream, "socket", None)
    if sock is None or not in_networks(address, networks):
        logger.warning("%s refused: not from a PROXY protocol network", label)
        return None
    taken = bytearray()
    with trio.move_on_after(PROXY_HEADER_TIMEOUT):
        try:
            while True:
                peeked = await sock.recv(PROXY_V2_MAX, socket.MSG_PEEK)
                if not peeked:
                    break  # closed before the header ended
                header = parse_proxy_header(taken + peeked)
                # Incomplete: everything seen is header, so take it all and wait.
                wanted = len(peeked) if header is None else header.length - len(taken)
                chunk = await sock.recv(wanted)  # peeked already: all of it is there
                if len(chunk) != wanted:
                    break
                taken += chunk
                if header is not None:
                    return header
        except ProxyHeaderError as exc:
            logger.warning("%s refused: %s", label, exc)
            return None
        except OSError as exc:
            logger.info("%s closed before its PROXY header: %s", label, exc)
            return None
        logger.info("%s closed before its PROXY header ended", label)
        return None
    logger.warning("%s refused: no PROXY header within %s s", label, PROXY_HEADER_TIMEOUT)
    return None


async def _refuse(stream: trio.abc.Stream, text: str) -> None:
    with trio.move_on_after(5):
        try:
            await stream.send_all(format_reply(False, text, ResponseCode.SYS_TEMP.value))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    await trio.aclose_forcefully(stream)


def _peer_of(stream: trio.abc.Stream) -> tuple[str, int] | None:
    sock = getattr(stream, "socket", None)
    if sock is None:
        return None
    try:
        address = sock.getpeername()
    except OSError:
        return None
    if isinstance(address, tuple) and len(address) >= 2:
        return (str(address[0]), int(address[1]))
    return None

"""Running a server in a test, for :mod:`trio_pop3.testing`: memory sessions and listeners.

The names are public through :mod:`trio_pop3.testing`; see its docstring.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final, final

import trio
import trio.testing

from ._config import Limits
from ._handler import POP3Handler
from ._server import POP3Server
from ._testing_client import POP3TestClient

__all__ = ["TEST_LIMITS", "MemoryListener", "open_memory_session", "serve_on_loopback"]

#: The limits of servers the helpers build: the defaults, except that a failed login
#: is answered at once (the production delay of 2 s, doubling, would make every test
#: of a wrong password slow).  Pass ``limits=`` to test the delay itself, under
#: ``autojump_clock``.
TEST_LIMITS: Final = Limits(auth_failure_delay=0)


# -- running servers ------------------------------------------------------------------------


def _as_server(
    server: POP3Server | Callable[[], POP3Handler], options: Mapping[str, Any]
) -> POP3Server:
    if isinstance(server, POP3Server):
        if options:
            raise TypeError("server options given with a ready-made POP3Server")
        return server
    return POP3Server(server, **{"limits": TEST_LIMITS, **options})


@contextmanager
def _single_exception() -> Iterator[None]:
    """Let one exception out of a nursery as itself, not in an exception group."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        exc = group.exceptions[0]
        context = exc.__context__
        try:
            raise exc
        finally:
            exc.__context__ = context
            del exc, context, group


@asynccontextmanager
async def open_memory_session(
    server: POP3Server | Callable[[], POP3Handler],
    /,
    *,
    read_greeting: bool = True,
    lockstep: bool = False,
    strict: bool = True,
    **server_options: Any,
) -> AsyncIterator[POP3TestClient]:
    """Run one connection of a handler over memory streams; yield its client.

    The server side is :meth:`~trio_pop3.POP3Server.handle_stream` in a nursery of this context.
    No sockets or real time are involved, so timeouts are tested instantly under
    pytest-trio's ``autojump_clock`` (or a :class:`trio.testing.MockClock`).

    Args:
        server: A handler factory (a :class:`~trio_pop3.POP3Handler` subclass or a
            ``functools.partial`` of one), or a ready-made :class:`~trio_pop3.POP3Server`
            (to look at ``active_connections`` or share one among sessions).
        read_greeting: Read the greeting first (into :attr:`POP3TestClient.greeting`).
        lockstep: Use ``trio.testing.lockstep_stream_pair()``, which has no buffer:
            a server that writes while the client is not reading blocks, which
            exposes backpressure bugs.
        strict: See :class:`POP3TestClient`.
        **server_options: Options of :class:`~trio_pop3.POP3Server` when ``server`` is a
            factory, e.g. ``timeout=600``; ``limits`` defaults to :data:`TEST_LIMITS`.

    Example::

        async def test_idle_timeout(autojump_clock):
            async with open_memory_session(MyHandler, timeout=600) as client:
                start = trio.current_time()
                assert await client.read_until_closed() == b""
                assert trio.current_time() - start == 600

    Resource handling:
        On exit the client's end is closed (unless it was already) and the context
        waits for the session to end, so the handler's ``disconnect()`` hook has run:
        a maildrop lock is free again afterwards.

    Error handling:
        An exception in the body cancels the session and propagates as itself (not
        inside an exception group); so does an exception that escapes the server
        (with ``catch_errors=False``, or from ``on_connect()`` or ``greeting()``).
        Reading the greeting may raise :class:`EOFError` or
        :class:`ProtocolViolation` (see :meth:`POP3TestClient.read_greeting`).

    Cancellation:
        Cancelling the body (or an enclosing scope) cancels the session like a
        server being cancelled: it ends without UPDATE, its shielded
        ``disconnect()`` hook runs, and the context exits with the cancellation.
    """
    pop3 = _as_server(server, server_options)
    client_stream: trio.abc.Stream
    server_stream: trio.abc.Stream
    if lockstep:
        client_stream, server_stream = trio.testing.lockstep_stream_pair()
    else:
        client_stream, server_stream = trio.testing.memory_stream_pair()
    client = POP3TestClient(client_stream, strict=strict)
    with _single_exception():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pop3.handle_stream, server_stream)
            if read_greeting:
                await client.read_greeting()
            yield client
            if not client._closed_here:
                await client.aclose()


@final
class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """A ``trio.abc.Listener`` whose connections are in-memory stream pairs.

    :meth:`connect` makes a pair, queues the server end for :meth:`accept` and returns
    the client end.  Use it with :meth:`~trio_pop3.POP3Server.serve_listeners` to test a whole
    server (connection limits, shutdown) without sockets.

    Args:
        lockstep: Make unbuffered pairs (``trio.testing.lockstep_stream_pair``).

    Example::

        listener = MemoryListener()
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve_listeners, [listener])
            async with await listener.open_client() as client:
                await client.login("alice", "secret")
            nursery.cancel_scope.cancel()

    Resource handling:
        :meth:`aclose` closes the queued connections nobody accepted; afterwards
        :meth:`connect` raises ``trio.BrokenResourceError`` (connection refused) and
        :meth:`accept` raises ``trio.ClosedResourceError``.
    """

    def __init__(self, *, lockstep: bool = False) -> None:
        #: Whether connections are unbuffered lockstep pairs.
        self.lockstep = lockstep
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](float("inf"))
        #: How many connections were accepted so far.
        self.accepted = 0

    async def connect(self) -> trio.abc.Stream:
        """Open a connection and return the client's end.

        Example::

            stream = await listener.connect()

        Raises:
            trio.BrokenResourceError: the listener was closed (connection refused).

        Cancellation:
            The queue is unbounded, so it never waits; it is a checkpoint.
        """
        client: trio.abc.Stream
        server: trio.abc.Stream
        if self.lockstep:
            client, server = trio.testing.lockstep_stream_pair()
        else:
            client, server = trio.testing.memory_stream_pair()
        await self._send.send(server)
        return client

    async def open_client(
        self, *, read_greeting: bool = True, strict: bool = True
    ) -> POP3TestClient:
        """Open a connection and return a :class:`POP3TestClient` on it.

        Example::

            client = await listener.open_client()
            assert client.greeting is not None and client.greeting.ok

        Raises:
            trio.BrokenResourceError: the listener was closed.
            EOFError: (``read_greeting``) the server closed the connection first.
            ProtocolViolation: (``read_greeting``, strict) a malformed greeting.

        Cancellation:
            Waits for the greeting when ``read_greeting`` is on; if that wait is
            cancelled or fails, the client is closed before the exception
            propagates.
        """
        client = POP3TestClient(await self.connect(), strict=strict)
        if read_greeting:
            try:
                await client.read_greeting()
            except BaseException:
                await client.aclose()
                raise
        return client

    async def accept(self) -> trio.abc.Stream:
        """Return the server end of the next connection (waits for :meth:`connect`).

        Example::

            stream = await listener.accept()

        Raises:
            trio.ClosedResourceError: the listener was closed.

        Cancellation:
            Waits for a connection; cancelling the wait loses none.
        """
        stream = await self._receive.receive()
        self.accepted += 1
        return stream

    async def aclose(self) -> None:
        """Stop listening; connections not yet accepted are closed.

        Example::

            await listener.aclose()

        Calling it again does nothing more.  It raises nothing but
        :class:`trio.Cancelled`, and that only once the listener is closed.
        """
        while True:
            try:
                stream = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.ClosedResourceError):
                break
            await trio.aclose_forcefully(stream)
        self._receive.close()
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def serve_on_loopback(
    server: POP3Server | Callable[[], POP3Handler],
    /,
    *,
    host: str = "127.0.0.1",
    **server_options: Any,
) -> AsyncIterator[tuple[str, int]]:
    """Serve on a free port of the loopback interface; yield ``(host, port)``.

    The server's own ``port`` and ``host`` are not used: the listener is opened here on
    port 0 and handed to :meth:`~trio_pop3.POP3Server.serve_listeners`.  Use it for clients that
    need a real socket, such as :mod:`poplib` in a worker thread.

    Args:
        server: A :class:`~trio_pop3.POP3Server`, or a handler factory to build one
            with ``server_options`` (``limits`` defaults to :data:`TEST_LIMITS`).
        host: The address to bind, e.g. ``"::1"``.
        **server_options: See :class:`~trio_pop3.POP3Server`.

    Example::

        async with serve_on_loopback(MyHandler) as (host, port):
            def fetch() -> int:
                pop = poplib.POP3(host, port)
                pop.user("alice")
                pop.pass_("secret")
                count = pop.stat()[0]
                pop.quit()
                return count

            assert await trio.to_thread.run_sync(fetch) == 2

    Raises:
        OSError: ``host`` cannot be bound.

    Resource handling:
        On exit the server is cancelled: open sessions end without UPDATE and run
        their ``disconnect()`` hooks; the listener is closed.

    Cancellation:
        Cancelling the body (or an enclosing scope) cancels the server in the same
        way, and the context exits with the cancellation.

    Error handling:
        An exception from the body, or one that escapes the server, propagates as
        itself (not in an exception group).
    """
    pop3 = _as_server(server, server_options)
    listeners = await trio.open_tcp_listeners(0, host=host)
    sockname = listeners[0].socket.getsockname()
    with _single_exception():
        async with trio.open_nursery() as nursery:
            await nursery.start(pop3.serve_listeners, listeners)
            yield str(sockname[0]), int(sockname[1])
            nursery.cancel_scope.cancel()

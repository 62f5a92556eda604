"""The POP3 server as one service among others in a trio program.

Next to the POP3 server runs a tiny status service on another port: connect to it
and it answers one line, ``active_connections=N draining=no``, and closes.  On
SIGINT or SIGTERM the POP3 server shuts down gracefully (idle sessions are told
``-ERR [SYS/TEMP]``, busy ones finish their command; nothing uncommitted is
removed), then the other services are cancelled and the program exits.

Run it:  python examples/embedding.py --port 1110 --status-port 1111
Try it:  nc 127.0.0.1 1111
"""

from __future__ import annotations

import argparse
import functools
import signal

import trio

from trio_pop3 import POP3Server
from trio_pop3.mailbox import MailboxHandler, MemoryAuthenticator, MemoryStore

USERS = {"alice": "wonderland"}


async def serve_status(
    server: POP3Server,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer every connection with the POP3 server's state; report the port."""

    async def answer(stream: trio.SocketStream) -> None:
        draining = "yes" if server.draining else "no"
        line = f"active_connections={server.active_connections} draining={draining}\n"
        try:
            with trio.move_on_after(5):
                await stream.send_all(line.encode())
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(answer, listeners)


async def run(
    server: POP3Server,
    *,
    host: str,
    status_port: int,
    stop: trio.Event,
    grace: float = 10.0,
    task_status: trio.TaskStatus[tuple[int, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run POP3 and the status service until ``stop`` is set, then shut down cleanly.

    Reports ``(pop3_port, status_port)`` once both listen.
    """
    async with trio.open_nursery() as services:
        status = await services.start(serve_status, server, host, status_port)
        async with trio.open_nursery() as pop3:
            listeners: list[trio.SocketListener] = await pop3.start(server.serve)
            task_status.started((listeners[0].socket.getsockname()[1], status))
            await stop.wait()
            server.shutdown(grace)
        # serve() has returned: every session has ended.  Now stop the rest.
        services.cancel_scope.cancel()


def make_server(host: str, port: int) -> POP3Server:
    store = MemoryStore({"alice": [b"Subject: hello\n\nfrom an embedded server\n"]})
    factory = functools.partial(MailboxHandler, store, MemoryAuthenticator(USERS))
    return POP3Server(factory, host=host, port=port)


async def main_async(host: str, port: int, status_port: int) -> None:
    stop = trio.Event()
    server = make_server(host, port)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(
                functools.partial(run, server, host=host, status_port=status_port, stop=stop)
            )
            print(f"listening on {host}:{ports[0]} (status on port {ports[1]})", flush=True)
            async for _ in signals:
                stop.set()
                break


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=1110)
    parser.add_argument("--status-port", type=int, default=1111)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    trio.run(main_async, args.host, args.port, args.status_port)


if __name__ == "__main__":
    main()

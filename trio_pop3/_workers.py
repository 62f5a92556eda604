"""``trio-pop3 serve --workers N``: several processes serving the same port.

Theory of operation
-------------------
One trio process uses one core.  With ``--workers N`` the ``serve`` process becomes a
supervisor: it binds the listening sockets once (so a busy port is reported once, as
a usage error, and port 0 works) and starts N workers.  Each worker is a fresh
``python -m trio_pop3`` with the same command line plus ``--worker-fds``; it
inherits the listening descriptors and accepts from the shared accept queue.  A
worker busy with its clients comes back to ``accept`` later than an idle one, so
load spreads by itself, and a worker that dies leaves the queued connections to the
others (with per-worker ``SO_REUSEPORT`` sockets they would be reset).

* **Maildrop lock.**  It is an ``flock`` taken through a fresh ``open()``, so it is
  exclusive across processes: a second login to a maildrop gets ``[IN-USE]``
  whichever worker serves it.  The other per-process state (login-failure
  throttling per address, connection limits) is per worker.
* **Shutdown.**  SIGTERM or SIGINT to the supervisor is passed to every worker as
  SIGTERM; each shuts down gracefully (:meth:`POP3Server.shutdown`), and the
  supervisor exits 0 when all have exited.  A second signal is passed on too, and
  the workers then stop at once.  Workers ignore SIGINT: Ctrl-C in a terminal
  reaches the whole process group, and the supervisor passes it on once.
* **SIGHUP** is logged by the supervisor and otherwise ignored, by it and by the
  workers: there is nothing to reload.
* **Crashes.**  A worker that exits while the supervisor is not stopping is started
  again after :data:`RESTART_DELAY`.
* **Orphans.**  A worker's stdin is a pipe from the supervisor; end of file there
  (the supervisor died, even by SIGKILL) makes the worker shut down gracefully.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence

import trio

__all__ = [
    "RESTART_DELAY",
    "format_worker_fds",
    "parse_worker_fds",
    "supervise",
    "watch_supervisor",
    "worker_listeners",
]

logger = logging.getLogger("trio_pop3")

#: Seconds before a crashed worker is started again: quick enough that a crash costs
#: little capacity, slow enough that a worker failing at start cannot spin a core.
RESTART_DELAY = 1.0

#: Signals the supervisor passes on to its workers.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def format_worker_fds(plain: Sequence[int], secure: Sequence[int]) -> str:
    """Return the ``--worker-fds`` value: ``PLAIN[,PLAIN...][:SECURE[,SECURE...]]``."""
    text = ",".join(map(str, plain))
    if secure:
        text += ":" + ",".join(map(str, secure))
    return text


def parse_worker_fds(text: str) -> tuple[list[int], list[int]]:
    """Parse a ``--worker-fds`` value into plain and implicit-TLS descriptors.

    Raises:
        ValueError: not in the form :func:`format_worker_fds` writes.
    """
    plain, _, secure = text.partition(":")
    return [int(fd) for fd in plain.split(",")], [int(fd) for fd in secure.split(",") if fd]


def worker_listeners(fds: Sequence[int]) -> list[trio.SocketListener]:
    """Wrap inherited listening descriptors as trio listeners (in a worker)."""
    return [
        trio.SocketListener(trio.socket.from_stdlib_socket(socket.socket(fileno=fd))) for fd in fds
    ]


async def supervise(
    count: int,
    command: Sequence[str],
    plain: Sequence[trio.SocketListener],
    secure: Sequence[trio.SocketListener],
    *,
    hangup_message: str = "ignored",
) -> None:
    """Run ``count`` workers on the bound listeners until SIGINT or SIGTERM.

    Args:
        count: Number of worker processes.
        command: The worker command line, without ``--worker-fds``.
        plain: Listeners for plain POP3 (kept open here, for restarted workers).
        secure: Listeners for implicit TLS.
        hangup_message: Logged on SIGHUP, which changes nothing.
    """
    plain_fds = [listener.socket.fileno() for listener in plain]
    secure_fds = [listener.socket.fileno() for listener in secure]
    worker_command = [*command, "--worker-fds", format_worker_fds(plain_fds, secure_fds)]
    running: dict[int, trio.Process] = {}
    stopping = False

    async def run_worker(index: int) -> None:
        while True:
            process = await trio.lowlevel.open_process(
                worker_command, stdin=subprocess.PIPE, pass_fds=[*plain_fds, *secure_fds]
            )
            running[index] = process
            if stopping:  # a signal came while it was starting
                process.send_signal(signal.SIGTERM)
            logger.info("worker %d started, pid %d", index, process.pid)
            status = await process.wait()
            del running[index]
            if process.stdin is not None:
                await process.stdin.aclose()
            if stopping:
                logger.info("worker %d (pid %d) exited, status %d", index, process.pid, status)
                return
            logger.error(
                "worker %d (pid %d) exited unexpectedly, status %d; restarting in %g s",
                index,
                process.pid,
                status,
                RESTART_DELAY,
            )
            await trio.sleep(RESTART_DELAY)

    with trio.open_signal_receiver(*_STOP_SIGNALS, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:

            async def pass_on_signals() -> None:
                nonlocal stopping
                async for signum in signals:
                    if signum == signal.SIGHUP:  # workers ignore it
                        logger.info("received SIGHUP: %s", hangup_message)
                        continue
                    logger.info(
                        "received %s, stopping %d workers", signal.Signals(signum).name, count
                    )
                    stopping = True
                    for process in list(running.values()):
                        if process.returncode is None:
                            process.send_signal(signal.SIGTERM)

            nursery.start_soon(pass_on_signals)
            async with trio.open_nursery() as workers:
                for index in range(count):
                    workers.start_soon(run_worker, index)
            nursery.cancel_scope.cancel()


async def watch_supervisor() -> None:
    """In a worker: return when stdin, the supervisor's pipe, reaches end of file."""
    async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stream:
        while True:
            try:
                if not await stream.receive_some():
                    return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

"""Waiting for idle clients' sockets: one epoll set and one task per server.

Theory of operation
-------------------
Most connections a public POP3 server holds are idle: a session parked until its
client sends the next command.  ``trio.lowlevel.wait_readable`` parks such a session
under five coroutine frames of trio's (about 1.4 KB per connection, with trio's
registration record) and re-arms trio's one-shot epoll registration on every wait.

:class:`ReadPoller` parks it under the two frames of
``trio.lowlevel.wait_task_rescheduled`` instead.  A session's socket joins the
poller's own epoll set once, edge-triggered, the first time the session waits; the
kernel drops it when the socket is closed.  One task per server waits (with trio's
``wait_readable``) on the epoll set's own descriptor, collects the ready sockets
without blocking and reschedules the sessions parked on them.

Edge-triggered notification is safe here because a session only parks after a read
that found the socket empty, with no checkpoint in between: any byte that arrives
after that read raises a new event, which the task sees while the session is
parked.  An event can also be stale (the session already read the data, through a
read that found it there): the session then finds the socket empty again and parks
again.  Either way a parked session never misses its client.

:meth:`ReadPoller.wake` ends a wait early with ``trio.ClosedResourceError``, as
``trio.lowlevel.notify_closing`` does for trio's waits; the session's idle timer
and graceful shutdown use it.  :data:`TRIO_WAITS` offers the same two operations on
trio's own waits, for platforms without epoll.
"""

from __future__ import annotations

import select
from collections.abc import Awaitable, Callable
from typing import Protocol

import outcome
import trio

__all__ = ["MAX_EVENTS", "TRIO_WAITS", "Poller", "ReadPoller", "make_poller"]

#: Ready sockets taken from the kernel per pass.  More stay queued and are taken on
#: the next pass (the epoll descriptor stays readable); 1024 covers a burst from
#: thousands of idle clients in a few passes while bounding one pass's work.
MAX_EVENTS = 1024

#: What a socket is watched for: data, a peer's shutdown or an error, reported once
#: per change (edge-triggered).
_EVENTS = getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLRDHUP", 0)
_EVENTS |= getattr(select, "EPOLLET", 0)


class Poller(Protocol):
    """How a session waits for its socket to become readable."""

    def register(self, fd: int) -> None:
        """Prepare ``fd`` for waits (once per socket, before its first wait)."""

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd``, which stays open (e.g. it is moving to TLS)."""

    def wait_readable(self, fd: int) -> Awaitable[object]:
        """Return an awaitable that ends when ``fd`` may have data (or an error)."""

    def wake(self, fd: int) -> None:
        """End a wait on ``fd`` with ``trio.ClosedResourceError``."""


class _TrioWaits:
    """The :class:`Poller` operations on trio's own per-descriptor waits."""

    def register(self, fd: int) -> None:
        """Nothing to do: trio registers on each wait."""

    def unregister(self, fd: int) -> None:
        """Nothing to do: trio forgets a descriptor after each wait."""

    async def wait_readable(self, fd: int) -> None:
        """``trio.lowlevel.wait_readable(fd)``."""
        await trio.lowlevel.wait_readable(fd)

    def wake(self, fd: int) -> None:
        """``trio.lowlevel.notify_closing(fd)``."""
        trio.lowlevel.notify_closing(fd)


#: The fallback :class:`Poller`: trio's ``wait_readable`` and ``notify_closing``.
TRIO_WAITS: Poller = _TrioWaits()


class ReadPoller:
    """Parks tasks until their sockets are readable; :meth:`run` must be running.

    Example::

        poller = ReadPoller()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.run)
            poller.register(sock.fileno())
            await poller.wait_readable(sock.fileno())  # after a read found nothing
            nursery.cancel_scope.cancel()
        poller.close()
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()
        #: The task parked on each descriptor.
        self._parked: dict[int, trio.lowlevel.Task] = {}

    def register(self, fd: int) -> None:
        """Watch ``fd`` (a non-blocking socket) from now until it is closed.

        Raises:
            OSError: ``fd`` is not open, or is registered already.
        """
        self._epoll.register(fd, _EVENTS)

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd`` while it stays open; harmless if it was not watched."""
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass

    def wait_readable(self, fd: int) -> Awaitable[object]:
        """Park the calling task until ``fd`` may be readable; a checkpoint.

        Call it only after a read of ``fd`` found nothing, with no checkpoint in
        between (see the module's notes).  The wake-up can be spurious: read again,
        and wait again if there is still nothing.  Not a coroutine function, so the
        parked task holds no frame of it.

        Raises:
            trio.BusyResourceError: another task is already waiting on ``fd``.
            trio.ClosedResourceError: :meth:`wake` ended the wait.
        """
        parked = self._parked
        if fd in parked:
            raise trio.BusyResourceError("another task is already waiting on this socket")
        parked[fd] = trio.lowlevel.current_task()
        # Returned, not awaited here: the caller awaits it, and parks one frame lighter.
        return trio.lowlevel.wait_task_rescheduled(_Unpark(parked, fd))  # noqa: ASYNC105

    def wake(self, fd: int) -> None:
        """End the wait on ``fd`` (if any) with ``trio.ClosedResourceError``."""
        task = self._parked.pop(fd, None)
        if task is not None:
            error = trio.ClosedResourceError("wait ended by the server")
            trio.lowlevel.reschedule(task, outcome.Error(error))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reschedule parked tasks as their sockets become ready, until cancelled."""
        epoll, parked = self._epoll, self._parked
        reschedule = trio.lowlevel.reschedule
        task_status.started()
        while True:
            await trio.lowlevel.wait_readable(epoll.fileno())
            for fd, _ in epoll.poll(0, MAX_EVENTS):
                task = parked.pop(fd, None)
                if task is not None:
                    reschedule(task)

    def close(self) -> None:
        """Release the epoll set (after :meth:`run` has ended)."""
        self._epoll.close()


class _Unpark:
    """A parked task's abort function: forgets the wait (one small object per wait)."""

    __slots__ = ("_fd", "_parked")

    def __init__(self, parked: dict[int, trio.lowlevel.Task], fd: int) -> None:
        self._parked = parked
        self._fd = fd

    def __call__(self, _: Callable[[], object]) -> trio.lowlevel.Abort:
        self._parked.pop(self._fd, None)
        return trio.lowlevel.Abort.SUCCEEDED


def make_poller() -> ReadPoller | None:
    """Return a :class:`ReadPoller` where epoll exists (Linux), else None."""
    return ReadPoller() if hasattr(select, "epoll") else None

"""Idle timeouts for sessions that wait on their sockets directly: one timer task.

Theory of operation
-------------------
A session waiting for a command needs a deadline (the idle or login timeout).  A
``trio.CancelScope`` per wait gives one, but costs about 9 microseconds and 0.7 KB
(the scope, its status with two sets, an entry in trio's deadline heap) for every
command, and every idle connection holds one.  Sessions on a plain TCP socket
instead register each wait here: a heap entry and a dict entry.  One task per
server sleeps until the earliest deadline and expires the sessions whose wait is
still registered by then; expiring wakes the session's wait with
``trio.ClosedResourceError`` (:meth:`~trio_pop3._poller.ReadPoller.wake`, or
``trio.lowlevel.notify_closing`` where trio's own waits are used), and the session
then reads its own flag to tell a timeout from a broken connection.

Finished waits are unregistered at once; their heap entries are dropped lazily when
they come up, or all at once when stale entries outnumber live ones.  The timer task
runs only while some wait is registered, so it never keeps a server's nursery open.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Protocol

import trio

__all__ = ["IdleWatch"]

#: Stale heap entries (waits that ended before their deadline) are pruned once they
#: are this many more than twice the live ones: pruning is O(n), so amortised O(1)
#: per wait, and the heap never holds more than about three entries per live wait.
_PRUNE_SLACK = 64


class _Expirable(Protocol):
    def expire(self) -> None:
        """The wait's deadline passed: end the wait (called from the timer task)."""


class IdleWatch:
    """Deadlines of registered waits, expired by one task in ``nursery``."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._heap: list[tuple[float, int]] = []
        self._live: dict[int, _Expirable] = {}
        self._ids = itertools.count()
        self._running = False
        self._sleep: trio.CancelScope | None = None

    def __len__(self) -> int:
        """Number of waits registered now."""
        return len(self._live)

    def register(self, waiter: _Expirable, deadline: float) -> int:
        """Call ``waiter.expire()`` at ``deadline`` unless :meth:`unregister` comes first.

        Returns:
            The registration's id, for :meth:`unregister`.
        """
        wait_id = next(self._ids)
        self._live[wait_id] = waiter
        heap = self._heap
        heapq.heappush(heap, (deadline, wait_id))
        if len(heap) > 2 * len(self._live) + _PRUNE_SLACK:
            live = self._live
            self._heap = heap = [entry for entry in heap if entry[1] in live]
            heapq.heapify(heap)
        if not self._running:
            self._running = True
            self._nursery.start_soon(self._run)
        elif self._sleep is not None and deadline < self._sleep.deadline:
            self._sleep.deadline = deadline
        return wait_id

    def unregister(self, wait_id: int) -> None:
        """Forget a wait (finished, failed or cancelled); harmless if it expired."""
        live = self._live
        if live.pop(wait_id, None) is not None and not live and self._sleep is not None:
            self._sleep.cancel()  # nothing left to time: let the task end now

    async def _run(self) -> None:
        try:
            heap, live = self._heap, self._live
            while live:
                now = trio.current_time()
                while heap and (heap[0][0] <= now or heap[0][1] not in live):
                    _, wait_id = heapq.heappop(heap)
                    waiter = live.pop(wait_id, None)
                    if waiter is not None:
                        waiter.expire()
                    heap = self._heap  # expire() or a prune may have replaced it
                if not live:
                    break
                with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as self._sleep:
                    await trio.sleep_forever()
                self._sleep = None
                heap = self._heap
        finally:
            self._sleep = None
            self._running = False

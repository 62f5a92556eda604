"""Per-address bookkeeping shared by all sessions of a server (pure, bounded).

Counts live connections per client address, and recent failed logins per address
with a sliding window, so brute-force clients slow down however many connections
they open.  Memory is bounded: at most :data:`MAX_TRACKED_ADDRESSES` addresses are
remembered; the oldest are forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["MAX_TRACKED_ADDRESSES", "AddressTracker", "failure_delay"]

#: Addresses whose failures are remembered.  At ~100 octets each, 100,000 entries
#: cost about 10 MB, and a botnet larger than that gains little: each of its
#: addresses still meets the per-connection delay.
MAX_TRACKED_ADDRESSES = 100_000


def failure_delay(failures: int, base: float, cap: float) -> float:
    """Delay before answering the ``failures``-th failed login: base, 2x, 4x ... cap.

    >>> [failure_delay(n, 2.0, 15.0) for n in range(1, 6)]
    [2.0, 4.0, 8.0, 15.0, 15.0]
    """
    if failures <= 0 or base <= 0:
        return 0.0
    return min(base * 2.0 ** min(failures - 1, 30), cap)


class AddressTracker:
    """Live connections and recent login failures per client address.

    Args:
        window: Seconds a failed login is remembered (Dovecot's anvil: 15 min).
    """

    __slots__ = ("_connections", "_failures", "window")

    def __init__(self, *, window: float = 900.0) -> None:
        self.window = window
        self._connections: dict[str, int] = {}
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def connections(self, address: str) -> int:
        """Return the number of live connections from ``address``."""
        return self._connections.get(address, 0)

    def connect(self, address: str) -> None:
        """Count a new connection from ``address``."""
        self._connections[address] = self._connections.get(address, 0) + 1

    def disconnect(self, address: str) -> None:
        """Count a closed connection from ``address``."""
        left = self._connections.get(address, 0) - 1
        if left > 0:
            self._connections[address] = left
        else:
            self._connections.pop(address, None)

    def failures(self, address: str, now: float) -> int:
        """Return the failed logins from ``address`` within the window."""
        entry = self._failures.get(address)
        if entry is None:
            return 0
        count, last = entry
        if now - last > self.window:
            del self._failures[address]
            return 0
        return count

    def record_failure(self, address: str, now: float) -> int:
        """Record a failed login and return the address's count within the window."""
        count = self.failures(address, now) + 1
        self._failures[address] = (count, now)
        self._failures.move_to_end(address)
        while len(self._failures) > MAX_TRACKED_ADDRESSES:
            self._failures.popitem(last=False)
        return count

    def record_success(self, address: str) -> None:
        """Forget the failures of ``address`` after a successful login."""
        self._failures.pop(address, None)

"""Helpers of the robustness suite: a model of the wire, Maildir fixtures, fault hooks.

* :func:`wire_form` and :func:`top_form` compute, independently of ``trio_pop3._proto``,
  what RETR and TOP must send for a stored message (RFC 1939 §3, §7, §11): the model
  the state machine and the soak test compare replies with.
* :class:`MaildirFixture` writes a user's Maildir with file names of our choosing (so
  the UIDs and the order are known), reads it back, and tells whether the session lock
  is held, from outside the server (a fresh ``open()`` + ``flock``).
* :class:`OsProxy` stands in for the ``os`` module inside ``trio_pop3.mailbox._maildir``
  so a test can make ``unlink`` fail without touching anyone else's ``os.unlink``.
* :class:`TrioThread` runs one ``trio.run`` (with a :class:`trio.testing.MockClock`)
  on a worker thread, so a synchronous Hypothesis state machine can drive a live
  session step by step.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import trio
import trio.testing
from pop3_support import Client

__all__ = [
    "BodyClient",
    "LOCK_FILE",
    "MaildirFixture",
    "OsProxy",
    "TrioThread",
    "top_form",
    "unlink_faults",
    "wire_form",
]

T = TypeVar("T")

LOCK_FILE = ".trio-pop3.lock"


# -- the wire model ---------------------------------------------------------------------


def wire_form(message: bytes) -> bytes:
    """The message as RETR sends it, un-stuffed: CRLF line ends, final CRLF added.

    A lone CR is content; a non-empty message without a final line end gets CRLF.
    """
    data = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def _wire_lines(message: bytes) -> list[bytes]:
    data = wire_form(message)
    return [line + b"\r\n" for line in data.split(b"\r\n")[:-1]]


def top_form(message: bytes, body_lines: int) -> bytes:
    """What ``TOP n body_lines`` sends, un-stuffed (RFC 1939 §7, TOP-01/02).

    The header up to and including the first empty line, then ``body_lines`` lines;
    a message without an empty line is all header.
    """
    lines = _wire_lines(message)
    out: list[bytes] = []
    in_body = False
    left = body_lines
    for line in lines:
        if in_body:
            if left == 0:
                break
            left -= 1
            out.append(line)
            continue
        out.append(line)
        if line == b"\r\n":
            in_body = True
    return b"".join(out)


class BodyClient(Client):
    """A :class:`Client` that allows a lone CR inside a line (message content).

    Every line must still end in CRLF: the server never sends a bare LF (WIRE-09).
    """

    async def line(self) -> bytes:
        raw = await self.raw_line()
        assert raw.endswith(b"\r\n"), f"line does not end in CRLF: {raw!r}"
        return raw[:-2]


# -- Maildir fixtures -------------------------------------------------------------------


class MaildirFixture:
    """One user's Maildir under ``root``, with messages named so their order is known."""

    def __init__(self, root: str, user: str = "alice") -> None:
        self.root = root
        self.user = user
        self.path = os.path.join(root, user)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.path, sub), 0o700, exist_ok=True)
        self._serial = 0

    def add(self, data: bytes, *, subdir: str = "cur") -> str:
        """Store a message (via tmp/ and rename) and return its UID (the base name)."""
        self._serial += 1
        uid = f"{1_600_000_000 + self._serial}.M{self._serial}P1.robust"
        name = uid + (":2," if subdir == "cur" else "")
        tmp = os.path.join(self.path, "tmp", uid)
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, os.path.join(self.path, subdir, name))
        return uid

    def files(self) -> dict[str, str]:
        """UID -> path of every message file in cur/ and new/."""
        found: dict[str, str] = {}
        for sub in ("cur", "new"):
            directory = os.path.join(self.path, sub)
            for name in os.listdir(directory):
                if not name.startswith("."):
                    found[name.partition(":")[0]] = os.path.join(directory, name)
        return found

    def contents(self) -> list[tuple[str, bytes]]:
        """(UID, bytes) of every message, in delivery order."""
        out = []
        for uid, path in sorted(self.files().items(), key=lambda item: _order(item[0])):
            with open(path, "rb") as f:
                out.append((uid, f.read()))
        return out

    def remove(self, uid: str) -> None:
        """Remove a message behind the server's back (another program did it)."""
        os.unlink(self.files()[uid])

    def locked(self) -> bool:
        """Whether some session holds the POP3 lock (checked with a fresh open + flock)."""
        path = os.path.join(self.path, LOCK_FILE)
        if not os.path.exists(path):
            return False
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also drops our own probe lock
        return False


def _order(uid: str) -> tuple[int, str]:
    head = uid.partition(".")[0]
    return (int(head) if head.isdigit() else 0, uid)


# -- fault injection -----------------------------------------------------------------------


class OsProxy:
    """The ``os`` module, except for the attributes given as overrides."""

    def __init__(self, **overrides: Any) -> None:
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        if name in self._overrides:
            return self._overrides[name]
        return getattr(os, name)


@contextmanager
def unlink_faults(
    module: Any, *, succeed: int, error: int, fail_all: bool = True
) -> Iterator[list[str]]:
    """Make ``module.os.unlink`` succeed ``succeed`` times, then raise ``OSError(error)``.

    Yields the list of paths really unlinked.  With ``fail_all`` every later call
    fails; otherwise only the next one.
    """
    done: list[str] = []
    failed = 0
    lock = threading.Lock()

    def unlink(path: str, *args: Any, **kwargs: Any) -> None:
        nonlocal failed
        with lock:
            if len(done) >= succeed and (fail_all or failed == 0):
                failed += 1
                raise OSError(error, os.strerror(error), path)
            os.unlink(path, *args, **kwargs)
            done.append(path)

    original = module.os
    module.os = OsProxy(unlink=unlink)
    try:
        yield done
    finally:
        module.os = original


# -- a trio loop on a thread, driven step by step --------------------------------------------


class TrioThread:
    """One ``trio.run`` on a worker thread; :meth:`run` executes a step inside it.

    The clock is a :class:`MockClock` running at real speed (so a hang guard of a few
    seconds works) that a step can :meth:`~trio.testing.MockClock.jump` to fire
    timeouts (idle autologout) instantly.
    """

    def __init__(self) -> None:
        self.clock = trio.testing.MockClock(rate=1.0)
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._ready = threading.Event()
        self.crash: BaseException | None = None
        self._thread = threading.Thread(target=self._thread_main, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("trio thread did not start")

    def _thread_main(self) -> None:
        try:
            trio.run(self._main, clock=self.clock)
        except BaseException as exc:  # reported by close()
            self.crash = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None
        return self._nursery

    def run(self, step: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
        """Run ``step()`` in the trio thread and return its result (hang guard: timeout)."""

        async def guarded() -> T:
            with trio.fail_after(timeout):
                return await step()

        return trio.from_thread.run(guarded, trio_token=self._token)

    def run_sync(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` synchronously in the trio thread (no hang guard)."""
        return trio.from_thread.run_sync(fn, trio_token=self._token)

    def close(self) -> None:
        """Stop the loop (cancelling whatever still runs) and re-raise a crash."""
        if self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)
        if self._thread.is_alive():
            raise RuntimeError("trio thread did not stop")
        if self.crash is not None:
            raise self.crash

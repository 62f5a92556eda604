"""Rows of an SQLite table served as POP3 mail: a monitoring system's open alerts.

Each row of ``alerts`` that is addressed to the user and not yet acknowledged becomes
a message, generated when the client asks for it.  DELE marks an alert; at QUIT the
marked alerts get ``acknowledged_at`` set, in one SQL transaction.  A session that
ends any other way (dropped connection, timeout) changes nothing.

All of RFC 1939 comes from :class:`~trio_pop3.mailbox.MailboxHandler`; this file
only implements the storage interface (:class:`AlertStore`, :class:`AlertMailbox`).

Run it:  python examples/sqlite_server.py --port 1110 [--db alerts.sqlite3]
Try it:  curl pop3://alice:wonderland@127.0.0.1:1110/1
"""

from __future__ import annotations

import argparse
import functools
import os
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import trio

from trio_pop3 import MailboxInUse, POP3Server, wire_size
from trio_pop3.mailbox import Mailbox, MailboxHandler, MailStore, MemoryAuthenticator, MessageInfo

USERS = {"alice": "wonderland", "bob": "builder"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    recipient TEXT NOT NULL,
    raised_at TEXT NOT NULL,
    host TEXT NOT NULL,
    severity TEXT NOT NULL,
    summary TEXT NOT NULL,
    details TEXT NOT NULL,
    acknowledged_at TEXT
)
"""

DEMO_ALERTS = [
    ("alice", "2024-05-01T08:00:00Z", "db1", "warning", "Disk 85% full", "/var is at 85%."),
    ("alice", "2024-05-01T09:30:00Z", "web2", "critical", "HTTP 500 rate", "5xx > 5%.\n.env ok"),
    ("alice", "2024-05-02T11:15:00Z", "mq1", "info", "Queue drained", "Backlog is 0."),
    ("bob", "2024-05-02T12:00:00Z", "db1", "warning", "Replica lag", "Lag is 40 s."),
]

T = TypeVar("T")


def create_demo_db(path: str) -> None:
    """Create the table and a few alerts (blocking)."""
    with sqlite3.connect(path) as db:
        db.execute(SCHEMA)
        db.executemany(
            "INSERT INTO alerts (recipient, raised_at, host, severity, summary, details)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            DEMO_ALERTS,
        )
    db.close()


def render(row: sqlite3.Row) -> bytes:
    """Turn one alert row into a message.  Deterministic, so sizes stay exact."""
    lines = [
        "From: monitoring <alerts@example.org>",
        f"To: {row['recipient']}@example.org",
        f"Subject: [{row['severity'].upper()}] {row['host']}: {row['summary']}",
        f"Date: {row['raised_at']}",
        f"Message-ID: <alert-{row['id']}@example.org>",
        "",
        *str(row["details"]).splitlines(),
    ]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


class AlertStore(MailStore):
    """Opens a user's alerts; one session per user at a time (RFC 1939 section 4)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._locked: set[str] = set()  # the per-user lock of this server process

    async def run(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``function(connection)`` in a worker thread, in one transaction."""

        def work() -> T:
            db = sqlite3.connect(self.path)
            db.row_factory = sqlite3.Row
            try:
                with db:  # commits, or rolls back on an exception
                    return function(db)
            finally:
                db.close()

        return await trio.to_thread.run_sync(work)

    async def open(self, user: str) -> Mailbox:
        if user in self._locked:
            raise MailboxInUse()
        self._locked.add(user)
        try:
            rows = await self.run(
                lambda db: db.execute(
                    "SELECT * FROM alerts WHERE recipient = ? AND acknowledged_at IS NULL"
                    " ORDER BY id",
                    (user,),
                ).fetchall()
            )
        except BaseException:
            self._locked.discard(user)
            raise
        messages = [MessageInfo(f"alert-{row['id']}", wire_size(render(row)), row) for row in rows]
        return AlertMailbox(self, user, messages)


class AlertMailbox(Mailbox):
    """The snapshot of one user's open alerts."""

    def __init__(self, store: AlertStore, user: str, messages: list[MessageInfo]) -> None:
        self.store = store
        self.user = user
        self.messages = messages

    async def list_messages(self) -> Sequence[MessageInfo]:
        return self.messages

    async def read_message(self, message: MessageInfo) -> AsyncIterator[bytes]:
        row: Any = message.key
        yield render(row)

    async def remove(self, messages: Sequence[MessageInfo]) -> None:
        # Called only in UPDATE, after QUIT: acknowledge all marked alerts at once.
        ids = [(m.key["id"],) for m in messages]  # type: ignore[index]
        await self.store.run(
            lambda db: db.executemany(
                "UPDATE alerts SET acknowledged_at = datetime('now') WHERE id = ?", ids
            )
        )

    async def close(self) -> None:
        self.store._locked.discard(self.user)


def make_server(db_path: str, *, host: str = "127.0.0.1", port: int = 1110) -> POP3Server:
    """The server: MailboxHandler over the alert store and a dict of users."""
    factory = functools.partial(MailboxHandler, AlertStore(db_path), MemoryAuthenticator(USERS))
    return POP3Server(factory, host=host, port=port)


async def serve(server: POP3Server) -> None:
    """Serve until cancelled; print the address once listening."""
    async with trio.open_nursery() as nursery:
        listeners: list[trio.SocketListener] = await nursery.start(server.serve)
        host, port = listeners[0].socket.getsockname()[:2]
        print(f"listening on {host}:{port}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=1110)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--db", help="SQLite database (default: a new demo database)")
    args = parser.parse_args(argv)
    db_path = args.db
    if db_path is None:
        db_path = os.path.join(tempfile.mkdtemp(prefix="trio-pop3-alerts-"), "alerts.sqlite3")
        create_demo_db(db_path)
        print(f"demo database {db_path}; users: {USERS}", flush=True)
    try:
        trio.run(serve, make_server(db_path, host=args.host, port=args.port))
    except* KeyboardInterrupt:  # Ctrl-C; trio raises it inside a nursery, so in a group
        pass


if __name__ == "__main__":
    main()

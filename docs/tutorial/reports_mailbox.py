"""Part 2 of the tutorial: the same reports, served by the mailbox layer.

A MailStore opens a user's maildrop and a Mailbox lists, reads and removes its
messages; MailboxHandler does all of RFC 1939 on top (DELE, RSET, TOP, UIDL, locking,
removal only after QUIT).
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import AsyncIterator, Sequence

import trio

import trio_pop3
from trio_pop3.mailbox import (
    Mailbox,
    MailboxHandler,
    MailStore,
    MemoryAuthenticator,
    MessageInfo,
)

USERS = {"alice": "wonderland", "bob": "builder"}


def daily_report(user: str, day: datetime.date) -> bytes:
    """Return the report of ``day`` for ``user``, as a stored message (LF line ends)."""
    return (
        f"From: reports@example.org\n"
        f"To: {user}@example.org\n"
        f"Subject: Report for {day.isoformat()}\n"
        f"\n"
        f"Dear {user}, everything was fine on {day:%A}.\n"
    ).encode()


class ReportStore(MailStore):
    """Every user's maildrop: the reports of the past week, less those deleted."""

    def __init__(self, days: int = 7) -> None:
        self.days = days
        self.deleted: dict[str, set[str]] = {}  # user -> unique ids removed at QUIT
        self.locked: set[str] = set()

    async def open(self, user: str) -> ReportMailbox:
        if user in self.locked:
            raise trio_pop3.MailboxInUse()
        self.locked.add(user)
        return ReportMailbox(self, user)


class ReportMailbox(Mailbox):
    """One session's view of a user's reports."""

    def __init__(self, store: ReportStore, user: str) -> None:
        self.store = store
        self.user = user

    async def list_messages(self) -> Sequence[MessageInfo]:
        today = datetime.date.today()
        gone = self.store.deleted.get(self.user, set())
        messages = []
        for n in range(self.store.days):
            day = today - datetime.timedelta(days=n)
            if day.isoformat() not in gone:
                size = trio_pop3.wire_size(daily_report(self.user, day))
                messages.append(MessageInfo(uid=day.isoformat(), size=size, key=day))
        return messages

    async def read_message(self, message: MessageInfo) -> AsyncIterator[bytes]:
        assert isinstance(message.key, datetime.date)
        yield daily_report(self.user, message.key)

    async def remove(self, messages: Sequence[MessageInfo]) -> None:
        self.store.deleted.setdefault(self.user, set()).update(m.uid for m in messages)

    async def close(self) -> None:
        self.store.locked.discard(self.user)


def make_server(store: ReportStore, **options: object) -> trio_pop3.POP3Server:
    """Return a server of ``store``'s reports to the users in USERS."""
    users = MemoryAuthenticator(USERS)
    factory = functools.partial(MailboxHandler, store, users)
    return trio_pop3.POP3Server(factory, **options)  # type: ignore[arg-type]


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    server = make_server(ReportStore(), host="127.0.0.1", port=1110)
    trio.run(server.serve)

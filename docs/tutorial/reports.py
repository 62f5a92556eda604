"""Part 1 of the tutorial: a POP3 server that generates its messages.

Every user has one report per day of the past week, written when it is asked for.
Run it with ``python reports.py`` and read the mail with poplib or curl.
"""

from __future__ import annotations

import datetime
import hmac

import trio

import trio_pop3

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


class ReportHandler(trio_pop3.POP3Handler):
    """USER and PASS against a dict, then STAT, LIST, UIDL and RETR of the reports."""

    def __init__(self) -> None:
        super().__init__()
        self.user: str | None = None
        self.messages: list[bytes] = []

    async def pop3_USER(self, arg: str | None) -> None:
        if not arg:
            raise trio_pop3.POP3Error("Missing user name.")
        self.user = arg
        await self.send_ok("Send your password.")

    async def pop3_PASS(self, arg: str | None) -> None:
        user, self.user = self.user, None
        if user is None or self.previous_command != "USER":
            raise trio_pop3.POP3Error("Send USER first.")
        expected = USERS.get(user, "")
        if not (user in USERS and hmac.compare_digest(expected, arg or "")):
            await self.delay_failed_login()
            raise trio_pop3.AuthenticationFailed()
        self.user = user
        today = datetime.date.today()
        self.messages = [daily_report(user, today - datetime.timedelta(days=n)) for n in range(7)]
        self.state = trio_pop3.State.TRANSACTION
        await self.send_ok(f"Welcome, {user}.")

    def message(self, arg: str | None) -> tuple[int, bytes]:
        """Return the number and bytes of the message ``arg`` names, or raise -ERR."""
        number = self.message_number(arg, len(self.messages))
        return number, self.messages[number - 1]

    async def pop3_STAT(self, arg: str | None) -> None:
        size = sum(trio_pop3.wire_size(m) for m in self.messages)
        await self.send_ok(f"{len(self.messages)} {size}")

    async def pop3_LIST(self, arg: str | None) -> None:
        if arg:
            number, message = self.message(arg)
            await self.send_ok(f"{number} {trio_pop3.wire_size(message)}")
            return
        await self.send_data(
            "Scan listing follows.",
            [f"{n} {trio_pop3.wire_size(m)}" for n, m in enumerate(self.messages, 1)],
        )

    async def pop3_UIDL(self, arg: str | None) -> None:
        # The day is a stable unique id: the same message has the same id tomorrow.
        today = datetime.date.today()
        uids = [(today - datetime.timedelta(days=n)).isoformat() for n in range(7)]
        if arg:
            number, _ = self.message(arg)
            await self.send_ok(f"{number} {uids[number - 1]}")
            return
        await self.send_data("", [f"{n} {uid}" for n, uid in enumerate(uids, 1)])

    async def pop3_RETR(self, arg: str | None) -> None:
        _, message = self.message(arg)
        await self.send_message(f"{trio_pop3.wire_size(message)} octets", [message])

    async def pop3_NOOP(self, arg: str | None) -> None:
        await self.send_ok()


if __name__ == "__main__":
    server = trio_pop3.POP3Server(ReportHandler, host="127.0.0.1", port=1110)
    trio.run(server.serve)

"""The Perl Net::Server::POP3::Skeleton synopsis, in Python on trio_pop3.

Users and passwords come from a dict; the maildrop is generated on the fly: one
message per day of the past week, written when the client asks for it.

Run it:  python examples/skeleton.py --port 1110
Try it:  curl pop3://alice:wonderland@127.0.0.1:1110/1
"""

from __future__ import annotations

import argparse
import datetime
import hmac

import trio

import trio_pop3

USERS = {"alice": "wonderland", "bob": "builder"}


def daily_report(day: datetime.date) -> list[str]:
    """Generate the message for ``day`` as lines (no line ends)."""
    return [
        "From: reports@example.org",
        f"Subject: Report for {day.isoformat()}",
        "",
        f"Everything was fine on {day:%A}.",
        ".",  # a line that is only a dot: byte-stuffed on the wire
    ]


class SkeletonHandler(trio_pop3.POP3Handler):
    """USER/PASS against a dict, then STAT, LIST and RETR of generated messages."""

    async def pop3_USER(self, arg: str | None) -> None:
        if arg is None:
            raise trio_pop3.POP3Error("missing argument")
        self.set("username", arg)
        await self.send_ok("username accepted, send password")

    async def pop3_PASS(self, arg: str | None) -> None:
        name = self.get("username")
        if name is None:  # PASS not allowed before USER
            await self.unknown("PASS", arg)
            return
        expected = USERS.get(name, "")
        if not (name in USERS and hmac.compare_digest(expected, arg or "")):
            raise trio_pop3.AuthenticationFailed("invalid username or password")
        today = datetime.date.today()
        self.set("messages", [daily_report(today - datetime.timedelta(days=n)) for n in range(7)])
        self.state = "TRANS"
        await self.send_ok("welcome")

    def _size(self, lines: list[str]) -> int:
        return sum(len(line.encode()) + 2 for line in lines)

    async def pop3_STAT(self, arg: str | None) -> None:
        messages = self.get("messages")
        await self.send_ok(f"{len(messages)} {sum(self._size(m) for m in messages)}")

    async def pop3_LIST(self, arg: str | None) -> None:
        messages = self.get("messages")
        await self.send_data(
            "scan listing follows", [f"{n} {self._size(m)}" for n, m in enumerate(messages, 1)]
        )

    async def pop3_RETR(self, arg: str | None) -> None:
        messages = self.get("messages")
        message = messages[self.message_number(arg, len(messages)) - 1]
        await self.send_data(f"{self._size(message)} octets", message)

    async def pop3_NOOP(self, arg: str | None) -> None:
        await self.send_ok()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=1110)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    server = trio_pop3.POP3Server(
        SkeletonHandler, port=args.port, host=args.host, greeting="POP3 My server ready"
    )
    print(f"serving on {args.host}:{args.port}; Ctrl-C stops", flush=True)
    try:
        trio.run(server.serve)
    except* KeyboardInterrupt:  # trio raises it inside the server's nursery
        pass


if __name__ == "__main__":
    main()

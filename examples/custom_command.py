"""Extending the mailbox server: a custom command and a custom SASL mechanism.

* ``XSTATUS`` (TRANSACTION only) reports the session: user, messages, marked ones.
  Private commands and capabilities start with ``X`` (RFC 2449 section 9).
* ``AUTH X-TOKEN <base64("user token")>`` logs in with a bearer token instead of a
  password.  Both show up in CAPA.

Run it:  python examples/custom_command.py --port 1110
Try it:  printf 'AUTH X-TOKEN %s\\r\\nXSTATUS\\r\\nQUIT\\r\\n' \\
             "$(printf 'alice tok-alice-1' | base64)" | nc 127.0.0.1 1110
"""

from __future__ import annotations

import argparse
import functools
import hmac
from collections.abc import Mapping

import trio

from trio_pop3 import (
    DEFAULT_MECHANISMS,
    AuthenticationFailed,
    POP3Error,
    POP3Server,
    SASLExchange,
    SASLMechanism,
)
from trio_pop3.mailbox import MailboxHandler, MemoryAuthenticator, MemoryStore

USERS = {"alice": "wonderland"}
TOKENS = {"alice": "tok-alice-1"}


class TokenMechanism(SASLMechanism):
    """``X-TOKEN``: the client sends ``user SP token`` as its (initial) response."""

    name = "X-TOKEN"
    plaintext = True  # a bearer token is as reusable as a password: TLS only, if offered

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self.tokens = dict(tokens)

    async def authenticate(self, exchange: SASLExchange) -> str:
        message = await self.first_response(exchange)  # asks with "+ " if no IR
        user, _, token = message.decode("utf-8", "replace").partition(" ")
        expected = self.tokens.get(user, "\x00")
        if not hmac.compare_digest(expected.encode(), token.encode()) or user not in self.tokens:
            raise AuthenticationFailed()
        return user


class StatusHandler(MailboxHandler):
    """MailboxHandler plus XSTATUS."""

    extra_commands = {"XSTATUS": ["TRANS"]}

    async def pop3_XSTATUS(self, arg: str | None) -> None:
        if arg:
            raise POP3Error("XSTATUS takes no arguments.")
        assert self.maildrop is not None
        count, size = self.maildrop.stat()
        marked = len(self.maildrop.deleted())
        await self.send_ok(f"user={self.user} messages={count} octets={size} marked={marked}")

    def capabilities(self) -> list[str]:
        caps = super().capabilities()
        if self.allowed("XSTATUS"):
            caps.append("XSTATUS")
        return caps


def make_handler_factory() -> functools.partial[StatusHandler]:
    store = MemoryStore({"alice": [b"Subject: hi\n\nHello\n", b"Subject: two\n\nMore\n"]})
    return functools.partial(
        StatusHandler,
        store,
        MemoryAuthenticator(USERS),
        mechanisms=[*DEFAULT_MECHANISMS, TokenMechanism(TOKENS)],
    )


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
    args = parser.parse_args(argv)
    server = POP3Server(make_handler_factory(), host=args.host, port=args.port)
    try:
        trio.run(serve, server)
    except* KeyboardInterrupt:  # Ctrl-C; trio raises it inside a nursery, so in a group
        pass


if __name__ == "__main__":
    main()

"""A Maildir POP3 server assembled from the library: ``trio-pop3 serve`` as code.

Maildirs live under ``<root>/<user>/``; users and passwords come from a Dovecot
passwd-file (``user:{SCHEME}hash`` lines, see ``trio-pop3 hash-password``).

Run it:  python examples/maildir_server.py --port 1110 --root /var/mail/pop3 \\
             --users /etc/trio-pop3/passwd
Without --root and --users it serves a demo Maildir (user ``demo``, password ``demo``).
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile

import trio

from trio_pop3 import POP3Server
from trio_pop3.mailbox import MailboxHandler, MaildirStore, PasswdFileAuthenticator, deliver


def make_server(
    root: str | os.PathLike[str],
    users: str | os.PathLike[str],
    *,
    host: str | None = None,
    port: int = 110,
) -> POP3Server:
    """MaildirStore + PasswdFileAuthenticator + MailboxHandler + POP3Server."""
    handler = functools.partial(MailboxHandler, MaildirStore(root), PasswdFileAuthenticator(users))
    return POP3Server(handler, host=host, port=port)


def make_demo() -> tuple[str, str]:
    """Create a Maildir root with one user, ``demo``/``demo``, and two messages."""
    base = tempfile.mkdtemp(prefix="trio-pop3-maildir-")
    root = os.path.join(base, "mail")
    deliver(os.path.join(root, "demo"), b"Subject: Welcome\n\nHello from trio_pop3.\n")
    deliver(os.path.join(root, "demo"), b"Subject: Dots\n\n.a line with a dot\n")
    users = os.path.join(base, "passwd")
    with open(users, "w") as f:
        f.write("demo:{PLAIN}demo\n")
    return root, users


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
    parser.add_argument("--root", help="directory of per-user Maildirs")
    parser.add_argument("--users", help="Dovecot passwd-file")
    args = parser.parse_args(argv)
    if (args.root is None) != (args.users is None):
        parser.error("give both --root and --users, or neither for the demo")
    root, users = (args.root, args.users) if args.root else make_demo()
    try:
        trio.run(serve, make_server(root, users, host=args.host, port=args.port))
    except* KeyboardInterrupt:  # Ctrl-C; trio raises it inside a nursery, so in a group
        pass


if __name__ == "__main__":
    main()

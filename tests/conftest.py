"""Fixtures shared by the whole suite; the helpers behind them live in pop3_support
(and, for real server processes, in interop/conftest.py)."""

from interop.conftest import server_factory as server_factory
from pop3_support import (
    authenticator as authenticator,
    connect as connect,
    mailbox_factory as mailbox_factory,
    mailbox_port as mailbox_port,
    pop3_session as pop3_session,
    start_server as start_server,
    store as store,
)

__all__ = [
    "authenticator",
    "connect",
    "mailbox_factory",
    "mailbox_port",
    "pop3_session",
    "server_factory",
    "start_server",
    "store",
]

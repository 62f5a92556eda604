"""Named limits and timeouts, each with the reason for its default."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

__all__ = [
    "DEFAULT_CLEANUP_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_SEND_TIMEOUT",
    "DEFAULT_SHUTDOWN_GRACE",
    "DEFAULT_TLS_HANDSHAKE_TIMEOUT",
    "Limits",
]

#: RFC 1939 section 3: an autologout timer, if any, is at least 10 minutes.
DEFAULT_IDLE_TIMEOUT = 600.0

#: A TLS handshake is a few round trips; 30 s covers a slow mobile link while a
#: client that connects and stays silent cannot hold a task for long.
DEFAULT_TLS_HANDSHAKE_TIMEOUT = 30.0

#: A client that stops reading in the middle of a RETR would otherwise hold a task,
#: a maildrop lock and a buffer forever.  60 s in which a write makes no progress at
#: all means the client is gone or hostile; a slow client that keeps reading is
#: served however long the reply takes.
DEFAULT_SEND_TIMEOUT = 60.0

#: Grace period of a graceful shutdown: sessions in the middle of a command (a RETR
#: of a large message) get this long to finish before they are cancelled.
DEFAULT_SHUTDOWN_GRACE = 10.0

#: Deadline for the shielded commit() and disconnect() hooks: long enough to unlink
#: thousands of files and fsync, short enough that a shutdown is never stuck.
DEFAULT_CLEANUP_TIMEOUT = 10.0

#: How long a load balancer has to send its PROXY protocol header: it sends it at
#: once, on connecting.  Dovecot's ``haproxy_timeout`` default (3 s).
PROXY_HEADER_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Size and count limits of a session.

    Attributes:
        max_command_line: Longest command line accepted, in octets including CRLF.
            RFC 2449 section 4 requires accepting 255; longer lines get ``-ERR``,
            except the credential commands USER, PASS, APOP and AUTH, which may be
            up to ``max_auth_line`` (a 255-octet password, RFC 4616 section 2).
            A line ending in a bare LF (tolerated, not standard) is measured as if
            it ended in CRLF, so the same commands pass whichever end they have.
        max_auth_line: Longest USER, PASS, APOP or AUTH command or SASL response
            line.  RFC 5034 section 4 lets SASL responses exceed the command limit;
            PLAIN with three 255-octet fields is about 1 KiB of base64; Dovecot
            buffers 8 KiB.
        max_discard: A single line longer than this is not a command but an attack or
            a broken client: it is answered ``-ERR Line too long; closing the
            connection.`` and the connection is closed, as Dovecot does.
        max_bad_commands: Unknown, malformed or wrong-state commands in a row tolerated
            before the connection is dropped: the next one is answered, then the
            connection closes.  A command that completes starts the count again
            (Dovecot: 20 after login); None disables.
        max_auth_failures: Failed logins per connection before it is dropped (RFC 1939
            section 4 lets the server close after a failure; STATE-04); None disables.
        auth_failure_delay: Seconds before answering a failed login, doubled for each
            further failure of the connection or of its address in the last 15
            minutes (Dovecot: 2 s, and an anvil penalty up to 15 s).  0 disables.
        auth_failure_delay_max: The cap of that delay.
        max_connections: Concurrent connections in total; more are answered
            ``-ERR [SYS/TEMP]`` and closed.  1000 sessions cost about 10 MB here.
        max_connections_per_address: Concurrent connections from one client address
            (Dovecot: 10 per user and address).  A NAT gateway may carry many users,
            hence 50.  None disables.
        trusted_networks: Client networks (``"10.0.0.0/8"``, ``"::1"``; strings or
            :mod:`ipaddress` networks) exempt from the failed-login delay and from
            ``max_connections_per_address``, like Dovecot's
            ``login_trusted_networks``: a webmail front end or a proxy that logs in
            for many users from one address.  A trusted client's failures do not
            count against its address either; ``max_auth_failures`` still applies.
            :class:`~trio_pop3.mailbox.MailboxHandler` also counts such a client as
            secure (plaintext logins, ``require_tls``), as Dovecot does.  Empty by
            default.

    Raises:
        ValueError: ``max_command_line`` is below 255, ``max_auth_line`` below
            ``max_command_line``, ``max_discard`` below ``max_auth_line``, a
            failure delay is negative, or a trusted network is not a network.
    """

    max_command_line: int = 255
    max_auth_line: int = 8192
    max_discard: int = 64 * 1024
    max_bad_commands: int | None = 20
    max_auth_failures: int | None = 5
    auth_failure_delay: float = 2.0
    auth_failure_delay_max: float = 15.0
    max_connections: int | None = 1000
    max_connections_per_address: int | None = 50
    trusted_networks: Iterable[str | ipaddress.IPv4Network | ipaddress.IPv6Network] = field(
        default=()
    )

    def __post_init__(self) -> None:
        if self.max_command_line < 255:
            raise ValueError("max_command_line must be at least 255 (RFC 2449 section 4)")
        if self.max_auth_line < self.max_command_line:
            raise ValueError("max_auth_line must be at least max_command_line")
        if self.max_discard < self.max_auth_line:
            raise ValueError("max_discard must be at least max_auth_line")
        if self.auth_failure_delay < 0 or self.auth_failure_delay_max < 0:
            raise ValueError("auth failure delays must be >= 0")
        object.__setattr__(self, "trusted_networks", parse_networks(self.trusted_networks))

    def is_trusted(self, address: str) -> bool:
        """Return whether client ``address`` is in one of :attr:`trusted_networks`.

        >>> Limits(trusted_networks=["10.0.0.0/8"]).is_trusted("10.1.2.3")
        True
        >>> Limits().is_trusted("127.0.0.1")
        False
        """
        # __post_init__ made it a tuple of networks.
        return in_networks(address, cast("tuple[Network, ...]", self.trusted_networks))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(networks: Iterable[str | Network]) -> tuple[Network, ...]:
    """Return ``networks`` as :mod:`ipaddress` networks (an address is a /32 or /128).

    Raises:
        ValueError: one of them is not an IP address or network.
    """
    return tuple(ipaddress.ip_network(net, strict=False) for net in networks)


def in_networks(address: str, networks: tuple[Network, ...]) -> bool:
    """Return whether ``address`` lies in one of ``networks`` (never, if not an IP)."""
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # not an IP address (a memory stream, a Unix socket)
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.1.2.3 on a dual-stack socket
    return any(ip in net for net in networks)

"""POP3Server(proxy_protocol=...): HAProxy's PROXY header, over real loopback sockets.

A load balancer in front of the server (HAProxy, nginx's stream module, a cloud
balancer) sends the header first; the address it carries replaces the balancer's
own for :attr:`POP3Handler.peer`, the per-address limit, login throttling and logs.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import ssl
import struct

import pytest
import trio
import trustme
from pop3_support import MAILBOX_USERS, Client, Recorder, SkeletonHandler, StartServer

import trio_pop3._server
from trio_pop3 import Limits, POP3Server, wire_size
from trio_pop3._proto._proxy import PROXY_V2_SIGNATURE
from trio_pop3.mailbox import MailboxHandler, MemoryAuthenticator, MemoryStore

V1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 110\r\n"
LOOPBACK = ["127.0.0.0/8"]


def v2_tcp6(src: str, sport: int, dst: str, dport: int) -> bytes:
    body = ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
    body += struct.pack("!HH", sport, dport)
    return PROXY_V2_SIGNATURE + b"\x21\x21" + struct.pack("!H", len(body)) + body


V2_LOCAL = PROXY_V2_SIGNATURE + b"\x20\x00\x00\x00"


async def proxied(port: int, header: bytes, *pieces: bytes) -> Client:
    """Connect, send ``header`` (then ``pieces``, each its own write), read the greeting."""
    client = Client(await trio.open_tcp_stream("127.0.0.1", port))
    await client.send(header)
    for piece in pieces:
        await client.send(piece)
    greeting = await client.reply()
    assert greeting.startswith("+OK"), greeting
    return client


def peer_of(recorder: Recorder) -> tuple[str, int] | None:
    return recorder.last.peer


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (V1, ("192.0.2.7", 40000)),
        (v2_tcp6("2001:db8::7", 40001, "::1", 110), ("2001:db8::7", 40001)),
    ],
)
async def test_the_header_gives_the_client_address(
    start_server: StartServer, header: bytes, expected: tuple[str, int]
) -> None:
    recorder = Recorder()
    running = await start_server(recorder, proxy_protocol=LOOPBACK)
    client = await proxied(running.port, header)
    assert peer_of(recorder) == expected
    assert await client.command("NOOP") == "-ERR NOOP not allowed in AUTHORIZATION state."
    await client.aclose()


async def test_a_health_check_keeps_the_balancer_address(start_server: StartServer) -> None:
    # Version 2's LOCAL command (and v1's UNKNOWN): the proxy's own connection.
    recorder = Recorder()
    running = await start_server(recorder, proxy_protocol=LOOPBACK)
    for header in (V2_LOCAL, b"PROXY UNKNOWN\r\n"):
        client = await proxied(running.port, header)
        peer = peer_of(recorder)
        assert peer is not None
        assert peer[0] == "127.0.0.1"
        await client.aclose()


async def test_header_in_pieces_and_a_command_right_after_it(start_server: StartServer) -> None:
    # Only the header is taken off the socket: a command that arrives in the same
    # write is still read as a command.
    recorder = Recorder()
    running = await start_server(recorder, proxy_protocol=LOOPBACK)
    pieces = [V1[i : i + 1] for i in range(len(V1) - 1)]
    client = await proxied(running.port, b"", *pieces, V1[-1:] + b"QUIT\r\n")
    assert peer_of(recorder) == ("192.0.2.7", 40000)
    assert (await client.reply()).startswith("+OK")
    assert await client.read_to_eof() == b""
    await client.aclose()


async def start_tls_server(
    nursery: trio.Nursery, server_context: ssl.SSLContext, messages: list[bytes]
) -> list[int]:
    """Serve alice's ``messages`` with TLS behind the PROXY protocol; return the ports."""
    store = MemoryStore({"alice": messages})
    factory = functools.partial(MailboxHandler, store, MemoryAuthenticator(MAILBOX_USERS))
    server = POP3Server(
        factory,
        host="127.0.0.1",
        port=0,
        pop3s_port=0,
        ssl_context=server_context,
        proxy_protocol=LOOPBACK,
        limits=Limits(auth_failure_delay=0),
    )
    listeners: list[trio.SocketListener] = await nursery.start(server.serve)
    return [listener.socket.getsockname()[1] for listener in listeners]


async def test_implicit_tls_after_the_header(nursery: trio.Nursery) -> None:
    # The header comes before the TLS handshake (a TCP balancer passes TLS through).
    server_context, client_context = tls_contexts()
    message = b"Subject: hi\n\nhello\n"
    _, pop3s_port = await start_tls_server(nursery, server_context, [message])
    tcp = await trio.open_tcp_stream("127.0.0.1", pop3s_port)
    await tcp.send_all(V1)
    tls = trio.SSLStream(tcp, client_context, server_hostname="127.0.0.1")
    client = Client(tls)
    assert (await client.reply()).startswith("+OK")
    await client.login("alice", MAILBOX_USERS["alice"])
    assert await client.command("STAT") == f"+OK 1 {wire_size(message)}"
    assert (await client.command("QUIT")).startswith("+OK")
    await client.aclose()


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a trustme certificate for 127.0.0.1, and a client's."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


@pytest.mark.rfc("2595", "2.3")
@pytest.mark.parametrize("client_ssl", [True, False])
async def test_tls_ended_at_the_proxy_counts_as_tls(
    nursery: trio.Nursery, client_ssl: bool
) -> None:
    # A v2 header's PP2_TYPE_SSL TLV with PP2_CLIENT_SSL: the client spoke TLS to the
    # balancer, so no STLS is offered and plaintext logins are allowed (TLS-05).
    server_context, _ = tls_contexts()
    port, _ = await start_tls_server(nursery, server_context, [])
    ssl_tlv = b"\x20\x00\x05" + (b"\x01" if client_ssl else b"\x00") + bytes(4)
    body = bytes([192, 0, 2, 7, 127, 0, 0, 1]) + struct.pack("!HH", 40000, 995) + ssl_tlv
    header = PROXY_V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(body)) + body
    client = await proxied(port, header)
    capa = await client.multi("CAPA")
    assert (b"STLS" in capa[1]) is not client_ssl
    assert (b"USER" in capa[1]) is client_ssl
    if client_ssl:
        assert await client.command("STLS") == "-ERR TLS is already active."
    reply = await client.command("USER alice")
    if client_ssl:
        assert reply == "+OK Send your password."
        assert (await client.command("PASS " + MAILBOX_USERS["alice"])).startswith("+OK")
    else:
        assert reply.startswith("-ERR [AUTH] Plaintext authentication disallowed")
    await client.aclose()


async def connection_refused(port: int, data: bytes, *, eof: bool = False) -> bytes:
    """Send ``data`` (and EOF if ``eof``); return all the server sends before it closes.

    The server closes with ``data`` unread, so the kernel may reset the connection:
    that also counts as closing without a reply.
    """
    client = Client(await trio.open_tcp_stream("127.0.0.1", port))
    try:
        await client.send(data)
        if eof:
            stream = client.stream
            assert isinstance(stream, trio.SocketStream)
            await stream.send_eof()
        with trio.fail_after(10):
            try:
                return await client.read_to_eof()
            except trio.BrokenResourceError:
                # Closed with our bytes unread: the kernel resets the connection.
                return b""
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("data", "logged"),
    [
        (b"USER alice\r\n", "refused: not a PROXY protocol header"),  # bypassed the balancer
        (b"PROXY TCP4 192.0.2.7 127.0.0.1 040000 110\r\n", "refused: malformed PROXY v1 line"),
        (b"PROXY TCP4 192.0.2.7\n", "refused: PROXY v1 line with a stray control character"),
        (PROXY_V2_SIGNATURE + b"\x31\x11\x00\x00", "refused: unsupported PROXY protocol"),
        (b"", "closed before its PROXY header ended"),  # nothing, then EOF
        (V1[:20], "closed before its PROXY header ended"),
    ],
)
async def test_a_bad_or_missing_header_closes_without_a_reply(
    start_server: StartServer, data: bytes, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_pop3")
    recorder = Recorder()
    running = await start_server(recorder, proxy_protocol=LOOPBACK)
    eof = logged.startswith("closed")
    assert await connection_refused(running.port, data, eof=eof) == b""
    assert recorder.handlers == []  # no session started
    assert logged in caplog.text


async def test_a_header_that_never_ends_times_out(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(trio_pop3._server, "PROXY_HEADER_TIMEOUT", 0.2)
    recorder = Recorder()
    running = await start_server(recorder, proxy_protocol=LOOPBACK)
    with trio.fail_after(10):
        assert await connection_refused(running.port, V1[:20]) == b""
    assert "no PROXY header within 0.2 s" in caplog.text
    assert recorder.handlers == []


async def test_a_peer_outside_the_networks_is_refused(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    running = await start_server(recorder, proxy_protocol=["192.0.2.0/24"])
    assert await connection_refused(running.port, V1) == b""
    assert "refused: not from a PROXY protocol network" in caplog.text
    assert recorder.handlers == []


async def test_the_per_address_limit_counts_the_proxied_address(
    start_server: StartServer,
) -> None:
    running = await start_server(
        SkeletonHandler,
        proxy_protocol=LOOPBACK,
        limits=Limits(max_connections_per_address=1, auth_failure_delay=0),
    )
    first = await proxied(running.port, V1)
    other = await proxied(running.port, V1.replace(b"192.0.2.7", b"192.0.2.8"))
    again = Client(await trio.open_tcp_stream("127.0.0.1", running.port))
    await again.send(V1)
    assert await again.reply() == "-ERR [SYS/TEMP] Too many connections from your address."
    for client in (first, other, again):
        await client.aclose()


def test_proxy_protocol_networks_are_checked() -> None:
    with pytest.raises(ValueError):
        POP3Server(SkeletonHandler, proxy_protocol=["not a network"])
    server = POP3Server(SkeletonHandler, proxy_protocol=["10.0.0.1", "2001:db8::/32"])
    assert [str(n) for n in server.proxy_networks] == ["10.0.0.1/32", "2001:db8::/32"]


async def test_the_login_is_logged_with_the_proxied_address(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_pop3")
    store = MemoryStore({"alice": []})
    factory = functools.partial(MailboxHandler, store, MemoryAuthenticator(MAILBOX_USERS))
    running = await start_server(factory, proxy_protocol=LOOPBACK)
    client = await proxied(running.port, V1)
    await client.login("alice", MAILBOX_USERS["alice"])
    assert (await client.command("QUIT")).startswith("+OK")
    assert await client.read_to_eof() == b""
    await client.aclose()
    assert "login: user=alice rip=192.0.2.7" in caplog.text
    assert "192.0.2.7:40000 disconnected: user=alice" in caplog.text

"""STLS (RFC 2595), implicit TLS (RFC 8314) and the plaintext-authentication policy."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import poplib
import shutil
import ssl
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from pop3_support import FAST_LIMITS, MAILBOX_USERS, Client

from trio_pop3 import POP3Error, POP3Server
from trio_pop3.mailbox import MailboxHandler, MemoryAuthenticator, MemoryStore

MESSAGE = b"Subject: secret\n\n.dot line\nbody\n"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


class TLSServer:
    def __init__(self, server: POP3Server, port: int, pop3s_port: int, store: MemoryStore) -> None:
        self.server = server
        self.port = port
        self.pop3s_port = pop3s_port
        self.store = store


async def start(
    nursery: trio.Nursery, context: ssl.SSLContext, **handler_options: Any
) -> TLSServer:
    store = MemoryStore({"alice": [MESSAGE]})
    factory: Callable[[], MailboxHandler] = functools.partial(
        MailboxHandler, store, MemoryAuthenticator(MAILBOX_USERS), **handler_options
    )
    server = POP3Server(
        factory,
        host="127.0.0.1",
        port=0,
        pop3s_port=0,
        ssl_context=context,
        limits=FAST_LIMITS,
    )
    listeners: list[trio.SocketListener] = await nursery.start(server.serve)
    ports = [listener.socket.getsockname()[1] for listener in listeners]
    return TLSServer(server, ports[0], ports[1], store)


@pytest.fixture
async def tls_server(nursery: trio.Nursery, server_context: ssl.SSLContext) -> TLSServer:
    return await start(nursery, server_context)


def capa_tags(capa: dict[str, list[str]]) -> set[str]:
    return set(capa)


# -- STLS ------------------------------------------------------------------------------


@pytest.mark.rfc("2595", "4")
async def test_stls_with_poplib_changes_capa(
    tls_server: TLSServer, client_context: ssl.SSLContext
) -> None:
    def client() -> None:
        pop = poplib.POP3("127.0.0.1", tls_server.port, timeout=10)
        try:
            before = pop.capa()
            # CAP-STLS; TLS-06: no plaintext mechanism and no USER before TLS.
            assert "STLS" in before
            assert "USER" not in before
            assert "PLAIN" not in before.get("SASL", [])
            assert "LOGIN" not in before.get("SASL", [])
            assert "SCRAM-SHA-256" in before["SASL"]
            pop.stls(client_context)
            after = pop.capa()
            # CAPA-05: STLS disappears once TLS is active; plaintext logins appear.
            assert "STLS" not in after
            assert "USER" in after
            assert {"PLAIN", "LOGIN"} <= set(after["SASL"])
            pop.user("alice")
            pop.pass_("secret")
            # CAPA-03: what AUTHORIZATION announced is still announced after login.
            assert {"USER", "SASL", "TOP", "UIDL"} <= capa_tags(pop.capa())
            _, lines, octets = pop.retr(1)
            assert b"\r\n".join(lines) + b"\r\n" == MESSAGE.replace(b"\n", b"\r\n")
            assert octets == len(MESSAGE.replace(b"\n", b"\r\n"))
            pop.quit()
        finally:
            pop.close()

    await trio.to_thread.run_sync(client)


@pytest.mark.rfc("2595", "2.3")
async def test_plaintext_login_refused_before_tls(tls_server: TLSServer) -> None:
    client = Client(await trio.open_tcp_stream("127.0.0.1", tls_server.port))
    greeting = await client.reply()
    assert "<" not in greeting  # no APOP timestamp (GREET-05)
    # TLS-05: USER/PASS, AUTH PLAIN and AUTH LOGIN refused without TLS, with [AUTH].
    assert (await client.command("USER alice")).startswith("-ERR [AUTH]")
    assert (await client.command("PASS secret")).startswith("-ERR")
    plain = base64.b64encode(b"\0alice\0secret").decode()
    assert (await client.command(f"AUTH PLAIN {plain}")).startswith("-ERR [AUTH]")
    assert (await client.command("AUTH LOGIN")).startswith("-ERR [AUTH]")
    assert (await client.command("STAT")).startswith("-ERR")
    await client.aclose()


async def test_allow_insecure_auth(nursery: trio.Nursery, server_context: ssl.SSLContext) -> None:
    running = await start(nursery, server_context, allow_insecure_auth=True, apop=True)
    client = Client(await trio.open_tcp_stream("127.0.0.1", running.port))
    greeting = await client.reply()
    assert "<" in greeting  # APOP timestamp offered: the operator allowed it
    _, capa = await client.multi("CAPA")
    assert b"USER" in capa
    assert b"STLS" in capa
    await client.login()
    size = len(MESSAGE.replace(b"\n", b"\r\n"))
    assert await client.command("STAT") == f"+OK 1 {size}"
    await client.aclose()


@pytest.mark.rfc("1939", "7")
@pytest.mark.rfc("2595", "2.3")
async def test_apop_before_stls_after_it_and_on_the_implicit_tls_port(
    nursery: trio.Nursery, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    # GREET-05: the timestamp is APOP's advertisement, and it can only be in the
    # greeting, which on the STLS port goes out before TLS.  APOP sends no password
    # (RFC 1939 section 7), so the plaintext policy that hides USER does not hide it
    # (as with CRAM-MD5, and as in Dovecot): it works before STLS, after it (with the
    # first greeting's timestamp) and on the implicit-TLS port.
    running = await start(nursery, server_context, apop=True)

    def apop_login(pop: poplib.POP3) -> None:
        assert pop.apop("alice", "secret").startswith(b"+OK")
        assert pop.stat()[0] == 1
        pop.quit()

    def client() -> None:
        plain = poplib.POP3("127.0.0.1", running.port, timeout=10)
        try:
            assert b"<" in plain.getwelcome()
            assert "USER" not in plain.capa()  # the plaintext policy still holds
            apop_login(plain)
        finally:
            plain.close()
        upgraded = poplib.POP3("127.0.0.1", running.port, timeout=10)
        try:
            upgraded.stls(client_context)
            apop_login(upgraded)
        finally:
            upgraded.close()
        pops = poplib.POP3_SSL("127.0.0.1", running.pop3s_port, context=client_context)
        try:
            assert b"<" in pops.getwelcome()
            apop_login(pops)
        finally:
            pops.close()

    await trio.to_thread.run_sync(client)


async def plain_client(port: int) -> tuple[trio.SocketStream, Client]:
    """Connect in plaintext and read the greeting."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    client = Client(stream)
    await client.reply()
    return stream, client


async def handshake(stream: trio.SocketStream, client_context: ssl.SSLContext) -> Client:
    """After the server's +OK to STLS: complete the TLS handshake, return the client."""
    tls = trio.SSLStream(stream, client_context, server_hostname="127.0.0.1")
    await tls.do_handshake()
    return Client(tls)


@pytest.mark.rfc("2595", "4")
async def test_stls_discards_pipelined_plaintext(
    tls_server: TLSServer, client_context: ssl.SSLContext
) -> None:
    """TLS-04: commands injected after STLS, before the handshake, are never executed."""
    stream, client = await plain_client(tls_server.port)
    # One write: STLS plus a whole login that would succeed if it were executed.
    await client.send(b"STLS\r\nUSER alice\r\nPASS secret\r\nDELE 1\r\nQUIT\r\n")
    assert (await client.reply()).startswith("+OK")
    secure = await handshake(stream, client_context)
    # Not logged in: the injected USER/PASS were discarded with the plaintext.
    assert (await secure.command("STAT")).startswith("-ERR")
    assert (await secure.command("NOOP")).startswith("-ERR")
    await secure.login()
    assert (await secure.command("STAT")).startswith("+OK 1 ")
    assert await secure.command("QUIT") == "+OK goodbye"
    await secure.aclose()
    assert tls_server.store.messages("alice") == [MESSAGE]


@pytest.mark.rfc("2595", "4")
async def test_stls_twice_and_after_login(
    tls_server: TLSServer, client_context: ssl.SSLContext
) -> None:
    stream, client = await plain_client(tls_server.port)
    assert (await client.command("STLS")).startswith("+OK")
    secure = await handshake(stream, client_context)
    # TLS-02: a second STLS is refused.
    assert (await secure.command("STLS")).startswith("-ERR")
    await secure.login()
    # WIRE-08 / TLS-01: STLS only in AUTHORIZATION.
    assert (await secure.command("STLS")).startswith("-ERR")
    assert (await secure.command("QUIT")).startswith("+OK")
    await secure.aclose()


@pytest.mark.rfc("2595", "4")
async def test_stls_with_an_argument_is_refused(
    tls_server: TLSServer, client_context: ssl.SSLContext
) -> None:
    # RFC 2595 section 4: "STLS" takes no arguments (WIRE-07); the session stays in
    # plaintext and a plain STLS still works afterwards.
    stream, client = await plain_client(tls_server.port)
    assert await client.command("STLS now") == "-ERR STLS takes no arguments."
    assert (await client.command("STLS")).startswith("+OK")
    secure = await handshake(stream, client_context)
    await secure.login()
    assert (await secure.command("QUIT")).startswith("+OK")
    await secure.aclose()


@pytest.mark.rfc("8314", "4")
async def test_no_stls_without_certificate() -> None:
    """CONN-06: STLS is neither advertised nor accepted without a TLS context."""
    store = MemoryStore({"alice": [MESSAGE]})
    server = POP3Server(
        functools.partial(MailboxHandler, store, MemoryAuthenticator(MAILBOX_USERS)),
        limits=FAST_LIMITS,
    )
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, server_stream)
        client = Client(client_stream)
        await client.reply()
        _, capa = await client.multi("CAPA")
        assert b"STLS" not in capa
        assert b"USER" in capa  # no TLS configured: plaintext login is the only way
        assert (await client.command("STLS")).startswith("-ERR")
        await client.login()
        await client.command("QUIT")
        await client.aclose()


# -- implicit TLS ---------------------------------------------------------------------------


@pytest.mark.rfc("8314", "3.1")
async def test_pop3s_with_poplib(tls_server: TLSServer, client_context: ssl.SSLContext) -> None:
    def client() -> None:
        pop = poplib.POP3_SSL("127.0.0.1", tls_server.pop3s_port, context=client_context)
        try:
            assert pop.getwelcome().startswith(b"+OK")
            capa = pop.capa()
            assert "STLS" not in capa  # already encrypted
            assert "USER" in capa  # implicit TLS counts as encrypted
            # CONN-03: AUTHORIZATION state after the greeting, no implicit login.
            with pytest.raises(poplib.error_proto):
                pop.stat()
            pop.user("alice")
            pop.pass_("secret")
            assert pop.stat()[0] == 1
            pop.quit()
        finally:
            pop.close()

    await trio.to_thread.run_sync(client)


async def test_pop3s_stls_refused(tls_server: TLSServer, client_context: ssl.SSLContext) -> None:
    stream = await trio.open_ssl_over_tcp_stream(
        "127.0.0.1", tls_server.pop3s_port, ssl_context=client_context
    )
    client = Client(stream)
    await client.reply()
    assert (await client.command("STLS")).startswith("-ERR")  # TLS-02
    await client.aclose()


@pytest.mark.rfc("8314", "4.1")
async def test_tls_below_1_2_refused(tls_server: TLSServer, ca: trustme.CA) -> None:
    """CONN-07: TLS 1.2 is the minimum."""
    old = ssl.create_default_context()
    ca.configure_trust(old)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is deprecated: good
        try:
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        except (ValueError, ssl.SSLError):  # pragma: no cover - OpenSSL without TLS 1.1
            pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    tcp = await trio.open_tcp_stream("127.0.0.1", tls_server.pop3s_port)
    stream = trio.SSLStream(tcp, old, server_hostname="127.0.0.1")
    try:
        with pytest.raises(trio.BrokenResourceError):
            await stream.do_handshake()
    finally:
        await trio.aclose_forcefully(stream)


async def test_tls_handshake_timeout(
    server_context: ssl.SSLContext, autojump_clock: trio.testing.MockClock
) -> None:
    """A client that connects to the implicit-TLS port and says nothing is dropped."""
    store = MemoryStore({"alice": [MESSAGE]})
    server = POP3Server(
        functools.partial(MailboxHandler, store, MemoryAuthenticator(MAILBOX_USERS)),
        ssl_context=server_context,
        tls_handshake_timeout=30,
    )
    client_stream, server_stream = trio.testing.memory_stream_pair()
    start = trio.current_time()
    await server.handle_stream(server_stream, implicit_tls=True)
    assert 30 <= trio.current_time() - start < 31
    assert server.active_connections == 0
    await client_stream.aclose()


# -- SCRAM-SHA-256 end to end, over TLS ------------------------------------------------------


def scram_client_proof(
    password: str, salt: bytes, iterations: int, auth_message: bytes
) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    signature = hmac.digest(stored_key, auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return proof, hmac.digest(server_key, auth_message, "sha256")


@pytest.mark.rfc("5034", "4")
async def test_scram_sha_256_exchange_over_pop3s(
    tls_server: TLSServer, client_context: ssl.SSLContext
) -> None:
    """SCRAM-10 / SASL-12: server-final goes out as a challenge, answered by an empty line."""
    stream = await trio.open_ssl_over_tcp_stream(
        "127.0.0.1", tls_server.pop3s_port, ssl_context=client_context
    )
    client = Client(stream)
    await client.reply()
    bare = b"n=alice,r=fyko+d2lbbFgONRv9qkxdawL"
    first = base64.b64encode(b"n,," + bare).decode()
    challenge = await client.command(f"AUTH SCRAM-SHA-256 {first}")
    assert challenge.startswith("+ ")
    server_first = base64.b64decode(challenge[2:])
    fields = dict(item.split(b"=", 1) for item in server_first.split(b","))
    final_bare = b"c=biws,r=" + fields[b"r"]
    auth_message = bare + b"," + server_first + b"," + final_bare
    proof, expected_signature = scram_client_proof(
        "secret", base64.b64decode(fields[b"s"]), int(fields[b"i"]), auth_message
    )
    final = final_bare + b",p=" + base64.b64encode(proof)
    server_final = await client.command(base64.b64encode(final).decode())
    assert server_final.startswith("+ ")
    assert base64.b64decode(server_final[2:]) == b"v=" + base64.b64encode(expected_signature)
    assert (await client.command("")).startswith("+OK")
    assert (await client.command("STAT")).startswith("+OK 1 ")
    # SASL-02: no second AUTH after success.
    assert (await client.command("AUTH PLAIN")).startswith("-ERR")
    await client.command("QUIT")
    await client.aclose()


# -- curl: pop3 with STLS, and pop3s -----------------------------------------------------------


def _curl() -> str:
    curl = shutil.which("curl")
    if curl is None:  # pragma: no cover - CI installs it
        pytest.skip("curl not installed")
    return curl


@pytest.mark.interop
@pytest.mark.parametrize(
    ("scheme", "options"),
    [
        ("pop3", ["--ssl-reqd"]),
        ("pop3s", []),
        ("pop3", ["--ssl-reqd", "--login-options", "AUTH=PLAIN"]),
        ("pop3s", ["--login-options", "AUTH=PLAIN", "--sasl-ir"]),
        ("pop3s", ["--login-options", "AUTH=LOGIN"]),
    ],
)
async def test_curl_over_tls(
    tls_server: TLSServer, ca: trustme.CA, tmp_path: object, scheme: str, options: list[str]
) -> None:
    curl = _curl()
    cafile = f"{tmp_path}/ca.pem"
    ca.cert_pem.write_to_path(cafile)
    port = tls_server.pop3s_port if scheme == "pop3s" else tls_server.port
    result = await trio.run_process(
        [
            curl,
            *("-sS", "--max-time", "20", "--cacert", cafile, "-u", "alice:secret"),
            *options,
            f"{scheme}://127.0.0.1:{port}/1",
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == MESSAGE.replace(b"\n", b"\r\n")


@pytest.mark.interop
async def test_curl_ssl_reqd_fails_without_tls(nursery: trio.Nursery) -> None:
    """curl --ssl-reqd against a server without TLS gives up rather than send a password."""
    curl = _curl()
    server = POP3Server(
        functools.partial(
            MailboxHandler, MemoryStore({"alice": [MESSAGE]}), MemoryAuthenticator(MAILBOX_USERS)
        ),
        host="127.0.0.1",
        port=0,
        limits=FAST_LIMITS,
    )
    listeners: list[trio.SocketListener] = await nursery.start(server.serve)
    port = listeners[0].socket.getsockname()[1]
    result = await trio.run_process(
        [
            curl,
            *("-sS", "--max-time", "20", "--ssl-reqd", "-u", "alice:secret"),
            f"pop3://127.0.0.1:{port}/1",
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode != 0
    assert result.stdout == b""


@pytest.mark.rfc("8314", "3.4")
async def test_pop3s_quit_sends_close_notify(
    tls_server: TLSServer, client_context: ssl.SSLContext
) -> None:
    """CONN-04: the server ends an implicit-TLS session with close_notify, not a bare FIN.

    trio's SSLStream (https_compatible=False) treats a TCP close without close_notify
    as a truncation attack and raises BrokenResourceError; a clean close reads b"".
    """
    stream = await trio.open_ssl_over_tcp_stream(
        "127.0.0.1", tls_server.pop3s_port, ssl_context=client_context
    )
    client = Client(stream)
    await client.reply()
    assert await client.command("QUIT") == "+OK goodbye"
    assert await client.read_to_eof() == b""
    await client.aclose()


@pytest.mark.rfc("2595", "4")
@pytest.mark.parametrize("error", [POP3Error("cannot forget"), RuntimeError("bug")])
async def test_a_failing_on_tls_closes_the_connection(
    nursery: trio.Nursery,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    error: Exception,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # STLS's +OK is sent before on_tls() runs, so a failure cannot be told to the
    # client, and what the hook failed to forget must not outlive the plaintext:
    # the connection ends (a -ERR after +OK would answer the client's next command).
    class Forgetful(MailboxHandler):
        async def on_tls(self) -> None:
            raise error

    store = MemoryStore({"alice": [MESSAGE]})
    factory = functools.partial(Forgetful, store, MemoryAuthenticator(MAILBOX_USERS))
    server = POP3Server(
        factory, host="127.0.0.1", port=0, ssl_context=server_context, limits=FAST_LIMITS
    )
    listeners: list[trio.SocketListener] = await nursery.start(server.serve)
    stream, client = await plain_client(listeners[0].socket.getsockname()[1])
    assert (await client.command("STLS")).startswith("+OK")
    secure = await handshake(stream, client_context)
    with trio.fail_after(10):
        assert await secure.read_to_eof() == b""
    await secure.aclose()
    assert "on_tls() failed; closing the connection" in caplog.text

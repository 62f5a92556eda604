"""Checklist rules that no other test cites by ID (RFC-CHECKLIST.md), over real sockets.

Each test's docstring names its rule and the RFC section.  Rules already covered
under another name are cited in that test instead.  The fixtures come from
pop3_support and test_tls (importing a fixture registers it for this module).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import poplib
import re
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trustme
from pop3_support import (
    ALICE_MESSAGES,
    FAST_LIMITS,
    MAILBOX_USERS,
    Client,
    Connect,
    SkeletonHandler,
    StartServer,
    authenticator as authenticator,  # fixtures, registered for this module
    connect as connect,
    mailbox_factory as mailbox_factory,
    mailbox_port as mailbox_port,
    start_server as start_server,
    store as store,
    unstuff,
)
from test_extensions import GermanHandler
from test_tls import (
    MESSAGE,
    TLSServer,
    ca as ca,  # fixtures, registered for this module
    client_context as client_context,
    plain_client,
    scram_client_proof,
    server_context as server_context,
    start,
    tls_server as tls_server,
)

from trio_pop3 import Limits, POP3Server, wire_size
from trio_pop3._cli import _make_server, _ssl_context, build_parser
from trio_pop3._proto._state import STANDARD_COMMANDS
from trio_pop3._sasl import DEFAULT_MECHANISMS, CramMD5Mechanism
from trio_pop3.mailbox import (
    Authenticator,
    LoginDelay,
    MailboxHandler,
    MaildirStore,
    MemoryAuthenticator,
    MemoryStore,
)

TOTAL = sum(wire_size(m) for m in ALICE_MESSAGES)
ALL_MECHANISMS = (*DEFAULT_MECHANISMS, CramMD5Mechanism())
UTF8_MESSAGE = "Subject: Grüße aus Köln\nFrom: Jörg <j@example.org>\n\nKöln\n.dot\n".encode()

#: The IANA POP3 capability registry (RFC 2449, 2595, 3206, 5034, 6856).
REGISTERED_CAPABILITIES = frozenset(
    {
        "TOP",
        "USER",
        "SASL",
        "RESP-CODES",
        "LOGIN-DELAY",
        "PIPELINING",
        "EXPIRE",
        "UIDL",
        "IMPLEMENTATION",
        "AUTH-RESP-CODE",
        "STLS",
        "UTF8",
        "LANG",
    }
)

#: RFC 2449 section 3: capability = capa-tag *(SP param); cchar excludes ".".
CAPABILITY_RE = re.compile(rb"[\x21-\x2d\x2f-\x7e]+(?: [\x21-\x7e]+)*")


async def serve(nursery: trio.Nursery, server: POP3Server) -> int:
    """Start ``server`` (bound to port 0) in ``nursery``; return its first port."""
    listeners: list[trio.SocketListener] = await nursery.start(server.serve)
    return int(listeners[0].socket.getsockname()[1])


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def factory(
    store: MemoryStore, users: dict[str, str] | None = None, **options: object
) -> functools.partial[MailboxHandler]:
    return functools.partial(
        MailboxHandler,
        store,
        MemoryAuthenticator(users or MAILBOX_USERS),
        **options,  # type: ignore[arg-type]
    )


async def open_client(port: int) -> tuple[Client, str]:
    """Connect to 127.0.0.1:port; return the client and the greeting it read."""
    client = Client(await trio.open_tcp_stream("127.0.0.1", port))
    return client, await client.reply()


async def capa(client: Client) -> list[bytes]:
    first, lines = await client.multi("CAPA")
    assert first == "+OK Capability list follows", first
    return lines


async def starttls(
    stream: trio.abc.Stream, context: ssl.SSLContext, hostname: str = "127.0.0.1"
) -> Client:
    tls = trio.SSLStream(stream, context, server_hostname=hostname)
    await tls.do_handshake()
    return Client(tls)


async def scram_login(client: Client, user: str = "alice", password: str = "secret") -> str:
    """A full AUTH SCRAM-SHA-256 exchange; return the final reply."""
    bare = f"n={user},r=Xn0nceFromTheClient".encode()
    reply = await client.command("AUTH SCRAM-SHA-256 " + b64(b"n,," + bare))
    assert reply.startswith("+ "), reply
    server_first = base64.b64decode(reply[2:])
    fields = dict(item.split(b"=", 1) for item in server_first.split(b","))
    final_bare = b"c=biws,r=" + fields[b"r"]
    auth_message = bare + b"," + server_first + b"," + final_bare
    proof, _ = scram_client_proof(
        password, base64.b64decode(fields[b"s"]), int(fields[b"i"]), auth_message
    )
    reply = await client.command(b64(final_bare + b",p=" + base64.b64encode(proof)))
    if not reply.startswith("+ "):
        return reply
    return await client.command("")


def apop_digest(greeting: str, secret: str) -> str:
    match = re.search(r"<[^<>]*>", greeting)
    assert match is not None, greeting
    return hashlib.md5((match.group() + secret).encode()).hexdigest()


# -- connection (RFC 1939 section 3, RFC 8314) -------------------------------------------


@pytest.mark.rfc("1939", "3")
async def test_conn01_port_110_and_greeting_first(start_server: StartServer) -> None:
    """CONN-01 (RFC 1939 §3): plain POP3 is port 110; the greeting comes unasked."""
    assert POP3Server(SkeletonHandler).port == 110
    args = build_parser().parse_args(["serve", "--maildir-root", "m", "--users", "u"])
    assert args.port == 110
    running = await start_server(SkeletonHandler)
    stream = await trio.open_tcp_stream("127.0.0.1", running.port)
    try:
        with trio.fail_after(5):  # the client sends nothing at all
            assert await stream.receive_some(512) == b"+OK POP3 trio_pop3 ready.\r\n"
    finally:
        await stream.aclose()


def _issue(ca: trustme.CA, tmp_path: Path, *names: str) -> tuple[Path, Path, bytes]:
    """A server certificate in PEM files; return (chain file, key file, DER)."""
    cert = ca.issue_cert(*names)
    chain, key = tmp_path / f"{names[0]}.chain.pem", tmp_path / f"{names[0]}.key.pem"
    for index, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(chain), append=index > 0)
    cert.private_key_pem.write_to_path(str(key))
    der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    return chain, key, der


@pytest.mark.rfc("8314", "4.2")
@pytest.mark.skipif(
    not hasattr(ssl.SSLContext, "_msg_callback"), reason="needs ssl's TLS message callback"
)
async def test_conn08_no_client_certificate_request(
    nursery: trio.Nursery, ca: trustme.CA, tmp_path: Path
) -> None:
    """CONN-08 (RFC 8314 §4.2): the server never sends a TLS CertificateRequest.

    The context is the one ``trio-pop3 serve --tls-cert --tls-key`` builds; both the
    implicit-TLS port and STLS are checked with stdlib clients that record every TLS
    handshake message.  A context that does ask for certificates is the control.
    """
    chain, key, _ = _issue(ca, tmp_path, "127.0.0.1")
    cli_context = _ssl_context(chain, key)
    assert cli_context is not None
    assert cli_context.verify_mode == ssl.CERT_NONE
    asking = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    asking.load_cert_chain(chain, key)
    asking.verify_mode = ssl.CERT_OPTIONAL
    ca.configure_trust(asking)
    servers = [await start(nursery, context) for context in (cli_context, asking)]

    def handshake_messages(server: TLSServer, stls: bool) -> set[object]:
        seen: set[object] = set()
        context = ssl.create_default_context()
        ca.configure_trust(context)
        context._msg_callback = lambda _c, direction, _v, _t, message, _d: (  # type: ignore[attr-defined]
            seen.add(message) if direction == "read" else None
        )
        if stls:
            pop = poplib.POP3("127.0.0.1", server.port, timeout=10)
            pop.stls(context)
        else:
            pop = poplib.POP3_SSL("127.0.0.1", server.pop3s_port, context=context, timeout=10)
        try:
            assert pop.getwelcome().startswith(b"+OK")
            pop.quit()
        finally:
            pop.close()
        return seen

    request = ssl._TLSMessageType.CERTIFICATE_REQUEST  # type: ignore[attr-defined]
    for stls in (False, True):
        seen = await trio.to_thread.run_sync(handshake_messages, servers[0], stls)
        assert ssl._TLSMessageType.CERTIFICATE in seen  # type: ignore[attr-defined]
        assert request not in seen
        control = await trio.to_thread.run_sync(handshake_messages, servers[1], stls)
        assert request in control


async def _peer_certificate(port: int, context: ssl.SSLContext, hostname: str) -> bytes:
    tls = trio.SSLStream(
        await trio.open_tcp_stream("127.0.0.1", port), context, server_hostname=hostname
    )
    try:
        await tls.do_handshake()
        client = Client(tls)
        assert (await client.reply()).startswith("+OK")
        der = tls.getpeercert(binary_form=True)
        assert isinstance(der, bytes)
        return der
    finally:
        await trio.aclose_forcefully(tls)


@pytest.mark.rfc("8314", "4.4")
async def test_conn09_certificate_reload_on_the_live_context(
    nursery: trio.Nursery, ca: trustme.CA, client_context: ssl.SSLContext, tmp_path: Path
) -> None:
    """CONN-09 (RFC 8314 §4.4): a renewed certificate loaded into the server's context
    (``load_cert_chain``) is used by the next connections, without a restart."""
    old_chain, old_key, old_der = _issue(ca, tmp_path, "127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(old_chain, old_key)
    running = await start(nursery, context)
    assert await _peer_certificate(running.pop3s_port, client_context, "127.0.0.1") == old_der
    (tmp_path / "renewed").mkdir()
    new_chain, new_key, new_der = _issue(ca, tmp_path / "renewed", "127.0.0.1")
    assert new_der != old_der
    context.load_cert_chain(new_chain, new_key)
    assert await _peer_certificate(running.pop3s_port, client_context, "127.0.0.1") == new_der
    stream, _ = await plain_client(running.port)
    assert await Client(stream).command("STLS") == "+OK Begin TLS negotiation now."
    secure = await starttls(stream, client_context)
    assert secure.stream.getpeercert(binary_form=True) == new_der  # type: ignore[attr-defined]
    await secure.aclose()


@pytest.mark.rfc("8314", "4.4")
async def test_conn11_sni_selects_the_certificate(
    nursery: trio.Nursery, ca: trustme.CA, client_context: ssl.SSLContext
) -> None:
    """CONN-11 (RFC 8314 §4.4): an ``sni_callback`` on the context picks the certificate
    by server name, on the implicit-TLS port and after STLS."""
    default = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(default)
    other = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("pop.other.example").configure_cert(other)

    def choose(ssl_object: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        if name == "pop.other.example":
            ssl_object.context = other

    default.sni_callback = choose
    running = await start(nursery, default)
    # Hostname checking passes only if the certificate for that name was served.
    for name in ("pop.other.example", "localhost"):
        await _peer_certificate(running.pop3s_port, client_context, name)
        stream, _ = await plain_client(running.port)
        assert await Client(stream).command("STLS") == "+OK Begin TLS negotiation now."
        secure = await starttls(stream, client_context, name)
        assert await secure.command("QUIT") == "+OK goodbye"
        await secure.aclose()


# -- wire format (RFC 2449 sections 3-4) ---------------------------------------------------


@pytest.mark.rfc("2449", "3")
async def test_wire03_keywords_are_three_or_four_characters(
    mailbox_port: int, connect: Connect
) -> None:
    """WIRE-03 (RFC 2449 §3): keyword = 3*4VCHAR; other lengths are unknown commands."""
    assert all(3 <= len(name) <= 4 for name in STANDARD_COMMANDS)
    client = await connect(mailbox_port)
    assert await client.command("ST") == "-ERR Unknown command: ST"
    assert await client.command("STATS") == "-ERR Unknown command: STATS"
    await client.login()
    assert await client.command("RETRIEVE 1") == "-ERR Unknown command: RETRIEVE"
    assert await client.command("LISTS") == "-ERR Unknown command: LISTS"
    assert await client.command("STAT") == f"+OK 3 {TOTAL}"


@pytest.mark.rfc("2449", "4")
async def test_wire05_sasl_response_longer_than_a_command(
    start_server: StartServer, connect: Connect
) -> None:
    """WIRE-05 (RFC 2449 §4, RFC 5034 §4): the longest line an advertised capability
    defines is accepted: a PLAIN response of three 255-octet fields (1024 base64)."""
    user, password = "u" * 255, "p" * 255
    running = await start_server(factory(MemoryStore({user: [b"S: x\n\nb\n"]}), {user: password}))
    client = await connect(running.port)
    response = b64(f"{user}\0{user}\0{password}")
    assert len(response) == 1024
    assert await client.command("AUTH PLAIN") == "+ "
    assert await client.command(response) == "+OK Logged in, 1 message (11 octets)."


# -- greeting (RFC 2449 section 3) --------------------------------------------------------

# greeting = "+OK" [resp-code] *gchar [timestamp] *gchar CRLF, gchar excludes "<"
# (SP allowed: the ABNF's %x21 lower bound is an evident slip; every example has spaces).
GREETING_RE = re.compile(
    r"\+OK(?: \[[^\]]*\])?[\x20-\x3b\x3d-\x7e]*(?:<[\x21-\x7e]*>)?"
    r"[\x20-\x3b\x3d-\x7e]*"
)


@pytest.mark.rfc("2449", "3")
@pytest.mark.parametrize("text", ["x" * 480, "x" * 506, "ready", ""])
async def test_greet02_the_timestamp_is_whole_within_512_octets(
    start_server: StartServer, store: MemoryStore, text: str
) -> None:
    """GREET-02 (RFC 2449 §3, §4): one <timestamp>, whole, in at most 512 octets; a
    long text is cut instead of the timestamp, which the client hashes."""
    running = await start_server(
        functools.partial(MailboxHandler, store, MemoryAuthenticator(MAILBOX_USERS), apop=True),
        greeting=text,
    )
    client, line = await open_client(running.port)
    await client.aclose()
    assert len(line) + 2 <= 512
    assert GREETING_RE.fullmatch(line), line
    assert line.count("<") == 1
    assert line.endswith(">")
    assert line.startswith(f"+OK {text[:20]}")


@pytest.mark.rfc("2449", "3")
@pytest.mark.parametrize(
    "text",
    ["Mail for <postmaster@example.org> ready", "a > b", "x" * 507, "caf\xe9", "a\r\nb"],
)
def test_greet02_a_greeting_text_outside_the_grammar_is_refused(text: str) -> None:
    """GREET-02 / GREET-05 (RFC 2449 §3): a '<' or '>' in the text would add a bogus
    timestamp, announcing APOP; gchar is ASCII without CR or LF."""
    with pytest.raises(ValueError, match="the greeting"):
        POP3Server(SkeletonHandler, greeting=text)


# -- CAPA (RFC 2449 sections 5, 9; RFC 2595 section 4) ---------------------------------------


async def _capa_in_both_states(
    nursery: trio.Nursery, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> dict[str, tuple[list[bytes], list[bytes]]]:
    """CAPA before and after login, for each kind of connection a server can have."""
    listings: dict[str, tuple[list[bytes], list[bytes]]] = {}
    plain_store = MemoryStore({"alice": list(ALICE_MESSAGES)})
    handlers = factory(
        plain_store, login_delay=LoginDelay(900), expire=30, apop=True, mechanisms=ALL_MECHANISMS
    )
    server = POP3Server(handlers, host="127.0.0.1", port=0, limits=FAST_LIMITS)
    port = await serve(nursery, server)
    client, _ = await open_client(port)
    before = await capa(client)
    await client.login()
    listings["no TLS configured"] = (before, await capa(client))
    await client.aclose()

    running = await start(nursery, server_context, mechanisms=ALL_MECHANISMS)
    client, _ = await open_client(running.port)  # STLS port, still in plaintext
    before = await capa(client)
    assert (await scram_login(client)).startswith("+OK")
    listings["before STLS"] = (before, await capa(client))
    await client.aclose()

    for name in ("after STLS", "implicit TLS"):
        if name == "after STLS":
            stream, client = await plain_client(running.port)
            assert await client.command("STLS") == "+OK Begin TLS negotiation now."
            client = await starttls(stream, client_context)
        else:
            tls = await trio.open_ssl_over_tcp_stream(
                "127.0.0.1", running.pop3s_port, ssl_context=client_context
            )
            client = Client(tls)
            assert (await client.reply()).startswith("+OK")
        before = await capa(client)
        await client.login()
        listings[name] = (before, await capa(client))
        assert (await client.command("QUIT")).startswith("+OK")
        await client.aclose()
    return listings


@pytest.mark.rfc("2449", "3")
async def test_capa02_capability_lines_follow_the_grammar(
    nursery: trio.Nursery, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """CAPA-02 (RFC 2449 §3, §5): capa-tag *(SP param), no "." in a tag, and a tag naming
    an optional command is that command's keyword (the command exists)."""
    listings = await _capa_in_both_states(nursery, server_context, client_context)
    for where, (before, after) in listings.items():
        for line in before + after:
            assert CAPABILITY_RE.fullmatch(line), (where, line)
            assert len(line) + 2 <= 512
    # The tags that name a command: the command is implemented under that keyword.
    running = await start(nursery, server_context, allow_insecure_auth=True)
    client, _ = await open_client(running.port)
    tags = {line.split(b" ")[0].decode() for line in await capa(client)}
    assert {"USER", "TOP", "UIDL", "STLS", "UTF8", "LANG"} <= tags
    assert (await client.command("UTF8")).startswith("+OK")
    assert (await client.multi("LANG"))[0].startswith("+OK")
    await client.login()  # USER and PASS
    assert (await client.multi("TOP 1 0"))[0].startswith("+OK")
    assert (await client.multi("UIDL"))[0].startswith("+OK")
    await client.aclose()
    stream, client = await plain_client(running.port)
    assert await client.command("STLS") == "+OK Begin TLS negotiation now."
    await (await starttls(stream, client_context)).aclose()


@pytest.mark.rfc("2449", "5")
async def test_capa04_arguments_do_not_change_after_login(
    nursery: trio.Nursery, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """CAPA-04 (RFC 2449 §5): only capabilities defined as "possible differences: yes"
    (LOGIN-DELAY, EXPIRE) may change after authentication; STLS is announced in
    AUTHORIZATION only (RFC 2595 §4); every other line is the same in both states."""
    may_differ = (b"LOGIN-DELAY", b"EXPIRE", b"STLS")
    listings = await _capa_in_both_states(nursery, server_context, client_context)
    for where, (before, after) in listings.items():
        keep = [line for line in before if line.split(b" ")[0] not in may_differ]
        kept = [line for line in after if line.split(b" ")[0] not in may_differ]
        assert keep == kept, where
        assert not any(line.startswith(b"STLS") for line in after), where


@pytest.mark.rfc("2449", "9")
async def test_capa08_only_registered_or_x_capabilities(
    nursery: trio.Nursery, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """CAPA-08 (RFC 2449 §9): every tag announced is registered; private ones start "X"."""
    listings = await _capa_in_both_states(nursery, server_context, client_context)
    for where, (before, after) in listings.items():
        for line in before + after:
            tag = line.split(b" ")[0].decode().upper()
            assert tag in REGISTERED_CAPABILITIES or tag.startswith("X"), (where, tag)


@pytest.mark.rfc("2449", "7")
async def test_capa07_base_protocol_needs_no_extension(
    nursery: trio.Nursery, tls_server: TLSServer, client_context: ssl.SSLContext
) -> None:
    """CAPA-07 (RFC 2449 §7): a client that uses no extension at all (no CAPA, AUTH,
    STLS, UTF8, LANG) can log in and work, on a plain server and on the implicit-TLS port."""
    store = MemoryStore({"alice": list(ALICE_MESSAGES)})
    server = POP3Server(factory(store), host="127.0.0.1", port=0, limits=FAST_LIMITS)
    port = await serve(nursery, server)
    plain, _ = await open_client(port)
    secure = Client(
        await trio.open_ssl_over_tcp_stream(
            "127.0.0.1", tls_server.pop3s_port, ssl_context=client_context
        )
    )
    assert (await secure.reply()).startswith("+OK")
    for client, messages in ((plain, ALICE_MESSAGES), (secure, (MESSAGE,))):
        size = wire_size(messages[0])
        assert (await client.command("USER alice")).startswith("+OK")
        assert (await client.command("PASS secret")).startswith("+OK")
        assert await client.command("STAT") == (
            f"+OK {len(messages)} {sum(wire_size(m) for m in messages)}"
        )
        assert await client.command("LIST 1") == f"+OK 1 {size}"
        first, lines = await client.multi("RETR 1")
        assert first.startswith("+OK")
        assert len(unstuff(lines)) == size
        assert await client.command("DELE 1") == "+OK Message 1 deleted."
        assert (await client.command("RSET")).startswith("+OK")
        assert await client.command("NOOP") == "+OK"
        assert await client.command("QUIT") == "+OK goodbye"
        await client.aclose()


# -- response codes (RFC 2449 section 8, RFC 3206) -------------------------------------------


@pytest.mark.rfc("2449", "8.1.1")
async def test_code02_login_delay_never_answers_user(
    start_server: StartServer, connect: Connect, store: MemoryStore
) -> None:
    """CODE-02 (RFC 2449 §8.1.1): [LOGIN-DELAY] is not given to USER (it would reveal
    that the user exists); it comes at PASS, and only for the right password."""
    running = await start_server(factory(store, login_delay=LoginDelay(900)))
    first = await connect(running.port)
    await first.login()
    assert (await first.command("QUIT")).startswith("+OK")
    client = await connect(running.port)
    assert await client.command("USER alice") == "+OK Send your password."
    assert await client.command("PASS wrong") == "-ERR [AUTH] Authentication failed."
    assert await client.command("USER alice") == "+OK Send your password."
    assert await client.command("PASS secret") == (
        "-ERR [LOGIN-DELAY] Login delay not yet expired."
    )
    assert await client.command("USER nosuchuser") == "+OK Send your password."


@pytest.mark.rfc("3206", "4")
async def test_code05_damaged_maildrop_is_sys_perm(
    start_server: StartServer, connect: Connect, tmp_path: Path
) -> None:
    """CODE-05 (RFC 3206 §4): a damaged maildrop (cur/ is a file) is [SYS/PERM]."""
    root = tmp_path / "mail"
    (root / "alice").mkdir(parents=True)
    (root / "alice" / "cur").write_bytes(b"not a directory")
    running = await start_server(
        functools.partial(MailboxHandler, MaildirStore(root), MemoryAuthenticator(MAILBOX_USERS))
    )
    client = await connect(running.port)
    assert await client.command("USER alice") == "+OK Send your password."
    assert await client.command("PASS secret") == "-ERR [SYS/PERM] Mailbox is damaged."
    reply = await client.command("AUTH PLAIN " + b64("\0alice\0secret"))
    assert reply == "-ERR [SYS/PERM] Mailbox is damaged."


class CrashingAuthenticator(Authenticator):
    """MemoryAuthenticator's users, and a password database that is down for "crash"."""

    def __init__(self, users: dict[str, str]) -> None:
        self.inner = MemoryAuthenticator(users)

    async def check_password(self, user: str, password: str) -> bool:
        if user == "crash":
            raise RuntimeError("database unreachable")
        return await self.inner.check_password(user, password)

    async def get_secret(self, user: str) -> str | None:
        return await self.inner.get_secret(user)


@pytest.mark.rfc("3206", "6")
async def test_code07_auth_code_for_credentials_only(
    start_server: StartServer, store: MemoryStore
) -> None:
    """CODE-07 (RFC 3206 §6): with AUTH-RESP-CODE announced, every failure caused by the
    credentials carries [AUTH]; a server fault or a busy maildrop never does."""
    running = await start_server(
        functools.partial(
            MailboxHandler,
            store,
            CrashingAuthenticator(MAILBOX_USERS),
            apop=True,
            mechanisms=ALL_MECHANISMS,
        )
    )
    failed = "-ERR [AUTH] Authentication failed."
    client, greeting = await open_client(running.port)
    assert b"AUTH-RESP-CODE" in await capa(client)
    for user, password in (("alice", "wrong"), ("nosuchuser", "secret")):
        assert await client.command(f"USER {user}") == "+OK Send your password."
        assert await client.command(f"PASS {password}") == failed
    assert await client.command(f"APOP alice {apop_digest(greeting, 'wrong')}") == failed
    await client.aclose()
    client, _ = await open_client(running.port)
    assert await client.command("AUTH PLAIN " + b64("\0alice\0wrong")) == failed
    assert await client.command("AUTH LOGIN " + b64("alice")) == "+ " + b64("Password:")
    assert await client.command(b64("wrong")) == failed
    challenge = base64.b64decode((await client.command("AUTH CRAM-MD5"))[2:])
    digest = hmac.new(b"wrong", challenge, "md5").hexdigest()
    assert await client.command(b64(f"alice {digest}")) == failed
    assert await scram_login(client, "alice", "wrong") == failed
    await client.aclose()
    # Not the credentials: the authenticator fails, or the maildrop is in use.
    client, _ = await open_client(running.port)
    assert await client.command("USER crash") == "+OK Send your password."
    assert await client.command("PASS x") == "-ERR [SYS/TEMP] Internal error."
    holder, _ = await open_client(running.port)
    await holder.login()
    assert await client.command("AUTH PLAIN " + b64("\0alice\0secret")) == (
        "-ERR [IN-USE] Mailbox is locked by another POP3 session."
    )
    for c in (client, holder):
        await c.aclose()


# -- SASL (RFC 5034) --------------------------------------------------------------------


@pytest.mark.rfc("5034", "4")
async def test_sasl03_unsupported_mechanism(mailbox_port: int, connect: Connect) -> None:
    """SASL-03 (RFC 5034 §4): an unsupported mechanism is rejected with -ERR, and the
    session goes on in AUTHORIZATION."""
    client = await connect(mailbox_port)
    unsupported = "-ERR [AUTH] Unsupported authentication mechanism."
    assert await client.command("AUTH FOOBAR") == unsupported
    assert await client.command("AUTH CRAM-MD5") == unsupported  # not configured here
    assert await client.command("AUTH FOOBAR " + b64("x")) == unsupported
    assert await client.command("STAT") == "-ERR STAT not allowed in AUTHORIZATION state."
    assert (await client.command("AUTH PLAIN " + b64("\0alice\0secret"))).startswith("+OK")


@pytest.mark.rfc("5034", "4")
async def test_sasl09_auth_line_over_255_octets(
    start_server: StartServer, connect: Connect
) -> None:
    """SASL-09 (RFC 5034 §4): a client should not put an initial response that makes
    AUTH longer than 255 octets; trio_pop3 accepts such a line anyway (pick)."""
    password = "p" * 255
    running = await start_server(factory(MemoryStore({"alice": []}), {"alice": password}))
    client = await connect(running.port)
    line = "AUTH PLAIN " + b64(f"\0alice\0{password}")
    assert len(line) + 2 > 255
    assert await client.command(line) == "+OK Logged in, 0 messages (0 octets)."


@pytest.mark.rfc("5034", "4")
async def test_sasl14_failed_auth_then_other_methods(
    start_server: StartServer, store: MemoryStore
) -> None:
    """SASL-14 (RFC 5034 §4): after a failed or cancelled AUTH the client may try another
    AUTH, USER/PASS or APOP, in the same session."""
    running = await start_server(factory(store, apop=True))
    client, greeting = await open_client(running.port)
    assert await client.command("AUTH PLAIN " + b64("\0alice\0wrong")) == (
        "-ERR [AUTH] Authentication failed."
    )
    assert await client.command("AUTH PLAIN") == "+ "
    assert await client.command("*") == "-ERR Authentication aborted by client."
    assert (await client.command("AUTH NOSUCH")).startswith("-ERR")
    assert (await client.command(f"APOP alice {apop_digest(greeting, 'secret')}")).startswith(
        "+OK"
    )
    assert (await client.command("QUIT")).startswith("+OK")
    await client.aclose()
    for then in (["USER alice", "PASS secret"], ["AUTH LOGIN " + b64("alice"), b64("secret")]):
        client, _ = await open_client(running.port)
        assert await client.command("AUTH LOGIN " + b64("alice")) == "+ " + b64("Password:")
        assert await client.command(b64("wrong")) == "-ERR [AUTH] Authentication failed."
        reply = ""
        for line in then:
            reply = await client.command(line)
        assert reply.startswith("+OK Logged in"), reply
        assert (await client.command("QUIT")).startswith("+OK")
        await client.aclose()


@pytest.mark.rfc("5034", "4")
async def test_sasl14_a_failed_auth_leaves_authorization_as_it_was(
    mailbox_port: int, connect: Connect
) -> None:
    """SASL-14 (RFC 5034 §4): after a failed AUTH the client may try another mechanism,
    USER/PASS or APOP.  A USER sent before the AUTH must be sent again: RFC 1939 §7
    (USER-01) lets PASS follow only right after USER, and Dovecot does the same."""
    client = await connect(mailbox_port)
    assert await client.command("USER alice") == "+OK Send your password."
    assert await client.command("AUTH PLAIN " + b64("\0alice\0wrong")) == (
        "-ERR [AUTH] Authentication failed."
    )
    assert await client.command("PASS secret") == "-ERR No user name given."
    assert (
        await client.command("AUTH X-NONE") == "-ERR [AUTH] Unsupported authentication mechanism."
    )
    assert await client.command("USER alice") == "+OK Send your password."
    assert (await client.command("PASS secret")).startswith("+OK Logged in")


@pytest.mark.rfc("5034", "3")
async def test_sasl17_sasl_still_announced_after_auth(
    mailbox_port: int, connect: Connect, tls_server: TLSServer, client_context: ssl.SSLContext
) -> None:
    """SASL-17 (RFC 5034 §3): the SASL capability stays, unchanged, after a successful
    AUTH; its list may change after STLS."""
    client = await connect(mailbox_port)
    sasl = b"SASL PLAIN LOGIN SCRAM-SHA-256"
    assert sasl in await capa(client)
    assert (await client.command("AUTH PLAIN " + b64("\0alice\0secret"))).startswith("+OK")
    assert sasl in await capa(client)
    assert await client.command("AUTH PLAIN") == "-ERR AUTH not allowed in TRANSACTION state."
    stream, client = await plain_client(tls_server.port)
    assert b"SASL SCRAM-SHA-256" in await capa(client)  # plaintext: no PLAIN, no LOGIN
    assert await client.command("STLS") == "+OK Begin TLS negotiation now."
    secure = await starttls(stream, client_context)
    assert sasl in await capa(secure)
    assert (await secure.command("AUTH PLAIN " + b64("\0alice\0secret"))).startswith("+OK")
    assert sasl in await capa(secure)
    await secure.aclose()


@pytest.mark.rfc("5034", "5")
async def test_sasl20_mechanism_names_are_case_insensitive(
    start_server: StartServer, store: MemoryStore
) -> None:
    """SASL-20 (RFC 5034 §5): "auth plain" works; mechanism names are case-insensitive,
    base64 is not."""
    running = await start_server(factory(store, mechanisms=ALL_MECHANISMS))
    ir = b64("\0alice\0secret")
    for line in (f"auth plain {ir}", f"AUTH Plain {ir}", f"aUtH pLaIn {ir}"):
        client, _ = await open_client(running.port)
        assert (await client.command(line)).startswith("+OK Logged in"), line
        assert (await client.command("QUIT")).startswith("+OK")
        await client.aclose()
    client, _ = await open_client(running.port)
    assert await client.command("auth login") == "+ " + b64("Username:")
    assert await client.command("*") == "-ERR Authentication aborted by client."
    assert await client.command("Auth Scram-Sha-256") == "+ "
    assert await client.command("*") == "-ERR Authentication aborted by client."
    assert (await client.command("auth cram-md5")).startswith("+ ")
    assert await client.command("*") == "-ERR Authentication aborted by client."
    assert ir.swapcase() != ir
    reply = await client.command(f"AUTH PLAIN {ir.swapcase()}")
    assert reply.startswith("-ERR [AUTH]"), reply
    await client.aclose()


@pytest.mark.rfc("5034", "3")
async def test_sasl21_auth_without_initial_response(
    start_server: StartServer, store: MemoryStore
) -> None:
    """SASL-21 (RFC 5034 §3, RFC 1734): AUTH without an initial response works for every
    mechanism; a server announcing no SASL answers such an AUTH with a clean -ERR."""
    running = await start_server(factory(store, mechanisms=ALL_MECHANISMS))
    client, _ = await open_client(running.port)
    first_challenges = {
        "PLAIN": "+ ",
        "LOGIN": "+ " + b64("Username:"),
        "SCRAM-SHA-256": "+ ",
    }
    for mechanism, challenge in first_challenges.items():
        assert await client.command(f"AUTH {mechanism}") == challenge
        assert await client.command("*") == "-ERR Authentication aborted by client."
    cram = base64.b64decode((await client.command("AUTH CRAM-MD5"))[2:])
    assert re.fullmatch(rb"<\d+\.\d+@[^<>]+>", cram), cram
    digest = hmac.new(b"secret", cram, "md5").hexdigest()
    assert (await client.command(b64(f"alice {digest}"))).startswith("+OK Logged in")
    await client.aclose()
    running = await start_server(factory(MemoryStore({"alice": []}), mechanisms=()))
    client, _ = await open_client(running.port)
    assert not any(line.startswith(b"SASL") for line in await capa(client))
    assert await client.command("AUTH PLAIN") == (
        "-ERR [AUTH] Unsupported authentication mechanism."
    )
    assert (await client.command("USER alice")).startswith("+OK")
    assert (await client.command("PASS secret")).startswith("+OK Logged in")
    await client.aclose()


@pytest.mark.rfc("1734", "2")
async def test_sasl22_bare_auth_lists_the_usable_mechanisms(
    mailbox_port: int, connect: Connect, tls_server: TLSServer, client_context: ssl.SSLContext
) -> None:
    """SASL-22 (RFC 1734, pick): bare AUTH lists the mechanisms usable now, as the SASL
    capability does (Outlook sends it)."""
    client = await connect(mailbox_port)
    assert await client.multi("AUTH") == ("+OK", [b"PLAIN", b"LOGIN", b"SCRAM-SHA-256"])
    stream, client = await plain_client(tls_server.port)
    assert await client.multi("AUTH") == ("+OK", [b"SCRAM-SHA-256"])
    assert await client.command("STLS") == "+OK Begin TLS negotiation now."
    secure = await starttls(stream, client_context)
    assert await secure.multi("AUTH") == ("+OK", [b"PLAIN", b"LOGIN", b"SCRAM-SHA-256"])
    assert (await secure.command("AUTH PLAIN " + b64("\0alice\0secret"))).startswith("+OK")
    await secure.aclose()


# -- STLS, TLS policy (RFC 2595) ---------------------------------------------------------------


@pytest.mark.rfc("2595", "4")
async def test_tls03_client_certificate_is_no_login(
    nursery: trio.Nursery, ca: trustme.CA, tmp_path: Path
) -> None:
    """TLS-03 (RFC 2595 §4), CONN-03: a client certificate presented in the handshake
    (STLS or implicit TLS) leaves the session in AUTHORIZATION."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    context.verify_mode = ssl.CERT_OPTIONAL
    ca.configure_trust(context)
    running = await start(nursery, context)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    ca.issue_cert("alice.client.example").configure_cert(client_ctx)
    stream, plain = await plain_client(running.port)
    assert await plain.command("STLS") == "+OK Begin TLS negotiation now."
    implicit = Client(
        await trio.open_ssl_over_tcp_stream(
            "127.0.0.1", running.pop3s_port, ssl_context=client_ctx
        )
    )
    assert (await implicit.reply()).startswith("+OK")
    for client in (await starttls(stream, client_ctx), implicit):
        assert client.stream.getpeercert() is not None  # type: ignore[attr-defined]
        assert await client.command("STAT") == "-ERR STAT not allowed in AUTHORIZATION state."
        await client.login()
        assert await client.command("STAT") == f"+OK 1 {wire_size(MESSAGE)}"
        await client.aclose()


@pytest.mark.rfc("2595", "2.2")
async def test_tls07_library_privacy_mode(
    nursery: trio.Nursery, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """TLS-07 (RFC 2595 §2.2): configured with only TLS-requiring mechanisms, the library
    refuses every authentication before TLS, and ends the session if TLS is shut down."""
    privacy = [m for m in DEFAULT_MECHANISMS if m.plaintext]  # PLAIN, LOGIN
    running = await start(nursery, server_context, mechanisms=privacy)
    stream, client = await plain_client(running.port)
    caps = await capa(client)
    assert b"USER" not in caps
    assert not any(c.startswith(b"SASL") for c in caps)
    assert (await client.command("USER alice")).startswith("-ERR [AUTH]")
    assert (await client.command("AUTH PLAIN " + b64("\0alice\0secret"))).startswith("-ERR")
    assert (await client.command("AUTH SCRAM-SHA-256")).startswith("-ERR")
    assert await client.multi("AUTH") == ("+OK", [])
    assert await client.command("STLS") == "+OK Begin TLS negotiation now."
    secure = await starttls(stream, client_context)
    await secure.login()
    tls = secure.stream
    assert isinstance(tls, trio.SSLStream)
    raw, _ = await tls.unwrap()  # close_notify: the encryption layer goes away
    received = b""
    try:
        await raw.send_all(b"STAT\r\n")
        while chunk := await raw.receive_some(4096):
            received += chunk
    except trio.BrokenResourceError:
        pass
    assert received == b""  # no plaintext reply: the session ended with TLS
    await raw.aclose()
    assert not running.store.is_locked("alice")


@pytest.mark.rfc("2595", "2.2")
async def test_tls07_require_tls_refuses_every_login_before_tls(
    nursery: trio.Nursery, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """TLS-07 (RFC 2595 §2.2): ``require_tls`` (``serve --require-tls``, as the command
    line builds it) refuses every login before STLS, SCRAM included, and offers none."""
    store = MemoryStore({"alice": [MESSAGE]})
    server = _make_server(
        store,
        MemoryAuthenticator(MAILBOX_USERS),
        require_tls=True,
        apop=True,
        host="127.0.0.1",
        port=0,
        ssl_context=server_context,
        limits=FAST_LIMITS,
    )
    port = await serve(nursery, server)
    stream, client = await plain_client(port)
    caps = await capa(client)
    assert b"STLS" in caps
    assert b"USER" not in caps
    assert not any(c.startswith(b"SASL") for c in caps)
    refused = "-ERR [AUTH] TLS is required; send STLS first."
    bare = b"n,,n=alice,r=Xn0nceFromTheClient"
    assert await client.command("AUTH SCRAM-SHA-256 " + b64(bare)) == refused
    assert await client.command("AUTH PLAIN " + b64("\0alice\0secret")) == refused
    assert await client.command("USER alice") == refused
    assert await client.command("APOP alice " + "0" * 32) == refused
    assert await client.command("STLS") == "+OK Begin TLS negotiation now."
    secure = await starttls(stream, client_context)
    assert b"USER" in await capa(secure)
    await secure.login()
    first, _ = await secure.multi("RETR 1")
    assert first.startswith("+OK")
    await secure.aclose()
    # APOP after STLS, with the timestamp of the plaintext greeting (its only place).
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    client = Client(stream)
    greeting = await client.reply()
    assert await client.command("STLS") == "+OK Begin TLS negotiation now."
    secure = await starttls(stream, client_context)
    reply = await secure.command(f"APOP alice {apop_digest(greeting, 'secret')}")
    assert reply.startswith("+OK")
    await secure.aclose()


@pytest.mark.rfc("2595", "2.3")
async def test_a_trusted_network_counts_as_secure(
    nursery: trio.Nursery, server_context: ssl.SSLContext
) -> None:
    """TLS-05 (RFC 2595 §2.3) as Dovecot reads it: ``login_trusted_networks`` (here
    ``Limits.trusted_networks``, ``--trusted-network``) lift the plaintext rule and
    ``require_tls``, for a webmail front end on the same host."""
    server = _make_server(
        MemoryStore({"alice": [MESSAGE]}),
        MemoryAuthenticator(MAILBOX_USERS),
        require_tls=True,
        host="127.0.0.1",
        port=0,
        ssl_context=server_context,
        limits=Limits(auth_failure_delay=0, trusted_networks=["127.0.0.0/8"]),
    )
    port = await serve(nursery, server)
    client, _ = await open_client(port)
    assert b"USER" in await capa(client)
    await client.login()  # USER/PASS in plaintext, from a trusted address
    await client.aclose()


@pytest.mark.rfc("2595", "2.5")
async def test_tls09_failed_negotiation_is_never_plaintext(tls_server: TLSServer) -> None:
    """TLS-09 (RFC 2595 §2.5): when the negotiation after STLS fails, the session does not
    go on unprotected: the plaintext sent instead of a handshake gets no reply."""
    stream, client = await plain_client(tls_server.port)
    assert await client.command("STLS") == "+OK Begin TLS negotiation now."
    await client.send(b"USER alice\r\nPASS secret\r\nDELE 1\r\nQUIT\r\n")
    try:
        with trio.fail_after(10):
            received = await client.read_to_eof()
    except trio.BrokenResourceError:
        received = b""
    assert b"+OK" not in received, received
    assert b"-ERR" not in received, received
    await stream.aclose()
    assert tls_server.store.messages("alice") == [MESSAGE]


@pytest.mark.rfc("6856", "2.1")
async def test_tls11_stls_after_utf8_is_refused(
    nursery: trio.Nursery, server_context: ssl.SSLContext
) -> None:
    """TLS-11 / UTF8-08 (RFC 6856 §2.1): STLS after UTF8 gets -ERR with no response
    code, so UTF-8 mode sent in plaintext (perhaps injected) never reaches a TLS
    session; the plaintext session goes on."""
    running = await start(nursery, server_context)
    stream, client = await plain_client(running.port)
    _, before = await client.multi("CAPA")
    assert b"STLS" in before
    # USER is not offered before TLS here (TLS-05), so neither is "UTF8 USER".
    assert b"UTF8" in before
    assert b"UTF8 USER" not in before
    assert await client.command("UTF8") == "+OK UTF8 enabled."
    _, after = await client.multi("CAPA")
    assert b"STLS" not in after  # CAPA shows what may be used now (RFC 2449 section 5)
    assert await client.command("STLS") == "-ERR STLS is not allowed after UTF8."
    assert await client.command("NOOP") == "-ERR NOOP not allowed in AUTHORIZATION state."
    assert (await client.command("QUIT")).startswith("+OK")
    await stream.aclose()


@pytest.mark.rfc("6856", "7")
async def test_lang_before_stls_does_not_survive_it(
    nursery: trio.Nursery, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """RFC 6856 §7 (with TLS-11): a LANG injected before STLS does not govern the TLS session."""
    store = MemoryStore({"alice": []})
    server = POP3Server(
        functools.partial(GermanHandler, store, MemoryAuthenticator(MAILBOX_USERS)),
        host="127.0.0.1",
        port=0,
        ssl_context=server_context,
        limits=FAST_LIMITS,
    )
    port = await serve(nursery, server)
    stream, client = await plain_client(port)
    assert await client.command("LANG de") == "+OK de Language changed."
    assert await client.command("STLS") == "+OK Begin TLS negotiation now."
    secure = await starttls(stream, client_context)
    await secure.login()
    reply = await secure.command("NOOP")
    await secure.aclose()
    assert reply == "+OK Nothing to do.", reply


# -- LANG, UTF8 (RFC 6856) --------------------------------------------------------------------


@pytest.mark.rfc("6856", "7")
async def test_lang03_language_not_changed_by_login_commands(
    start_server: StartServer, connect: Connect
) -> None:
    """LANG-03 (RFC 6856 §7): USER, PASS and APOP never change the active language, so
    ``LANG *`` reveals nothing about a user name before its credentials are checked."""
    store = MemoryStore({"alice": []})
    running = await start_server(
        functools.partial(GermanHandler, store, MemoryAuthenticator(MAILBOX_USERS), apop=True)
    )
    client = await connect(running.port)
    answers = []
    for user in ("alice", "nosuchuser"):
        assert await client.command(f"USER {user}") == "+OK Send your password."
        answers.append(await client.command("LANG *"))
    assert answers == ["+OK en Language changed."] * 2
    assert await client.command("LANG de") == "+OK de Language changed."
    for user in ("alice", "nosuchuser"):
        assert await client.command(f"USER {user}") == "+OK Send your password."
        assert await client.command("PASS wrong") == "-ERR [AUTH] Authentication failed."
    assert (await client.command("APOP alice " + "0" * 32)).startswith("-ERR [AUTH]")
    await client.login()
    assert await client.command("NOOP") == "+OK Nichts zu tun."  # still de


@pytest.mark.rfc("6856", "2.2")
async def test_utf8_05_invalid_and_prohibited_user_names_refused(
    start_server: StartServer, connect: Connect
) -> None:
    """UTF8-05 (RFC 6856 §2.2): a user name with a SASLprep-prohibited character, or
    USER/PASS arguments that are not UTF-8, are refused."""
    store = MemoryStore({"al\ue000ice": [], "alice": []})
    users = {"al\ue000ice": "secret", "alice": "secret"}
    running = await start_server(factory(store, users, apop=True))
    client = await connect(running.port)
    assert await client.command("USER al\ue000ice") == "-ERR [AUTH] Authentication failed."
    assert await client.command("PASS secret") == "-ERR No user name given."
    assert (await client.command(b"USER al\xffice")) == "-ERR Command is not valid UTF-8."
    assert await client.command("USER alice") == "+OK Send your password."
    assert (await client.command(b"PASS secr\xe9t")) == "-ERR Command is not valid UTF-8."
    assert (await client.command("APOP al\ue000ice " + "0" * 32)).startswith("-ERR [AUTH]")


@pytest.mark.rfc("6856", "2.2")
async def test_utf8_05_password_with_prohibited_character_refused(
    start_server: StartServer, connect: Connect
) -> None:
    """UTF8-05 (RFC 6856 §2.2): "When applying SASLprep, servers MUST reject UTF-8
    usernames or passwords that contain a UTF-8 character listed in Section 2.3 of
    SASLprep" (U+E000 is private use, RFC 3454 C.3)."""
    running = await start_server(factory(MemoryStore({"alice": []}), {"alice": "pass\ue000word"}))
    client = await connect(running.port)
    assert b"UTF8 USER" in await capa(client)  # the server applies SASLprep (UTF8-04)
    assert await client.command("USER alice") == "+OK Send your password."
    assert (await client.command("PASS pass\ue000word")).startswith("-ERR")


# -- sizes (RFC 6856 section 2.1) -------------------------------------------------------------


@pytest.mark.rfc("6856", "2.1")
async def test_size02_list_size_is_retr_octets_in_utf8_mode(
    start_server: StartServer, connect: Connect
) -> None:
    """SIZE-02 (RFC 6856 §2.1): in UTF-8 mode LIST's size is the octets RETR sends."""
    messages = [UTF8_MESSAGE, b"Subject: caf\xe9\n\nlatin-1\n", b".dot\nS: x\n\nno end"]
    running = await start_server(factory(MemoryStore({"alice": messages})))
    client = await connect(running.port)
    assert await client.command("UTF8") == "+OK UTF8 enabled."
    await client.login()
    for number in range(1, len(messages) + 1):
        listed = int((await client.command(f"LIST {number}")).split()[2])
        first, lines = await client.multi(f"RETR {number}")
        assert first == f"+OK {listed} octets"
        assert len(unstuff(lines)) == listed


@pytest.mark.rfc("6856", "2.1")
async def test_size02_list_size_is_retr_octets_for_a_surrogate(
    start_server: StartServer, connect: Connect
) -> None:
    """SIZE-02 (RFC 6856 §2.1), SIZE-01 (RFC 1939 §5): LIST's size SHOULD match the octets
    RETR sends, also when RETR sends a surrogate to a client not in UTF-8 mode."""
    running = await start_server(
        factory(MemoryStore({"alice": [UTF8_MESSAGE]}), utf8_legacy="downgrade")
    )
    client = await connect(running.port)
    await client.login()
    listed = int((await client.command("LIST 1")).split()[2])
    first, lines = await client.multi("RETR 1")
    assert len(unstuff(lines)) == listed, (first, listed)


# -- state (RFC 1939 section 4) -----------------------------------------------------------


class EndSignallingHandler(MailboxHandler):
    """Sets ``ended`` when the session's disconnect hook has run."""

    def __init__(self, *args: object, ended: Callable[[], None], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._ended = ended

    async def disconnect(self) -> None:
        try:
            await super().disconnect()
        finally:
            self._ended()


@pytest.mark.rfc("1939", "4")
async def test_state02_transaction_starts_with_nothing_deleted(
    start_server: StartServer, store: MemoryStore, authenticator: Authenticator
) -> None:
    """STATE-02 (RFC 1939 §4): the maildrop is locked before +OK, and TRANSACTION starts
    with no message marked deleted (a dropped session's DELEs are gone)."""
    ended = trio.Event()
    running = await start_server(
        functools.partial(EndSignallingHandler, store, authenticator, ended=ended.set)
    )
    client, _ = await open_client(running.port)
    await client.login()
    assert await client.command("DELE 1") == "+OK Message 1 deleted."
    assert await client.command("DELE 3") == "+OK Message 3 deleted."
    await client.aclose()  # no QUIT
    with trio.fail_after(10):
        await ended.wait()
    client, _ = await open_client(running.port)
    assert await client.command("USER alice") == "+OK Send your password."
    assert not store.is_locked("alice")
    assert await client.command("PASS secret") == f"+OK Logged in, 3 messages ({TOTAL} octets)."
    assert store.is_locked("alice")  # taken before the +OK arrived
    assert await client.command("STAT") == f"+OK 3 {TOTAL}"
    for number in (1, 3):
        assert (await client.multi(f"RETR {number}"))[0].startswith("+OK")
        assert await client.command(f"DELE {number}") == f"+OK Message {number} deleted."
    await client.aclose()


# -- TOP (RFC 1939 section 8) -------------------------------------------------------------


class NoTopHandler(MailboxHandler):
    """A download-and-delete site that turns TOP off."""

    pop3_TOP = None  # type: ignore[assignment]  # noqa: N815 - the command's method name


@pytest.mark.rfc("1939", "8")
async def test_top03_site_can_disable_top(
    start_server: StartServer, connect: Connect, store: MemoryStore
) -> None:
    """TOP-03 (RFC 1939 §8): a site may disable TOP: CAPA no longer announces it and the
    command is unknown, while RETR still works."""
    running = await start_server(
        functools.partial(NoTopHandler, store, MemoryAuthenticator(MAILBOX_USERS))
    )
    client = await connect(running.port)
    assert b"TOP" not in await capa(client)
    await client.login()
    assert b"TOP" not in await capa(client)
    assert await client.command("TOP 1 0") == "-ERR Unknown command: TOP"
    assert (await client.multi("RETR 1"))[0] == f"+OK {wire_size(ALICE_MESSAGES[0])} octets"


# -- APOP (RFC 1939 section 13) -----------------------------------------------------------


class ApopOnlyHandler(MailboxHandler):
    """APOP and no USER/PASS: how a site obeys APOP-03 when it turns APOP on."""

    pop3_USER = None  # type: ignore[assignment]  # noqa: N815
    pop3_PASS = None  # type: ignore[assignment]  # noqa: N815


@pytest.mark.rfc("1939", "13")
async def test_apop03_a_site_can_offer_apop_without_pass(
    start_server: StartServer, store: MemoryStore
) -> None:
    """APOP-03 (RFC 1939 §13): a server should not allow both PASS and APOP for one
    mailbox.  APOP is off by default (APOP-04), so the default obeys.  With
    ``apop=True`` both work, as in Dovecot; a site that wants APOP alone removes USER
    and PASS in a subclass, and CAPA stops offering USER."""
    running = await start_server(factory(store, apop=True))
    client, greeting = await open_client(running.port)
    assert (await client.command(f"APOP alice {apop_digest(greeting, 'secret')}")).startswith(
        "+OK"
    )
    await client.aclose()
    running = await start_server(
        functools.partial(ApopOnlyHandler, store, MemoryAuthenticator(MAILBOX_USERS), apop=True)
    )
    client, greeting = await open_client(running.port)
    assert b"USER" not in await capa(client)
    assert await client.command("USER alice") == "-ERR Unknown command: USER"
    assert await client.command("PASS secret") == "-ERR Unknown command: PASS"
    assert (await client.command(f"APOP alice {apop_digest(greeting, 'secret')}")).startswith(
        "+OK"
    )
    await client.aclose()


async def test_apop_only_handler_behind_tls_has_a_capa(
    nursery: trio.Nursery, server_context: ssl.SSLContext
) -> None:
    """CAPA of a handler without USER, before STLS (TLS-05 hides USER there)."""
    server = POP3Server(
        functools.partial(ApopOnlyHandler, MemoryStore(), MemoryAuthenticator(MAILBOX_USERS)),
        host="127.0.0.1",
        port=0,
        ssl_context=server_context,
        limits=FAST_LIMITS,
    )
    port = await serve(nursery, server)
    client, _ = await open_client(port)
    caps = await capa(client)
    assert b"STLS" in caps
    assert b"USER" not in caps
    await client.aclose()

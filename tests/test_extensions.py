"""RFC 2449 LOGIN-DELAY and EXPIRE, RFC 6856 UTF8 and LANG, connection caps, the skeleton."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import poplib
import subprocess
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path

import pytest
import trio
import trio.testing
from pop3_support import (
    MAILBOX_USERS,
    Client,
    Connect,
    ForwardingMailbox,
    StartServer,
    memory_session,
)

from trio_pop3 import Limits, MailboxError, POP3Server
from trio_pop3.mailbox import (
    LoginDelay,
    Mailbox,
    MailboxHandler,
    MailStore,
    MemoryAuthenticator,
    MemoryStore,
    MessageInfo,
    _surrogates,
)
from trio_pop3.mailbox._handler import _SURROGATE_SIZES
from trio_pop3.mailbox._memory import MEMORY_CHUNK_SIZE
from trio_pop3.mailbox._surrogates import SurrogateSizes, surrogate

UTF8_HEADER = "Subject: Grüße aus Köln\n\nbody\n".encode()
ROOT = Path(__file__).resolve().parent.parent


def handler_factory(store: MailStore, **options: object) -> functools.partial[MailboxHandler]:
    return functools.partial(
        MailboxHandler,
        store,
        MemoryAuthenticator(MAILBOX_USERS),
        **options,  # type: ignore[arg-type]
    )


# -- LOGIN-DELAY and EXPIRE (RFC 2449 sections 6.5 and 6.7) --------------------------------


@pytest.mark.rfc("2449", "6.5")
async def test_login_delay_is_announced_and_enforced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """CAP-LDELAY: a server announcing LOGIN-DELAY enforces it with [LOGIN-DELAY] (CODE-01)."""
    store = MemoryStore({"alice": [b"Subject: x\n\nbody\n"]})
    factory = handler_factory(store, login_delay=LoginDelay(900))
    async with memory_session(factory) as session:
        _, capa = await session.client.multi("CAPA")
        assert b"LOGIN-DELAY 900" in capa
        await session.client.login()
        assert (await session.client.command("QUIT")).startswith("+OK")
    async with memory_session(factory) as session:
        await session.client.command("USER alice")
        reply = await session.client.command("PASS secret")
        assert reply.startswith("-ERR [LOGIN-DELAY]")
        assert (await session.client.command("STAT")).startswith("-ERR")  # not logged in
    assert not store.is_locked("alice")
    await trio.sleep(900)
    async with memory_session(factory) as session:
        await session.client.login()  # the delay has passed


@pytest.mark.rfc("2449", "6.7")
@pytest.mark.parametrize(("expire", "line"), [(0, b"EXPIRE 0"), ("NEVER", b"EXPIRE NEVER")])
async def test_expire_is_announced(expire: int | str, line: bytes) -> None:
    store = MemoryStore({"alice": [b"Subject: x\n\nbody\n"]})
    async with memory_session(handler_factory(store, expire=expire)) as session:
        _, capa = await session.client.multi("CAPA")
        assert line in capa
        await session.client.login()
        _, capa = await session.client.multi("CAPA")  # CAPA-03: both states
        assert line in capa


def test_expire_must_be_days_or_never() -> None:
    with pytest.raises(ValueError, match="expire"):
        MailboxHandler(MemoryStore(), MemoryAuthenticator({}), expire=-1)


# -- UTF8 (RFC 6856) ------------------------------------------------------------------------


@pytest.mark.rfc("6856", "2.1")
async def test_utf8_header_needs_utf8_mode() -> None:
    """UTF8-02 / CODE-08: without UTF8, RETR and TOP of such a message get -ERR [UTF8]."""
    store = MemoryStore({"alice": [UTF8_HEADER, b"Subject: ascii\n\nbody\n"]})
    async with memory_session(handler_factory(store)) as session:
        client = session.client
        _, capa = await client.multi("CAPA")
        assert b"UTF8 USER" in capa
        await client.login()
        assert (await client.command("RETR 1")).startswith("-ERR [UTF8]")
        assert (await client.command("TOP 1 0")).startswith("-ERR [UTF8]")
        assert (await client.command("LIST 1")).startswith("+OK 1 ")
        first, _ = await client.multi("RETR 2")  # plain ASCII mail is unaffected
        assert first.startswith("+OK")
        # UTF8 is an AUTHORIZATION-state command (UTF8-01).
        assert (await client.command("UTF8")).startswith("-ERR")


@pytest.mark.rfc("6856", "2.1")
async def test_downgrade_sends_an_ascii_surrogate_with_its_own_size() -> None:
    """UTF8-02: the surrogate of RFC 6857 instead of -ERR; RETR's size is its own."""
    message = "Subject: Grüße aus Köln\nFrom: Jörg <j@example.org>\n\nKöln body\n.dot\n"
    store = MemoryStore({"alice": [message.encode(), b"Subject: ascii\n\nbody\n"]})
    factory = handler_factory(store, utf8_legacy="downgrade")
    async with memory_session(factory) as session:
        client = session.client
        await client.login()
        first, lines = await client.multi("RETR 1")
        received = (
            b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines) + b"\r\n"
        )
        assert first == f"+OK {len(received)} octets"  # SIZE-01, for what RETR sends
        header, _, body = received.partition(b"\r\n\r\n")
        assert header.isascii()
        assert body == "Köln body\r\n.dot\r\n".encode()  # the body as stored
        assert b"Subject: =?utf-8?" in header
        first, lines = await client.multi("TOP 1 0")
        assert first.startswith("+OK")
        assert lines[-1] == b""
        assert all(line.isascii() for line in lines)
        first, lines = await client.multi("RETR 2")  # ASCII mail is as stored
        assert lines == [b"Subject: ascii", b"", b"body"]
    async with memory_session(factory) as session:  # in UTF8 mode: as stored
        client = session.client
        assert (await client.command("UTF8")).startswith("+OK")
        await client.login()
        first, lines = await client.multi("RETR 1")
        assert lines[0] == "Subject: Grüße aus Köln".encode()


@pytest.mark.parametrize("when", ["login", "retr"])
async def test_downgrade_runs_off_the_event_loop(
    start_server: StartServer, connect: Connect, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """Recoding a header takes about 10 us per octet (an audit froze the server for
    10 s with a 1 MB UTF-8 header): other sessions are served meanwhile."""
    started, release = threading.Event(), threading.Event()
    blocking = when == "login"

    def held_surrogate(data: bytes) -> tuple[bytes, int] | None:
        if blocking:
            started.set()
            assert release.wait(10)
        return surrogate(data)

    monkeypatch.setattr(_surrogates, "surrogate", held_surrogate)
    _SURROGATE_SIZES.clear()  # the size is computed at this login, not remembered
    utf8 = "Subject: Grüße aus Köln\n\nbody\n".encode()
    store = MemoryStore({"alice": [utf8], "bob": [b"Subject: hi\n\nbob\n"]})
    running = await start_server(handler_factory(store, utf8_legacy="downgrade"))
    bob = await connect(running.port)
    await bob.login("bob", MAILBOX_USERS["bob"])
    alice = await connect(running.port)
    await alice.send_line("USER alice")
    assert (await alice.reply()).startswith("+OK")
    await alice.send_line("PASS " + MAILBOX_USERS["alice"])
    if not blocking:
        assert (await alice.reply()).startswith("+OK")
        blocking = True
        await alice.send_line("RETR 1")
    await trio.to_thread.run_sync(started.wait, 10)
    with trio.fail_after(5):  # the event loop is not waiting for the recoding
        assert await bob.command("NOOP") == "+OK"
    release.set()
    reply = await alice.reply()
    assert reply.startswith("+OK"), reply
    if when == "retr":
        assert b"Subject: =?utf-8?" in b"".join(await alice.data_lines())


class CountingStore(MailStore):
    """A MemoryStore that counts the reads of each message, and what was removed."""

    def __init__(self, mail: dict[str, list[bytes]]) -> None:
        self.inner = MemoryStore(mail)
        self.reads = 0
        self.removed: list[MessageInfo] = []

    async def open(self, user: str) -> Mailbox:
        inner = await self.inner.open(user)
        outer = self

        class Counting(ForwardingMailbox):
            def read_message(self, message: MessageInfo) -> AsyncIterator[bytes]:
                assert type(message) is MessageInfo  # the backend's own entry
                outer.reads += 1
                return super().read_message(message)

            async def remove(self, messages: Sequence[MessageInfo]) -> None:
                outer.removed.extend(messages)
                await super().remove(messages)

        return Counting(inner)


@pytest.mark.rfc("1939", "5")
async def test_downgraded_messages_are_listed_with_the_size_retr_sends() -> None:
    """SIZE-01 (RFC 1939 §5), SIZE-02 (RFC 6856 §2.1): LIST, STAT and RETR agree.

    Clients size their buffers from LIST (Jakarta Mail computed a negative size
    when LIST gave the stored size of a downgraded message).  Headers are read once
    per process: the next login reads none.  The backend only ever sees its own
    entries, and DELE removes the right message.
    """
    utf8 = "Subject: Grüße aus Köln\nFrom: Jörg <j@example.org>\n\nbody\n".encode()
    ascii_mail = b"Subject: ascii\n\nbody\n"
    store = CountingStore({"alice": [ascii_mail, utf8, ascii_mail + b"2\n"]})
    factory = handler_factory(store, utf8_legacy="downgrade")
    async with memory_session(factory) as session:
        client = session.client
        await client.login()
        sent = {}
        for number in (1, 2, 3):
            first, lines = await client.multi(f"RETR {number}")
            sent[number] = len(b"\r\n".join(lines) + b"\r\n")  # no dot-lines here
            assert first == f"+OK {sent[number]} octets"
        assert sent[2] > len(utf8) + utf8.count(b"\n")  # larger than as stored
        _, listing = await client.multi("LIST")
        assert listing == [f"{n} {size}".encode() for n, size in sent.items()]
        assert await client.command("LIST 2") == f"+OK 2 {sent[2]}"
        assert await client.command("STAT") == f"+OK 3 {sum(sent.values())}"
        assert await client.command("DELE 2") == "+OK Message 2 deleted."
        assert await client.command("STAT") == f"+OK 2 {sent[1] + sent[3]}"
        assert (await client.command("QUIT")).startswith("+OK")
    assert [m.size for m in store.removed] == [len(utf8) + utf8.count(b"\n")]  # as stored
    reads = store.reads
    async with memory_session(factory) as session:
        await session.client.login()
        assert await session.client.command("STAT") == f"+OK 2 {sent[1] + sent[3]}"
    assert store.reads == reads  # both sizes remembered: no header read at login
    async with memory_session(factory) as session:  # in UTF8 mode: as stored
        client = session.client
        assert (await client.command("UTF8")).startswith("+OK")
        await client.login()
        assert await client.command("STAT") == f"+OK 2 {sent[1] + sent[3]}"


class SnapshotMailbox(Mailbox):
    """Hands out one snapshot of ``mail``; reads fail while ``failing`` holds numbers."""

    def __init__(self, mail: Sequence[bytes], snapshot: tuple[MessageInfo, ...]) -> None:
        self.mail, self.snapshot = mail, snapshot
        self.failing: set[int] = set()
        self.reads = 0

    async def list_messages(self) -> Sequence[MessageInfo]:
        return self.snapshot

    async def read_message(self, message: MessageInfo) -> AsyncIterator[bytes]:
        self.reads += 1
        assert isinstance(message.key, int)
        if message.key in self.failing:
            raise MailboxError("cannot read it now")
        yield self.mail[message.key]

    async def remove(self, messages: Sequence[MessageInfo]) -> None:
        raise AssertionError("nothing is deleted here")


def snapshot_of(mail: Sequence[bytes]) -> tuple[MessageInfo, ...]:
    return tuple(MessageInfo(f"u{n}", len(m) + m.count(b"\n"), n) for n, m in enumerate(mail))


@pytest.mark.rfc("1939", "5")
async def test_a_header_that_could_not_be_read_is_read_again() -> None:
    # SIZE-01: one failed read (NFS, running out of descriptors) must not leave the
    # stored size in LIST for every later login with the same snapshot.
    mail = [b"Subject: ascii\n\nbody\n", "Subject: café\n\nbody\n".encode()]
    snapshot = snapshot_of(mail)
    mailbox = SnapshotMailbox(mail, snapshot)
    sizes = SurrogateSizes()
    store = MemoryStore({})
    mailbox.failing = {1}
    first = await sizes.listing(store, "alice", mailbox, snapshot)
    assert first is snapshot  # the stored size, for now: RETR will answer
    mailbox.failing = set()
    second = await sizes.listing(store, "alice", mailbox, snapshot)
    made = surrogate(mail[1])
    assert made is not None
    assert [m.size for m in second] == [snapshot[0].size, snapshot[1].size + made[1]]
    assert mailbox.reads == 3  # message 1 once more; message 0 remembered
    assert await sizes.listing(store, "alice", mailbox, snapshot) is second
    assert mailbox.reads == 3


async def test_surrogate_sizes_are_bounded_per_maildrop() -> None:
    # Only each maildrop's latest listing is kept; the least recently listed
    # maildrops go first past the bound, never the one just listed.
    mail = [b"Subject: %d\n\nbody\n" % n for n in range(4)]
    snapshot = snapshot_of(mail)
    sizes = SurrogateSizes(max_messages=5)
    store = MemoryStore({})
    alice = SnapshotMailbox(mail, snapshot)
    await sizes.listing(store, "alice", alice, snapshot)
    await sizes.listing(store, "alice", alice, snapshot[2:])  # two were deleted
    assert alice.reads == 4
    assert await sizes.listing(store, "alice", alice, snapshot) == snapshot
    assert alice.reads == 6  # the deleted two were forgotten
    bob = SnapshotMailbox(mail, snapshot)
    await sizes.listing(store, "bob", bob, snapshot)  # 8 > 5: alice's goes
    await sizes.listing(store, "alice", alice, snapshot)
    assert alice.reads == 10
    big = SnapshotMailbox(mail * 3, snapshot_of(mail * 3))
    await sizes.listing(store, "carol", big, big.snapshot)  # alone past the bound: kept
    await sizes.listing(store, "carol", big, big.snapshot)
    assert big.reads == 12


@pytest.mark.rfc("1939", "5")
async def test_a_shared_snapshot_keeps_one_surrogate_listing() -> None:
    """Sessions of an unchanged maildrop share one listing, with no header reads."""
    mail = [b"Subject: ascii\n\nbody\n", "Subject: café\n\nbody\n".encode()]
    snapshot = tuple(MessageInfo(f"u{n}", len(m) + 3, n) for n, m in enumerate(mail))
    calls = 0

    class Shared(Mailbox):
        async def list_messages(self) -> Sequence[MessageInfo]:
            return snapshot

        async def read_message(self, message: MessageInfo) -> AsyncIterator[bytes]:
            nonlocal calls
            calls += 1
            assert isinstance(message.key, int)
            yield mail[message.key]

        async def remove(self, messages: Sequence[MessageInfo]) -> None:
            raise AssertionError("nothing is deleted here")

    class SharedStore(MailStore):
        async def open(self, user: str) -> Mailbox:
            return Shared()

    sizes = _SURROGATE_SIZES
    store = SharedStore()
    first = await sizes.listing(store, "alice", Shared(), snapshot)
    assert first is not snapshot
    made = surrogate(mail[1])
    assert made is not None
    assert made[1] > 0
    assert [m.size for m in first] == [snapshot[0].size, snapshot[1].size + made[1]]
    assert first[0] is snapshot[0]
    assert calls == 2
    assert await sizes.listing(store, "alice", Shared(), snapshot) is first
    ascii_only = snapshot[:1]
    assert await sizes.listing(store, "alice", Shared(), ascii_only) is ascii_only
    assert calls == 2  # each header read once


@pytest.mark.rfc("6856", "2.1")
async def test_utf8_header_in_a_later_chunk_needs_utf8_mode() -> None:
    """UTF8-02: the whole header decides, however many chunks the backend yields it in."""
    pad = b"X-Pad: " + b"a" * MEMORY_CHUNK_SIZE + b"\n"
    late_utf8 = pad + UTF8_HEADER
    long_ascii = pad + b"Subject: ascii\n\n" + "Grüße body\n".encode()
    store = MemoryStore({"alice": [late_utf8, long_ascii]})
    async with memory_session(handler_factory(store)) as session:
        client = session.client
        await client.login()
        assert (await client.command("RETR 1")).startswith("-ERR [UTF8]")
        assert (await client.command("TOP 1 0")).startswith("-ERR [UTF8]")
        # A long ASCII header: the chunks read ahead are sent, in order, once.
        first, lines = await client.multi("RETR 2")
        assert first.startswith("+OK"), first
        assert b"\r\n".join(lines) + b"\r\n" == long_ascii.replace(b"\n", b"\r\n")
        first, lines = await client.multi("TOP 2 0")
        assert lines == [pad.rstrip(b"\n"), b"Subject: ascii", b""]
        assert (await client.command("QUIT")).startswith("+OK")
    async with memory_session(handler_factory(store)) as session:
        client = session.client
        assert (await client.command("UTF8")).startswith("+OK")
        await client.login()
        first, lines = await client.multi("RETR 1")
        assert first.startswith("+OK"), first
        assert b"\r\n".join(lines) + b"\r\n" == late_utf8.replace(b"\n", b"\r\n")


@pytest.mark.rfc("6856", "2.1")
@pytest.mark.parametrize("separator", [b"\n\r\n", b"\r\n\n"])
async def test_utf8_body_after_mixed_line_ends_needs_no_utf8_mode(separator: bytes) -> None:
    """An ASCII header ended by a mixed LF/CRLF empty line: the UTF-8 after it is body."""
    message = b"Subject: ascii" + separator + "Grüße body\n".encode()
    store = MemoryStore({"alice": [message]})
    async with memory_session(handler_factory(store)) as session:
        await session.client.login()
        first, lines = await session.client.multi("RETR 1")
        assert first.startswith("+OK"), first
        assert lines == [b"Subject: ascii", b"", "Grüße body".encode()]
        first, lines = await session.client.multi("TOP 1 0")
        assert first.startswith("+OK"), first
        assert lines == [b"Subject: ascii", b""]


@pytest.mark.rfc("6856", "2.1")
async def test_latin1_header_needs_no_utf8_mode() -> None:
    """A legacy 8-bit header is not UTF-8, even when its last byte could start one."""
    message = b"Subject: caf\xe9\n\nbody\n"
    store = MemoryStore({"alice": [message]})
    async with memory_session(handler_factory(store)) as session:
        await session.client.login()
        first, lines = await session.client.multi("RETR 1")
        assert first.startswith("+OK"), first
        assert lines == [b"Subject: caf\xe9", b"", b"body"]


@pytest.mark.rfc("6856", "2.1")
async def test_utf8_mode_serves_messages_as_stored() -> None:
    store = MemoryStore({"alice": [UTF8_HEADER]})
    async with memory_session(handler_factory(store)) as session:
        client = session.client
        assert (await client.command("UTF8")).startswith("+OK")
        await client.login()
        first, lines = await client.multi("RETR 1")
        assert first.startswith("+OK")
        assert b"\r\n".join(lines) + b"\r\n" == UTF8_HEADER.replace(b"\n", b"\r\n")


async def test_utf8_legacy_send() -> None:
    """The operator may serve such mail to clients that never send UTF8 (like Dovecot)."""
    store = MemoryStore({"alice": [UTF8_HEADER]})
    async with memory_session(handler_factory(store, utf8_legacy="send")) as session:
        await session.client.login()
        first, lines = await session.client.multi("RETR 1")
        assert first.startswith("+OK")
        assert lines[0] == "Subject: Grüße aus Köln".encode()


@pytest.mark.rfc("6856", "2.2")
async def test_utf8_user_names_are_saslprepped() -> None:
    """UTF8-04: USER/PASS arguments are prepared with SASLprep (NBSP maps to SPACE)."""
    store = MemoryStore({"jörg": [b"Subject: x\n\nbody\n"]})
    factory = functools.partial(MailboxHandler, store, MemoryAuthenticator({"jörg": "pass word"}))
    async with memory_session(factory) as session:
        assert (await session.client.command("USER jörg")).startswith("+OK")
        assert (await session.client.command("PASS pass\u00a0word")).startswith("+OK")


# -- NUL octets (Dovecot's outlook-no-nuls workaround) --------------------------------------


@pytest.mark.parametrize("replace", [False, True])
async def test_replace_nuls(replace: bool) -> None:
    """RFC-CHECKLIST appendix A: NULs sent raw by default, as 0x80 with the option."""
    message = b"Subject: nul\r\n\r\nbefore\x00after\r\n\x00\r\n"
    store = MemoryStore({"alice": [message]})
    async with memory_session(handler_factory(store, replace_nuls=replace)) as s:
        await s.client.login()
        expected = message.replace(b"\0", b"\x80") if replace else message
        reply, lines = await s.client.multi("RETR 1")
        assert reply == f"+OK {len(message)} octets"  # SIZE-01: the size is unchanged
        assert b"\r\n".join(lines) + b"\r\n" == expected
        _, lines = await s.client.multi("TOP 1 1")
        nul = b"\x80" if replace else b"\x00"
        assert lines == [b"Subject: nul", b"", b"before" + nul + b"after"]


# -- LANG (RFC 6856 section 3) --------------------------------------------------------------


@pytest.mark.rfc("6856", "3")
async def test_lang_listing_and_choice_in_both_states() -> None:
    """CAP-LANG, LANG-01, LANG-02: announced and usable in AUTHORIZATION and TRANSACTION."""
    store = MemoryStore({"alice": [b"Subject: x\n\nbody\n"]})
    async with memory_session(handler_factory(store)) as s:
        for state in ("AUTHORIZATION", "TRANSACTION"):
            _, capa = await s.client.multi("CAPA")
            assert b"LANG" in capa, state
            listing = ("+OK Language listing follows:", [b"en English"])
            assert await s.client.multi("LANG") == listing
            assert await s.client.command("LANG en-US") == "+OK en Language changed."
            assert await s.client.command("LANG *") == "+OK en Language changed."
            # LANG-01: no match is -ERR, and the language stays as it was.
            assert (await s.client.command("LANG fr")).startswith("-ERR")
            assert (await s.client.command("LANG en_US")).startswith("-ERR")  # not a range
            if state == "AUTHORIZATION":
                await s.client.login()


class GermanHandler(MailboxHandler):
    """A handler that words one reply in the language LANG chose."""

    languages = {"en": "English", "de": "Deutsch"}

    async def pop3_NOOP(self, arg: str | None) -> None:
        await self.send_ok("Nichts zu tun." if self.language == "de" else "Nothing to do.")


async def test_lang_subclass_languages() -> None:
    store = MemoryStore({"alice": []})
    factory = functools.partial(GermanHandler, store, MemoryAuthenticator(MAILBOX_USERS))
    async with memory_session(factory) as s:
        _, listing = await s.client.multi("LANG")
        assert listing == [b"en English", b"de Deutsch"]
        await s.client.login()
        assert await s.client.command("NOOP") == "+OK Nothing to do."
        assert await s.client.command("LANG DE-at") == "+OK de Language changed."
        assert await s.client.command("NOOP") == "+OK Nichts zu tun."
        assert (await s.client.command("LANG it")).startswith("-ERR")
        assert await s.client.command("NOOP") == "+OK Nichts zu tun."
        assert await s.client.command("LANG *") == "+OK en Language changed."


# -- connection caps (hardening) --------------------------------------------------------------


async def test_connection_cap_per_address(nursery: trio.Nursery) -> None:
    """Past max_connections_per_address, a client gets -ERR [SYS/TEMP] and a close."""
    store = MemoryStore({"alice": [b"Subject: x\n\nbody\n"]})
    limits = Limits(auth_failure_delay=0, max_connections_per_address=2)
    server = POP3Server(handler_factory(store), host="127.0.0.1", port=0, limits=limits)
    listeners: list[trio.SocketListener] = await nursery.start(server.serve)
    port = listeners[0].socket.getsockname()[1]
    clients = [Client(await trio.open_tcp_stream("127.0.0.1", port)) for _ in range(2)]
    for client in clients:
        assert (await client.reply()).startswith("+OK")
    third = Client(await trio.open_tcp_stream("127.0.0.1", port))
    assert (await third.reply()).startswith("-ERR [SYS/TEMP]")
    assert await third.read_to_eof() == b""
    # Another loopback address is not affected.
    other = Client(await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2"))
    assert (await other.reply()).startswith("+OK")
    for client in [*clients, third, other]:
        await client.aclose()


async def test_trusted_network_skips_the_delay_and_the_address_cap(
    nursery: trio.Nursery,
) -> None:
    """Like Dovecot's login_trusted_networks: a front end logging in for many users."""
    store = MemoryStore({"alice": [b"Subject: x\n\nbody\n"]})
    limits = Limits(
        auth_failure_delay=2, max_connections_per_address=1, trusted_networks=["127.0.0.1/32"]
    )
    server = POP3Server(handler_factory(store), host="127.0.0.1", port=0, limits=limits)
    listeners: list[trio.SocketListener] = await nursery.start(server.serve)
    port = listeners[0].socket.getsockname()[1]
    trusted = [Client(await trio.open_tcp_stream("127.0.0.1", port)) for _ in range(3)]
    for client in trusted:  # past max_connections_per_address
        assert (await client.reply()).startswith("+OK")
    with trio.fail_after(1.5):  # untrusted, these two failures would take 2 + 4 s
        for _ in range(2):
            assert (await trusted[0].command("USER alice")).startswith("+OK")
            assert (await trusted[0].command("PASS wrong")).startswith("-ERR [AUTH]")
    await trusted[1].login()  # its address was not penalised either
    # 127.0.0.2 is not trusted: capped at one connection, and delayed.
    other = Client(await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2"))
    assert (await other.reply()).startswith("+OK")
    second = Client(await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2"))
    assert (await second.reply()).startswith("-ERR [SYS/TEMP]")
    assert (await other.command("USER alice")).startswith("+OK")
    start = trio.current_time()
    assert (await other.command("PASS wrong")).startswith("-ERR [AUTH]")
    assert trio.current_time() - start >= 2
    for client in [*trusted, other, second]:
        await client.aclose()


@pytest.mark.parametrize(
    ("address", "trusted"),
    [
        ("10.1.2.3", True),
        ("10.255.255.255", True),
        ("11.0.0.1", False),
        ("2001:db8::5", True),
        ("2001:db9::5", False),
        ("::ffff:10.0.0.7", True),  # IPv4-mapped, from a dual-stack socket
        ("", False),
        ("not an address", False),
    ],
)
def test_limits_trusted_networks(address: str, trusted: bool) -> None:
    limits = Limits(trusted_networks=["10.0.0.0/8", ipaddress.ip_network("2001:db8::/32")])
    assert limits.is_trusted(address) is trusted
    assert not Limits().is_trusted(address)


def test_limits_refuses_a_bad_trusted_network() -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 network"):
        Limits(trusted_networks=["10.0.0.0/33"])


# -- examples/skeleton.py -------------------------------------------------------------------


def test_skeleton_example_serves_poplib(tmp_path: Path) -> None:
    """The seed's synopsis runs as documented and serves poplib end to end."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "skeleton.py"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        assert b"serving on" in process.stdout.readline()  # printed once it is about to listen
        client = None
        for _ in range(100):
            try:
                client = poplib.POP3("127.0.0.1", port, timeout=10)
                break
            except ConnectionRefusedError:
                time.sleep(0.05)  # bounded poll: the listener is a moment behind the print
        assert client is not None
        assert client.getwelcome() == b"+OK POP3 My server ready"
        client.user("alice")
        client.pass_("wonderland")
        count, _ = client.stat()
        assert count == 7
        _, lines, octets = client.retr(1)
        assert lines[-1] == b"."  # a lone "." line survives byte-stuffing
        assert octets == sum(len(line) + 2 for line in lines)
        client.quit()
    finally:
        process.terminate()
        process.communicate(timeout=10)


class HeaderTrouble(MailStore):
    """alice's maildrop: reading message 1 fails, reading message 2 never ends."""

    def __init__(self, stuck: bool) -> None:
        self.inner = MemoryStore({"alice": [b"Subject: a\n\nx\n", UTF8_HEADER]})
        self.stuck = stuck
        self.reading = trio.Event()

    async def open(self, user: str) -> Mailbox:
        inner = await self.inner.open(user)
        outer = self

        class Troubled(ForwardingMailbox):
            async def read_message(self, message: MessageInfo) -> AsyncIterator[bytes]:
                if message.uid == (await self.list_messages())[0].uid:
                    raise MailboxError("Cannot read message.")
                outer.reading.set()
                if outer.stuck:
                    await trio.sleep_forever()
                chunks = super().read_message(message)
                assert isinstance(chunks, AsyncGenerator)  # MemoryMailbox's
                async with contextlib.aclosing(chunks):
                    async for chunk in chunks:
                        yield chunk

        return Troubled(inner)


async def test_a_header_that_cannot_be_read_at_login_keeps_its_stored_size() -> None:
    """The login's header scan is a courtesy: a read error there fails nothing."""
    store = HeaderTrouble(stuck=False)
    async with memory_session(handler_factory(store, utf8_legacy="downgrade")) as session:
        client = session.client
        await client.login()
        assert await client.command("LIST 1") == "+OK 1 17"  # as stored, CRLF counted
        assert await client.command("RETR 1") == "-ERR [SYS/TEMP] Cannot read message."
        assert (await client.command("QUIT")).startswith("+OK")
    assert len(store.inner.messages("alice")) == 2  # nothing removed


async def test_a_login_cancelled_during_the_header_scan_releases_the_maildrop(
    start_server: StartServer, connect: Connect
) -> None:
    """STATE-06: shutdown's grace ends a login stuck reading headers; no lock is left."""
    store = HeaderTrouble(stuck=True)
    running = await start_server(handler_factory(store, utf8_legacy="downgrade"))
    client = await connect(running.port)
    assert (await client.command("USER alice")).startswith("+OK")
    await client.send("PASS secret\r\n")
    await store.reading.wait()
    assert store.inner.is_locked("alice")
    running.server.shutdown(grace=0.1)
    assert await client.read_to_eof() == b""  # cancelled mid-command: no reply
    assert not store.inner.is_locked("alice")
    assert len(store.inner.messages("alice")) == 2

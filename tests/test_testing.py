"""trio_pop3.testing: the test client, the session helpers and the conformance check."""

from __future__ import annotations

import functools
import os
import poplib
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from trio_pop3 import Limits, POP3Handler, POP3Server, wire_size
from trio_pop3.mailbox import (
    Mailbox,
    MailboxHandler,
    MaildirStore,
    MailStore,
    MemoryAuthenticator,
    MemoryStore,
    MessageInfo,
    deliver,
)
from trio_pop3.testing import (
    CONFORMANCE_MESSAGES,
    CONFORMANCE_RULES,
    TEST_LIMITS,
    ConformanceError,
    MemoryListener,
    POP3TestClient,
    ProtocolViolation,
    Reply,
    UnexpectedReply,
    check_handler,
    check_mailbox_backend,
    open_memory_session,
    serve_on_loopback,
)

USERS = {"alice": "secret"}
MESSAGES = (
    b"Subject: one\n\nHello\n",
    b".first line is a dot\nSubject: two\n\n.\n..x\nno final newline",
)


def mailbox_factory(store: MemoryStore | None = None) -> functools.partial[MailboxHandler]:
    store = store if store is not None else MemoryStore({"alice": MESSAGES})
    return functools.partial(MailboxHandler, store, MemoryAuthenticator(USERS))


# -- Reply ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "status", "code", "text"),
    [
        (b"+OK", "+OK", None, ""),
        (b"+OK 2 320", "+OK", None, "2 320"),
        (b"-ERR [IN-USE] Mailbox is locked", "-ERR", "IN-USE", "Mailbox is locked"),
        (b"-ERR [SYS/TEMP]", "-ERR", "SYS/TEMP", ""),
        (b"+ ", "+", None, ""),
        (
            b"+ PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2U+",
            "+",
            None,
            "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2U+",
        ),
    ],
)
def test_reply_parse(line: bytes, status: str, code: str | None, text: str) -> None:
    reply = Reply.parse(line)
    assert (reply.status, reply.code, reply.text) == (status, code, text)
    assert reply.ok == (status == "+OK")
    assert str(reply) == line.decode()


@pytest.mark.parametrize("line", [b"OK 1 2", b"+ok", b"-ERROR", b"+OKAY", b""])
def test_reply_parse_rejects_other_status(line: bytes) -> None:
    # RFC 1939 §3 (RESP-01)
    with pytest.raises(ProtocolViolation) as info:
        Reply.parse(line)
    assert info.value.rule == "RESP-01"


# -- the client over memory streams ----------------------------------------------------


async def test_memory_session_transcript() -> None:
    store = MemoryStore({"alice": MESSAGES})
    async with open_memory_session(mailbox_factory(store)) as client:
        assert client.greeting is not None
        assert client.greeting.ok
        reply = await client.command("PASS secret")
        assert not reply.ok  # PASS before USER
        await client.login("alice", "secret")
        assert await client.stat() == (2, sum(wire_size(m) for m in MESSAGES))
        assert await client.list_sizes() == {1: wire_size(MESSAGES[0]), 2: wire_size(MESSAGES[1])}
        uids = await client.uidl()
        assert sorted(uids) == [1, 2]
        assert await client.retr(2) == (
            b".first line is a dot\r\nSubject: two\r\n\r\n.\r\n..x\r\nno final newline\r\n"
        )
        assert await client.top(1, 0) == b"Subject: one\r\n\r\n"
        capa = await client.multiline("CAPA")
        assert b"UIDL" in capa.lines
        with pytest.raises(UnexpectedReply) as info:
            await client.retr(3)
        assert info.value.reply.status == "-ERR"
        assert (await client.command("DELE 1")).ok
        assert (await client.quit()).ok
        assert await client.read_until_closed() == b""
        assert client.closed
    assert store.messages("alice") == [MESSAGES[1]]
    assert not store.is_locked("alice")


async def test_raw_lines_keep_the_stuffing() -> None:
    async with open_memory_session(mailbox_factory()) as client:
        await client.login("alice", "secret")
        await client.send_raw("RETR 2\r\nNOOP\r\n")  # pipelined
        assert (await client.read_reply()).ok
        raw = await client.read_data_lines(unstuff=False)
        assert raw[0] == b"..first line is a dot"
        assert raw[3:5] == [b"..", b"...x"]
        assert await client.read_line() == b"+OK"


async def test_exit_waits_for_the_session_and_drops_without_update() -> None:
    store = MemoryStore({"alice": MESSAGES})
    async with open_memory_session(mailbox_factory(store)) as client:
        await client.login("alice", "secret")
        assert (await client.command("DELE 1")).ok
        assert store.is_locked("alice")
    # The disconnect hook has run: unlocked, nothing removed (RFC 1939 §6, STATE-06).
    assert not store.is_locked("alice")
    assert store.messages("alice") == list(MESSAGES)


async def test_login_failure_raises_unexpected_reply() -> None:
    async with open_memory_session(mailbox_factory()) as client:
        with pytest.raises(UnexpectedReply) as info:
            await client.login("alice", "wrong")
        assert info.value.reply.code == "AUTH"
        assert "wrong" not in str(info.value)


async def test_body_exception_is_not_wrapped_in_a_group() -> None:
    with pytest.raises(KeyError):
        async with open_memory_session(mailbox_factory()):
            raise KeyError("boom")


async def test_idle_timeout_under_autojump_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # RFC 1939 §3 (TIME-04): ten minutes of silence, closed without a reply.
    async with open_memory_session(mailbox_factory(), timeout=600) as client:
        await client.login("alice", "secret")
        start = trio.current_time()
        assert await client.read_until_closed() == b""
        assert trio.current_time() - start == pytest.approx(600)
        assert client.closed
        with pytest.raises(EOFError):
            await client.read_line()


async def test_failed_login_delay_is_off_by_default_and_can_be_tested(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for limits, delay in ((TEST_LIMITS, 0.0), (Limits(auth_failure_delay=2.0), 2.0)):
        async with open_memory_session(mailbox_factory(), limits=limits) as client:
            await client.command("USER alice")
            start = trio.current_time()
            assert not (await client.command("PASS wrong")).ok
            assert trio.current_time() - start == pytest.approx(delay)


async def test_lockstep_session() -> None:
    async with open_memory_session(mailbox_factory(), lockstep=True) as client:
        await client.login("alice", "secret")
        assert len(await client.retr(1)) == wire_size(MESSAGES[0])


async def test_ready_made_server_and_options_conflict() -> None:
    server = POP3Server(mailbox_factory())
    async with open_memory_session(server) as client:
        assert server.active_connections == 1
        await client.quit()
    with pytest.raises(TypeError):
        async with open_memory_session(server, timeout=5):
            pass  # pragma: no cover


# -- strict wire checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "rule"),
    [
        (b"+OK bare LF\n", "RESP-02"),
        (b"OK 1 2\r\n", "RESP-01"),
        (b"+OK " + b"x" * 600 + b"\r\n", "RESP-03"),
    ],
)
async def test_strict_client_reports_wire_violations(sent: bytes, rule: str) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    await server_stream.send_all(sent)
    client = POP3TestClient(client_stream)
    with pytest.raises(ProtocolViolation) as info:
        await client.read_greeting()
    assert info.value.rule == rule


async def test_lenient_client_reads_bare_lf() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    await server_stream.send_all(b"+OK hi\n")
    await server_stream.aclose()
    client = POP3TestClient(client_stream, strict=False)
    assert (await client.read_greeting()).text == "hi"
    with pytest.raises(EOFError):
        await client.read_line()
    assert client.closed


# -- listeners and sockets -----------------------------------------------------------------


async def test_memory_listener_with_serve_listeners() -> None:
    server = POP3Server(mailbox_factory(MemoryStore({"alice": MESSAGES, "bob": []})))
    listener = MemoryListener()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, [listener])
        async with await listener.open_client() as first, await listener.open_client() as second:
            assert server.active_connections == 2
            await first.login("alice", "secret")
            locked = await second.command("USER alice")
            locked = await second.command("PASS secret")
            assert locked.code == "IN-USE"
        assert listener.accepted == 2
        nursery.cancel_scope.cancel()
    await listener.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await listener.connect()
    with pytest.raises(trio.ClosedResourceError):
        await listener.accept()


async def test_memory_listener_close_drops_unaccepted_connections() -> None:
    listener = MemoryListener(lockstep=True)
    stream = await listener.connect()
    await listener.aclose()
    assert await stream.receive_some(10) == b""


async def test_serve_on_loopback_with_poplib_and_test_client() -> None:
    store = MemoryStore({"alice": MESSAGES})
    async with serve_on_loopback(mailbox_factory(store)) as (host, port):
        assert host == "127.0.0.1"
        assert port > 0

        def fetch() -> tuple[int, list[bytes]]:
            pop = poplib.POP3(host, port, timeout=10)
            try:
                pop.user("alice")
                pop.pass_("secret")
                count = pop.stat()[0]
                lines = pop.retr(2)[1]
                pop.dele(1)
            finally:
                pop.quit()
            return count, lines

        count, lines = await trio.to_thread.run_sync(fetch)
        assert count == 2
        assert lines[0] == b".first line is a dot"
        async with await POP3TestClient.connect(host, port) as client:
            await client.login("alice", "secret")
            assert await client.stat() == (1, wire_size(MESSAGES[1]))
    assert store.messages("alice") == [MESSAGES[1]]


# -- the conformance check -------------------------------------------------------------------


async def test_memory_store_conforms() -> None:
    report = await check_mailbox_backend(MemoryStore)
    assert set(report.passed) == set(CONFORMANCE_RULES)
    assert not report.failed
    assert not report.not_checked
    assert "UIDL-03" in str(report)


def make_maildir_factory(
    tmp_path: Path,
) -> functools.partial[MaildirStore]:
    def make(maildrops: Mapping[str, Sequence[bytes]]) -> MaildirStore:
        root = tmp_path / "mail"
        for user, messages in maildrops.items():
            for sub in ("cur", "new", "tmp"):
                os.makedirs(root / user / sub)
            for message in messages:
                deliver(root / user, message, fsync=False)
        return MaildirStore(root, fsync=False)

    return functools.partial(make)


async def test_maildir_store_conforms(tmp_path: Path) -> None:
    report = await check_mailbox_backend(make_maildir_factory(tmp_path))
    assert set(report.passed) == set(CONFORMANCE_RULES)


async def test_check_handler_on_a_mailbox_handler() -> None:
    store = MemoryStore({"alice": CONFORMANCE_MESSAGES})
    report = await check_handler(mailbox_factory(store), user="alice", password="secret")
    assert "DOT-07" not in report.passed  # needs a second maildrop
    assert {"STATE-06", "STATE-07", "LOCK-02", "DOT-02", "SIZE-01"} <= set(report.passed)
    assert len(store.messages("alice")) == len(CONFORMANCE_MESSAGES) - 1


async def test_check_handler_with_generated_content_counts_only() -> None:
    store = MemoryStore({"alice": [b"Subject: %d\n\nbody\n" % n for n in range(4)]})
    report = await check_handler(
        mailbox_factory(store), user="alice", password="secret", messages=4
    )
    assert "SIZE-01" in report.passed


async def test_skip_and_unknown_rules() -> None:
    report = await check_mailbox_backend(MemoryStore, skip={"LOCK-02"})
    assert report.not_checked["LOCK-02"] == "skipped by the caller"
    with pytest.raises(ValueError, match="NOPE-01"):
        await check_mailbox_backend(MemoryStore, skip={"NOPE-01"})


# -- broken backends are caught ---------------------------------------------------------------


class BrokenStore(MailStore):
    """A store with switchable bugs."""

    def __init__(
        self,
        maildrops: Mapping[str, Sequence[bytes]],
        *,
        size_delta: int = 0,
        uid_format: str = "uid-{n}",
        remove_all: bool = False,
        lock: bool = True,
        remove_on_close: bool = False,
    ) -> None:
        self.maildrops = {user: list(messages) for user, messages in maildrops.items()}
        self.size_delta = size_delta
        self.uid_format = uid_format
        self.remove_all = remove_all
        self.lock = lock
        self.remove_on_close = remove_on_close
        self.locked: set[str] = set()

    async def open(self, user: str) -> Mailbox:
        from trio_pop3 import MailboxInUse

        if self.lock and user in self.locked:
            raise MailboxInUse()
        self.locked.add(user)
        return BrokenMailbox(self, user)


class BrokenMailbox(Mailbox):
    def __init__(self, store: BrokenStore, user: str) -> None:
        self.store = store
        self.user = user
        self.messages = [
            MessageInfo(store.uid_format.format(n=n), wire_size(data) + store.size_delta, data)
            for n, data in enumerate(store.maildrops.get(user, []))
        ]
        self.marked: Sequence[MessageInfo] = ()

    async def list_messages(self) -> Sequence[MessageInfo]:
        return self.messages

    async def read_message(self, message: MessageInfo) -> AsyncIterator[bytes]:
        assert isinstance(message.key, bytes)
        yield message.key

    async def remove(self, messages: Sequence[MessageInfo]) -> None:
        drop = self.store.maildrops[self.user]
        if self.store.remove_all:
            drop.clear()
            return
        keys = [m.key for m in messages]
        drop[:] = [data for data in drop if data not in keys]

    async def close(self) -> None:
        self.store.locked.discard(self.user)


class EagerHandler(MailboxHandler):
    """Removes a message at DELE: no rollback on a dropped connection."""

    async def pop3_DELE(self, arg: str | None) -> None:
        await super().pop3_DELE(arg)
        assert self.mailbox is not None
        assert self.maildrop is not None
        await self.mailbox.remove(self.maildrop.deleted())


@pytest.mark.parametrize(
    ("options", "rules"),
    [
        ({"size_delta": 1}, {"SIZE-01"}),
        ({"uid_format": "uid {n}"}, {"UIDL-02"}),
        ({"uid_format": "same"}, {"UIDL-04"}),
        ({"remove_all": True}, {"STATE-07"}),
        ({"lock": False}, {"LOCK-02"}),
    ],
)
async def test_broken_backends_are_caught(options: dict[str, object], rules: set[str]) -> None:
    with pytest.raises(ConformanceError) as info:
        await check_mailbox_backend(lambda drops: BrokenStore(drops, **options))  # type: ignore[arg-type]
    assert rules <= info.value.rules, str(info.value)
    for rule in rules:
        assert rule in str(info.value)
        assert CONFORMANCE_RULES[rule] in str(info.value)


async def test_no_rollback_is_caught() -> None:
    with pytest.raises(ConformanceError) as info:
        await check_mailbox_backend(BrokenStore, handler_class=EagerHandler)
    assert "STATE-06" in info.value.rules
    assert "RSET-01" in info.value.rules


class NoStuffingHandler(MailboxHandler):
    """Sends RETR bodies without byte-stuffing."""

    async def pop3_RETR(self, arg: str | None) -> None:
        _, message = self._message(arg)
        assert isinstance(message.key, bytes)
        await self.send_ok(f"{message.size} octets")
        lines = message.key.replace(b"\r\n", b"\n").removesuffix(b"\n").split(b"\n")
        await self.send_raw(*lines, b".")


async def test_missing_byte_stuffing_is_caught() -> None:
    store = MemoryStore({"alice": CONFORMANCE_MESSAGES})
    factory = functools.partial(NoStuffingHandler, store, MemoryAuthenticator(USERS))
    with pytest.raises(ConformanceError) as info:
        await check_handler(factory, user="alice", password="secret")
    assert "DOT-02" in info.value.rules
    # The rest of the check still ran.
    assert "STATE-07" in info.value.report.passed


class BareLFHandler(POP3Handler):
    async def pop3_USER(self, arg: str | None) -> None:
        await self._s.write(b"+OK\n")


async def test_wire_violations_are_reported_by_rule() -> None:
    with pytest.raises(ConformanceError) as info:
        await check_handler(BareLFHandler, user="alice", password="secret")
    assert "RESP-02" in info.value.rules

"""A Hypothesis state machine of whole POP3 sessions against a model of the maildrop.

Each example starts a fresh ``trio.run`` (on a worker thread, with a MockClock) and a
fresh store holding alice's generated messages.  Rules open a session over memory
streams, send valid and invalid commands in any state (USER/PASS good and bad, STAT,
LIST [n], UIDL [n], RETR, TOP, DELE, RSET, NOOP, QUIT, unknown keywords, garbage,
empty and over-long lines, a flood past the discard cap), deliver new mail, remove a
file behind the server's back, let the idle timer fire, cancel the session (idle or
k checkpoints into a command, QUIT included), try a second login while the lock is
held, or just drop the connection.

The model predicts every reply: STAT counts and sizes, LIST/UIDL listings, RETR/TOP
bytes, ``-ERR`` for deleted/out-of-range numbers and wrong-state commands, the
bad-command and failed-login budgets.  Invariants after every step: the store holds
exactly what the model says (RFC 1939 §6: only messages DELE'd before a QUIT in
TRANSACTION are ever removed — STATE-06/07, DELE-01) and the lock is held exactly
while a session is in TRANSACTION (LOCK-01/03).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Protocol

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pop3_support import Client, memory_session, unstuff
from robust_support import BodyClient, MaildirFixture, TrioThread, top_form, wire_form

from trio_pop3 import Limits, POP3Server
from trio_pop3.mailbox import (
    MailboxHandler,
    MaildirStore,
    MailStore,
    MemoryAuthenticator,
    MemoryStore,
)

USER = "alice"
PASSWORD = "secret"
IDLE = 600.0
BAD_BUDGET = 20
AUTH_BUDGET = 5
CAP = 255  # RFC 2449 §4 (WIRE-04)
DISCARD = 65536

#: Stored messages: LF and CRLF line ends, lone CR, dot lines, NUL, a non-UTF-8 octet
#: (never "needs UTF8"), missing final newline, the empty message.
message_st = (
    st.lists(
        st.sampled_from(
            [b"Subject: x", b"", b".", b"..", b".dot", b"body", b"a\rb", b"\x00\xff", b"From: y"]
        ),
        max_size=8,
    )
    .flatmap(
        lambda lines: st.tuples(st.just(lines), st.sampled_from([b"\n", b"\r\n"]), st.booleans())
    )
    .map(lambda t: t[1].join(t[0]) + (t[1] if t[2] and t[0] else b""))
)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
junk_st = st.binary(max_size=300).map(lambda b: b"\x00" + b.replace(b"\n", b""))

number_st = st.one_of(
    st.integers(min_value=1, max_value=3).map(str),
    st.integers(min_value=0, max_value=7).map(str),
    st.sampled_from(["abc", "-1", "+1", "1 2", " 1", "99999999999999999999", "0x1"]),
)


def messages(count: int) -> str:
    """How the replies' text counts messages."""
    return "1 message" if count == 1 else f"{count} messages"


class StoreAdapter(Protocol):
    store: MailStore
    vanish_breaks_retr: bool

    def contents(self) -> list[tuple[str, bytes]]: ...
    def locked(self) -> bool: ...
    def deliver(self, data: bytes) -> str: ...
    def vanish(self, uid: str) -> None: ...
    def cleanup(self) -> None: ...


class MemoryAdapter:
    vanish_breaks_retr = False  # the snapshot holds the bytes

    def __init__(self) -> None:
        self.mem = MemoryStore()
        self.store: MailStore = self.mem
        self._n = 0

    def contents(self) -> list[tuple[str, bytes]]:
        return list(self.mem.maildrops.get(USER, []))

    def locked(self) -> bool:
        return self.mem.is_locked(USER)

    def deliver(self, data: bytes) -> str:
        self._n += 1
        return self.mem.deliver(USER, data, uid=f"u{self._n}")

    def vanish(self, uid: str) -> None:
        drop = self.mem.maildrops[USER]
        drop[:] = [(u, d) for u, d in drop if u != uid]

    def cleanup(self) -> None:
        pass


class MaildirAdapter:
    vanish_breaks_retr = True

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="robust-sm-")
        self.fixture = MaildirFixture(self.root, USER)
        self.store: MailStore = MaildirStore(self.root, fsync=False)

    def contents(self) -> list[tuple[str, bytes]]:
        return self.fixture.contents()

    def locked(self) -> bool:
        return self.fixture.locked()

    def deliver(self, data: bytes) -> str:
        return self.fixture.add(data, subdir="new")

    def vanish(self, uid: str) -> None:
        self.fixture.remove(uid)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Conn:
    """The model of one open session."""

    client: Client
    scope: trio.CancelScope
    done: trio.Event
    trans: bool = False
    snapshot: list[tuple[str, bytes]] = field(default_factory=list)
    deleted: set[int] = field(default_factory=set)
    bad: int = 0
    auth_failures: int = 0
    prev: str | None = None
    pending: str | None = None


class SessionMachine(RuleBasedStateMachine):
    adapter_factory: type[MemoryAdapter] | type[MaildirAdapter] = MemoryAdapter

    def __init__(self) -> None:
        super().__init__()
        self.rt = TrioThread()
        self.adapter: StoreAdapter = self.adapter_factory()
        self.model: list[tuple[str, bytes]] = []
        self.vanished: set[str] = set()
        self.conn: Conn | None = None
        self.errors: list[BaseException] = []
        self.server = POP3Server(
            functools.partial(
                MailboxHandler, self.adapter.store, MemoryAuthenticator({USER: PASSWORD})
            ),
            timeout=IDLE,
            limits=Limits(
                auth_failure_delay=0,
                max_bad_commands=BAD_BUDGET,
                max_auth_failures=AUTH_BUDGET,
            ),
        )

    def teardown(self) -> None:
        try:
            if self.conn is not None:
                conn = self.conn

                async def close() -> None:
                    await conn.client.aclose()
                    await conn.done.wait()

                self.rt.run(close)
            self.rt.close()
        finally:
            self.adapter.cleanup()
        assert not self.errors, self.errors

    # -- plumbing ---------------------------------------------------------------------------
    async def _open(self) -> tuple[Client, trio.CancelScope, trio.Event]:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        scope = trio.CancelScope()
        done = trio.Event()
        errors = self.errors
        server = self.server

        async def serve() -> None:
            try:
                with scope:
                    await server.handle_stream(server_stream)
            except BaseException as exc:  # the server must never raise out of a session
                errors.append(exc)
            finally:
                done.set()

        self.rt.nursery.start_soon(serve)
        return BodyClient(client_stream), scope, done

    def _conn(self) -> Conn:
        assert self.conn is not None
        return self.conn

    def _ended(self) -> None:
        """The session is over: nothing it marked deleted may have been removed."""
        self.conn = None

    def _command(self, line: bytes | str) -> str:
        client = self._conn().client
        reply = self.rt.run(lambda: client.command(line))
        self._completed(reply)
        return reply

    def _multi(self, line: str) -> tuple[str, list[bytes]]:
        client = self._conn().client
        first, lines = self.rt.run(lambda: client.multi(line))
        self._completed(first)
        return first, lines

    def _completed(self, reply: str) -> None:
        """A command that completed (+OK) starts the bad-command count again (SEC-04)."""
        if reply.startswith("+OK"):
            self._conn().bad = 0

    def _expect_eof(self) -> bytes:
        conn = self._conn()

        async def step() -> bytes:
            rest = await conn.client.read_to_eof()
            await conn.done.wait()
            return rest

        rest = self.rt.run(step)
        self._ended()
        return rest

    def _parsed(self, name: str) -> None:
        """A command line that parsed (within the length limit) was dispatched."""
        self._conn().prev = name

    def _bad(self, reply: str) -> None:
        """An unknown, malformed or wrong-state command: -ERR, counted (SEC-04)."""
        assert reply.startswith("-ERR"), reply
        conn = self._conn()
        conn.bad += 1
        if conn.bad > BAD_BUDGET:  # the first past the budget is answered (Dovecot)
            assert self.rt.run(conn.client.reply) == "-ERR Too many bad commands."
            assert self._expect_eof() == b""

    def _visible(self) -> list[tuple[int, str, bytes]]:
        conn = self._conn()
        return [
            (n, uid, data)
            for n, (uid, data) in enumerate(conn.snapshot, 1)
            if n not in conn.deleted
        ]

    def _lookup(self, arg: str) -> tuple[int, str, bytes] | None:
        conn = self._conn()
        if not arg.isascii() or not arg.isdigit() or len(arg) > 18:
            return None
        n = int(arg)
        if not 1 <= n <= len(conn.snapshot) or n in conn.deleted:
            return None
        uid, data = conn.snapshot[n - 1]
        return n, uid, data

    def _trans_only(self) -> bool:
        """Handle a TRANSACTION command sent in AUTHORIZATION; True if it was."""
        return not self._conn().trans

    # -- rules: connections --------------------------------------------------------------
    @initialize(messages=st.lists(message_st, min_size=2, max_size=6) | st.just([]))
    def fill(self, messages: list[bytes]) -> None:
        for data in messages:
            self.model.append((self.adapter.deliver(data), data))

    @precondition(lambda self: self.conn is None)
    @rule()
    def connect(self) -> None:
        async def step() -> tuple[Client, trio.CancelScope, trio.Event, str]:
            client, scope, done = await self._open()
            return client, scope, done, await client.reply()

        client, scope, done, greeting = self.rt.run(step)
        assert greeting.startswith("+OK"), greeting  # RFC 1939 §4 (GREET-01)
        self.conn = Conn(client, scope, done)

    @precondition(lambda self: self.conn is not None)
    @rule(name=st.sampled_from([USER, "nobody", "", " alice"]))
    def user(self, name: str) -> None:
        conn = self._conn()
        reply = self._command(f"USER {name}" if name else "USER")
        self._parsed("USER")
        if conn.trans:
            return self._bad(reply)  # RFC 1939 §3 (WIRE-08)
        if not name.strip():
            assert reply.startswith("-ERR"), reply
            conn.pending = None  # USER-01: PASS needs a *successful* USER
            return
        # RFC 1939 §7 / USER-03: +OK whether or not the user exists.
        assert reply == "+OK Send your password.", reply
        conn.pending = name.strip()

    @precondition(lambda self: self.conn is not None)
    @rule(good=st.booleans())
    def password(self, good: bool) -> None:
        conn = self._conn()
        reply = self._command(f"PASS {PASSWORD if good else 'wrong'}")
        prev, pending = conn.prev, conn.pending
        self._parsed("PASS")
        if conn.trans:
            return self._bad(reply)
        conn.pending = None
        if prev != "USER" or pending is None:
            assert reply == "-ERR No user name given.", reply  # USER-01
            return
        if good and pending == USER:
            count = len(self.model)
            size = sum(len(wire_form(d)) for _, d in self.model)
            assert reply == f"+OK Logged in, {messages(count)} ({size} octets).", reply
            conn.trans = True
            conn.snapshot = list(self.model)  # LOCK-05: the snapshot taken at login
            self.vanished.clear()
            return
        # USER-04 / CODE-06: the same reply for an unknown user and a wrong password.
        assert reply == "-ERR [AUTH] Authentication failed.", reply
        conn.auth_failures += 1
        if conn.auth_failures >= AUTH_BUDGET:
            assert self._expect_eof() == b""  # STATE-04

    @precondition(lambda self: self.conn is not None and not self.conn.trans)
    @rule()
    def login(self) -> None:
        # The common path, USER alice + PASS secret, so that most examples reach
        # TRANSACTION (the separate USER/PASS rules explore the odd orders).
        self.user(USER)
        if self.conn is not None:
            self.password(True)

    @precondition(lambda self: self.conn is not None)
    @rule()
    def stat(self) -> None:
        reply = self._command("STAT")
        self._parsed("STAT")
        if self._trans_only():
            return self._bad(reply)
        visible = self._visible()
        size = sum(len(wire_form(d)) for _, _, d in visible)
        assert reply == f"+OK {len(visible)} {size}", reply  # RFC 1939 §5 (STAT-01)

    @precondition(lambda self: self.conn is not None)
    @rule(arg=st.none() | number_st)
    def list_(self, arg: str | None) -> None:
        line = "LIST" if arg is None else f"LIST {arg}"
        if arg is None and self._conn().trans:
            first, lines = self._multi(line)
            self._parsed("LIST")
            visible = self._visible()
            size = sum(len(wire_form(d)) for _, _, d in visible)
            assert first == f"+OK {messages(len(visible))} ({size} octets)", first
            # RFC 1939 §5 (LIST-01, SIZE-01): exact sizes, deleted ones left out.
            assert lines == [f"{n} {len(wire_form(d))}".encode() for n, _, d in visible]
            return
        reply = self._command(line)
        self._parsed("LIST")
        if self._trans_only():
            return self._bad(reply)
        assert arg is not None
        found = self._lookup(arg.strip()) if arg.strip() else None
        if found is None:
            assert reply.startswith("-ERR"), reply  # TRANS-02/03
        else:
            n, _, data = found
            assert reply == f"+OK {n} {len(wire_form(data))}", reply  # LIST-02

    @precondition(lambda self: self.conn is not None)
    @rule(arg=st.none() | number_st)
    def uidl(self, arg: str | None) -> None:
        line = "UIDL" if arg is None else f"UIDL {arg}"
        if arg is None and self._conn().trans:
            first, lines = self._multi(line)
            self._parsed("UIDL")
            assert first.startswith("+OK"), first
            # RFC 1939 §7 (UIDL-01, UIDL-03): the stored ids, deleted ones left out.
            assert lines == [f"{n} {uid}".encode() for n, uid, _ in self._visible()]
            return
        reply = self._command(line)
        self._parsed("UIDL")
        if self._trans_only():
            return self._bad(reply)
        assert arg is not None
        found = self._lookup(arg.strip()) if arg.strip() else None
        if found is None:
            assert reply.startswith("-ERR"), reply
        else:
            assert reply == f"+OK {found[0]} {found[1]}", reply

    def _fetch(self, line: str, found: tuple[int, str, bytes] | None, expect: bytes) -> None:
        conn = self._conn()
        first, lines = self._multi(line)
        self._parsed(line.split()[0])
        if found is None:
            assert first.startswith("-ERR"), first
            return
        if self.adapter.vanish_breaks_retr and found[1] in self.vanished:
            assert first.startswith("-ERR"), first  # the file is gone: a clean -ERR
            return
        assert first.startswith("+OK"), first
        # RFC 1939 §3 (DOT-01/02/05): un-stuffed lines are the message with CRLF ends.
        assert unstuff(lines) == expect, (lines, expect)
        assert conn.trans

    @precondition(lambda self: self.conn is not None)
    @rule(arg=number_st)
    def retr(self, arg: str) -> None:
        if not self._conn().trans:
            reply = self._command(f"RETR {arg}")
            self._parsed("RETR")
            return self._bad(reply)
        found = self._lookup(arg.strip())
        self._fetch(f"RETR {arg}", found, wire_form(found[2]) if found else b"")

    @precondition(lambda self: self.conn is not None)
    @rule(
        arg=st.integers(1, 3).map(str) | number_st,
        lines=st.integers(0, 4).map(str)
        | st.integers(0, 9).map(str)
        | st.sampled_from(["-1", "x", ""]),
    )
    def top(self, arg: str, lines: str) -> None:
        line = f"TOP {arg} {lines}".rstrip()
        if not self._conn().trans:
            reply = self._command(line)
            self._parsed("TOP")
            return self._bad(reply)
        # Split the argument the way a server must: "TOP msg n", exactly two numbers.
        parts = line[4:].split()
        found = self._lookup(parts[0]) if len(parts) == 2 else None
        if found is None or not (parts[1].isascii() and parts[1].isdigit()):
            self._fetch(line, None, b"")
            return
        self._fetch(line, found, top_form(found[2], int(parts[1])))  # RFC 1939 §7 (TOP-01/02)

    @precondition(lambda self: self.conn is not None)
    @rule(arg=number_st)
    def dele(self, arg: str) -> None:
        reply = self._command(f"DELE {arg}")
        self._parsed("DELE")
        if self._trans_only():
            return self._bad(reply)
        found = self._lookup(arg.strip())
        if found is None:
            assert reply.startswith("-ERR"), reply  # TRANS-02: DELE twice -> -ERR
            return
        assert reply == f"+OK Message {found[0]} deleted.", reply
        self._conn().deleted.add(found[0])

    @precondition(lambda self: self.conn is not None)
    @rule()
    def rset(self) -> None:
        reply = self._command("RSET")
        self._parsed("RSET")
        if self._trans_only():
            return self._bad(reply)
        self._conn().deleted.clear()  # RFC 1939 §5 (RSET-01)
        visible = self._visible()
        size = sum(len(wire_form(d)) for _, _, d in visible)
        assert reply == f"+OK {messages(len(visible))} ({size} octets).", reply

    @precondition(lambda self: self.conn is not None)
    @rule()
    def noop(self) -> None:
        reply = self._command("NOOP")
        self._parsed("NOOP")
        if self._trans_only():
            return self._bad(reply)
        assert reply == "+OK", reply  # NOOP-01

    @precondition(lambda self: self.conn is not None)
    @rule()
    def quit(self) -> None:
        conn = self._conn()
        reply = self._command("QUIT")
        assert reply == "+OK goodbye", reply
        if conn.trans:
            # RFC 1939 §6 (STATE-07): exactly the messages marked deleted are removed.
            gone = {conn.snapshot[n - 1][0] for n in conn.deleted}
            self.model = [(u, d) for u, d in self.model if u not in gone]
        assert self._expect_eof() == b""

    @precondition(lambda self: self.conn is not None)
    @rule(data=st.data())
    def bad_input(self, data: st.DataObject) -> None:
        kind = data.draw(st.sampled_from(["unknown", "garbage", "empty", "long"]))
        if kind == "unknown":
            self.unknown_command(data.draw(st.text(LETTERS, min_size=1, max_size=8)))
        elif kind == "garbage":
            self.garbage(data.draw(junk_st))
        elif kind == "empty":
            self.empty_line(data.draw(st.sampled_from(["", " ", "\t", "  \t "])))
        else:
            self.long_line(data.draw(st.integers(CAP - 4, CAP + 3) | st.integers(CAP, 9000)))

    def unknown_command(self, word: str) -> None:
        known = {
            "USER", "PASS", "APOP", "AUTH", "STLS", "UTF8", "CAPA", "LANG", "QUIT",
            "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL",
        }  # fmt: skip
        if word.upper() in known:
            word = "X" + word
        reply = self._command(word)
        self._parsed(word.upper())
        self._bad(reply)  # RFC 1939 §3 (WIRE-07)

    def garbage(self, junk: bytes) -> None:
        # WIRE-02: control characters / invalid UTF-8 -> -ERR, the session goes on.
        self._unparsed(self._command(junk))

    def empty_line(self, blank: str) -> None:
        self._unparsed(self._command(blank))

    def _unparsed(self, reply: str) -> None:
        """A line that is no command at all: -ERR, and it separates USER from PASS."""
        self._conn().prev = None  # USER-01: PASS must follow USER immediately
        self._bad(reply)

    def long_line(self, length: int) -> None:
        # RFC 2449 §4 (WIRE-04): 255 octets with CRLF are accepted; WIRE-06: longer -> -ERR.
        line = "NOOP " + "x" * (length - 2 - 5)
        reply = self._command(line)
        if length > CAP:
            return self._unparsed(reply)
        self._parsed("NOOP")
        if self._trans_only():
            return self._bad(reply)
        assert reply == "+OK", reply

    def flood(self) -> None:
        # WIRE-06 / SEC-04: one line past the discard cap drops the client, after a
        # -ERR that says why; no UPDATE.
        client = self._conn().client
        self.rt.run(lambda: client.send(b"y" * (DISCARD + 5000)))
        assert self._expect_eof() == b"-ERR Line too long; closing the connection.\r\n"

    @precondition(lambda self: self.conn is not None)
    @rule(data=st.data())
    def abnormal_end(self, data: st.DataObject) -> None:
        kind = data.draw(st.sampled_from(["drop", "idle", "cancel", "flood"]))
        if kind == "drop":
            self.drop_connection(data.draw(st.sampled_from([b"", b"QUI", b"DELE 1", b"\x00"])))
        elif kind == "idle":
            self.idle_timeout()
        elif kind == "cancel":
            command = st.sampled_from([None, "QUIT", "RETR 1", "LIST", "PASS secret", "DELE 1"])
            self.cancel(data.draw(command), data.draw(st.integers(0, 8)))
        else:
            self.flood()

    def drop_connection(self, partial: bytes) -> None:
        # STATE-06: a dropped connection never enters UPDATE.
        conn = self._conn()

        async def step() -> None:
            if partial:
                await conn.client.send(partial)
            await conn.client.aclose()
            await conn.done.wait()

        self.rt.run(step)
        self._ended()

    def idle_timeout(self) -> None:
        # RFC 1939 §3 (TIME-04): autologout closes without a reply and without UPDATE.
        self.rt.run_sync(lambda: self.rt.clock.jump(IDLE + 1))
        assert self._expect_eof() == b""

    def cancel(self, command: str | None, checkpoints: int) -> None:
        # STATE-06 / LOCK-03: cancellation (server shutdown) at any point of a command.
        conn = self._conn()
        doomed = {conn.snapshot[n - 1][0] for n in conn.deleted}

        async def step() -> bytes:
            if command is not None:
                await conn.client.send_line(command)
            for _ in range(checkpoints):
                await trio.lowlevel.checkpoint()
            conn.scope.cancel()
            data = await conn.client.read_to_eof()
            await conn.done.wait()
            return data

        data = self.rt.run(step)
        assert b"\n" not in data.replace(b"\r\n", b""), data  # never a bare LF
        if command == "QUIT" and conn.trans and doomed:
            # The commit runs shielded: it either happened completely or not at all.
            after = [(u, d) for u, d in self.model if u not in doomed]
            now = self.adapter.contents()
            assert now in (self.model, after), (now, self.model)
            if now == after:
                self.model = after
        self._ended()

    @precondition(lambda self: self.conn is not None and self.conn.trans)
    @rule()
    def rival_login(self) -> None:
        # LOCK-01/02: a second session of the same user gets -ERR [IN-USE].
        async def step() -> tuple[str, str, str]:
            client, _, done = await self._open()
            await client.reply()
            await client.command(f"USER {USER}")
            refused = await client.command(f"PASS {PASSWORD}")
            capa = await client.command("STAT")
            bye = await client.command("QUIT")
            await client.read_to_eof()
            await done.wait()
            return refused, capa, bye

        refused, stat_reply, bye = self.rt.run(step)
        assert refused.startswith("-ERR [IN-USE]"), refused
        assert stat_reply.startswith("-ERR"), stat_reply  # still in AUTHORIZATION
        assert bye.startswith("+OK"), bye

    # -- rules: the world changes --------------------------------------------------------------
    @rule(data=message_st)
    def new_mail(self, data: bytes) -> None:
        # LOCK-05: mail arriving during a session is not in its snapshot; never lost.
        uid = self.adapter.deliver(data)
        self.model.append((uid, data))

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def removed_by_someone_else(self, data: st.DataObject) -> None:
        uid, _ = data.draw(st.sampled_from(self.model))
        self.adapter.vanish(uid)
        self.model = [(u, d) for u, d in self.model if u != uid]
        self.vanished.add(uid)

    # -- invariants ---------------------------------------------------------------------------
    @invariant()
    def store_matches_model(self) -> None:
        assert self.adapter.contents() == self.model

    @invariant()
    def lock_held_only_in_transaction(self) -> None:
        expected = self.conn is not None and self.conn.trans
        assert self.adapter.locked() == expected

    @invariant()
    def server_never_raised(self) -> None:
        assert not self.errors, self.errors


class MaildirSessionMachine(SessionMachine):
    adapter_factory = MaildirAdapter


SETTINGS = settings(
    max_examples=int(os.environ.get("ROBUST_SM_EXAMPLES", "60")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_session_state_machine_memory_store() -> None:
    run_state_machine_as_test(SessionMachine, settings=SETTINGS)


def test_session_state_machine_maildir_store() -> None:
    run_state_machine_as_test(MaildirSessionMachine, settings=SETTINGS)


@pytest.mark.slow
def test_session_state_machine_long_run() -> None:
    long = settings(SETTINGS, max_examples=400, stateful_step_count=60)
    run_state_machine_as_test(SessionMachine, settings=long)
    run_state_machine_as_test(MaildirSessionMachine, settings=long)


async def test_pass_must_immediately_follow_user() -> None:
    store = MemoryStore({USER: [b"Subject: x\n\ny\n"]})
    factory = functools.partial(MailboxHandler, store, MemoryAuthenticator({USER: PASSWORD}))
    async with memory_session(factory, limits=Limits(auth_failure_delay=0)) as s:
        assert (await s.client.command(f"USER {USER}")).startswith("+OK")
        assert (await s.client.command(b"\x00junk")).startswith("-ERR")
        assert (await s.client.command(f"PASS {PASSWORD}")).startswith("-ERR")

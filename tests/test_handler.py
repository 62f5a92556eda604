"""POP3Handler over memory streams: dispatch, state, replies, limits, hooks.

The handler under test is :class:`conftest.SkeletonHandler`, written like the seed's
synopsis (USER/PASS against a dict, ``self.state = "TRANS"``, STAT/RETR of fixed
content).
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Iterator

import pytest
import trio
from hypothesis import given, strategies as st
from pop3_support import (
    MESSAGES,
    Client,
    Recorder,
    SkeletonHandler,
    StartServer,
    memory_session,
)

from trio_pop3 import (
    Limits,
    POP3Error,
    POP3Handler,
    ResponseCode,
    State,
    __version__,
    _handler,
    wire_size,
)
from trio_pop3._proto._wire import MessageWriter

TOTAL = sum(wire_size(m) for m in MESSAGES)


def handler_of(recorder: Recorder) -> SkeletonHandler:
    handler = recorder.last
    assert isinstance(handler, SkeletonHandler)
    return handler


async def raw_multi(client: Client) -> bytes:
    """Read a whole multi-line response, first line included, as raw bytes."""
    out = [await client.raw_line()]
    if out[0].startswith(b"+OK"):
        while (line := await client.raw_line()) != b".\r\n":
            out.append(line)
        out.append(line)
    return b"".join(out)


# -- transcripts ---------------------------------------------------------------------------

Transcript = list[tuple[str, str]]

TRANSCRIPTS: dict[str, Transcript] = {
    "login-stat-quit": [
        ("USER alice", "+OK username accepted, send password"),
        ("PASS secret", "+OK logged in"),
        ("STAT", f"+OK 3 {TOTAL}"),
        ("NOOP", "+OK"),
        ("QUIT", "+OK goodbye"),
    ],
    "case-insensitive": [  # RFC 1939 §3 (WIRE-01)
        ("user alice", "+OK username accepted, send password"),
        ("PaSs secret", "+OK logged in"),
        ("stat", f"+OK 3 {TOTAL}"),
        ("StAt", f"+OK 3 {TOTAL}"),
        ("quit", "+OK goodbye"),
    ],
    "pass-keeps-spaces": [  # RFC 1939 §7 (WIRE-11)
        ("USER bob", "+OK username accepted, send password"),
        ("PASS two words ", "-ERR [AUTH] invalid username or password"),
        ("USER bob", "+OK username accepted, send password"),
        ("PASS two  words ", "+OK logged in"),
    ],
    "wrong-password": [
        ("USER alice", "+OK username accepted, send password"),
        ("PASS wrong", "-ERR [AUTH] invalid username or password"),
        ("STAT", "-ERR STAT not allowed in AUTHORIZATION state."),
        ("PASS secret", "+OK logged in"),
    ],
    "missing-argument": [
        ("USER", "-ERR missing argument"),
        ("USER ", "-ERR missing argument"),
    ],
    "wrong-state-before-login": [  # RFC 1939 §3 (WIRE-08)
        ("STAT", "-ERR STAT not allowed in AUTHORIZATION state."),
        ("LIST", "-ERR LIST not allowed in AUTHORIZATION state."),
        ("RETR 1", "-ERR RETR not allowed in AUTHORIZATION state."),
        ("NOOP", "-ERR NOOP not allowed in AUTHORIZATION state."),
        ("XECHO hi", "-ERR XECHO not allowed in AUTHORIZATION state."),
        # Standard commands this handler does not implement are simply unknown.
        ("DELE 1", "-ERR Unknown command: DELE"),
        ("UIDL", "-ERR Unknown command: UIDL"),
    ],
    "wrong-state-after-login": [  # RFC 1939 §3 (WIRE-08)
        ("USER alice", "+OK username accepted, send password"),
        ("PASS secret", "+OK logged in"),
        ("USER alice", "-ERR USER not allowed in TRANSACTION state."),
        ("PASS secret", "-ERR PASS not allowed in TRANSACTION state."),
        ("APOP alice 0123", "-ERR Unknown command: APOP"),
        ("STAT", f"+OK 3 {TOTAL}"),
    ],
    "unknown-commands": [  # RFC 1939 §3 (WIRE-07)
        ("FOO", "-ERR Unknown command: FOO"),
        ("foo bar baz", "-ERR Unknown command: FOO"),
        ("X" * 40, "-ERR Unknown command: " + "X" * 40),
        ("Y" * 41, "-ERR Unknown command."),
        ("", "-ERR Empty command."),
        ("   ", "-ERR Empty command."),
    ],
    "extra-commands": [
        ("XHELLO", "+OK hello in AUTHORIZATION"),  # add_command("xhello", [...])
        ("xhello", "+OK hello in AUTHORIZATION"),
        ("XECHO a b", "-ERR XECHO not allowed in AUTHORIZATION state."),
        ("USER alice", "+OK username accepted, send password"),
        ("PASS secret", "+OK logged in"),
        ("XHELLO", "+OK hello in TRANSACTION"),
        ("XECHO a  b ", "+OK a  b "),  # extra_commands = {"XECHO": ["TRANS"]}
        ("xecho", "+OK"),
    ],
    "retr-errors": [
        ("USER alice", "+OK username accepted, send password"),
        ("PASS secret", "+OK logged in"),
        ("RETR", "-ERR no such message"),
        ("RETR 0", "-ERR no such message"),
        ("RETR 4", "-ERR no such message"),
        ("NOOP", "+OK"),
    ],
}


@pytest.mark.rfc("1939", "3")
@pytest.mark.parametrize("name", sorted(TRANSCRIPTS))
async def test_transcript(name: str) -> None:
    async with memory_session(SkeletonHandler) as s:
        for line, expected in TRANSCRIPTS[name]:
            assert await s.client.command(line) == expected, line


async def test_greeting_and_goodbye_options() -> None:
    async with memory_session(
        SkeletonHandler, read_greeting=False, greeting="POP3 My server ready", goodbye="see you"
    ) as s:
        assert await s.client.reply() == "+OK POP3 My server ready"
        assert await s.client.command("QUIT") == "+OK see you"
        assert await s.client.read_to_eof() == b""


async def test_default_greeting() -> None:
    # RFC 1939 §4 (GREET-01): a single +OK line, sent at once.
    async with memory_session(SkeletonHandler, read_greeting=False) as s:
        assert await s.client.reply() == "+OK POP3 trio_pop3 ready."


# -- dispatch safety -------------------------------------------------------------------------


@pytest.mark.rfc("1939", "3")
async def test_wrong_state_never_reaches_methods() -> None:
    # WIRE-08: a command valid only in another state gets -ERR and its method never runs.
    recorder = Recorder()
    async with memory_session(recorder) as s:
        for line in ("STAT", "LIST", "RETR 1", "NOOP", "XECHO x"):
            assert (await s.client.command(line)).startswith("-ERR ")
        assert handler_of(recorder).calls == []
        await s.client.login()
        for line in ("USER alice", "PASS secret"):
            assert (await s.client.command(line)).startswith("-ERR ")
        assert handler_of(recorder).calls == ["USER", "PASS"]
        assert handler_of(recorder).state is State.TRANSACTION


@pytest.mark.parametrize(
    "name",
    [
        "XSECRET",  # a pop3_ method that was never registered
        "_ATTACH",
        "SEND_OK",
        "SEND_RAW",
        "GREETING",
        "COMMIT",
        "DISCONNECT",
        "ON_CONNECT",
        "CLOSE_CLIENT",
        "_SET_STATE",
        "STATE",
        "__INIT__",
        "__CLASS__",
        "POP3_QUIT",
        "_COMMAND_METHOD",
        "ADD_COMMAND",
    ],
)
async def test_unregistered_names_are_unreachable(name: str) -> None:
    recorder = Recorder()
    async with memory_session(recorder) as s:
        for state in ("AUTHORIZATION", "TRANSACTION"):
            reply = await s.client.command(f"{name} arg")
            assert reply == f"-ERR Unknown command: {name}", state
            if state == "AUTHORIZATION":
                await s.client.login()
        assert await s.client.command("NOOP") == "+OK"
        handler = handler_of(recorder)
        assert handler.calls == ["USER", "PASS", "NOOP"]
        assert handler.commits == 0
        assert handler.disconnects == 0
        assert handler.state is State.TRANSACTION


def test_a_command_method_without_async_is_refused_at_class_definition() -> None:
    # It could never be awaited; taken for a missing command, it failed silently.
    with pytest.raises(TypeError, match=r"SyncMethodHandler.pop3_XSYNC must be an 'async def'"):

        class SyncMethodHandler(SkeletonHandler):
            extra_commands = {"XSYNC": ["AUTH"]}

            def pop3_XSYNC(self, arg: str | None) -> None:
                raise AssertionError("never reached")


class NoTopHandler(SkeletonHandler):
    pop3_TOP = None  # noqa: N815 (removes an inherited command)


async def test_a_command_method_set_to_none_is_not_a_command() -> None:
    async with memory_session(NoTopHandler) as s:
        await s.client.login()
        assert await s.client.command("TOP 1 0") == "-ERR Unknown command: TOP"
        _, capa = await s.client.multi("CAPA")
        assert b"TOP" not in capa


@pytest.mark.parametrize("states", [[], ["UPDATE"], ["CONNECT", "AUTH"], "disconnect"])
def test_add_command_refuses_states_that_read_no_command(states: list[str] | str) -> None:
    handler = SkeletonHandler()
    with pytest.raises(ValueError, match="AUTHORIZATION and/or TRANSACTION"):
        handler.add_command("XNEVER", states)


class OutOfSequenceHandler(SkeletonHandler):
    async def pop3_PASS(self, arg: str | None) -> None:
        await self.unknown("PASS", arg)  # the Perl synopsis' "PASS not before USER"


async def test_unknown_called_for_an_allowed_command_says_not_now() -> None:
    async with memory_session(OutOfSequenceHandler) as s:
        assert await s.client.command("PASS x") == "-ERR PASS not allowed now."
        assert await s.client.command("STAT") == "-ERR STAT not allowed in AUTHORIZATION state."
        assert await s.client.command("XYZ") == "-ERR Unknown command: XYZ"


class HyphenHandler(SkeletonHandler):
    def __init__(self) -> None:
        super().__init__()
        self.add_command("x-trio-hi", "auth")
        self.add_command("XSTATES", State.AUTHORIZATION)
        self.add_command("xstates", ["TRANS"])

    async def pop3_X_TRIO_HI(self, arg: str | None) -> None:
        await self.send_ok(f"hi {arg}")

    async def pop3_XSTATES(self, arg: str | None) -> None:
        await self.send_ok(self.state.name)


async def test_add_command_names_and_states() -> None:
    async with memory_session(HyphenHandler) as s:
        c = s.client
        assert await c.command("X-TRIO-HI there") == "+OK hi there"
        assert await c.command("X_TRIO_HI there") == "-ERR Unknown command: X_TRIO_HI"
        assert await c.command("xstates") == "+OK AUTHORIZATION"
        await c.login()
        # add_command called twice accumulates states.
        assert await c.command("XSTATES") == "+OK TRANSACTION"
        assert await c.command("X-TRIO-HI") == "-ERR X-TRIO-HI not allowed in TRANSACTION state."


def test_add_command_rejects_bad_names() -> None:
    handler = POP3Handler()
    with pytest.raises(ValueError, match="invalid command name"):
        handler.add_command("two words", "auth")
    with pytest.raises(ValueError, match="unknown POP3 state"):
        handler.add_command("XOK", "nowhere")


def test_allowed_table() -> None:
    handler = SkeletonHandler()
    assert handler.allowed("xhello", State.AUTHORIZATION)
    assert handler.allowed("XECHO", State.TRANSACTION)
    assert not handler.allowed("XECHO", State.AUTHORIZATION)
    assert handler.allowed("stat", State.TRANSACTION)
    assert not handler.allowed("STAT", State.AUTHORIZATION)
    assert not handler.allowed("QUIT", State.UPDATE)
    # The class-level extras are per instance: another class is not affected.
    assert not POP3Handler().allowed("XECHO", State.TRANSACTION)


# -- the state property ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "state"),
    [
        (State.TRANSACTION, State.TRANSACTION),
        ("TRANS", State.TRANSACTION),
        ("trans", State.TRANSACTION),
        ("Transaction", State.TRANSACTION),
        ("AUTH", State.AUTHORIZATION),
        ("auth", State.AUTHORIZATION),
        ("authorization", State.AUTHORIZATION),
    ],
)
def test_state_setter(value: State | str, state: State) -> None:
    handler = POP3Handler()
    assert handler.state is State.CONNECT
    handler.state = value
    assert handler.state is state
    assert isinstance(handler.state, State)


def test_state_setter_rejects_unknown() -> None:
    handler = POP3Handler()
    with pytest.raises(ValueError, match="unknown POP3 state"):
        handler.state = "LOGGEDIN"
    assert handler.state is State.CONNECT


@pytest.mark.parametrize("value", ["Update", State.CONNECT, "disconnect"])
def test_state_setter_rejects_framework_states(value: State | str) -> None:
    # UPDATE is entered only through QUIT (RFC 1939 section 6); a handler that set it
    # would leave the session where no command, QUIT included, is allowed.
    handler = POP3Handler()
    handler.state = "TRANS"
    with pytest.raises(ValueError, match="entered by the framework only"):
        handler.state = value
    assert handler.state is State.TRANSACTION


def test_set_get_and_unattached_handler() -> None:
    handler = POP3Handler()
    assert handler.set("user", "alice") == "alice"
    assert handler.get("user") == "alice"
    assert handler.get("missing", 7) == 7
    with pytest.raises(RuntimeError, match="not attached"):
        _ = handler.peer


async def test_peer_and_tls_on_memory_stream() -> None:
    class Probe(SkeletonHandler):
        async def pop3_XHELLO(self, arg: str | None) -> None:
            await self.send_ok(f"{self.peer} {self.tls} {self.tls_available}")

    async with memory_session(Probe) as s:
        assert await s.client.command("XHELLO") == "+OK None False False"


# -- send_data, send_message, send_raw ----------------------------------------------------


async def agen() -> AsyncIterator[str | bytes]:
    yield "1 10"
    await trio.lowlevel.checkpoint()
    yield b".2 20"


def gen() -> Iterator[str]:
    yield from ("a", ".", "b")


class DataHandler(SkeletonHandler):
    extra_commands = {"XDATA": ["AUTH"], "XRAW": ["AUTH"], "XMSG": ["AUTH"]}

    async def pop3_XDATA(self, arg: str | None) -> None:
        if arg == "str":
            await self.send_data("str", ["a", ".b", ".", "..c", "caf\u00e9", ""])
        elif arg == "bytes":
            await self.send_data("bytes", [b"\xff\xfe 8bit \x00", b".x", b"\x80."])
        elif arg == "async":
            await self.send_data("async", agen())
        elif arg == "gen":
            await self.send_data("gen", gen())
        elif arg == "empty":
            await self.send_data("empty", [])
        elif arg == "code":
            await self.send_data("with code", ["x"], ResponseCode.SYS_TEMP)
        elif arg == "crlf":
            await self.send_data("crlf", ["a\r", "b\nc"])
        elif arg == "ints":  # a mistake: bytes(3) would be three NULs
            await self.send_data("ints", [1, 2, 3])  # type: ignore[list-item]

    async def pop3_XRAW(self, arg: str | None) -> None:
        await self.send_raw("+OK raw", b"second \xff", ".unstuffed")

    async def pop3_XMSG(self, arg: str | None) -> None:
        chunks = [b"H: 1\n", b"\n.b", b"ody 1\r", b"\nbody 2\n", b"body 3"]
        await self.send_message("msg", chunks, body_lines=int(arg) if arg else None)


@pytest.mark.rfc("1939", "3")
@pytest.mark.parametrize(
    ("arg", "wire"),
    [
        # DOT-02: stuffing, the first line included; str lines are UTF-8.
        ("str", "+OK str\r\na\r\n..b\r\n..\r\n...c\r\ncaf\u00e9\r\n\r\n.\r\n".encode()),
        # DOT-06: bytes pass through 8-bit clean.
        ("bytes", b"+OK bytes\r\n\xff\xfe 8bit \x00\r\n..x\r\n\x80.\r\n.\r\n"),
        ("async", b"+OK async\r\n1 10\r\n..2 20\r\n.\r\n"),
        ("gen", b"+OK gen\r\na\r\n..\r\nb\r\n.\r\n"),
        # DOT-07: an empty listing is +OK then ".".
        ("empty", b"+OK empty\r\n.\r\n"),
        ("code", b"+OK [SYS/TEMP] with code\r\nx\r\n.\r\n"),
        # WIRE-09: a line can never smuggle a bare LF onto the wire.
        ("crlf", b"+OK crlf\r\na\r\nb\r\nc\r\n.\r\n"),
    ],
)
async def test_send_data(arg: str, wire: bytes) -> None:
    async with memory_session(DataHandler) as s:
        await s.client.send_line(f"XDATA {arg}")
        assert await raw_multi(s.client) == wire
        assert await s.client.command("XHELLO") == "+OK hello in AUTHORIZATION"


async def test_send_data_refuses_lines_that_are_not_text() -> None:
    # An int is no line: -ERR, as for any exception in a command, not NULs on the wire.
    async with memory_session(DataHandler) as s:
        assert await s.client.command("XDATA ints") == "-ERR [SYS/TEMP] Internal error."
        assert await s.client.command("XHELLO") == "+OK hello in AUTHORIZATION"


@pytest.mark.rfc("1939", "7")
@pytest.mark.parametrize(
    ("arg", "wire"),
    [
        ("", b"+OK msg\r\nH: 1\r\n\r\n..body 1\r\nbody 2\r\nbody 3\r\n.\r\n"),
        ("0", b"+OK msg\r\nH: 1\r\n\r\n.\r\n"),
        ("1", b"+OK msg\r\nH: 1\r\n\r\n..body 1\r\n.\r\n"),
        ("3", b"+OK msg\r\nH: 1\r\n\r\n..body 1\r\nbody 2\r\nbody 3\r\n.\r\n"),
    ],
)
async def test_send_message(arg: str, wire: bytes) -> None:
    # RFC 1939 §3, §7 (DOT-02, DOT-05, TOP-01, TOP-02)
    async with memory_session(DataHandler) as s:
        await s.client.send_line(f"XMSG {arg}".strip())
        assert await raw_multi(s.client) == wire


async def test_send_raw() -> None:
    async with memory_session(DataHandler) as s:
        await s.client.send_line("XRAW")
        assert await s.client.raw_line() == b"+OK raw\r\n"
        assert await s.client.raw_line() == b"second \xff\r\n"
        assert await s.client.raw_line() == b".unstuffed\r\n"
        assert await s.client.command("XHELLO") == "+OK hello in AUTHORIZATION"


@pytest.mark.rfc("1939", "5")
@pytest.mark.parametrize("number", [1, 2, 3])
async def test_retr_generated_content(number: int) -> None:
    # RFC 1939 §5, §11 (RETR-01, SIZE-01, DOT-02): the size in the reply is what arrives.
    message = MESSAGES[number - 1]
    async with memory_session(SkeletonHandler) as s:
        await s.client.login()
        first, lines = await s.client.multi(f"RETR {number}")
        assert first == f"+OK {wire_size(message)} octets"
        body = b"".join((line[1:] if line[:1] == b"." else line) + b"\r\n" for line in lines)
        assert len(body) == wire_size(message)
        assert body == re.sub(rb"\r?\n", b"\r\n", message).rstrip(b"\r\n") + b"\r\n"
        assert all(not line.startswith(b".") or line.startswith(b"..") for line in lines)


# -- closing, refusing, QUIT ---------------------------------------------------------------


class ByeHandler(SkeletonHandler):
    extra_commands = {"XBYE": ["AUTH", "TRANS"]}

    async def pop3_XBYE(self, arg: str | None) -> None:
        await self.send_ok("bye")
        self.close_client()


async def test_close_client() -> None:
    recorder = Recorder(ByeHandler)
    async with memory_session(recorder) as s:
        await s.client.login()
        await s.client.send_line("XBYE")
        await s.client.send_line("NOOP")  # pipelined after: never answered
        assert await s.client.read_to_eof() == b"+OK bye\r\n"
        await s.done.wait()
    handler = handler_of(recorder)
    assert handler.commits == 0  # STATE-06: no UPDATE without QUIT
    assert handler.disconnects == 1
    assert handler.calls == ["USER", "PASS"]


class SilentHandler(SkeletonHandler):
    extra_commands = {"XSILENT": ["AUTH"], "XHANGUP": ["AUTH"]}

    async def pop3_XSILENT(self, arg: str | None) -> None:
        """Forgets to reply."""

    async def pop3_XHANGUP(self, arg: str | None) -> None:
        self.close_client()  # ending the connection without a reply is allowed


@pytest.mark.rfc("1939", "3")
async def test_command_without_a_reply_is_answered(caplog: pytest.LogCaptureFixture) -> None:
    # Every command gets a reply: a method that sends none would hang its client.
    async with memory_session(SilentHandler) as s:
        await s.client.command("NOOP")  # a queued reply before it changes nothing
        assert await s.client.command("XSILENT") == "-ERR [SYS/TEMP] Internal error."
        assert await s.client.command("XHELLO") == "+OK hello in AUTHORIZATION"
        await s.client.send_line("XHANGUP")
        assert await s.client.read_to_eof() == b""
    assert "pop3_XSILENT returned without a reply" in caplog.text
    assert "XHANGUP" not in caplog.text


class RefusingHandler(SkeletonHandler):
    async def on_connect(self) -> None:
        assert self.state is State.CONNECT
        raise POP3Error("go away", ResponseCode.SYS_PERM)


async def test_on_connect_refuses() -> None:
    recorder = Recorder(RefusingHandler)
    async with memory_session(recorder, read_greeting=False) as s:
        assert await s.client.read_to_eof() == b"-ERR [SYS/PERM] go away\r\n"
        await s.done.wait()
    assert handler_of(recorder).disconnects == 1
    assert handler_of(recorder).disconnect_state == "DISCONNECT"


class OwnGreetingHandler(SkeletonHandler):
    """A Perl-style port that writes its own greeting in on_connect()."""

    refuse = False

    async def on_connect(self) -> None:
        if self.refuse:
            await self.send_err("busy, try later", ResponseCode.SYS_TEMP)
            self.close_client()
        else:
            await self.send_ok("my own greeting")

    def greeting(self) -> str:
        raise AssertionError("not called when on_connect() replied")


class RefusingOwnGreetingHandler(OwnGreetingHandler):
    refuse = True


class FailingAfterGreetingHandler(SkeletonHandler):
    async def on_connect(self) -> None:
        await self.send_ok("hello")
        raise POP3Error("and then a failure")  # answered already: no -ERR added


@pytest.mark.parametrize("handler", [OwnGreetingHandler, RefusingOwnGreetingHandler])
async def test_a_reply_from_on_connect_is_the_greeting(
    start_server: StartServer, handler: type[OwnGreetingHandler]
) -> None:
    # One status line opens the session, whoever sends it.  (A second greeting
    # raised RuntimeError outside any handler and stopped the whole server.)
    running = await start_server(handler)
    for _ in range(2):  # the server still serves after the first
        client = Client(await trio.open_tcp_stream("127.0.0.1", running.port))
        try:
            if handler.refuse:
                assert await client.read_to_eof() == b"-ERR [SYS/TEMP] busy, try later\r\n"
            else:
                assert await client.reply() == "+OK my own greeting"
                assert await client.command("XHELLO") == "+OK hello in AUTHORIZATION"
                assert await client.command("QUIT") == "+OK goodbye"
        finally:
            await client.aclose()


async def test_on_connect_failing_after_its_reply_is_logged(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    running = await start_server(FailingAfterGreetingHandler)
    client = Client(await trio.open_tcp_stream("127.0.0.1", running.port))
    try:
        assert await client.read_to_eof() == b"+OK hello\r\n"
    finally:
        await client.aclose()
    assert "on_connect()/greeting() raised after its reply" in caplog.text


class TalkativeDisconnect(SkeletonHandler):
    cleaned = False

    async def disconnect(self) -> None:
        await self.send_err("see you")  # after the last reply: sent before the close
        await super().disconnect()
        self.cleaned = True


async def test_disconnect_hook_may_send_and_still_cleans_up() -> None:
    recorder = Recorder(TalkativeDisconnect)
    async with memory_session(recorder) as s:
        await s.client.send_line("QUIT")
        assert await s.client.read_to_eof() == b"+OK goodbye\r\n-ERR see you\r\n"
        await s.done.wait()
    handler = recorder.last
    assert isinstance(handler, TalkativeDisconnect)
    assert handler.cleaned


@pytest.mark.rfc("1939", "6")
async def test_quit_from_authorization_skips_commit() -> None:
    # RFC 1939 §6 (STATE-05): QUIT in AUTHORIZATION ends without UPDATE.
    recorder = Recorder()
    async with memory_session(recorder) as s:
        await s.client.send_line("USER alice")
        await s.client.send_line("QUIT")
        assert await s.client.read_to_eof() == (
            b"+OK username accepted, send password\r\n+OK goodbye\r\n"
        )
        await s.done.wait()
    handler = handler_of(recorder)
    assert handler.commits == 0
    assert handler.disconnects == 1


@pytest.mark.rfc("1939", "6")
async def test_quit_from_transaction_commits_then_ok() -> None:
    # RFC 1939 §6 (STATE-01, STATE-07): QUIT in TRANSACTION enters UPDATE, commits, +OK.
    recorder = Recorder()
    async with memory_session(recorder) as s:
        await s.client.login()
        await s.client.send_line("QUIT")
        await s.client.send_line("NOOP")  # never answered: the session is over
        assert await s.client.read_to_eof() == b"+OK goodbye\r\n"
        await s.done.wait()
    handler = handler_of(recorder)
    assert handler.commits == 1
    assert handler.commit_state == "UPDATE"
    assert handler.disconnects == 1
    assert handler.state is State.DISCONNECT


@pytest.mark.rfc("1939", "6")
@pytest.mark.parametrize(
    ("error", "reply"),
    [
        (RuntimeError("disk on fire"), "-ERR [SYS/TEMP] Some deleted messages were not removed."),
        (POP3Error("disk full", ResponseCode.SYS_PERM), "-ERR [SYS/PERM] disk full"),
        (POP3Error("partial"), "-ERR partial"),
    ],
)
async def test_commit_failure_answers_err(error: Exception, reply: str) -> None:
    # RFC 1939 §6 (STATE-08): removal failed -> -ERR, and the connection still closes.
    def factory() -> SkeletonHandler:
        handler = SkeletonHandler()
        handler.fail_commit = error
        return handler

    recorder = Recorder(factory)
    async with memory_session(recorder) as s:
        await s.client.login()
        assert await s.client.command("QUIT") == reply
        assert await s.client.read_to_eof() == b""
        await s.done.wait()
    assert handler_of(recorder).disconnects == 1
    assert "disk on fire" not in reply


# -- malformed and long lines --------------------------------------------------------------


@pytest.mark.rfc("2449", "4")
async def test_255_octet_command_accepted() -> None:
    # RFC 2449 §4 (WIRE-04): 255 octets including CRLF are accepted ...
    async with memory_session(SkeletonHandler) as s:
        line = "XHELLO " + "a" * 246
        assert len(line) + 2 == 255
        assert await s.client.command(line) == "+OK hello in AUTHORIZATION"
        # ... one more octet is too long: -ERR, and the session goes on (WIRE-06).
        assert await s.client.command(line + "a") == "-ERR Command line too long."
        assert await s.client.command("USER alice") == "+OK username accepted, send password"
        assert await s.client.command("PASS secret") == "+OK logged in"


@pytest.mark.rfc("2449", "4")
async def test_bare_lf_line_measured_as_if_it_ended_in_crlf() -> None:
    # A bare LF is tolerated, not standard: the same command passes or fails the
    # length limit whichever end it has, so 253 octets before it pass, 254 fail.
    async with memory_session(SkeletonHandler) as s:
        line = b"XHELLO " + b"a" * 246
        await s.client.send(line + b"\n")
        assert await s.client.reply() == "+OK hello in AUTHORIZATION"
        await s.client.send(line + b"a\n")
        assert await s.client.reply() == "-ERR Command line too long."


@pytest.mark.rfc("2449", "4")
@pytest.mark.parametrize("length", [256, 1000, 8191, 8192, 8193, 20_000, 60_000])
async def test_overlong_line_is_err_and_session_continues(length: int) -> None:
    # WIRE-06 pick: -ERR for an over-long command, discard through the LF, go on.
    async with memory_session(SkeletonHandler) as s:
        await s.client.send(b"XHELLO " + b"X" * (length - 9) + b"\r\nXHELLO\r\n")
        assert await s.client.reply() == "-ERR Command line too long."
        assert await s.client.reply() == "+OK hello in AUTHORIZATION"


async def test_huge_line_drops_client() -> None:
    # SEC-04: a line past max_discard is an attack: the connection is dropped, after
    # a -ERR that says why (bad input always gets one).
    recorder = Recorder()
    async with memory_session(recorder) as s:
        with trio.fail_after(5):
            await s.client.send(b"X" * 200_000)
            assert await s.client.read_to_eof() == (
                b"-ERR Line too long; closing the connection.\r\n"
            )
            await s.done.wait()
    assert handler_of(recorder).disconnects == 1


@pytest.mark.rfc("1939", "3")
@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"NO\x00OP", "-ERR Command contains control characters."),
        (b"USER a\x00b", "-ERR Command contains control characters."),
        (b"USER \x1b[2J", "-ERR Command contains control characters."),
        (b"USER \xff\xfe", "-ERR Command is not valid UTF-8."),
        (b"\xc0\xaf", "-ERR Command is not valid UTF-8."),
        (b"", "-ERR Empty command."),
    ],
)
async def test_malformed_lines(line: bytes, reply: str) -> None:
    # RFC 1939 §3 (WIRE-02 pick, WIRE-07): -ERR, never a crash; the session goes on.
    async with memory_session(SkeletonHandler) as s:
        await s.client.send(line + b"\r\n")
        assert await s.client.reply() == reply
        assert await s.client.command("XHELLO") == "+OK hello in AUTHORIZATION"


@pytest.mark.rfc("1939", "3")
async def test_bare_lf_accepted_crlf_sent() -> None:
    # RFC 1939 §3 (WIRE-09 pick): bare LF in, CRLF always out (Client.line checks it).
    async with memory_session(SkeletonHandler) as s:
        await s.client.send(b"USER alice\nPASS secret\nLIST\n")
        assert await s.client.reply() == "+OK username accepted, send password"
        assert await s.client.reply() == "+OK logged in"
        assert await s.client.reply() == "+OK 3 messages"
        assert len(await s.client.data_lines()) == 3


async def test_bad_command_budget() -> None:
    # SEC-04: past max_bad_commands bad commands in a row the client is dropped; like
    # Dovecot (transcript A12c), the first one past the budget is still answered.
    recorder = Recorder()
    async with memory_session(recorder, limits=Limits(max_bad_commands=3)) as s:
        await s.client.send(b"FOO\r\nSTAT\r\n\x00\r\nBAR\r\nXHELLO\r\n")
        data = await s.client.read_to_eof()
        assert data == (
            b"-ERR Unknown command: FOO\r\n"
            b"-ERR STAT not allowed in AUTHORIZATION state.\r\n"
            b"-ERR Command contains control characters.\r\n"
            b"-ERR Unknown command: BAR\r\n"
            b"-ERR Too many bad commands.\r\n"
        )
    assert handler_of(recorder).disconnects == 1


async def test_bad_command_budget_counts_only_bad_commands_in_a_row() -> None:
    # SEC-04 as Dovecot applies it (transcripts A10, A12c): a command that completes
    # starts the count again, so an occasional unsupported command never ends a
    # long session.
    async with memory_session(SkeletonHandler, limits=Limits(max_bad_commands=3)) as s:
        for _ in range(10):
            await s.client.send(b"FOO\r\nFOO\r\nFOO\r\nXHELLO\r\n")
            for _ in range(3):
                assert await s.client.reply() == "-ERR Unknown command: FOO"
            assert await s.client.reply() == "+OK hello in AUTHORIZATION"


async def test_bad_command_budget_disabled() -> None:
    async with memory_session(SkeletonHandler, limits=Limits(max_bad_commands=None)) as s:
        await s.client.send(b"FOO\r\n" * 100 + b"XHELLO\r\n")
        for _ in range(100):
            assert await s.client.reply() == "-ERR Unknown command: FOO"
        assert await s.client.reply() == "+OK hello in AUTHORIZATION"


# -- pipelining and CAPA -------------------------------------------------------------------


@pytest.mark.rfc("2449", "6.6")
async def test_pipelining_in_order() -> None:
    # RFC 2449 §6.6 (CAP-PIPE): many commands in one write, answered strictly in order.
    async with memory_session(SkeletonHandler) as s:
        burst = b"USER alice\r\nPASS secret\r\n"
        burst += b"".join(b"XECHO %d\r\nLIST\r\nRETR 2\r\nSTAT\r\n" % i for i in range(200))
        burst += b"QUIT\r\n"
        await s.client.send(burst)
        assert (await s.client.reply()).startswith("+OK")
        assert await s.client.reply() == "+OK logged in"
        for i in range(200):
            assert await s.client.reply() == f"+OK {i}"
            assert await s.client.reply() == "+OK 3 messages"
            assert len(await s.client.data_lines()) == 3
            assert (await s.client.reply()).endswith(" octets")
            await s.client.data_lines()
            assert await s.client.reply() == f"+OK 3 {TOTAL}"
        assert await s.client.reply() == "+OK goodbye"
        assert await s.client.read_to_eof() == b""


@pytest.mark.rfc("2449", "5")
async def test_capa_contents() -> None:
    # RFC 2449 §5 (CAPA-01, CAPA-03, RESP-04)
    async with memory_session(SkeletonHandler) as s:
        first, auth_caps = await s.client.multi("CAPA")
        assert first.startswith("+OK")
        await s.client.login()
        first, trans_caps = await s.client.multi("CAPA")
        assert first.startswith("+OK")
    for caps in (auth_caps, trans_caps):
        assert b"RESP-CODES" in caps
        assert b"PIPELINING" in caps
        assert f"IMPLEMENTATION trio_pop3 {__version__}".encode() in caps
        # Not implemented by this handler, so not announced.
        assert b"TOP" not in caps
        assert b"UIDL" not in caps
        assert b"STLS" not in caps  # no ssl_context (CONN-06)
        assert all(len(c) + 2 <= 512 and not c.startswith(b".") for c in caps)
    assert set(auth_caps) <= set(trans_caps)  # CAPA-03


@pytest.mark.rfc("2449", "6.2")
async def test_capa_announces_user_when_implemented() -> None:
    # RFC 2449 §6.2 (USER-05, CAP-USER): a handler with USER/PASS announces USER, in
    # both states (CAPA-03); curl refuses to log in without it.
    async with memory_session(SkeletonHandler) as s:
        _, caps = await s.client.multi("CAPA")
        assert b"USER" in caps
        await s.client.login()
        _, caps = await s.client.multi("CAPA")
        assert b"USER" in caps
    async with memory_session(POP3Handler) as s:
        _, caps = await s.client.multi("CAPA")
        assert b"USER" not in caps


class TopUidlHandler(SkeletonHandler):
    async def pop3_TOP(self, arg: str | None) -> None:
        await self.send_ok()

    async def pop3_UIDL(self, arg: str | None) -> None:
        await self.send_ok()

    def capabilities(self) -> list[str]:
        return [*super().capabilities(), "X-TRIO-TEST 1"]


async def test_capa_follows_implementation() -> None:
    async with memory_session(TopUidlHandler) as s:
        _, caps = await s.client.multi("CAPA")
    assert {b"TOP", b"UIDL", b"X-TRIO-TEST 1"} <= set(caps)


# -- send_data batching ----------------------------------------------------------------


def _body(chunks: list[bytes]) -> bytes:
    writer = MessageWriter()
    return b"".join(writer.feed(chunk) for chunk in chunks) + writer.finish()


@given(
    st.lists(
        st.one_of(st.binary(max_size=40), st.text(max_size=20)),
        max_size=60,
    ),
    st.integers(min_value=1, max_value=64),
)
def test_joined_lines_send_the_same_body_as_line_by_line(
    lines: list[bytes | str], batch: int
) -> None:
    """Batched lines are byte-for-byte what one chunk per line gives (stuffing, CRLF)."""
    per_line = [_handler._line_bytes(line) + b"\n" for line in lines]
    original = _handler.LINE_BATCH_SIZE
    _handler.LINE_BATCH_SIZE = batch  # small batches: exercise the chunk boundaries
    try:
        joined = list(_handler._joined_lines(lines))
    finally:
        _handler.LINE_BATCH_SIZE = original
    assert b"".join(joined) == b"".join(per_line)
    assert _body(joined) == _body(per_line)


async def test_send_data_from_a_list_and_an_async_iterable_agree() -> None:
    lines: list[bytes | str] = [".dot", b"bytes \xff line", "naïve", b"", b"..two", "end"]

    class Handler(SkeletonHandler):
        async def pop3_XSYNC(self, arg: str | None) -> None:
            await self.send_data("sync", lines)

        async def pop3_XASYNC(self, arg: str | None) -> None:
            async def gen() -> AsyncIterator[bytes | str]:
                for line in lines:
                    yield line

            await self.send_data("async", gen())

    Handler.extra_commands = {"XSYNC": ["AUTH"], "XASYNC": ["AUTH"]}
    async with memory_session(Handler) as s:
        first, sync_lines = await s.client.multi("XSYNC")
        assert first == "+OK sync"
        first, async_lines = await s.client.multi("XASYNC")
        assert first == "+OK async"
    assert sync_lines == async_lines
    assert sync_lines[0] == b"..dot"


class TwiceHandler(SkeletonHandler):
    extra_commands = {"XTWO": ["AUTH"], "XOKERR": ["AUTH"]}

    async def pop3_XTWO(self, arg: str | None) -> None:
        await self.send_ok("one")
        await self.send_ok("two")  # a bug: would answer the client's next command

    async def pop3_XOKERR(self, arg: str | None) -> None:
        await self.send_data("listing", ["a"])
        raise POP3Error("too late")  # answered already: must not add a -ERR


async def test_a_second_reply_to_one_command_is_refused_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 1939 §3: one reply per command, or the client reads every later one wrong."""
    async with memory_session(TwiceHandler) as s:
        c = s.client
        assert await c.command("XTWO") == "+OK one"
        assert await c.command("USER alice") == "+OK username accepted, send password"
        assert await c.multi("XOKERR") == ("+OK listing", [b"a"])
        assert await c.command("NOOP") == "-ERR NOOP not allowed in AUTHORIZATION state."
    errors = [r for r in caplog.records if "raised after its reply" in r.getMessage()]
    assert [r.getMessage().split()[1] for r in errors] == ["XTWO", "XOKERR"]
    assert "second reply to one command" in str(errors[0].exc_info[1])  # type: ignore[index]


@pytest.mark.rfc("1939", "3")
@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("1", 1),
        (" 3 ", 3),
        ("\u0661", "Invalid message number."),  # an Arabic-Indic 1: isdecimal() says yes
        ("\uff12", "Invalid message number."),  # a full-width 2
        ("\xa01", "Invalid message number."),  # a no-break space is not a blank here
        ("+1", "Invalid message number."),
        ("0", "No such message."),
        ("4", "No such message."),
        (None, "Message number required."),
    ],
)
def test_message_number_takes_ascii_digits_in_range(arg: str | None, expected: int | str) -> None:
    if isinstance(expected, int):
        assert POP3Handler.message_number(arg, 3) == expected
    else:
        with pytest.raises(POP3Error) as caught:
            POP3Handler.message_number(arg, 3)
        assert caught.value.text == expected


@pytest.mark.parametrize("hook", ["on_connect", "commit", "disconnect", "unknown", "on_tls"])
def test_a_hook_without_async_is_refused_at_class_definition(hook: str) -> None:
    def plain(self: POP3Handler, *args: object) -> None:
        raise AssertionError("never called")

    with pytest.raises(TypeError, match=f"Plain.{hook} must be an 'async def' method"):
        type("Plain", (SkeletonHandler,), {hook: plain})


class SyncCommitMixin:
    def commit(self) -> None:  # a hook the framework awaits
        raise AssertionError("never called")


class SyncCommandMixin:
    def pop3_XBAR(self, arg: str | None) -> None:
        raise AssertionError("never called")


@pytest.mark.parametrize("mixin", [SyncCommitMixin, SyncCommandMixin])
def test_a_mixin_is_checked_too(mixin: type) -> None:
    with pytest.raises(TypeError, match="must be an 'async def' method"):
        type("Mixed", (mixin, SkeletonHandler), {})


async def _reply_with(handler: POP3Handler, text: str, arg: str | None) -> None:
    await handler.send_ok(text)


class HelpersHandler(SkeletonHandler):
    """Names no command reaches are free; a partialmethod of an async def is a command."""

    extra_commands = {"XPART": ["AUTH"]}
    pop3_greeting_suffix = "!"  # lower case: never a command

    def pop3_helper(self) -> str:  # lower case: never a command
        return "help" + self.pop3_greeting_suffix

    pop3_XPART = functools.partialmethod(_reply_with, "partial")  # noqa: N815


async def test_helpers_and_partialmethods_are_allowed() -> None:
    async with memory_session(HelpersHandler) as s:
        assert await s.client.command("XPART") == "+OK partial"
        assert await s.client.command("helper") == "-ERR Unknown command: HELPER"


def test_a_state_is_the_string_of_its_name() -> None:
    """A port of the Perl original compares the state with a string; that works."""
    state: State = State.parse("trans")
    assert state == "TRANSACTION"
    abbreviation: str = "TRANS"
    assert state != abbreviation  # abbreviations: State.parse() reads them
    by_name: dict[str, int] = {State.UPDATE: 1}
    assert by_name["UPDATE"] == 1  # equal, so the same hash
    assert f"{State.CONNECT}" == "CONNECT"

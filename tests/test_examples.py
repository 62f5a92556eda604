"""The examples, run for real: served on a loopback port and read with stdlib poplib.

Each example is imported from ``examples/`` by file name and its server is served
with :func:`trio_pop3.testing.serve_on_loopback`; a smoke test also starts every
example as a subprocess (``python examples/X.py --port 0``) and stops it with SIGINT.
"""

from __future__ import annotations

import base64
import importlib.util
import logging
import os
import poplib
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar, cast

import pytest
import trio

from trio_pop3.testing import check_mailbox_backend, open_memory_session, serve_on_loopback

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

T = TypeVar("T")


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (the directory is not a package)."""
    module_name = f"_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


async def in_thread(function: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(function)


def pop3(host: str, port: int) -> poplib.POP3:
    return poplib.POP3(host, port, timeout=10)


def shortcmd(client: poplib.POP3, line: str) -> bytes:
    """Send any command with poplib (it has no public method for that)."""
    reply: bytes = cast(Any, client)._shortcmd(line)
    return reply


# -- skeleton -------------------------------------------------------------------------------


@pytest.mark.rfc("1939", "5")
async def test_skeleton_retr_refuses_bad_message_numbers(caplog: pytest.LogCaptureFixture) -> None:
    """RETR of no message, or of one that does not exist, is -ERR; the session goes on."""
    caplog.set_level(logging.ERROR)
    example = load_example("skeleton")
    async with open_memory_session(example.SkeletonHandler) as client:
        await client.login("alice", "wonderland")
        for line in ["RETR", "RETR 0", "RETR 8", "RETR x", "RETR \u00b2"]:
            reply = await client.command(line)
            assert not reply.ok, (line, reply)
        assert b"Subject: Report for" in await client.retr(1)
        await client.quit()
    assert not caplog.records, "a bad argument is a client error, not a server failure"


# -- sqlite_server --------------------------------------------------------------------------


async def test_sqlite_server_serves_rows_and_acknowledges_on_quit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = load_example("sqlite_server")
    db_path = str(tmp_path / "alerts.sqlite3")
    example.create_demo_db(db_path)

    def open_alerts() -> list[int]:
        with sqlite3.connect(db_path) as db:
            rows = db.execute(
                "SELECT id FROM alerts WHERE recipient = 'alice' AND acknowledged_at IS NULL"
            ).fetchall()
        db.close()
        return [row[0] for row in rows]

    closed = trio.Event()  # set when the first session has released the maildrop
    release = example.AlertMailbox.close

    async def close(self: Any) -> None:
        await release(self)
        closed.set()

    monkeypatch.setattr(example.AlertMailbox, "close", close)
    async with serve_on_loopback(example.make_server(db_path)) as (host, port):

        def session(dele: Sequence[int], send_quit: bool) -> tuple[int, list[bytes], list[bytes]]:
            client = pop3(host, port)
            client.user("alice")
            client.pass_("wonderland")
            count = client.stat()[0]
            uids = client.uidl()[1]
            message = client.retr(2)[1]
            for number in dele:
                client.dele(number)
            if send_quit:
                client.quit()
            else:
                client.close()  # dropped: no UPDATE
            return count, uids, message

        count, uids, message = await in_thread(lambda: session([1], send_quit=False))
        assert count == 3
        assert uids == [b"1 alert-1", b"2 alert-2", b"3 alert-3"]
        assert b"Subject: [CRITICAL] web2: HTTP 500 rate" in message
        assert message[-1] == b".env ok"  # stuffed on the wire, un-stuffed by poplib
        # The dropped session acknowledged nothing, once the server has seen the drop.
        with trio.fail_after(10):
            await closed.wait()
        assert open_alerts() == [1, 2, 3]
        await in_thread(lambda: session([1, 3], send_quit=True))
        assert open_alerts() == [2]

        def locked() -> str:
            first = pop3(host, port)
            first.user("alice")
            first.pass_("wonderland")
            second = pop3(host, port)
            second.user("alice")
            try:
                second.pass_("wonderland")
            except poplib.error_proto as exc:
                return str(exc)
            finally:
                second.close()
                first.quit()
            return "no error"

        assert "[IN-USE]" in await in_thread(locked)


async def test_sqlite_store_passes_the_conformance_check(tmp_path: Path) -> None:
    example = load_example("sqlite_server")
    db_path = str(tmp_path / "conformance.sqlite3")

    def make_store(maildrops: Mapping[str, Sequence[bytes]]) -> Any:
        with sqlite3.connect(db_path) as db:
            db.execute(example.SCHEMA)
            for user, messages in maildrops.items():
                for n in range(len(messages)):
                    db.execute(
                        "INSERT INTO alerts (recipient, raised_at, host, severity, summary,"
                        " details) VALUES (?, '2024-01-01T00:00:00Z', 'h', 'info', ?, ?)",
                        (user, f"alert {n}", f"line one\n.dotted line {n}\n."),
                    )
        db.close()
        return example.AlertStore(db_path)

    report = await check_mailbox_backend(make_store, verbatim=False)
    assert {"STATE-06", "STATE-07", "LOCK-02", "DOT-02", "SIZE-01", "UIDL-03"} <= set(
        report.passed
    )


# -- maildir_server -------------------------------------------------------------------------


async def test_maildir_server(tmp_path: Path) -> None:
    example = load_example("maildir_server")
    from trio_pop3.mailbox import deliver

    root = tmp_path / "mail"
    deliver(root / "alice", b"Subject: one\n\nfirst\n", fsync=False)
    deliver(root / "alice", b"Subject: two\n\n.second\n", fsync=False)
    users = tmp_path / "passwd"
    users.write_text("alice:{PLAIN}secret\n")
    async with serve_on_loopback(example.make_server(root, users)) as (host, port):

        def session() -> tuple[int, list[bytes]]:
            client = pop3(host, port)
            client.user("alice")
            client.pass_("secret")
            count = client.stat()[0]
            lines = client.retr(2)[1]
            client.dele(1)
            client.quit()
            return count, lines

        count, lines = await in_thread(session)
    assert count == 2
    assert lines == [b"Subject: two", b"", b".second"]
    assert len(os.listdir(root / "alice" / "new")) + len(os.listdir(root / "alice" / "cur")) == 1


# -- custom_command -------------------------------------------------------------------------


async def test_custom_command_and_sasl_mechanism() -> None:
    example = load_example("custom_command")
    async with serve_on_loopback(example.make_handler_factory()) as (host, port):

        def session() -> tuple[dict[str, list[str]], bytes, bytes, dict[str, list[str]]]:
            client = pop3(host, port)
            before = client.capa()
            with pytest.raises(poplib.error_proto, match="AUTH"):
                shortcmd(client, "AUTH X-TOKEN " + base64.b64encode(b"alice nope").decode())
            token = base64.b64encode(b"alice tok-alice-1").decode()
            login = shortcmd(client, "AUTH X-TOKEN " + token)
            client.dele(1)
            status = shortcmd(client, "XSTATUS")
            after = client.capa()
            client.quit()
            return before, login, status, after

        before, login, status, after = await in_thread(session)
    assert "X-TOKEN" in before["SASL"]
    assert "XSTATUS" not in before  # only where the command is allowed
    assert login.startswith(b"+OK")
    assert status == b"+OK user=alice messages=1 octets=22 marked=1"
    assert "XSTATUS" in after
    assert "X-TOKEN" in after["SASL"]


async def test_custom_command_wrong_state_and_empty_challenge() -> None:
    example = load_example("custom_command")
    from trio_pop3.testing import open_memory_session

    async with open_memory_session(example.make_handler_factory()) as client:
        assert not (await client.command("XSTATUS")).ok  # not before login
        challenge = await client.command("AUTH X-TOKEN")
        assert challenge.status == "+"
        assert challenge.text == ""
        reply = await client.command(base64.b64encode(b"alice tok-alice-1").decode())
        assert reply.ok
        assert (await client.command("XSTATUS extra")).code is None


# -- embedding ------------------------------------------------------------------------------


async def test_embedding_status_service_and_clean_shutdown() -> None:
    example = load_example("embedding")
    server = example.make_server("127.0.0.1", 0)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        pop3_port, status_port = await nursery.start(
            lambda task_status: example.run(
                server, host="127.0.0.1", status_port=0, stop=stop, task_status=task_status
            )
        )

        async def status() -> bytes:
            stream = await trio.open_tcp_stream("127.0.0.1", status_port)
            data = b""
            while chunk := await stream.receive_some(100):
                data += chunk
            await stream.aclose()
            return data

        assert await status() == b"active_connections=0 draining=no\n"
        client = await in_thread(lambda: pop3("127.0.0.1", pop3_port))
        await in_thread(lambda: client.user("alice"))
        await in_thread(lambda: client.pass_("wonderland"))
        assert await status() == b"active_connections=1 draining=no\n"
        stop.set()
        # The idle session is told the server is going away, unprompted; run() returns.
        assert (await in_thread(client.file.readline)).startswith(b"-ERR [SYS/TEMP]")
        assert await in_thread(client.file.readline) == b""  # closed
        await in_thread(client.close)
    assert server.active_connections == 0
    assert server.draining


# -- every example as a program -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "extra", "user", "password"),
    [
        ("sqlite_server", [], "alice", "wonderland"),
        ("maildir_server", [], "demo", "demo"),
        ("custom_command", [], "alice", "wonderland"),
        ("embedding", ["--status-port", "0"], "alice", "wonderland"),
    ],
)
async def test_example_runs_as_a_program(
    name: str, extra: list[str], user: str, password: str
) -> None:
    env = dict(os.environ)
    root = str(EXAMPLES.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, str(EXAMPLES / f"{name}.py"), "--port", "0", *extra]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(20):
            while b"listening on " not in output or not output.endswith(b"\n"):
                chunk = await process.stdout.receive_some(4096)
                assert chunk, f"{name} exited early: {output!r}"
                output += chunk
        line = next(x for x in output.decode().splitlines() if x.startswith("listening on "))
        host, port = line.split()[2].rsplit(":", 1)

        def session() -> int:
            client = pop3(host, int(port))
            client.user(user)
            client.pass_(password)
            count = client.stat()[0]
            client.quit()
            return count

        assert await in_thread(session) >= 1
        process.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

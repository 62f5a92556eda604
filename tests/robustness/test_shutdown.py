"""Graceful shutdown with sessions in every situation, in-process and through the CLI.

``POP3Server.shutdown(grace)``: idle sessions (before and after login, with and without
DELE marks) are told ``-ERR [SYS/TEMP]`` and closed at once; a session in the middle of
a RETR finishes it and is then told the same; after ``grace`` the rest are cancelled.
Nothing uncommitted is removed (RFC 1939 §6, STATE-06, STATE-09), every lock is
released (LOCK-03), ``serve()`` returns.  The CLI exits 0 on SIGTERM with open
sessions and rolls them back; SIGKILL of the CLI loses nothing and leaves no lock.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

import trio
from pop3_support import Client, open_client
from robust_support import MaildirFixture

from trio_pop3 import Limits, POP3Server
from trio_pop3.mailbox import MailboxHandler, MaildirStore, MemoryAuthenticator

REPO = str(Path(__file__).resolve().parents[2])
USERS = {"alice": "secret", "bob": "secret", "carol": "secret"}
BIG = b"Subject: big\n\n" + b"0123456789abcdefghijklmnopqrstuvwxyz.\n" * 220_000  # ~8 MB
SHUTDOWN = "-ERR [SYS/TEMP] Server shutting down."


def setup(tmp_path: Path) -> dict[str, MaildirFixture]:
    fixtures = {}
    for user in USERS:
        fixture = MaildirFixture(str(tmp_path), user)
        fixture.add(b"Subject: a\n\none\n")
        fixture.add(BIG if user == "bob" else b"Subject: b\n\ntwo\n")
        fixtures[user] = fixture
    return fixtures


async def start(nursery: trio.Nursery, tmp_path: Path) -> tuple[POP3Server, int, trio.Event]:
    store = MaildirStore(tmp_path)
    server = POP3Server(
        functools.partial(MailboxHandler, store, MemoryAuthenticator(USERS)),
        host="127.0.0.1",
        port=0,
        limits=Limits(auth_failure_delay=0),
    )
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[int]) -> None:
        async with trio.open_nursery() as inner:
            listeners = await inner.start(server.serve)
            task_status.started(listeners[0].socket.getsockname()[1])
        stopped.set()

    port: int = await nursery.start(run)
    return server, port, stopped


async def login(port: int, user: str) -> Client:
    client = await open_client(port)
    await client.login(user, USERS[user])
    return client


async def test_shutdown_with_idle_busy_and_dele_sessions(tmp_path: Path) -> None:
    fixtures = setup(tmp_path)
    before = {user: f.contents() for user, f in fixtures.items()}
    async with trio.open_nursery() as nursery:
        server, port, stopped = await start(nursery, tmp_path)
        anonymous = await open_client(port)  # idle in AUTHORIZATION
        idle = await login(port, "alice")  # idle in TRANSACTION
        marked = await login(port, "carol")  # DELE'd, idle
        assert (await marked.command("DELE 1")).startswith("+OK")
        assert (await marked.command("DELE 2")).startswith("+OK")
        busy = await login(port, "bob")
        await busy.send_line("RETR 2")
        assert (await busy.reply()).startswith("+OK")
        await trio.sleep(0.3)  # the server is blocked sending, the client not reading
        assert server.active_connections == 4
        with trio.fail_after(10):
            server.shutdown(grace=10)
            for client in (anonymous, idle, marked):
                assert await client.reply() == SHUTDOWN
                assert await client.read_to_eof() == b""
            # The busy session finishes its RETR, then is told and closed.
            body = await busy.data()
            assert body == BIG.replace(b"\n", b"\r\n")
            assert await busy.reply() == SHUTDOWN
            assert await busy.read_to_eof() == b""
            await stopped.wait()  # serve() returned
        assert server.active_connections == 0
        for client in (anonymous, idle, marked, busy):
            await client.aclose()
        # New connections are refused once accepting stopped.
        try:
            with trio.fail_after(5):
                late = await trio.open_tcp_stream("127.0.0.1", port)
                async with late:
                    assert await late.receive_some(100) in (b"", SHUTDOWN.encode() + b"\r\n")
        except OSError:
            pass
    for user, fixture in fixtures.items():
        assert fixture.contents() == before[user]  # STATE-06: nothing removed
        assert not fixture.locked()  # LOCK-03


async def test_shutdown_grace_expires_on_a_stuck_client(tmp_path: Path) -> None:
    # A client that never reads its RETR: cancelled after the grace, still no loss.
    fixtures = setup(tmp_path)
    before = fixtures["bob"].contents()
    async with trio.open_nursery() as nursery:
        server, port, stopped = await start(nursery, tmp_path)
        stuck = await login(port, "bob")
        assert (await stuck.command("DELE 1")).startswith("+OK")
        await stuck.send_line("RETR 2")
        await trio.sleep(0.3)
        start_time = trio.current_time()
        with trio.fail_after(10):
            server.shutdown(grace=0.5)
            await stopped.wait()
        assert 0.4 <= trio.current_time() - start_time < 5
        assert server.active_connections == 0
        await stuck.aclose()
    assert fixtures["bob"].contents() == before
    assert not fixtures["bob"].locked()


# -- the command-line server ------------------------------------------------------------------


class Cli:
    """``python -m trio_pop3 serve`` as a child process; its log is collected."""

    def __init__(self, tmp_path: Path, nursery: trio.Nursery) -> None:
        self.users = tmp_path / "passwd"
        self.users.write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in USERS.items()))
        self.nursery = nursery
        self.log = bytearray()

    async def start(self, mail_root: Path) -> tuple[trio.Process, int]:
        env = dict(os.environ, PYTHONPATH=REPO)
        args = [sys.executable, "-m", "trio_pop3", "serve", "--host", "127.0.0.1"]
        args += ["--port", "0", "--maildir-root", str(mail_root), "--users", str(self.users)]
        proc = await trio.lowlevel.open_process(
            args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env
        )
        self.log = bytearray()
        got_port = trio.Event()
        log = self.log

        async def collect() -> None:
            assert proc.stderr is not None
            async with proc.stderr:
                while chunk := await proc.stderr.receive_some(4096):
                    log.extend(chunk)
                    if b"listening on 127.0.0.1:" in log:
                        got_port.set()

        self.nursery.start_soon(collect)
        with trio.fail_after(30):
            await got_port.wait()
        text = log.decode()
        port = int(text.split("listening on 127.0.0.1:")[1].split()[0].rstrip(","))
        return proc, port


async def wait_exit(proc: trio.Process) -> int:
    with trio.fail_after(20):
        return await proc.wait()


async def stop(proc: trio.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def test_cli_sigterm_with_open_sessions(tmp_path: Path) -> None:
    mail = tmp_path / "mail"
    mail.mkdir()
    fixtures = {u: MaildirFixture(str(mail), u) for u in ("alice", "bob")}
    for f in fixtures.values():
        f.add(b"Subject: a\n\none\n")
        f.add(b"Subject: b\n\ntwo\n")
    before = {u: f.contents() for u, f in fixtures.items()}
    async with trio.open_nursery() as nursery:
        proc, port = await Cli(tmp_path, nursery).start(mail)
        clients: list[Client] = []
        try:
            clients.append(await open_client(port))
            clients.append(await login(port, "alice"))
            assert (await clients[-1].command("DELE 1")).startswith("+OK")
            clients.append(await login(port, "bob"))
            assert (await clients[-1].command("DELE 2")).startswith("+OK")
            proc.send_signal(signal.SIGTERM)
            for client in clients:
                with trio.fail_after(10):
                    assert await client.reply() == SHUTDOWN
                    assert await client.read_to_eof() == b""
            assert await wait_exit(proc) == 0
        finally:
            await stop(proc)
            for client in clients:
                await client.aclose()
    for user, f in fixtures.items():
        assert f.contents() == before[user]  # rolled back: nothing removed
        assert not f.locked()


async def test_cli_sigkill_mid_session_loses_nothing(tmp_path: Path) -> None:
    mail = tmp_path / "mail"
    mail.mkdir()
    fixture = MaildirFixture(str(mail), "alice")
    for i in range(3):
        fixture.add(f"Subject: {i}\n\nbody {i}\n".encode())
    before = fixture.contents()
    async with trio.open_nursery() as nursery:
        cli = Cli(tmp_path, nursery)
        proc, port = await cli.start(mail)
        try:
            client = await login(port, "alice")
            assert (await client.command("DELE 1")).startswith("+OK")
            assert (await client.command("DELE 2")).startswith("+OK")
            assert fixture.locked()
            proc.kill()
            assert await wait_exit(proc) == -signal.SIGKILL
            await client.aclose()
        finally:
            await stop(proc)
        assert fixture.contents() == before
        assert not fixture.locked()  # the kernel released the flock: no stale lock
        # A new server instance serves the user at once.
        proc, port = await cli.start(mail)
        try:
            client = await login(port, "alice")
            size = sum(len(d) + 3 for _, d in before)  # 3 LF -> CRLF each
            assert await client.command("STAT") == f"+OK 3 {size}"
            assert (await client.command("QUIT")).startswith("+OK")
            await client.aclose()
            proc.send_signal(signal.SIGTERM)
            assert await wait_exit(proc) == 0
        finally:
            await stop(proc)


# A library user's server as the README runs it: a bare trio.run(), whose Ctrl-C is a
# KeyboardInterrupt raised wherever the program happens to be.  Its commit() removes
# ten ids one at a time, with CPU work and a checkpoint between removals.
BARE_RUN_SERVER = """
import json, sys, time
import trio, trio_pop3

STORE = sys.argv[1]

class Handler(trio_pop3.POP3Handler):
    async def pop3_USER(self, arg):
        self.state = "TRANSACTION"
        await self.send_ok("in")

    async def commit(self):
        print("commit started", flush=True)
        for number in range(10):
            end = time.perf_counter() + 0.05
            while time.perf_counter() < end:
                pass
            with open(STORE) as f:
                ids = json.load(f)
            ids.remove(number)
            with open(STORE, "w") as f:
                json.dump(ids, f)
            await trio.sleep(0)

async def main():
    server = trio_pop3.POP3Server(Handler, host="127.0.0.1", port=0)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve)
        print("port", listeners[0].socket.getsockname()[1], flush=True)

try:
    trio.run(main)
except* KeyboardInterrupt:
    print("interrupted", flush=True)
"""


async def test_ctrl_c_under_bare_trio_run_never_tears_a_commit(tmp_path: Path) -> None:
    """SIGINT during commit(): the commit finishes and QUIT is answered (STATE-06).

    The cancel scope's shield does not stop a KeyboardInterrupt; the clean-up hooks
    run with trio's KeyboardInterrupt protection, so it is raised once they return.
    """
    script = tmp_path / "server.py"
    script.write_text(BARE_RUN_SERVER)
    store = tmp_path / "ids.json"
    store.write_text("[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]")
    env = {**os.environ, "PYTHONPATH": REPO}
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(
            functools.partial(
                trio.run_process,
                [sys.executable, str(script), str(store)],
                stdout=subprocess.PIPE,
                env=env,
                check=False,
            )
        )
        try:
            assert proc.stdout is not None
            output = b""
            with trio.fail_after(30):
                while b"\n" not in output.partition(b"port ")[2]:
                    output += await proc.stdout.receive_some()
            port = int(output.partition(b"port ")[2].split()[0])
            client = await open_client(port)
            assert await client.command("USER x") == "+OK in"
            await client.send(b"QUIT\r\n")
            with trio.fail_after(30):
                while b"commit started" not in output:
                    output += await proc.stdout.receive_some()
            proc.send_signal(signal.SIGINT)
            with trio.fail_after(30):
                assert await client.reply() == "+OK goodbye"
                assert await client.read_to_eof() == b""
            await client.aclose()
            assert await wait_exit(proc) == 0
            async for chunk in proc.stdout:
                output += chunk
            assert b"interrupted" in output
        finally:
            await stop(proc)
    assert store.read_text() == "[]"  # all ten removed: the commit ran to its end

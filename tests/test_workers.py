"""``trio-pop3 serve --workers N``: a supervisor and N worker processes on one port.

Real processes throughout (``python -m trio_pop3``); the helpers come from
``tests/interop/conftest.py``.  Which worker served a connection is read from the
server log: each line carries the worker's pid, and the session's closing line the
client's address and port.
"""

from __future__ import annotations

import os
import poplib
import re
import signal
from functools import partial
from pathlib import Path

import pytest
from interop.conftest import (
    MailSetup,
    ServerFactory,
    ServerProcess,
    make_mail_setup,
    pop3_login,
    wait_for,
)

#: Workers started in these tests: the smallest number that has "another worker".
WORKERS = 2


@pytest.fixture
def config(tmp_path: Path) -> MailSetup:
    return make_mail_setup(tmp_path / "config")


def children(pid: int) -> set[int]:
    """The pids of the running child processes of ``pid`` (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after it.
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def all_listening(server: ServerProcess) -> bool:
    """Whether the supervisor and every worker logged that they listen."""
    return server.stderr.count("INFO listening on") == WORKERS + 1


def logged_end(server: ServerProcess, port: int) -> bool:
    """Whether the server logged the end of the session from ``port``."""
    return worker_of(server.stderr, port) is not None


def worker_of(log: str, port: int) -> int | None:
    """The pid of the worker whose log says the session from ``port`` ended."""
    match = re.search(rf"trio-pop3\[(\d+)\]: INFO 127\.0\.0\.1:{port} disconnected", log)
    return int(match.group(1)) if match else None


def login_worker(log: str, user: str) -> int | None:
    """The pid of the worker that logged ``user`` in (the first such login)."""
    match = re.search(rf"trio-pop3\[(\d+)\]: INFO login: user={re.escape(user)} ", log)
    return int(match.group(1)) if match else None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_maildrop_lock_is_exclusive_across_workers(
    config: MailSetup, server_factory: ServerFactory
) -> None:
    server = server_factory(config, "--workers", str(WORKERS))
    wait_for(lambda: all_listening(server), what="workers to start")
    account = config.new_account([b"Subject: one\n\nbody\n"])
    holder = pop3_login(server, account)
    wait_for(lambda: login_worker(server.stderr, account.user) is not None, what="login log")
    holding = login_worker(server.stderr, account.user)
    assert holding is not None
    # The workers share one listening socket, and whichever is awake accepts: stop
    # the holder's worker, so the next connection can only reach another one.
    os.kill(holding, signal.SIGSTOP)
    try:
        probe = server.connect()
        port: int = probe.sock.getsockname()[1]
        probe.user(account.user)
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            probe.pass_(account.password)
        probe.quit()
        wait_for(partial(logged_end, server, port), what="session log")
        served_by = worker_of(server.stderr, port)
        assert served_by is not None
        assert served_by != holding  # refused by another process than the holder's
    finally:
        os.kill(holding, signal.SIGCONT)
    assert holder.stat()[0] == 1
    holder.quit()
    # Released: the next login succeeds, whichever worker serves it.
    client = pop3_login(server, account)
    client.quit()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigterm_stops_every_worker(config: MailSetup, server_factory: ServerFactory) -> None:
    server = server_factory(config, "--workers", str(WORKERS))
    wait_for(lambda: all_listening(server), what="workers to start")
    workers = children(server.process.pid)
    account = config.new_account([b"Subject: one\n\nbody\n"])
    idle = pop3_login(server, account)
    assert server.stop(signal.SIGTERM) == 0
    # Graceful: the idle session was told why before it was closed.
    assert b"[SYS/TEMP]" in idle.file.readline()
    idle.close()
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert server.stderr.count("received SIGTERM, shutting down") == WORKERS


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sighup_changes_nothing(config: MailSetup, server_factory: ServerFactory) -> None:
    # Operators and logrotate send SIGHUP out of habit: it must not stop the service
    # (systemd's Restart=on-failure would not bring it back).
    server = server_factory(config, "--workers", str(WORKERS))
    wait_for(lambda: all_listening(server), what="workers to start")
    workers = children(server.process.pid)
    account = config.new_account([b"Subject: one\n\nbody\n"])
    busy = pop3_login(server, account)
    busy.dele(1)
    for pid in (server.process.pid, *workers):  # to all, as a terminal hangup does
        os.kill(pid, signal.SIGHUP)
    wait_for(lambda: "received SIGHUP: nothing to reload" in server.stderr, what="the log")
    busy.quit()  # the session went on, and its QUIT committed
    assert children(server.process.pid) == workers
    assert account.files() == set()
    assert server.stderr.count("received SIGHUP") == 1  # the supervisor's; workers ignore it


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_killed_worker_is_restarted(config: MailSetup, server_factory: ServerFactory) -> None:
    server = server_factory(config, "--workers", str(WORKERS))
    wait_for(lambda: len(children(server.process.pid)) == WORKERS, what="workers to start")
    victim = min(children(server.process.pid))
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        now = children(server.process.pid)
        return len(now) == WORKERS and victim not in now

    wait_for(replaced, timeout=20, what="the killed worker to be replaced")
    assert "exited unexpectedly" in server.stderr
    account = config.new_account([b"Subject: one\n\nbody\n"])
    for _ in range(WORKERS * 2):
        client = pop3_login(server, account)
        assert client.stat()[0] == 1
        client.quit()

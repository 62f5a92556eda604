"""The ``trio-pop3`` command line, run as real subprocesses (``python -m trio_pop3``).

A bad command line or configuration must end with exactly one line on stderr starting
``trio-pop3: error:`` and a non-zero exit status, never a traceback.  The server helpers
come from ``tests/interop/conftest.py``.
"""

from __future__ import annotations

import base64
import concurrent.futures
import email
import email.policy
import functools
import hashlib
import hmac
import logging
import os
import poplib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from corpus import expected_wire
from interop.conftest import (
    HOST,
    MailSetup,
    ServerFactory,
    ServerProcess,
    cli_command,
    cli_env,
    free_port,
    fresh_source,
    make_mail_setup,
    run_cli,
    start_server,
    wait_for,
)
from pop3_support import memory_session

import trio_pop3
from trio_pop3 import _crypt3
from trio_pop3._cli import DEMO_MESSAGES
from trio_pop3._passwd import PasswdFile, PasswdFileAuthenticator, hash_password, verify_password
from trio_pop3.mailbox import MailboxHandler, MemoryStore

# --------------------------------------------------------------------------------------
# Bad command lines and configurations


@pytest.fixture
def config(tmp_path: Path) -> MailSetup:
    return make_mail_setup(tmp_path / "config")


def serve_args(config: MailSetup, *extra: str, users: Path | None = None) -> list[str]:
    return [
        "serve",
        "--host",
        HOST,
        "--port",
        str(free_port()),
        "--maildir-root",
        str(config.root),
        "--users",
        str(users if users is not None else config.passwd),
        *extra,
    ]


def passwd_file(config: MailSetup, content: bytes) -> Path:
    path = config.root.parent / f"bad-passwd-{hashlib.sha256(content).hexdigest()[:12]}"
    path.write_bytes(content)
    return path


GOOD_LINE = b"alice:" + hash_password("pw", "SHA256").encode() + b"\n"

#: id -> (arguments from the config, text the error line must contain)
BAD_COMMAND_LINES: dict[str, tuple[Callable[[MailSetup], list[str]], str]] = {
    "no command": (lambda c: [], "required: command"),
    # A FIFO (or any non-regular file) as --users must not block the start-up.
    "passwd-file is a FIFO": (lambda c: serve_args(c, users=fifo(c)), "not a regular file"),
    "unknown command": (lambda c: ["frobnicate"], "invalid choice: 'frobnicate'"),
    "unknown option": (lambda c: serve_args(c, "--bogus"), "unrecognized arguments: --bogus"),
    "serve without options": (lambda c: ["serve"], "required: --maildir-root, --users"),
    "port out of range": (
        lambda c: [*serve_args(c), "--port", "70000"],
        "port out of range: '70000'",
    ),
    "port not a number": (lambda c: [*serve_args(c), "--port", "pop3"], "not a port number"),
    "timeout not positive": (lambda c: serve_args(c, "--timeout", "0"), "must be positive"),
    # An endless idle timer would let a session hold its maildrop lock for ever.
    "timeout infinite": (
        lambda c: serve_args(c, "--timeout", "inf"),
        "must be positive and finite: 'inf'",
    ),
    "delay infinite": (
        lambda c: serve_args(c, "--auth-failure-delay", "1e400"),
        "must be >= 0 and finite: '1e400'",
    ),
    "max-connections 0": (
        lambda c: serve_args(c, "--max-connections", "0"),
        "must be at least 1",
    ),
    "missing passwd-file": (
        lambda c: serve_args(c, users=c.root.parent / "no-such-file"),
        "no-such-file: No such file or directory",
    ),
    # Root reads any file whatever its mode, so "unreadable" is a directory here.
    "unreadable passwd-file": (
        lambda c: serve_args(c, users=c.root),
        "cannot read passwd-file",
    ),
    "passwd-file line without colon": (
        lambda c: serve_args(c, users=passwd_file(c, b"# users\n\n" + GOOD_LINE + b"bob\n")),
        "line 4: no ':' after the user name",
    ),
    "passwd-file unsafe user name": (
        lambda c: serve_args(c, users=passwd_file(c, GOOD_LINE + b"../evil:{PLAIN}x\n")),
        "line 2: unsafe user name",
    ),
    "passwd-file duplicate user": (
        lambda c: serve_args(c, users=passwd_file(c, GOOD_LINE + b"x:{PLAIN}y\n" + GOOD_LINE)),
        "line 3: user 'alice' already on line 1",
    ),
    "maildir root missing": (
        lambda c: [*serve_args(c), "--maildir-root", str(c.root / "missing")],
        "missing: not a directory",
    ),
    "only --tls-cert": (
        lambda c: serve_args(c, "--tls-cert", str(c.passwd)),
        "--tls-cert and --tls-key must be given together",
    ),
    "only --tls-key": (
        lambda c: serve_args(c, "--tls-key", str(c.passwd)),
        "--tls-cert and --tls-key must be given together",
    ),
    "unloadable TLS files": (
        lambda c: serve_args(c, "--tls-cert", str(c.passwd), "--tls-key", str(c.passwd)),
        "cannot load TLS certificate/key",
    ),
    "--pop3s-port without TLS": (
        lambda c: serve_args(c, "--pop3s-port", str(free_port())),
        "--pop3s-port needs --tls-cert and --tls-key",
    ),
    "--require-tls without TLS": (
        lambda c: serve_args(c, "--require-tls"),
        "--require-tls needs --tls-cert and --tls-key",
    ),
    "bad --trusted-network": (
        lambda c: serve_args(c, "--trusted-network", "10.0.0.0/33"),
        "not an IP network: '10.0.0.0/33'",
    ),
    "unknown hash scheme": (
        lambda c: ["hash-password", "--scheme", "NO-SUCH-SCHEME", "--password", "pw"],
        "NO-SUCH-SCHEME",
    ),
    "empty password": (
        lambda c: ["hash-password", "--password", ""],
        "password must not be empty",
    ),
}


def assert_one_error_line(result: subprocess.CompletedProcess[bytes], expected: str) -> str:
    stderr = result.stderr.decode(errors="replace")
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("trio-pop3: error: "), lines[0]
    assert expected in lines[0]
    assert result.returncode == 2
    assert result.stdout == b""
    return lines[0]


def fifo(config: MailSetup) -> Path:
    path = config.root.parent / "passwd-fifo"
    os.mkfifo(path)
    return path


#: How long a case may take before it counts as hung (they all run at once).
BAD_COMMAND_LINE_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def bad_command_line_results(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, subprocess.CompletedProcess[bytes]]:
    """Run every case of the two tables at once (each is a Python start-up, ~0.3 s).

    A case still running at its deadline is killed; its result has exit status None.
    """
    config = make_mail_setup(tmp_path_factory.mktemp("bad-config"))
    start = time.monotonic()
    cases = BAD_COMMAND_LINES
    processes = {
        case: subprocess.Popen(
            cli_command(*make_args(config)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(),
        )
        for case, (make_args, _) in cases.items()
    }
    results = {}
    try:
        for case, process in processes.items():
            limit = BAD_COMMAND_LINE_TIMEOUT
            try:
                remaining = max(0.1, start + limit - time.monotonic())
                stdout, stderr = process.communicate(timeout=remaining)
                status: int | None = process.returncode
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
                status = None
            results[case] = subprocess.CompletedProcess(process.args, status, stdout, stderr)  # type: ignore[arg-type]
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


@pytest.mark.parametrize("case", list(BAD_COMMAND_LINES))
def test_bad_command_line(
    bad_command_line_results: dict[str, subprocess.CompletedProcess[bytes]], case: str
) -> None:
    assert_one_error_line(bad_command_line_results[case], BAD_COMMAND_LINES[case][1])


def test_port_in_use(config: MailSetup) -> None:
    with socket.socket() as holder:
        holder.bind((HOST, 0))
        holder.listen()
        port = holder.getsockname()[1]
        args = serve_args(config)
        args[args.index("--port") + 1] = str(port)
        result = run_cli(*args)
    assert_one_error_line(result, f"cannot listen: Address already in use ({HOST} port {port})")


# --------------------------------------------------------------------------------------
# hash-password and --version


@pytest.mark.parametrize("scheme", ["SSHA512", "SHA256", "PLAIN"])
def test_hash_password(scheme: str) -> None:
    password = "correct horse: battery staple"
    result = run_cli("hash-password", "--scheme", scheme, "--password", password)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 1
    stored = lines[0]
    # The ":" in the password makes a PLAIN one base64, so it fits a passwd-file field.
    assert stored.startswith("{PLAIN.B64}" if scheme == "PLAIN" else "{" + scheme + "}")
    assert verify_password(stored, password)
    assert not verify_password(stored, password + "x")


#: ``doveadm pw -s SHA512-CRYPT -p secret``, written bare as in /etc/shadow: Dovecot's
#: passwd-file reads it as CRYPT, its default scheme.
BARE_SHA512_CRYPT = (
    "$6$LlR1hMZw.OGW4X0O$Swehevo9sip32Nlr8a2YprMtfo03gDnqiGxbh6fEHJVMhMnlO"
    ".41qWN.6hvl1gyXmjT4CdExSulSfPFmqsVWC1"
)


@pytest.mark.skipif(not _crypt3.available(), reason="no crypt(3) here")
def test_crypt_entries_log_in_with_poplib(
    config: MailSetup, server_factory: ServerFactory
) -> None:
    # Existing Dovecot files with SHA512-CRYPT (its most common scheme) and bare
    # crypt(3) hashes work as they are; hash-password makes such entries too.
    result = run_cli("hash-password", "--scheme", "SHA512-CRYPT", "--password", "wonderland")
    assert result.returncode == 0, result.stderr
    made = result.stdout.decode().strip()
    assert made.startswith("{SHA512-CRYPT}$6$")
    with config.passwd.open("a") as passwd:
        passwd.write(f"carol:{made}\ndave:{BARE_SHA512_CRYPT}\n")
    config.passwords.update(carol="wonderland", dave="secret")
    accounts = [config.account(user, [b"Subject: hi\n\nhello\n"]) for user in ("carol", "dave")]
    proc = server_factory(config)
    for account in accounts:
        client = proc.connect()
        client.user(account.user)
        with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
            client.pass_(BARE_SHA512_CRYPT)  # the hash itself is no password
        client.quit()
        client = proc.connect()
        client.user(account.user)
        client.pass_(account.password)
        assert client.stat() == (1, len(b"Subject: hi\r\n\r\nhello\r\n"))
        client.quit()


def test_sighup_changes_nothing(config: MailSetup, server_factory: ServerFactory) -> None:
    # Operators and logrotate send SIGHUP out of habit (Dovecot reloads on it): it must
    # not stop the service, and systemd's Restart=on-failure would not restart it.
    account = config.account("alice", [b"Subject: one\n\nbody\n"])
    proc = server_factory(config)
    busy = proc.connect()
    busy.user(account.user)
    busy.pass_(account.password)
    busy.dele(1)
    proc.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "received SIGHUP: nothing to reload" in proc.stderr, what="the log")
    assert proc.process.poll() is None
    busy.quit()  # the session went on, and its QUIT committed
    assert account.files() == set()
    client = proc.connect()  # still accepting
    client.quit()


@pytest.mark.rfc("6856", "2.1")
@pytest.mark.parametrize("option", [[], ["--utf8-legacy", "refuse"]])
def test_utf8_header_mail_reaches_clients_without_utf8(
    config: MailSetup, server_factory: ServerFactory, option: list[str]
) -> None:
    # UTF8-02.  poplib, like curl, fetchmail and mpop, never sends UTF8: by default
    # serve sends the RFC 6857 surrogate, so such mail is not stuck on the server.
    stored = "Subject: Grüße aus Köln\nFrom: Jörg <j@example.org>\n\nhallo\n".encode()
    account = config.account("alice", [stored])
    client = server_factory(config, *option).connect()
    client.user(account.user)
    client.pass_(account.password)
    if option:
        with pytest.raises(poplib.error_proto, match=r"-ERR \[UTF8\]"):
            client.retr(1)
    else:
        reply, lines, octets = client.retr(1)
        assert reply == f"+OK {octets} octets".encode()  # poplib counts line + CRLF
        message = email.message_from_bytes(b"\r\n".join(lines), policy=email.policy.default)
        assert all(line.isascii() for line in lines)
        assert message["Subject"] == "Grüße aus Köln"
        assert message["From"].addresses[0].display_name == "Jörg"
        assert message.get_content().strip() == "hallo"
    client.quit()


def test_hash_password_refuses_des_crypt() -> None:
    result = run_cli("hash-password", "--scheme", "DES-CRYPT", "--password", "secret")
    assert_one_error_line(result, "DES-CRYPT reads only 8 characters of a password")


@pytest.mark.parametrize("password", ["a:b", "a\rb", "a\nb", "\r\n:"])
async def test_hash_password_plain_entry_keeps_separators(tmp_path: Path, password: str) -> None:
    # What hash-password prints goes into the passwd-file as it is (the documented
    # `echo "alice:$(trio-pop3 hash-password ...)" >> passwd`): a ":" must not end the
    # password field there, nor a CR or LF the line.
    result = run_cli("hash-password", "--scheme", "PLAIN", "--password", password)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "passwd"
    path.write_bytes(b"alice:" + result.stdout)
    assert PasswdFile.load(path).lookup("alice") == "{PLAIN.B64}" + b64(password.encode()).decode()
    store = MemoryStore({"alice": [b"Subject: x\r\n\r\nhi\r\n"]})
    factory = functools.partial(MailboxHandler, store, PasswdFileAuthenticator(path))
    # UTF8-05 (RFC 6856 §2.2): a CR or LF is a character SASLprep prohibits, so a
    # client can never log in with such a password, however it was stored.
    works = "+OK Logged in" if password.isprintable() else "-ERR [AUTH]"
    for offered, expected in [(password, works), (password[:1], "-ERR [AUTH]")]:
        async with memory_session(factory) as s:
            # AUTH PLAIN: PASS cannot carry a CR or LF.
            reply = await s.client.command(
                b"AUTH PLAIN " + b64(f"\x00alice\x00{offered}".encode())
            )
            assert reply.startswith(expected), (offered, reply)


def test_hash_password_reads_stdin_and_defaults_to_ssha512() -> None:
    result = run_cli("hash-password", stdin=b"from st\xc3\xa4ndard input\r\n")
    assert result.returncode == 0, result.stderr
    stored = result.stdout.decode().strip()
    assert stored.startswith("{SSHA512}")
    assert verify_password(stored, "from ständard input")


@pytest.mark.parametrize(
    "args", [[], ["--scheme", "PLAIN"], ["--password", os.fsdecode(b"caf\xe9")]]
)
def test_hash_password_refuses_invalid_utf8(args: list[str]) -> None:
    # RFC 6856: clients send UTF-8, and the server refuses a command that is not, so
    # a password with a stray octet could never log in.
    result = run_cli("hash-password", *args, stdin=b"caf\xe9\n")
    assert result.returncode == 2
    assert result.stdout == b""
    assert b"not valid UTF-8" in result.stderr


def test_hash_password_stores_the_saslprep_form() -> None:
    # RFC 4616 section 2: "cafe" + combining acute, hashed, matches a composed "é".
    result = run_cli("hash-password", "--scheme", "SHA256", stdin="cafe\u0301\n".encode())
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == hash_password("caf\u00e9", "SHA256")


def test_hash_password_salts_differ() -> None:
    first, second = (run_cli("hash-password", "--password", "pw").stdout for _ in range(2))
    assert first != second


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.decode() == f"trio-pop3 {trio_pop3.__version__}\n"
    assert result.stderr == b""


# --------------------------------------------------------------------------------------
# demo


def wait_for_output(path: Path, pattern: str, process: subprocess.Popen[bytes]) -> re.Match[str]:
    found: list[re.Match[str]] = []

    def check() -> bool:
        match = re.search(pattern, path.read_text(errors="replace"), re.M)
        if match is None and process.poll() is not None:
            pytest.fail(f"exited with {process.returncode} before printing {pattern!r}")
        if match is not None:
            found.append(match)
        return match is not None

    wait_for(check, what=f"{pattern!r} in {path.name}")
    return found[0]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_demo(tmp_path: Path, stop_signal: signal.Signals) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    stdout_path, stderr_path = tmp_path / "demo.out", tmp_path / "demo.err"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            cli_command("demo", "--port", "0"),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=cli_env(TMPDIR=str(tmpdir)),
        )
    try:
        match = wait_for_output(
            stdout_path, r"serving 3 sample messages on 127\.0\.0\.1:(\d+)$", process
        )
        port = int(match.group(1))
        assert port > 0
        instructions = stdout_path.read_text()
        assert f"curl pop3://demo:demo@127.0.0.1:{port}/" in instructions
        assert f"curl pop3://demo:demo@127.0.0.1:{port}/1" in instructions
        assert "poplib" in instructions
        # The demo Maildir lives under $TMPDIR while the demo runs.
        assert list(tmpdir.iterdir())

        client = poplib.POP3(HOST, port, timeout=10)
        client.user("demo")
        client.pass_("demo")
        assert client.stat() == (3, sum(len(expected_wire(m)) for m in DEMO_MESSAGES))
        for number, message in enumerate(DEMO_MESSAGES, 1):
            _, lines, _ = client.retr(number)
            assert b"\r\n".join(lines) + b"\r\n" == expected_wire(message)
        client.quit()

        # The printed poplib one-liner works as printed (shell continuation included).
        command = instructions[instructions.index('python3 -c "') :].strip()
        ran = subprocess.run(["sh", "-c", command], capture_output=True, timeout=20, check=False)
        assert ran.returncode == 0, ran.stderr
        assert b"Welcome to trio_pop3" in ran.stdout
    finally:
        if process.poll() is None:
            process.send_signal(stop_signal)
        status = process.wait(timeout=10)
    stderr = stderr_path.read_text()
    assert status == 0, stderr
    assert "Traceback" not in stderr
    assert f"received {stop_signal.name}" in stderr
    # Ctrl-C "deletes the demo Maildir".
    assert list(tmpdir.iterdir()) == []


# --------------------------------------------------------------------------------------
# serve: logging and connection limits


@pytest.fixture(scope="module")
def debug_config(tmp_path_factory: pytest.TempPathFactory) -> MailSetup:
    setup = make_mail_setup(tmp_path_factory.mktemp("debug-config"))
    setup.account("alice", [b"Subject: hi\n\nhello\n"])
    setup.account("bob", [b"Subject: hi\n\nhello\n"])
    return setup


@pytest.fixture(scope="module")
def debug_server(
    debug_config: MailSetup, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """``serve --debug --apop`` (a wire transcript on stderr) for the logging tests."""
    log_dir = tmp_path_factory.mktemp("debug-log")
    proc = start_server(debug_config, "--debug", "--apop", log_dir=log_dir)
    try:
        yield proc
    finally:
        status = proc.stop()
    assert status == 0, proc.stderr


class RawClient:
    """A line-based POP3 client for commands poplib lacks (AUTH)."""

    def __init__(self, port: int, source: str | None = None) -> None:
        self.sock = socket.create_connection(
            (HOST, port), timeout=10, source_address=(source, 0) if source else None
        )
        self.reader = self.sock.makefile("rb")
        self.greeting = self.line()

    def line(self) -> bytes:
        data = self.reader.readline()
        assert data.endswith(b"\r\n"), data
        return data[:-2]

    def send(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.line()

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


WRONG_PASSWORD = "Wr0ng-Pa55word-XYZZY"


@pytest.fixture(scope="module")
def failed_logins(debug_server: ServerProcess) -> str:
    """Fail a USER/PASS login from 127.0.0.1 and an AUTH PLAIN one from a fresh address,
    in parallel (each costs the server's 2 s failure delay); return that address.
    """
    source = fresh_source()
    replies: dict[str, bytes] = {}

    def user_pass() -> None:
        client = RawClient(debug_server.port)
        try:
            client.send(b"USER alice")
            replies["PASS"] = client.send(b"PASS " + WRONG_PASSWORD.encode())
        finally:
            client.close()

    def auth_plain() -> None:
        client = RawClient(debug_server.port, source)
        try:
            response = b64(b"\0alice\0" + WRONG_PASSWORD.encode())
            replies["AUTH"] = client.send(b"AUTH PLAIN " + response)
        finally:
            client.close()

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(user_pass), pool.submit(auth_plain)]:
            future.result()
    assert replies["PASS"].startswith(b"-ERR [AUTH]"), replies
    assert replies["AUTH"].startswith(b"-ERR [AUTH]"), replies
    wait_for(
        lambda: debug_server.stderr.count("authentication failure") >= 2,
        what="both failures to be logged",
    )
    return source


def test_failed_login_is_logged_for_fail2ban(
    debug_server: ServerProcess, failed_logins: str
) -> None:
    log = debug_server.stderr
    # One line per failure, "authentication failure: user=NAME rip=ADDRESS" (README).
    assert re.search(r"WARNING authentication failure: user=alice rip=127\.0\.0\.1$", log, re.M)
    assert re.search(
        rf"authentication failure: user=\S+ rip={re.escape(failed_logins)}$", log, re.M
    )
    # RFC 1939 §13, SEC-06: the password is never logged, not even with --debug.
    assert WRONG_PASSWORD not in log
    assert b64(b"\0alice\0" + WRONG_PASSWORD.encode()).decode() not in log
    assert "C: b'PASS ***'" in log


def test_failed_sasl_login_logs_the_user(debug_server: ServerProcess, failed_logins: str) -> None:
    log = debug_server.stderr
    source = re.escape(failed_logins)
    assert re.search(rf"authentication failure: user=alice rip={source}$", log, re.M)


def test_passwords_never_logged(debug_server: ServerProcess, debug_config: MailSetup) -> None:
    alice = debug_config.passwords["alice"]
    bob = debug_config.passwords["bob"]
    secrets = {
        "PASS": alice,
        "PLAIN-IR": b64(b"\0alice\0" + alice.encode()).decode(),
        "PLAIN": b64(b"\0bob\0" + bob.encode()).decode(),
        "LOGIN": b64(alice.encode()).decode(),
    }
    client = debug_server.connect()
    client.user("alice")
    client.pass_(alice)
    client.quit()
    client = debug_server.connect()
    client.apop("bob", bob)
    client.quit()
    raw = RawClient(debug_server.port)
    assert raw.send(b"AUTH PLAIN " + secrets["PLAIN-IR"].encode()).startswith(b"+OK")
    raw.send(b"QUIT")
    raw.close()
    raw = RawClient(debug_server.port)
    assert raw.send(b"AUTH PLAIN") == b"+ "
    assert raw.send(secrets["PLAIN"].encode()).startswith(b"+OK")
    raw.send(b"QUIT")
    raw.close()
    raw = RawClient(debug_server.port)
    assert raw.send(b"AUTH LOGIN").startswith(b"+ ")
    assert raw.send(b64(b"alice")).startswith(b"+ ")
    assert raw.send(secrets["LOGIN"].encode()).startswith(b"+OK")
    raw.send(b"QUIT")
    raw.close()
    log = debug_server.stderr
    assert log.count("login: user=alice") >= 3
    for name, secret in secrets.items():
        assert secret not in log, name
    assert bob not in log


def test_max_connections(config: MailSetup, server_factory: ServerFactory) -> None:
    account = config.account("alice", [b"Subject: one\n\nbody\n"])
    proc = server_factory(config, "--max-connections", "1")
    # The readiness probe's session must be over before the limit is tested.
    wait_for(lambda: proc.stderr.count(" disconnected") >= 1, what="probe to end")
    first = proc.connect()
    second = socket.create_connection((HOST, proc.port), timeout=10)
    try:
        reader = second.makefile("rb")
        refusal = reader.readline()
        # RFC 3206 (CODE-04): a temporary condition, then the server closes.
        assert refusal.startswith(b"-ERR [SYS/TEMP]"), refusal
        assert refusal.endswith(b"\r\n")
        assert reader.read() == b""
        reader.close()
    finally:
        second.close()
    # The first session is unaffected.
    first.user(account.user)
    first.pass_(account.password)
    assert first.stat()[0] == 1
    first.quit()
    wait_for(lambda: proc.stderr.count(" disconnected") >= 2, what="first session to end")
    third = proc.connect()
    assert third.getwelcome().startswith(b"+OK")
    third.quit()
    assert "refused" in proc.stderr


@pytest.mark.rfc("2449", "6.7")
@pytest.mark.parametrize(
    ("args", "expected"),
    [([], "EXPIRE NEVER"), (["--expire", "30"], "EXPIRE 30"), (["--expire", "none"], None)],
)
def test_expire_is_announced(
    config: MailSetup, server_factory: ServerFactory, args: list[str], expected: str | None
) -> None:
    # CAP-EXPIRE-2: trio-pop3 deletes no mail itself, so by default it says EXPIRE NEVER.
    account = config.account("alice", [b"Subject: one\n\nbody\n"])
    proc = server_factory(config, *args)
    client = proc.connect()
    try:
        for state in ("AUTHORIZATION", "TRANSACTION"):
            caps = client.capa()
            announced = [" ".join([n, *values]) for n, values in caps.items() if n == "EXPIRE"]
            assert announced == ([expected] if expected else []), state
            if state == "AUTHORIZATION":
                client.user(account.user)
                client.pass_(account.password)
    finally:
        client.quit()


@pytest.mark.parametrize("mark_seen", [True, False])
def test_retrieved_mail_is_flagged_seen_at_quit(
    config: MailSetup, server_factory: ServerFactory, mark_seen: bool
) -> None:
    # As Dovecot does: an IMAP client of the same Maildir then shows it as read.
    account = config.account("alice", [b"Subject: one\n\n1\n", b"Subject: two\n\n2\n"])
    first, second = account.messages
    proc = server_factory(config, *([] if mark_seen else ["--no-mark-seen"]))
    client = proc.connect()
    client.user(account.user)
    client.pass_(account.password)
    client.retr(1)
    client.top(2, 0)
    assert account.files() == {f"new/{first}", f"new/{second}"}  # nothing before QUIT
    client.quit()
    flagged = f"cur/{first}:2,S" if mark_seen else f"new/{first}"
    assert account.files() == {flagged, f"new/{second}"}
    client = proc.connect()
    client.user(account.user)
    client.pass_(account.password)
    assert [line.split()[1] for line in client.uidl()[1]] == [first.encode(), second.encode()]
    client.quit()


def _last(client: poplib.POP3) -> bytes:
    reply: bytes = client._shortcmd("LAST")  # type: ignore[attr-defined]
    return reply


@pytest.mark.rfc("1939", "5")
def test_enable_last_answers_the_obsolete_last_command(
    config: MailSetup, server_factory: ServerFactory
) -> None:
    """RSET-01: LAST (RFC 1460) only behind an option, like Dovecot's pop3_enable_last.

    Dovecot's transcript C2: LAST is 0, then the highest message retrieved; RSET sets
    it back to 0.  A message flagged seen before the session counts from the start.
    """
    account = config.account("alice", [b"Subject: %d\n\n%d\n" % (n, n) for n in range(1, 6)])
    plain = server_factory(config)
    client = plain.connect()
    client.user(account.user)
    client.pass_(account.password)
    with pytest.raises(poplib.error_proto, match="-ERR Unknown command: LAST"):
        _last(client)
    client.quit()

    proc = server_factory(config, "--enable-last")
    client = proc.connect()
    client.user(account.user)
    client.pass_(account.password)
    assert _last(client) == b"+OK 0"
    client.retr(3)
    assert _last(client) == b"+OK 3"
    client.top(4, 0)
    client.retr(2)
    assert _last(client) == b"+OK 4"
    client.rset()
    assert _last(client) == b"+OK 0"
    client.quit()  # RETR 2 and 3 flag those two seen

    client = proc.connect()
    client.user(account.user)
    client.pass_(account.password)
    assert _last(client) == b"+OK 3"
    client.quit()


@pytest.mark.parametrize("keep_case", [False, True])
def test_user_names_are_lowercased_as_in_dovecot(
    config: MailSetup, server_factory: ServerFactory, keep_case: bool
) -> None:
    # Dovecot's auth_username_format = %Lu (transcript D2): USER ALICE is alice.
    account = config.account("alice", [b"Subject: one\n\n1\n"])
    proc = server_factory(config, *(["--keep-username-case"] if keep_case else []))
    client = proc.connect()
    client.user("ALICE")
    if keep_case:
        with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
            client.pass_(account.password)
    else:
        client.pass_(account.password)
        assert client.stat()[0] == 1
    client.quit()


def test_passwd_lines_that_are_not_utf8_are_left_out(
    config: MailSetup, server_factory: ServerFactory
) -> None:
    # A Dovecot file with one Latin-1 password still serves its other users.
    account = config.account("alice", [b"Subject: one\n\n1\n"])
    with config.passwd.open("ab") as f:
        f.write(b"dave:{PLAIN}caf\xe9\n")
    proc = server_factory(config)
    client = proc.connect()
    client.user(account.user)
    client.pass_(account.password)
    assert client.stat()[0] == 1
    client.quit()
    assert "line" in proc.stderr
    assert "not valid UTF-8; left out, so its user cannot log in" in proc.stderr


def test_capitalised_passwd_entries_are_warned_about(config: MailSetup) -> None:
    users = passwd_file(config, GOOD_LINE + b"Bob:{PLAIN}x\nCAROL:{PLAIN}y\n")
    with socket.socket() as holder:  # stop right after the configuration is read
        holder.bind((HOST, 0))
        holder.listen()
        args = serve_args(config, users=users)
        args[args.index("--port") + 1] = str(holder.getsockname()[1])
        result = run_cli(*args)
        kept = run_cli(*args, "--keep-username-case")
    assert b"2 user names have capital letters (Bob, CAROL) and cannot log in" in result.stderr
    assert b"capital letters" not in kept.stderr


def test_replace_nuls_option(config: MailSetup, server_factory: ServerFactory) -> None:
    # Several read chunks (READ_CHUNK_SIZE is 256 KiB), a NUL in each.
    body = b"".join(b"line %d \x00 end\n" % n for n in range(40_000))
    message = b"Subject: nuls\n\n" + body
    assert len(message) > 2 * 256 * 1024
    account = config.account("alice", [message])
    proc = server_factory(config, "--replace-nuls")
    client = proc.connect()
    client.user(account.user)
    client.pass_(account.password)
    reply, lines, _ = client.retr(1)
    expected = message.replace(b"\n", b"\r\n")
    assert reply == b"+OK %d octets" % len(expected)
    assert b"\r\n".join(lines) + b"\r\n" == expected.replace(b"\x00", b"\x80")
    client.quit()


def test_trusted_network_option(tmp_path: Path) -> None:
    from trio_pop3._cli import build_parser

    base = ["serve", "--maildir-root", str(tmp_path), "--users", str(tmp_path / "p")]
    assert build_parser().parse_args(base).trusted_network == []
    args = build_parser().parse_args(
        [*base, "--trusted-network", "10.0.0.0/8", "--trusted-network", "192.0.2.7"]
    )
    assert [str(net) for net in args.trusted_network] == ["10.0.0.0/8", "192.0.2.7/32"]


def test_sasl_option(tmp_path: Path) -> None:
    from trio_pop3._cli import UsageError, build_parser

    base = ["serve", "--maildir-root", str(tmp_path), "--users", str(tmp_path / "p")]
    names = [m.name for m in build_parser().parse_args(base).sasl]
    assert names == ["PLAIN", "LOGIN", "SCRAM-SHA-256"]  # MailboxHandler's default
    args = build_parser().parse_args([*base, "--sasl", "cram-md5, plain"])
    assert [m.name for m in args.sasl] == ["CRAM-MD5", "PLAIN"]
    assert build_parser().parse_args([*base, "--sasl", "none"]).sasl == ()
    for bad in ["GSSAPI", "PLAIN,PLAIN", "PLAIN,", ""]:
        with pytest.raises(UsageError, match="not a list of distinct mechanisms"):
            build_parser().parse_args([*base, "--sasl", bad])


@pytest.mark.rfc("5034", "4")
def test_cram_md5_from_the_command_line(config: MailSetup, server_factory: ServerFactory) -> None:
    """--sasl turns on CRAM-MD5 (RFC 2195), which needs a {PLAIN} passwd entry."""
    account = config.new_account([b"Subject: x\n\nhi\n"], plain=True)
    client = server_factory(config, "--sasl", "CRAM-MD5,PLAIN").connect()
    assert client.capa().get("SASL") == ["CRAM-MD5", "PLAIN"]
    challenge = client._shortcmd("AUTH CRAM-MD5")  # type: ignore[attr-defined]
    assert challenge.startswith(b"+ ")
    digest = hmac.new(
        account.password.encode(), base64.b64decode(challenge[2:]), "md5"
    ).hexdigest()
    response = base64.b64encode(f"{account.user} {digest}".encode()).decode()
    assert client._shortcmd(response).startswith(b"+OK")  # type: ignore[attr-defined]
    assert client.stat()[0] == 1
    client.quit()


def test_expire_option(tmp_path: Path) -> None:
    from trio_pop3._cli import UsageError, build_parser

    base = ["serve", "--maildir-root", str(tmp_path), "--users", str(tmp_path / "p")]
    assert build_parser().parse_args(base).expire == "NEVER"
    assert build_parser().parse_args([*base, "--expire", "never"]).expire == "NEVER"
    assert build_parser().parse_args([*base, "--expire", "0"]).expire == 0
    assert build_parser().parse_args([*base, "--expire", "None"]).expire is None
    for bad, message in [("-1", "must be >= 0"), ("soon", "not NEVER, none or a number")]:
        with pytest.raises(UsageError, match=message):
            build_parser().parse_args([*base, "--expire", bad])


def test_auth_failure_delay_option(tmp_path: Path) -> None:
    """--auth-failure-delay reaches Limits; a negative value is a usage error."""
    from trio_pop3._cli import UsageError, build_parser

    base = ["serve", "--maildir-root", str(tmp_path), "--users", str(tmp_path / "p")]
    args = build_parser().parse_args([*base, "--auth-failure-delay", "0.5"])
    assert args.auth_failure_delay == 0.5
    assert build_parser().parse_args(base).auth_failure_delay == 2.0
    with pytest.raises(UsageError, match="must be >= 0"):
        build_parser().parse_args([*base, "--auth-failure-delay", "-1"])


def test_workers_option(tmp_path: Path) -> None:
    """--workers takes a count or "auto" (one per usable CPU); 0 is a usage error."""
    from trio_pop3._cli import UsageError, build_parser, usable_cpus

    base = ["serve", "--maildir-root", str(tmp_path), "--users", str(tmp_path / "p")]
    assert build_parser().parse_args(base).workers == 1
    assert build_parser().parse_args([*base, "--workers", "3"]).workers == 3
    assert build_parser().parse_args([*base, "--workers", "auto"]).workers == usable_cpus()
    assert usable_cpus() >= 1
    if hasattr(os, "sched_getaffinity"):
        assert usable_cpus() == len(os.sched_getaffinity(0))
    with pytest.raises(UsageError, match="must be at least 1"):
        build_parser().parse_args([*base, "--workers", "0"])
    with pytest.raises(UsageError, match="not a number"):
        build_parser().parse_args([*base, "--workers", "many"])


def test_too_many_workers_are_warned_about(config: MailSetup) -> None:
    from trio_pop3._cli import WORKERS_PER_CPU_WARNING, usable_cpus

    too_many = WORKERS_PER_CPU_WARNING * usable_cpus() + 1
    with socket.socket() as holder:  # stop right after the configuration is read
        holder.bind((HOST, 0))
        holder.listen()
        args = serve_args(config, "--workers", str(too_many))
        args[args.index("--port") + 1] = str(holder.getsockname()[1])
        result = run_cli(*args)
    assert f"--workers {too_many} is more than".encode() in result.stderr
    assert b"cannot listen" in result.stderr


def test_demo_without_arguments_survives_a_busy_default_port(tmp_path: Path) -> None:
    """`trio-pop3 demo` needs no arguments even when 1110 is taken: it picks a free port."""
    from trio_pop3._cli import DEMO_PORT

    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind((HOST, DEMO_PORT))
        except OSError:
            pass  # already taken by someone else: the point of the test either way
        holder.listen()
        stdout_path = tmp_path / "demo.out"
        with stdout_path.open("wb") as out:
            process = subprocess.Popen(
                cli_command("demo"),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.DEVNULL,
                env=cli_env(),
            )
        try:
            match = wait_for_output(
                stdout_path, r"serving 3 sample messages on 127\.0\.0\.1:(\d+)$", process
            )
            port = int(match.group(1))
            assert port != DEMO_PORT
            client = poplib.POP3(HOST, port, timeout=10)
            client.user("demo")
            client.pass_("demo")
            assert client.stat()[0] == 3
            client.quit()
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0


def test_short_timeout_is_warned_about(config: MailSetup) -> None:
    """TIME-02: a post-login timeout under 10 minutes is allowed but logged as a warning."""
    with socket.socket() as holder:  # stop right after the configuration is read
        holder.bind((HOST, 0))
        holder.listen()
        args = serve_args(config, "--timeout", "60")
        args[args.index("--port") + 1] = str(holder.getsockname()[1])
        result = run_cli(*args)
    assert b"--timeout 60 is below RFC 1939's minimum of 600 seconds" in result.stderr
    assert b"\ntrio-pop3: error: cannot listen: Address already in use (" in result.stderr


@pytest.mark.rfc("8314", "2")
@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_cleartext_on_a_network_is_warned_about(
    config: MailSetup, host: str, warned: bool
) -> None:
    # SEC-01: without TLS, passwords cross the network in the clear.  Allowed (a
    # trusted network, a TLS proxy in front), but said at start-up.
    with socket.socket() as holder:  # stop right after the configuration is read
        holder.bind((host, 0))
        holder.listen()
        args = serve_args(config)
        args[args.index("--host") + 1] = host
        args[args.index("--port") + 1] = str(holder.getsockname()[1])
        result = run_cli(*args)
    assert (b"no TLS configured: USER/PASS, PLAIN and LOGIN send passwords" in result.stderr) is (
        warned
    )
    assert b"cannot listen" in result.stderr


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        (None, False),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.1", False),
        ("mail.example", False),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
    ],
)
def test_is_loopback(host: str | None, loopback: bool) -> None:
    from trio_pop3._cli import _is_loopback

    assert _is_loopback(host) is loopback


def test_log_formatter_writes_what_the_default_formatter_writes() -> None:
    """The per-second time cache and the direct line change nothing in the output."""
    from trio_pop3._cli import _LogFormatter

    ours = _LogFormatter("x[1]")
    default = logging.Formatter("%(asctime)s x[1]: %(levelname)s %(message)s")
    base = 1_790_000_000.0
    record = logging.LogRecord("trio_pop3", logging.INFO, "f", 1, "m %d %s", (1, "é"), None)
    for offset in (0.0, 0.001, 0.999, 1.0, 1.5, 59.999, 60.0, 3600.25, 0.5):
        record.created = base + offset
        record.msecs = int((record.created - int(record.created)) * 1000)
        assert ours.format(record) == default.format(record)
    record.created = base
    assert ours.formatTime(record, "%H") == default.formatTime(record, "%H")
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord(
            "trio_pop3", logging.ERROR, "f", 1, "failed:\n%s", ("two lines",), sys.exc_info()
        )
    assert ours.format(failed) == default.format(failed)
    assert "ValueError: boom" in ours.format(failed)
    stacked = logging.LogRecord(
        "trio_pop3", logging.WARNING, "f", 1, "where", None, None, sinfo="Stack (most recent)"
    )
    assert ours.format(stacked) == default.format(stacked)

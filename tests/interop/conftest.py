"""Real-server fixtures: ``python -m trio_pop3 serve`` as a subprocess over real Maildirs.

* :class:`MailSetup` is a temporary Maildir root plus a passwd-file made with
  :func:`trio_pop3._passwd.hash_password`: ``alice`` (SSHA512), ``bob`` ({PLAIN}, so
  APOP works for him) and a pool of fresh users (``userNN`` SSHA512, ``plainNN`` PLAIN)
  that :meth:`MailSetup.new_account` hands out, one per test, with mail delivered by
  :func:`trio_pop3.mailbox._maildir.deliver`.
* :func:`start_server` runs the CLI server on 127.0.0.1 on a free port (bound to port 0
  and closed; retried if someone else takes it first) and waits for it by polling a TCP
  connection (bounded, 10 s), never by sleeping a fixed time.
  :meth:`ServerProcess.stop` sends SIGTERM and returns the exit status.
* Fixtures: ``mail_setup`` and ``server`` (one per test module, with ``--apop``),
  ``account`` (a fresh pool user with :data:`corpus.CORPUS` delivered) and
  ``server_factory`` (more servers, each stopped at teardown with exit status 0
  asserted).
* :func:`make_certificate` writes a trustme CA and server certificate for the TLS tests.
* :func:`require_tool` finds a client (curl, fetchmail, mpop, getmail): a skip when
  missing, a failure when the ``CI`` environment variable is set.

``tests/test_cli.py`` imports the helpers from here (``from interop.conftest import``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import poplib
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from corpus import CORPUS, expected_wire, full_corpus

from trio_pop3._passwd import hash_password
from trio_pop3.mailbox._maildir import deliver

__all__ = [
    "HOST",
    "REPO_ROOT",
    "Account",
    "MailSetup",
    "ServerFactory",
    "ServerProcess",
    "list_one",
    "make_certificate",
    "uidl_one",
    "check_status",
    "cli_command",
    "cli_env",
    "SourcedPOP3",
    "free_port",
    "fresh_source",
    "maildir_files",
    "make_mail_setup",
    "numbered",
    "pop3_login",
    "require_tool",
    "run_client",
    "sorted_with_lf",
    "run_cli",
    "session",
    "start_server",
    "wait_for",
]

HOST = "127.0.0.1"

#: The repository root (it holds the ``trio_pop3`` package).
REPO_ROOT = Path(__file__).resolve().parents[2]

#: Bound on waiting for a server to accept connections or to exit.
STARTUP_TIMEOUT = 10.0
EXIT_TIMEOUT = 10.0

#: Timeout of client sockets (poplib) in the tests.
CLIENT_TIMEOUT = 10.0

#: Size of the pools of fresh users of a MailSetup.
POOL_SIZE = 40
PLAIN_POOL_SIZE = 10


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: this package first on PYTHONPATH."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env.pop("PYTHONWARNINGS", None)
    env.update(extra)
    return env


def cli_command(*args: str) -> list[str]:
    """``python -m trio_pop3 ARGS`` with this interpreter."""
    return [sys.executable, "-m", "trio_pop3", *args]


def run_cli(
    *args: str,
    stdin: bytes | None = None,
    timeout: float = 20.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m trio_pop3 ARGS`` to completion (bounded) and capture its output."""
    return subprocess.run(
        cli_command(*args),
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        env=cli_env(**(env or {})),
        check=False,
    )


def free_port() -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)  # polling interval, not synchronisation
        delay = min(delay * 2, 0.1)


def run_client(
    command: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a mail client to completion (bounded), with no input; capture its output."""
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        errors="replace",
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        env=env,
        check=False,
    )


def check_status(result: subprocess.CompletedProcess[str], status: int = 0) -> str:
    """Check a client's exit status; return its output (stdout, then stderr)."""
    log = result.stdout + result.stderr
    assert result.returncode == status, f"exit status {result.returncode}:\n{log}"
    return log


def sorted_with_lf(messages: Sequence[bytes]) -> list[bytes]:
    """What a client that stores LF line ends keeps of ``messages``, sorted.

    For clients that write each message to its own file, whose names carry no order.
    """
    return sorted(expected_wire(message).replace(b"\r\n", b"\n") for message in messages)


def make_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """Write a test CA and a certificate for 127.0.0.1 and localhost into ``directory``.

    Returns (CA file, certificate chain, private key), all PEM.  The subject common
    name is ``localhost``: fetchmail 6.4 insists on one, which trustme omits by default.
    """
    ca = trustme.CA()
    cert = ca.issue_cert(HOST, "localhost", common_name="localhost")
    cafile, chain, key = directory / "ca.pem", directory / "chain.pem", directory / "key.pem"
    ca.cert_pem.write_to_path(str(cafile))
    cert.private_key_pem.write_to_path(str(key))
    for blob in cert.cert_chain_pems:
        blob.write_to_path(str(chain), append=True)
    return cafile, chain, key


def maildir_files(maildir: Path) -> set[str]:
    """Names of the message files in ``cur/`` and ``new/`` (``subdir/name``)."""
    return {
        f"{sub}/{entry.name}"
        for sub in ("cur", "new")
        if (maildir / sub).is_dir()
        for entry in (maildir / sub).iterdir()
        if not entry.name.startswith(".")
    }


# --------------------------------------------------------------------------------------
# Maildir root and users


@dataclass
class Account:
    """A user with a password and a Maildir.

    ``messages`` maps each delivered message's UIDL (the Maildir base name) to its
    contents, in delivery order.
    """

    user: str
    password: str
    maildir: Path
    messages: dict[str, bytes] = field(default_factory=dict)

    def deliver(self, message: bytes) -> str:
        """Deliver ``message`` (not fsynced: tests only); return its UID (file name)."""
        name = deliver(self.maildir, message, fsync=False)
        self.messages[name] = message
        return name

    def files(self) -> set[str]:
        return maildir_files(self.maildir)

    def uids(self) -> set[str]:
        """The base names (UIDLs) of the messages in the Maildir, wherever they are.

        A RETR'd message kept at QUIT moves from ``new/X`` to ``cur/X:2,S``; its
        base name stays the same.
        """
        return {name.split("/", 1)[1].partition(":")[0] for name in self.files()}


@dataclass
class MailSetup:
    """A Maildir root with a passwd-file; see the module docstring."""

    root: Path
    passwd: Path
    passwords: dict[str, str]
    _pool: list[str] = field(default_factory=list)
    _plain_pool: list[str] = field(default_factory=list)

    def account(self, user: str, messages: Sequence[bytes] = ()) -> Account:
        """The account of ``user``, delivering ``messages`` into its Maildir first."""
        account = Account(user, self.passwords[user], self.root / user)
        for message in messages:
            account.deliver(message)
        return account

    def new_account(self, messages: Sequence[bytes] = (), *, plain: bool = False) -> Account:
        """A pool user not handed out before (SSHA512, or {PLAIN} if ``plain``)."""
        pool = self._plain_pool if plain else self._pool
        if not pool:
            raise RuntimeError("MailSetup user pool exhausted: raise POOL_SIZE")
        return self.account(pool.pop(0), messages)


def _password_for(user: str) -> str:
    return f"Pw-{user}-x7_Q9z"


def make_mail_setup(directory: Path) -> MailSetup:
    """Create a Maildir root and passwd-file under ``directory``."""
    root = directory / "mail"
    root.mkdir(parents=True)
    pool = [f"user{n:02d}" for n in range(1, POOL_SIZE + 1)]
    plain_pool = [f"plain{n:02d}" for n in range(1, PLAIN_POOL_SIZE + 1)]
    schemes = {"alice": "SSHA512", "bob": "PLAIN"}
    schemes.update(dict.fromkeys(pool, "SSHA512"))
    schemes.update(dict.fromkeys(plain_pool, "PLAIN"))
    passwords = {user: _password_for(user) for user in schemes}
    lines = ["# trio_pop3 interop tests", ""]
    lines += [
        f"{user}:{hash_password(passwords[user], scheme)}" for user, scheme in schemes.items()
    ]
    passwd = directory / "passwd"
    passwd.write_text("\n".join(lines) + "\n")
    passwd.chmod(0o600)
    return MailSetup(root, passwd, passwords, pool, plain_pool)


# --------------------------------------------------------------------------------------
# The server process


@dataclass
class ServerProcess:
    """A running ``trio-pop3 serve``; its stdout and stderr go to files."""

    process: subprocess.Popen[bytes]
    port: int
    stdout_path: Path
    stderr_path: Path

    @property
    def stderr(self) -> str:
        """Everything the server logged so far."""
        return self.stderr_path.read_text(errors="replace")

    def connect(self, source: str | None = None) -> poplib.POP3:
        """A poplib connection, from the loopback address ``source`` if given."""
        if source is None:
            return poplib.POP3(HOST, self.port, timeout=CLIENT_TIMEOUT)
        return SourcedPOP3(HOST, self.port, source, timeout=CLIENT_TIMEOUT)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send ``sig`` (if still running) and return the exit status (bounded wait)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=EXIT_TIMEOUT)
            pytest.fail(f"server did not exit within {EXIT_TIMEOUT} s of {sig.name}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=EXIT_TIMEOUT)


class SourcedPOP3(poplib.POP3):
    """poplib from a chosen source address.

    The server delays failed logins by 2 s, doubled per further failure of the same
    client address (``Limits.auth_failure_delay``, no CLI option).  Tests that fail
    logins on purpose use fresh addresses of 127.0.0.0/8 (see :func:`fresh_source`)
    and run them in parallel, so each costs one 2 s delay.
    """

    def __init__(self, host: str, port: int, source: str, *, timeout: float) -> None:
        self._source = source
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self._source, 0)
        )


_sources = itertools.count(2)


def fresh_source() -> str:
    """A loopback address no other test in this process has connected from."""
    n = next(_sources)
    return f"127.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def _probe(port: int, preamble: bytes = b"") -> bool:
    """Whether a POP3 server answers on ``port``: read the greeting, QUIT, wait for EOF.

    ``preamble`` goes first (a PROXY protocol header, for ``--proxy-protocol``).

    The probe's session ends completely before this returns, so it never counts
    against ``--max-connections`` afterwards (the server logs its ``disconnected``).
    """
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.settimeout(STARTUP_TIMEOUT)
            sock.sendall(preamble)
            reader = sock.makefile("rb")
            greeting = reader.readline()
            if not greeting.startswith(b"+OK"):
                return False
            sock.sendall(b"QUIT\r\n")
            reader.readline()
            reader.read()  # until the server closes
            reader.close()
            return True
    except OSError:
        return False


def start_server(
    setup: MailSetup,
    *args: str,
    log_dir: Path,
    port: int | None = None,
    attempts: int = 5,
) -> ServerProcess:
    """Start ``python -m trio_pop3 serve`` over ``setup`` and wait until it answers.

    Without ``port`` a free one is picked; if the server cannot listen on it (someone
    took it meanwhile) another is tried, up to ``attempts`` times.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        chosen = port if port is not None else free_port()
        stdout_path = log_dir / f"server-{chosen}-{attempt}.out"
        stderr_path = log_dir / f"server-{chosen}-{attempt}.err"
        command = cli_command(
            "serve",
            "--host",
            HOST,
            "--port",
            str(chosen),
            "--maildir-root",
            str(setup.root),
            "--users",
            str(setup.passwd),
            *args,
        )
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=cli_env()
            )
        server = ServerProcess(process, chosen, stdout_path, stderr_path)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        # A health check's header, as a load balancer sends (PROXY protocol v1).
        preamble = b"PROXY UNKNOWN\r\n" if "--proxy-protocol" in args else b""
        delay = 0.01
        while True:
            if process.poll() is not None:
                break
            if _probe(chosen, preamble):
                return server
            if time.monotonic() > deadline:
                server.kill()
                pytest.fail(
                    f"server did not answer on port {chosen} within {STARTUP_TIMEOUT} s:\n"
                    + server.stderr
                )
            time.sleep(delay)  # polling interval while the interpreter starts
            delay = min(delay * 2, 0.1)
        log = server.stderr
        if port is None and "cannot listen" in log:
            continue  # the port was taken between free_port() and bind(): try another
        pytest.fail(f"server exited with status {process.returncode}:\n{log}")
    pytest.fail(f"no free port found in {attempts} attempts")


class ServerFactory:
    """Starts servers for one test; stops them all at teardown, asserting status 0."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.servers: list[ServerProcess] = []

    def __call__(self, setup: MailSetup, *args: str, port: int | None = None) -> ServerProcess:
        server = start_server(setup, *args, log_dir=self.log_dir, port=port)
        self.servers.append(server)
        return server

    def stop_all(self) -> list[tuple[ServerProcess, int]]:
        return [(server, server.stop()) for server in self.servers]


def pop3_login(server: ServerProcess, account: Account, *, utf8: bool = False) -> poplib.POP3:
    """A poplib session logged in with USER/PASS (after ``UTF8`` if ``utf8``)."""
    client = server.connect()
    if utf8:
        client.utf8()  # RFC 6856 §2.1: only valid in AUTHORIZATION
    client.user(account.user)
    client.pass_(account.password)
    return client


@contextlib.contextmanager
def session(
    server: ServerProcess, account: Account, *, utf8: bool = False
) -> Iterator[poplib.POP3]:
    """A logged-in poplib session that QUITs at the end unless the test did."""
    client = pop3_login(server, account, utf8=utf8)
    try:
        yield client
    finally:
        if client.sock is not None:  # not QUIT yet
            with contextlib.suppress(OSError, poplib.error_proto):
                client.quit()
            client.close()


def list_one(client: poplib.POP3, number: int) -> bytes:
    """``LIST n``: poplib returns the reply line (typeshed says a multi-line tuple)."""
    reply: object = client.list(number)
    assert isinstance(reply, bytes)
    return reply


def uidl_one(client: poplib.POP3, number: int) -> bytes:
    """``UIDL n``: the reply line."""
    reply: object = client.uidl(number)
    assert isinstance(reply, bytes)
    return reply


def numbered(client: poplib.POP3, account: Account) -> dict[int, bytes]:
    """Message number -> stored message, matched through UIDL (the Maildir base name)."""
    _, lines, _ = client.uidl()
    result: dict[int, bytes] = {}
    for line in lines:
        number, uid = line.decode("ascii").split(" ")
        assert uid in account.messages, f"UIDL {uid!r} is not a delivered file name"
        result[int(number)] = account.messages[uid]
    return result


def require_tool(name: str) -> str:
    """Return the path of ``name``; skip the test if missing, or fail when ``CI`` is set."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install {name})"
        if os.environ.get("CI"):
            pytest.fail(message + "; interop clients are required under CI")
        pytest.skip(message)
    return path


# --------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def mail_setup(tmp_path_factory: pytest.TempPathFactory) -> MailSetup:
    return make_mail_setup(tmp_path_factory.mktemp("mailroot"))


@pytest.fixture(scope="module")
def server(
    mail_setup: MailSetup, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One ``serve --apop`` for the whole test module; exit status 0 on SIGTERM."""
    proc = start_server(mail_setup, "--apop", log_dir=tmp_path_factory.mktemp("server-log"))
    try:
        yield proc
    finally:
        status = proc.stop()
    assert status == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def corpus_account(mail_setup: MailSetup) -> Account:
    """``alice`` (SSHA512) with the full corpus, big message included; never modified."""
    return mail_setup.account("alice", list(full_corpus().values()))


@pytest.fixture(scope="module")
def corpus_numbers(server: ServerProcess, corpus_account: Account) -> dict[str, int]:
    """Corpus name -> message number of ``corpus_account`` on the module's server."""
    names = {message: name for name, message in full_corpus().items()}
    with session(server, corpus_account) as client:
        return {names[message]: n for n, message in numbered(client, corpus_account).items()}


@pytest.fixture
def account(mail_setup: MailSetup) -> Account:
    """A fresh SSHA512 user of the module's server with :data:`corpus.CORPUS` delivered."""
    return mail_setup.new_account(list(CORPUS.values()))


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path / "server-logs")
    try:
        yield factory
    finally:
        results = factory.stop_all()
    for proc, status in results:
        assert status == 0, f"exit status {status}:\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, proc.stderr
